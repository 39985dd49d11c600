# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Glue for the revocation modules: the universe of names, and failures as messages (never tracebacks)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
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
from ansible_collections.tunion.keymgmt.plugins.module_utils.revocation import RevocationError, Universe
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
