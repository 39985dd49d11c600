#!/usr/bin/python
# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: keyblock_publish
short_description: Wrap each city's granted keys in the province HSM and publish them to OpenBao as key blocks
description:
  - Runs at the province. For every enrolled city (one whose RSA public key is in OpenBao, see
    M(tunion.keymgmt.city_enrol)) it makes sure the province token holds that city's AES-256 KEK of the wanted
    version, and that OpenBao holds the KEK wrapped under the city's public key with RSA-OAEP
    (C(cities/<city>/kek)). A KEK is trusted (only trusted KEKs may wrap the project's keys), so creating one or
    re-wrapping it needs O(so_pin); nothing needs the SO PIN when every envelope is current.
  - Then, for each granted key type and version, it builds a key block (docs/keyblock.md) inside the HSM - the key
    wrapped under the city KEK with AES key wrap with padding, and an AES-CMAC over header and body under a MAC key
    derived from the KEK - and writes it to C(cities/<city>/blocks/<type>.v<VV>) unless OpenBao already holds the
    identical block. Blocks are deterministic, so a second run writes nothing.
  - Raising a city's O(targets[].kek_version) rotates its KEK - a new KEK, a new envelope, every block re-made
    under it.
  - Blocks of the city that are no longer granted (a retired or revoked key version, a withdrawn grant) are
    destroyed in OpenBao, every version and the metadata (RV(cities) C(blocks_retired)).
  - Cities that have not enrolled yet are listed in RV(awaiting_enrolment) and skipped.
extends_documentation_fragment:
  - tunion.keymgmt.attributes
  - tunion.keymgmt.attributes.full
  - tunion.keymgmt.openbao
  - tunion.keymgmt.pkcs11
  - tunion.keymgmt.distribution.targets
options:
  issuer:
    description: Issuer named in every block header.
    type: str
    default: GD-TUNION-PROVINCE
"""

EXAMPLES = r"""
- name: Wrap and publish every city's granted keys
  tunion.keymgmt.keyblock_publish:
    so_pin: "{{ hsm_so_pin }}"
    targets:
      - city: guangzhou
        city_code: "440100"
        grants: [{key_type: purchase, version: 1}, {key_type: load, version: 1}]
"""

RETURN = r"""
cities:
  description:
    - Per city, the KEK envelope state, the blocks written and retired, and C(ids_set) - the city's KEK and public
      key in the province token given the C(CKA_ID) of the label scheme in place (made before IDs were set).
  type: dict
  returned: always
  sample: {"guangzhou": {"kek_version": 1, "envelope": "published", "blocks_written": ["purchase.v01"],
           "blocks_retired": ["load_auth.v01"], "ids_set": ["internal.kek.v01.city-440100"]}}
awaiting_enrolment:
  description: Cities with no public key in OpenBao yet; nothing was done for them.
  type: list
  elements: str
  returned: always
in_step:
  description:
    - Cities whose last status report shows the current KEK and exactly the KCVs of every block now published for
      them, so their installation pass has nothing to do (playbooks/distribute.yml skips them unless asked to verify).
  type: list
  elements: str
  returned: always
to_install:
  description: Every other city - enrolling, newly granted, rotated, or never reported.
  type: list
  elements: str
  returned: always
"""

from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils import argspec
from ansible_collections.tunion.keymgmt.plugins.module_utils.base import Spec, TunionModule
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import DistributionError
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows import journal
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.distribution.publish import publish_for_cities
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.grants import parse_targets
from ansible_collections.tunion.keymgmt.plugins.module_utils.openbao.client import HVAC_REQUIREMENT, connect
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.session import PKCS11_REQUIREMENT
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import session_from_params

OPTIONS: Spec = {"issuer": {"type": "str", "default": "GD-TUNION-PROVINCE"}}


def run(module: TunionModule) -> dict[str, Any]:
    p = module.params
    targets = parse_targets(p["targets"], p["catalogue"])  # refused before anything is reached
    bao = module.opened(connect(p))

    def so_session() -> Any:
        if not p["so_pin"]:
            raise DistributionError("a city needs a KEK envelope: creating or re-wrapping a trusted KEK needs so_pin")
        return session_from_params(p, so=True)

    result = publish_for_cities(
        bao,
        targets,
        so_session=so_session,
        user_session=lambda: session_from_params(p, rw=False),
        issuer=p["issuer"],
        catalogue=p["catalogue"],
        check_mode=module.check_mode,
    )
    if module._diff and result["changed"]:
        lines = [
            f"{city}: KEK v{r['kek_version']} envelope {r['envelope']}; blocks {', '.join(r['blocks_written'])}"
            + (f"; retired {', '.join(r['blocks_retired'])}" if r.get("blocks_retired") else "")
            + (f"; CKA_ID set on {', '.join(r['ids_set'])}" if r.get("ids_set") else "")
            + "\n"
            for city, r in sorted(result["cities"].items())
            if r["envelope"] != "unchanged" or r["blocks_written"] or r.get("blocks_retired") or r.get("ids_set")
        ]
        result["diff"] = {"before": "", "after": "".join(lines)}
    return result


def main() -> None:
    groups = (argspec.OPENBAO, argspec.PKCS11, argspec.TARGETS)
    TunionModule(
        OPTIONS,
        *groups,
        requires=[HVAC_REQUIREMENT, PKCS11_REQUIREMENT],
        journal="publish",
        journal_keys=journal.published_blocks,
    ).run(run)


if __name__ == "__main__":
    main()
