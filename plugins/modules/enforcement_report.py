#!/usr/bin/python
# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: enforcement_report
short_description: Write the enforcement report of a status change - every node, OpenBao, every SAM group
description:
  - Collects what the enforcement plays did (OpenBao, the province HSM, each city node, the SAM station, the SAM
    blacklist) and lists every part as C(enforced) (with the time), C(unreachable), or C(failed) (with the reason).
  - Keeps the pending parts durably in OpenBao (C(province/enforcement/state), versions kept), so the next run
    enforces them and its report says so (C(enforced ... (was unreachable since ...))).
  - Writes C(enforcement-<time>.json) and C(enforcement-<time>.txt), plus C(latest.json) and C(latest.txt), under
    O(report_dir) on the province host, whenever the run changed something or a part is (or was) pending.
extends_documentation_fragment:
  - tunion.keymgmt.attributes
  - tunion.keymgmt.attributes.no_diff
  - tunion.keymgmt.openbao
options:
  trigger:
    description: What started the run (for example C(enforce_status.yml) or C(revoke.yml shantou)).
    type: str
    default: enforce_status.yml
  started_at:
    description: When the run started (ISO 8601, UTC).
    type: str
  openbao_result:
    description: Registered result of M(tunion.keymgmt.openbao_city_revoke).
    type: dict
    required: true
  province_result:
    description: Registered result of M(tunion.keymgmt.city_hsm_revoke) at the province (its copies of city KEKs).
    type: dict
    default: {}
  blacklist_result:
    description: Registered result of M(tunion.keymgmt.sam_blacklist_publish).
    type: dict
    default: {}
  city_revoke:
    description:
      - Per city node, the registered result of M(tunion.keymgmt.city_hsm_revoke) (absent, skipped, unreachable and
        failed results are all understood).
    type: dict
    default: {}
  city_blacklist:
    description: Per city node, the registered result of M(tunion.keymgmt.sam_blacklist_install).
    type: dict
    default: {}
  stations:
    description: Per SAM station, the registered result of its blacklist installation.
    type: dict
    default: {}
  rotation:
    description:
      - Rotations in force (RV(tunion.keymgmt.openbao_city_revoke#module:rotation)) - new versions and who holds
        them with the province's KCV, retired and revoked versions, SAMs to reload.
    type: dict
    default: {}
  report_dir:
    description: Directory for the report files (on the province host).
    type: path
    default: ~/reports
  always_write:
    description: Write a report even when nothing changed and nothing is pending.
    type: bool
    default: false
attributes:
  check_mode:
    details: Builds the report and returns it; writes no file and no state.
"""

EXAMPLES = r"""
- name: Enforcement report
  tunion.keymgmt.enforcement_report:
    openbao_result: "{{ status_openbao }}"
    blacklist_result: "{{ status_blacklist }}"
    city_revoke: "{{ dict(groups['cities'] | zip(groups['cities'] | map('extract', hostvars)
                   | map(attribute='status_city_revoke', default={}))) }}"
    report_dir: "{{ status_report_dir }}"
"""

RETURN = r"""
written:
  description: Paths of the JSON and text reports written (empty when none was needed).
  type: dict
  returned: always
  sample: {"json": "/home/p/reports/enforcement-20261124T101500Z.json", "text": ".../enforcement-...txt"}
complete:
  description: True when every part is enforced.
  type: bool
  returned: always
summary:
  description: Number of parts per outcome.
  type: dict
  returned: always
  sample: {"enforced": 26, "unreachable": 1, "failed": 0}
pending:
  description: Parts not enforced yet, with their outcome and reason.
  type: list
  elements: dict
  returned: always
report:
  description: The whole report (as written to the JSON file).
  type: dict
  returned: always
"""

from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils import argspec
from ansible_collections.tunion.keymgmt.plugins.module_utils.base import Spec, TunionModule
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.enforcement import enforcement_pass
from ansible_collections.tunion.keymgmt.plugins.module_utils.openbao.client import HVAC_REQUIREMENT, connect

OPTIONS: Spec = {
    "trigger": {"type": "str", "default": "enforce_status.yml"},
    "started_at": {"type": "str"},
    "openbao_result": {"type": "dict", "required": True},
    "province_result": {"type": "dict", "default": {}},
    "blacklist_result": {"type": "dict", "default": {}},
    "city_revoke": {"type": "dict", "default": {}},
    "city_blacklist": {"type": "dict", "default": {}},
    "stations": {"type": "dict", "default": {}},
    "rotation": {"type": "dict", "default": {}},
    "report_dir": {"type": "path", "default": "~/reports"},
    "always_write": {"type": "bool", "default": False},
}


def run(module: TunionModule) -> dict[str, Any]:
    return enforcement_pass(module.params, lambda: module.opened(connect(module.params)), check_mode=module.check_mode)


def main() -> None:
    TunionModule(OPTIONS, argspec.OPENBAO, requires=[HVAC_REQUIREMENT]).run(run)


if __name__ == "__main__":
    main()
