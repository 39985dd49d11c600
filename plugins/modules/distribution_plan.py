#!/usr/bin/python
# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: distribution_plan
short_description: Which cities distribution may serve, and what each is granted, once statuses and rotations apply
description:
  - Runs at the province, first in C(playbooks/distribute.yml), and changes nothing.
  - Works out the status in force of every city - the inventory's C(tunion_status) merged with the statuses recorded
    in OpenBao (C(province/status/...), where the emergency form C(playbooks/revoke.yml) writes) - exactly as
    M(tunion.keymgmt.openbao_city_revoke) does. Only C(active) cities are returned in RV(active) and RV(targets); a
    suspended or revoked city is left out, so distribution never re-creates its policy or AppRole, never issues it a
    secret_id and never re-enrols it (粤交〔2019〕11号 第十七条). Each city left out is named in a warning.
  - Applies the rotations in force (recorded in OpenBao, or called for now by a revoked city that held a shared key)
    to the grants - the new version is added wherever the old one is granted - and takes away key versions that
    are retired (grace period over on O(today)) or revoked by status. Distribution then publishes exactly these
    blocks, removes the others, and each city destroys the keys no block carries any more.
  - RV(issue) lists the new versions of rotated keys that the province generates itself (catalogue
    C(origin=province), C(source=generate)); C(playbooks/distribute.yml) makes sure they are in the province HSM.
extends_documentation_fragment:
  - tunion.keymgmt.attributes
  - tunion.keymgmt.attributes.no_diff
  - tunion.keymgmt.openbao
  - tunion.keymgmt.status
  - tunion.keymgmt.distribution.targets
attributes:
  check_mode:
    details: The module only reads; it works the same in check mode.
"""

EXAMPLES = r"""
- name: Plan distribution for the cities whose status is active
  tunion.keymgmt.distribution_plan:
    cities: "{{ status_cities }}"
    status: "{{ tunion_status }}"
    sam_registry: "{{ status_sam_registry }}"
    catalogue: "{{ key_catalogue | to_json | from_json }}"
    grace_days: "{{ status_grace_days }}"
    today: "{{ status_now }}"
    targets: "{{ groups['cities'] | map('extract', hostvars, 'distribution_target') | list }}"
  register: distribution_plan
"""

RETURN = r"""
active:
  description: Cities whose status in force is active - the only ones distribution serves.
  type: list
  elements: str
  returned: always
skipped:
  description: Cities left out, with their status in force, reason, date and where the status comes from.
  type: dict
  returned: always
  sample: {"shantou": {"status": "revoked", "reason": "keys passed on", "date": "2026-11-24", "source": "inventory"}}
targets:
  description: The O(targets) of the active cities, with their effective grants.
  type: list
  elements: dict
  returned: always
issue:
  description: New versions of rotated keys the province generates, C({key, version}).
  type: list
  elements: dict
  returned: always
  sample: [{"key": "load_auth", "version": 2}]
rotation:
  description: The rotations in force and what follows from them (see M(tunion.keymgmt.openbao_city_revoke)).
  type: dict
  returned: always
"""

from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils import argspec
from ansible_collections.tunion.keymgmt.plugins.module_utils.base import TunionModule
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.rotation import rotation_plan
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.status_openbao import statuses_in_force
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.grants import parse_targets
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.rotation import effective_targets
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.status import status_dicts, world_of
from ansible_collections.tunion.keymgmt.plugins.module_utils.openbao.client import HVAC_REQUIREMENT, connect


def run(module: TunionModule) -> dict[str, Any]:
    p = module.params
    registry, world = world_of(p)
    parse_targets(p["targets"], p["catalogue"])  # refused before anything is reached
    bao = module.opened(connect(p))
    statuses = status_dicts(statuses_in_force(bao, p, world)[1], world)
    grants = {t["city"]: list(t.get("grants") or []) for t in p["targets"]}
    plan, _changes = rotation_plan(bao, p, statuses, registry, grants)
    active = [c for c, s in statuses["cities"].items() if s["status"] == "active"]
    skipped = {c: s for c, s in statuses["cities"].items() if s["status"] != "active"}
    for city, status in sorted(skipped.items()):
        module.warn(
            f"distribution skips {city}: its status is {status['status']} ({status['reason']}, {status['date']}, "
            f"{status['source']}); it gets no policy, AppRole, secret_id or key until an explicit active entry"
        )
    for missing in plan["missing_versions"]:
        module.warn(f"rotation needed: {missing}")
    return {
        "changed": False,
        "active": active,
        "skipped": skipped,
        "targets": effective_targets(p["targets"], plan, active),
        "issue": plan["issue"],
        "rotation": plan,
    }


def main() -> None:
    targets = {"targets": argspec.TARGETS["targets"]}
    TunionModule(targets, argspec.OPENBAO, argspec.STATUS, requires=[HVAC_REQUIREMENT]).run(run)


if __name__ == "__main__":
    main()
