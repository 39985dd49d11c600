# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Glue for the revocation modules: the universe of names, and failures as messages (never tracebacks)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.tunion.keymgmt.plugins.module_utils import revocation_rotation as rot
from ansible_collections.tunion.keymgmt.plugins.module_utils.catalogue import CatalogueError
from ansible_collections.tunion.keymgmt.plugins.module_utils.distribution import DistributionError
from ansible_collections.tunion.keymgmt.plugins.module_utils.hsm import HsmError
from ansible_collections.tunion.keymgmt.plugins.module_utils.keyblock import KeyBlockError
from ansible_collections.tunion.keymgmt.plugins.module_utils.openbao import (
    HAS_HVAC,
    HVAC_IMPORT_ERROR,
    OpenBao,
    OpenBaoError,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.revocation import (
    KINDS,
    RevocationError,
    Status,
    Universe,
    city_status,
    desired_statuses,
    read_recorded,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.sam_registry import Registry, RegistryError

ERRORS = (OpenBaoError, DistributionError, KeyBlockError, HsmError, RevocationError, RegistryError, CatalogueError)


def load_registry(path: str | None) -> Registry | None:
    """The SAM registry (desired CSV) if one is configured and present; None otherwise."""
    if not path:
        return None
    expanded = os.path.expanduser(path)
    if not os.path.exists(expanded):
        return None
    return Registry.load(expanded)


def universe(cities: dict[str, str], registry: Registry | None, catalogue: list[dict[str, Any]] | None) -> Universe:
    holders: set[str] = set()
    sams: set[str] = set()
    if registry is not None:
        for serial, row in registry.rows.items():
            sams.add(serial)
            holders.add(row.holder)
    versions = {
        f"{entry['name']}.v{int(v['version']):02x}" for entry in (catalogue or []) for v in entry.get("versions") or []
    }
    return Universe(cities={k: str(v) for k, v in cities.items()}, holders=holders, sams=sams, key_versions=versions)


def world_of(params: dict[str, Any]) -> tuple[Registry | None, Universe]:
    """The SAM registry (if any) and every name a status may refer to, from the module's parameters."""
    registry = load_registry(params["sam_registry"])
    return registry, universe(params["cities"], registry, params["catalogue"])


def status_dicts(desired: dict[str, dict[str, Status]], world: Universe) -> dict[str, dict[str, dict[str, str]]]:
    """Statuses in force as plain data: kind -> name -> {status, reason, date, source}; every city is listed."""
    statuses = {kind: {name: s.as_dict() for name, s in sorted(desired[kind].items())} for kind in KINDS}
    statuses["cities"] = {c: city_status(desired, c).as_dict() for c in sorted(world.cities)}
    return statuses


def statuses_in_force(
    bao: OpenBao, params: dict[str, Any], world: Universe
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Status]]]:
    """(recorded, desired): the statuses recorded in OpenBao, and the inventory's merged with them (an emergency
    revocation recorded there stays in force until the inventory lifts it, docs/revocation.md)."""
    recorded = read_recorded(bao, params["mount"])
    return recorded, desired_statuses(params["status"], world, recorded)


def rotation_plan(
    bao: OpenBao,
    params: dict[str, Any],
    statuses: dict[str, dict[str, dict[str, str]]],
    registry: Registry | None,
    grants: dict[str, list[dict[str, Any]]],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(plan, recorded rotations) for ``params['today']`` (see revocation_rotation.plan)."""
    recorded = rot.read_records(bao, params["mount"])
    try:
        today = rot.parse_day(params.get("today"))
    except ValueError as exc:
        raise RevocationError(f"today: {exc}. Nothing was changed.") from None
    plan = rot.plan(
        params["catalogue"] or [],
        grants,
        statuses["cities"],
        grace_days=params["grace_days"],
        sam_rows=[r.as_dict() for r in registry.rows.values()] if registry else None,
        city_codes=params["cities"],
        recorded=recorded,
        key_versions=statuses.get("key_versions"),
        today=today,
    )
    return plan, recorded


# Options shared by the modules that work out the statuses in force (openbao_city_revoke, distribution_plan).
STATUS_SPEC: dict[str, Any] = {
    "cities": {"type": "dict", "required": True},
    "status": {"type": "dict", "default": {}},
    "sam_registry": {"type": "path"},
    "catalogue": {"type": "list", "elements": "dict"},
    "grace_days": {"type": "int", "default": 30},
    "today": {"type": "str"},
    "mount": {"type": "str", "default": "tunion-kb"},
}


def run(module: AnsibleModule, body: Callable[[AnsibleModule, list[OpenBao]], dict[str, Any]], *, hvac: bool) -> None:
    """Run ``body``; our errors become fail_json with their (secret-free) message."""
    if hvac and not HAS_HVAC:
        module.fail_json(msg=missing_required_lib("hvac"), exception=HVAC_IMPORT_ERROR)
    opened: list[OpenBao] = []
    try:
        result = body(module, opened)
    except ERRORS as exc:
        for bao in opened:
            bao.revoke_self()
        module.fail_json(msg=str(exc))
    for bao in opened:
        bao.revoke_self()
    module.exit_json(**result)
