#!/usr/bin/python
# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: openbao_city_revoke
short_description: Enforce the status of city operators in OpenBao (revoke, suspend, reinstate)
description:
  - Reads the desired status of city operators, holders, SAMs and key versions (O(status), the inventory's
    C(tunion_status)) together with the statuses recorded in OpenBao, and brings OpenBao in line for every city
    (粤交〔2019〕11号 第十七条).
  - C(revoked) - the city's policy is removed (its tokens are denied from that moment), every secret_id of its
    AppRole is destroyed, the AppRole is deleted, every token it holds is revoked through its accessor, every entry
    under C(cities/<city>/) (key blocks, KEK envelope, enrolment, status) is destroyed with all its versions and
    metadata, and the KEK's status entry C(province/kek-status/<city>) is marked revoked.
  - C(suspended) - the same access cut, but the key blocks and records are kept, so C(active) restores access
    (policy and AppRole recreated) without reissuing any key.
  - C(active) after C(suspended) or C(revoked) - policy and AppRole are recreated. A revoked city's material is gone;
    it must enrol again (C(playbooks/distribute.yml)).
  - The resulting status of every city, holder, SAM and key version is recorded under C(province/status/...) with
    every version kept, and returned for the later plays (city HSMs, SAM blacklist, report).
  - O(request) is the emergency form (C(playbooks/revoke.yml)) - one named holder, recorded with source
    C(emergency); it stays in force until the inventory has an entry for that name dated on or after it.
  - Shared keys (catalogue C(scope=province) or C(shared=true)) that a revoked city held are rotated - the rotation
    is recorded under C(province/rotation/<type>.v<VV>) (kept when the city is reinstated), distribution grants the
    next version to every active city, and the old version is retired O(grace_days) after the revocation.
  - Key versions that are retired (end of a grace period) or revoked (C(key_versions) status) lose their blocks in
    OpenBao, for every city; RV(hsm_destroy) names the active cities that still report holding them, whose HSMs must
    destroy them (M(tunion.keymgmt.city_hsm_revoke) with O(tunion.keymgmt.city_hsm_revoke#module:key_versions)).
  - A request or status naming an unknown holder, or the province itself, is refused before anything changes.
extends_documentation_fragment:
  - tunion.keymgmt.attributes
  - tunion.keymgmt.attributes.full
  - tunion.keymgmt.openbao
  - tunion.keymgmt.status
options:
  request:
    description:
      - Emergency form - C({name, status, reason, date}) for one holder (a city, a registry holder, a SAM serial).
      - C(status) defaults to V(revoked) and C(date) to today.
    type: dict
  grants:
    description:
      - What each city is granted, city to C([{key_type, version}]) (distribution's C(distribution_target.grants)).
      - With O(catalogue), used to plan the rotation of shared keys a revoked city held (RV(rotation)).
    type: dict
    default: {}
  secret_id_ttl:
    description: Secret_id life for a reinstated city's AppRole (as M(tunion.keymgmt.openbao_city_access)).
    type: str
    default: 10m
  token_ttl:
    description: Token life for a reinstated city's AppRole.
    type: str
    default: 10m
  token_max_ttl:
    description: Longest token life for a reinstated city's AppRole.
    type: str
    default: 15m
attributes:
  check_mode:
    details: Reports every action it would take (policy, secret_ids, AppRole, tokens, entries) and changes nothing.
notes:
  - Runs at the province with the province's own token (policy C(province-admin)); never with the root token.
"""

EXAMPLES = r"""
- name: Enforce the inventory's statuses in OpenBao
  tunion.keymgmt.openbao_city_revoke:
    cities: "{{ dict(groups['cities'] | zip(groups['cities'] | map('extract', hostvars, 'city_code'))) }}"
    status: "{{ tunion_status }}"
    sam_registry: "{{ status_sam_registry }}"

- name: Emergency revocation of one city
  tunion.keymgmt.openbao_city_revoke:
    cities: "{{ status_cities }}"
    request: {name: shantou, reason: "keys passed to an unauthorised party", status: revoked}
"""

RETURN = r"""
statuses:
  description: Status in force after this run, per kind and name (every city is listed).
  type: dict
  returned: always
  sample: {"cities": {"shantou": {"status": "revoked", "reason": "...", "date": "2026-11-24", "source": "inventory"}}}
cities:
  description: Per city that needed something, the actions taken (or that would be taken in check mode).
  type: dict
  returned: always
  sample: {"shantou": {"status": "revoked", "changed": true, "actions": ["policy city-shantou removed"]}}
revoked:
  description: Cities whose status is revoked (their nodes must destroy their keys).
  type: list
  elements: str
  returned: always
suspended:
  description: Cities whose status is suspended.
  type: list
  elements: str
  returned: always
active:
  description: Cities whose status is active.
  type: list
  elements: str
  returned: always
request:
  description: The emergency request as resolved (kind, name, status).
  type: dict
  returned: when O(request) is given
rotation:
  description:
    - Rotations in force for the shared keys (catalogue C(scope=province) or C(shared=true)) that revoked cities
      held - new version per key type, new grants for the active cities, retirement date of the old version,
      retired and revoked versions, SAMs to reload, and versions the catalogue still has to declare.
    - C(progress) says, per rotation, which active cities report the new version with the KCV of the province's
      block, which do not yet (run playbooks/distribute.yml), and which still report a retired old version.
  type: dict
  returned: always
hsm_destroy:
  description: Active cities whose last report lists a retired or revoked key version, with those versions.
  type: dict
  returned: always
  sample: {"guangzhou": ["load_auth.v01"]}
failures:
  description: Cities whose OpenBao side could not be enforced, with the reason.
  type: dict
  returned: always
"""

from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils import argspec
from ansible_collections.tunion.keymgmt.plugins.module_utils.base import Spec, TunionModule
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows import journal
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.city_revocation import enforce_statuses
from ansible_collections.tunion.keymgmt.plugins.module_utils.openbao.client import HVAC_REQUIREMENT, connect

OPTIONS: Spec = {
    "request": {"type": "dict"},
    "grants": {"type": "dict", "default": {}},
    "secret_id_ttl": {"type": "str", "no_log": False, "default": "10m"},
    "token_ttl": {"type": "str", "no_log": False, "default": "10m"},
    "token_max_ttl": {"type": "str", "no_log": False, "default": "15m"},
}


def run(module: TunionModule) -> dict[str, Any]:
    return enforce_statuses(
        module.params,
        lambda: module.opened(connect(module.params)),
        check_mode=module.check_mode,
        diff=module._diff,
    )


def main() -> None:
    TunionModule(
        OPTIONS,
        argspec.OPENBAO,
        argspec.STATUS,
        requires=[HVAC_REQUIREMENT],
        journal="revoke",
        journal_keys=journal.revoked_cities,
    ).run(run)


if __name__ == "__main__":
    main()
