#!/usr/bin/python
# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: keyblock_status
short_description: Compare the KCVs the cities report with the province's own
description:
  - Runs at the province. For each city, computes in the province HSM the KCV of every granted key, reads the
    status the city reported to C(cities/<city>/status) (M(tunion.keymgmt.keyblock_install)), and lists every
    difference - a key not installed, a different KCV, a city that never reported, a key installed but no longer
    granted.
  - Read-only - never changes anything.
extends_documentation_fragment:
  - tunion.keymgmt.attributes
  - tunion.keymgmt.attributes.no_diff
  - tunion.keymgmt.openbao
  - tunion.keymgmt.pkcs11
  - tunion.keymgmt.distribution.targets
options:
  fail_on_difference:
    description: Fail the task, naming the cities, when any difference is found.
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Compare city KCVs with the province's
  tunion.keymgmt.keyblock_status:
    targets: "{{ distribution_targets }}"
"""

RETURN = r"""
differences:
  description: One entry per difference, with city, key (block name), province_kcv, city_kcv and problem.
  type: list
  elements: dict
  returned: always
  sample: [{"city": "zhuhai", "key": "load.v01", "province_kcv": "1A2B3C", "city_kcv": null,
            "problem": "city never reported"}]
matched:
  description: Number of (city, key) pairs whose KCVs match.
  type: int
  returned: always
cities_out_of_step:
  description: Names of the cities with at least one difference.
  type: list
  elements: str
  returned: always
"""

from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils import argspec
from ansible_collections.tunion.keymgmt.plugins.module_utils.base import Spec, TunionModule
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.distribution.compare import (
    compare_status,
    expected_kcvs,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.distribution.keys import use_catalogue
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.grants import parse_targets
from ansible_collections.tunion.keymgmt.plugins.module_utils.openbao.client import HVAC_REQUIREMENT, connect
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.session import PKCS11_REQUIREMENT
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import session_from_params

OPTIONS: Spec = {"fail_on_difference": {"type": "bool", "default": True}}


def run(module: TunionModule) -> dict[str, Any]:
    p = module.params
    targets = parse_targets(p["targets"], p["catalogue"])  # refused before anything is reached
    bao = module.opened(connect(p))
    with session_from_params(p, rw=False) as hsm:
        use_catalogue(hsm, p["catalogue"])
        expected = expected_kcvs(hsm, targets)
    reported = {}
    for target in targets:
        record = bao.kv_read(bao.layout.mount, bao.layout.city(target.city, "status"))
        reported[target.city] = record["data"] if record else None
    differences = compare_status(expected, reported)
    cities = sorted({d["city"] for d in differences})
    total = sum(len(v) for v in expected.values())
    result: dict[str, Any] = {
        "changed": False,
        "differences": differences,
        "matched": total - sum(1 for d in differences if d["province_kcv"] is not None),
        "cities_out_of_step": cities,
    }
    if differences and p["fail_on_difference"]:
        result["failed"] = True
        result["msg"] = (
            f"{len(differences)} KCV difference(s) in {len(cities)} cit{'y' if len(cities) == 1 else 'ies'}: "
            f"{', '.join(cities)} - see differences; re-run playbooks/distribute.yml once they are reachable"
        )
    return result


def main() -> None:
    groups = (argspec.OPENBAO, argspec.PKCS11, argspec.TARGETS)
    TunionModule(OPTIONS, *groups, requires=[HVAC_REQUIREMENT, PKCS11_REQUIREMENT]).run(run)


if __name__ == "__main__":
    main()
