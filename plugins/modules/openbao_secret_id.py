#!/usr/bin/python
# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: openbao_secret_id
short_description: Issue response-wrapped, single-use AppRole secret_ids for city nodes
description:
  - For each city, reads the role_id of AppRole C(city-<name>) and issues a new secret_id, response-wrapped -
    OpenBao returns only a single-use wrapping token with a short life. The city node unwraps it itself
    (M(tunion.keymgmt.city_enrol), M(tunion.keymgmt.keyblock_install)); a wrapping token that someone else
    unwrapped first makes the city's unwrap fail, so an interception shows.
  - Issuing a login credential is not a change of managed state (like a login), so the module reports
    C(changed=false). Run the task with C(no_log=true) - its result holds the credentials.
extends_documentation_fragment:
  - tunion.keymgmt.attributes
  - tunion.keymgmt.attributes.no_diff
  - tunion.keymgmt.openbao
options:
  cities:
    description: Cities to issue a credential for.
    type: list
    elements: str
    required: true
  purposes:
    description:
      - One credential per purpose per city, e.g. V(install), or V(enrol) and V(install) for a city enrolling now.
      - Per-city overrides go in O(extra_purposes).
    type: list
    elements: str
    default: [install]
  extra_purposes:
    description: City name to a list of additional purposes for that city only.
    type: dict
    default: {}
  wrap_ttl:
    description: Life of each wrapping token.
    type: str
    default: 5m
attributes:
  check_mode:
    details: In check mode nothing is issued and the credentials are empty.
"""

EXAMPLES = r"""
- name: Credentials for this run (the result holds secrets)
  tunion.keymgmt.openbao_secret_id:
    cities: "{{ groups['cities'] }}"
  register: city_credentials
  no_log: true
"""

RETURN = r"""
credentials:
  description: City name to purpose to C(role_name), C(role_id) and C(wrapped_secret_id). Secret; use no_log.
  type: dict
  returned: success
issued:
  description: How many wrapped secret_ids were issued.
  type: int
  returned: always
  sample: 21
"""

from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils import argspec
from ansible_collections.tunion.keymgmt.plugins.module_utils.base import Spec, TunionModule
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.names import check_cities
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.distribution.access import (
    AccessSettings,
    issue_wrapped_secret_id,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.openbao.client import HVAC_REQUIREMENT, connect

OPTIONS: Spec = {
    "cities": {"type": "list", "elements": "str", "required": True},
    "purposes": {"type": "list", "elements": "str", "default": ["install"]},
    "extra_purposes": {"type": "dict", "default": {}},
    "wrap_ttl": {"type": "str", "default": "5m"},
}


def run(module: TunionModule) -> dict[str, Any]:
    p = module.params
    settings = AccessSettings(approle_mount=p["approle_mount"])
    credentials: dict[str, dict[str, Any]] = {}
    check_cities(p["cities"])  # refused before anything is reached
    if module.check_mode:
        return {"changed": False, "credentials": {}, "issued": 0}
    bao = module.opened(connect(p))
    issued = 0
    for city in p["cities"]:
        purposes = list(dict.fromkeys(list(p["purposes"]) + list(p["extra_purposes"].get(city, []))))
        credentials[city] = {}
        for purpose in purposes:
            credentials[city][purpose] = issue_wrapped_secret_id(bao, city, settings, p["wrap_ttl"])
            issued += 1
    return {"changed": False, "credentials": credentials, "issued": issued}


def main() -> None:
    TunionModule(OPTIONS, argspec.OPENBAO, requires=[HVAC_REQUIREMENT]).run(run)


if __name__ == "__main__":
    main()
