#!/usr/bin/python
# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: sam_registry_info
short_description: Query the SAM registry - desired assignments and what each SAM was observed to hold
description:
  - Validates the desired registry (CSV) and answers, per SAM serial, per city or per holder, which keys were loaded
    and verified (key type, version, KCV, time, station, operator) from the observed registry on the SAM station.
  - Lists the desired SAMs that have no verified key yet (O(pending)).
extends_documentation_fragment:
  - tunion.keymgmt.attributes
  - tunion.keymgmt.attributes.no_diff
options:
  registry:
    description: The desired registry CSV.
    type: path
    required: true
  observed_db:
    description: The observed registry (SQLite) written by tunion.keymgmt.sam_inject.
    type: path
  serial:
    description: Only this SAM.
    type: str
  city_code:
    description: Only SAMs of this city.
    type: str
  holder:
    description: Only SAMs of this holder (transport company or agent).
    type: str
  pending:
    description: Also list active SAMs of the selection without any verified key.
    type: bool
    default: false
  limit:
    description: At most this many records (0 - all).
    type: int
    default: 1000
"""

EXAMPLES = r"""
- name: What the Guangzhou metro's SAMs hold
  tunion.keymgmt.sam_registry_info:
    registry: "{{ sam_registry_csv }}"
    observed_db: "{{ sam_observed_db }}"
    holder: guangzhou-metro
  register: gz
"""

RETURN = r"""
desired:
  description: Desired SAMs of the selection per status, and in total.
  returned: always
  type: dict
loaded:
  description: Verified keys of the selection (serial, key_type, version, algorithm, kcv, city_code, holder,
    station, operator, loaded_at, verified_by).
  returned: when observed_db exists
  type: list
  elements: dict
per_city:
  description: Number of SAMs with verified keys, per city code.
  returned: when observed_db exists
  type: dict
per_holder:
  description: Number of SAMs with verified keys, per holder.
  returned: when observed_db exists
  type: dict
pending:
  description: Active SAMs of the selection without a verified key (first 1000).
  returned: with O(pending)
  type: list
  elements: str
"""

import os
from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils.base import Spec, TunionModule
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.sam_registry import Registry
from ansible_collections.tunion.keymgmt.plugins.module_utils.registry_store.sqlite import Observed

OPTIONS: Spec = {
    "registry": {"type": "path", "required": True},
    "observed_db": {"type": "path"},
    "serial": {"type": "str"},
    "city_code": {"type": "str"},
    "holder": {"type": "str"},
    "pending": {"type": "bool", "default": False},
    "limit": {"type": "int", "default": 1000},
}


def run(module: TunionModule) -> dict[str, Any]:
    p = module.params
    reg = Registry.load(p["registry"])
    sel = [
        a
        for a in reg.rows.values()
        if (not p["serial"] or a.serial == p["serial"].upper())
        and (not p["city_code"] or a.city_code == p["city_code"])
        and (not p["holder"] or a.holder == p["holder"])
    ]
    desired: dict[str, int] = {"total": len(sel)}
    for a in sel:
        desired[a.status] = desired.get(a.status, 0) + 1
    result: dict[str, Any] = {"changed": False, "desired": desired}
    if p["observed_db"] and os.path.exists(p["observed_db"]):
        obs = Observed(p["observed_db"])
        try:
            serial, city_code, holder = p["serial"] or "", p["city_code"] or "", p["holder"] or ""
            result["loaded"] = obs.query(serial=serial, city_code=city_code, holder=holder, limit=p["limit"])
            result["per_city"] = obs.summary("city_code")
            result["per_holder"] = obs.summary("holder")
            if p["pending"]:
                have = {r["serial"] for r in obs.query(serial=serial, city_code=city_code, holder=holder)}
                result["pending"] = [a.serial for a in sel if a.status == "active" and a.serial not in have][:1000]
        finally:
            obs.close()
    elif p["pending"]:
        result["pending"] = [a.serial for a in sel if a.status == "active"][:1000]
    return result


def main() -> None:
    TunionModule(OPTIONS).run(run)


if __name__ == "__main__":
    main()
