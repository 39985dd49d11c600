#!/usr/bin/python
# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: openbao_city_access
short_description: Give each city its own, least-privilege way into OpenBao
description:
  - Makes sure the KV version 2 mount for key blocks exists and keeps every version, that the AppRole auth method
    is enabled, and that each city has a policy C(city-<name>) and an AppRole C(city-<name>).
  - A city policy allows only its own paths, C(cities/<name>/...) - its enrolment record and status report (write),
    its KEK envelope and key blocks (read). Any other city's path or the province's paths answer 403.
  - The AppRole issues single-use, short-lived secret_ids and short-lived tokens carrying only the city policy.
  - Runs at the province, with the province's own token (never the root token).
extends_documentation_fragment:
  - tunion.keymgmt.attributes
  - tunion.keymgmt.attributes.full
  - tunion.keymgmt.openbao
options:
  cities:
    description: Names of the cities (inventory host names of group C(cities)).
    type: list
    elements: str
    required: true
  max_versions:
    description: Versions kept per KV entry; V(0) keeps every version.
    type: int
    default: 0
  secret_id_ttl:
    description: Life of a city secret_id (it is also single-use).
    type: str
    default: 10m
  token_ttl:
    description: Life of a city token obtained by AppRole login.
    type: str
    default: 10m
  token_max_ttl:
    description: Longest a city token can be renewed to.
    type: str
    default: 15m
notes:
  - The audit device is declared in the OpenBao server configuration (OpenBao 2.x accepts it only there).
"""

EXAMPLES = r"""
- name: City policies and AppRoles
  tunion.keymgmt.openbao_city_access:
    cities: "{{ groups['cities'] }}"
"""

RETURN = r"""
changes:
  description: What was (or, in check mode, would be) created or updated.
  type: list
  elements: str
  returned: always
  sample: ["enable KV v2 at tunion-kb/", "policy city-guangzhou", "AppRole city-guangzhou"]
roles:
  description: AppRole name per city.
  type: dict
  returned: always
  sample: {"guangzhou": "city-guangzhou"}
"""

from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils import argspec
from ansible_collections.tunion.keymgmt.plugins.module_utils.base import Spec, TunionModule
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.names import check_cities
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.distribution.access import (
    AccessSettings,
    ensure_city_access,
    ensure_engines,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.openbao.client import HVAC_REQUIREMENT, connect

OPTIONS: Spec = {
    "cities": {"type": "list", "elements": "str", "required": True},
    "max_versions": {"type": "int", "default": 0},
    "secret_id_ttl": {"type": "str", "no_log": False, "default": "10m"},
    "token_ttl": {"type": "str", "no_log": False, "default": "10m"},
    "token_max_ttl": {"type": "str", "no_log": False, "default": "15m"},
}


def run(module: TunionModule) -> dict[str, Any]:
    p = module.params
    settings = AccessSettings.from_params(p)
    check_cities(p["cities"])  # refused before anything is reached
    bao = module.opened(connect(p))
    changes = ensure_engines(bao, settings, module.check_mode)
    for city in p["cities"]:
        changes += ensure_city_access(bao, city, settings, module.check_mode)
    result: dict[str, Any] = {
        "changed": bool(changes),
        "changes": changes,
        "roles": {city: bao.layout.role_name(city) for city in p["cities"]},
    }
    if module._diff:
        result["diff"] = {"before": "", "after": "".join(f"{c}\n" for c in changes)}
    return result


def main() -> None:
    TunionModule(OPTIONS, argspec.OPENBAO, requires=[HVAC_REQUIREMENT]).run(run)


if __name__ == "__main__":
    main()
