#!/usr/bin/python
# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: keyblock_install
short_description: Fetch this city's key blocks from OpenBao, verify them, unwrap them into the city HSM, report back
description:
  - Runs on the city node as the city's own unix user, with the city's AppRole (response-wrapped, single-use
    secret_id; the token is revoked when the module ends).
  - Installs the city KEK from its RSA-OAEP envelope if the token does not hold it yet (checking its KCV first).
  - Fetches every block under C(cities/<city>/blocks/) and checks each one before anything is installed - the
    AES-CMAC over header and body, computed in the city HSM under the KEK-derived MAC key; the city code; the
    validity period; the KEK version; then the KCV of the key, unwrapped into a transient session object. One bad
    block fails the task and installs nothing.
  - Unwraps the keys the token lacks into it (sensitive, never extractable), and writes the installed KCVs, per key
    type and version, to C(cities/<city>/status) for the province to compare.
  - Each key gets only what the block's MAC-verified mode of use names - C(X) derive (PBOC masters and issuer keys),
    C(C) sign and verify (a MAC key used as it is) - never C(CKA_ENCRYPT), so the city PIN cannot compute card
    keys as data; and the block's validity as C(CKA_START_DATE)/C(CKA_END_DATE).
  - A key an older install left with other capabilities or without dates is destroyed and installed again from its
    verified block (RV(replaced)); in check mode that is the drift report.
  - Destroys the city's keys that no block carries any more (retired, revoked or withdrawn versions); its KEKs and
    RSA transport pair are never touched here.
  - A second run with nothing new changes nothing - blocks whose key is already in the token with the same KCV are
    verified and left alone, and the status is rewritten only if its content changed.
extends_documentation_fragment:
  - tunion.keymgmt.attributes
  - tunion.keymgmt.attributes.full
  - tunion.keymgmt.openbao
  - tunion.keymgmt.pkcs11
  - tunion.keymgmt.distribution.city
attributes:
  check_mode:
    details: Verifies everything (a session copy of a new KEK stands in for it) and installs nothing.
"""

EXAMPLES = r"""
- name: Install this city's granted keys
  tunion.keymgmt.keyblock_install:
    city: "{{ inventory_hostname }}"
    city_code: "{{ city_code }}"
"""

RETURN = r"""
installed:
  description: Labels of the keys this run unwrapped into the token.
  type: list
  elements: str
  returned: always
  sample: ["consumption.purchase.v01.city-440100"]
replaced:
  description:
    - Keys whose attributes differed from the installed policy (a capability such as C(CKA_ENCRYPT), no validity
      dates) and that this run destroyed and installed again from their verified block; in check mode, those it
      would. Each with the differences found.
  type: list
  elements: dict
  returned: when the city's blocks were checked
  sample: [{"label": "recharge.load.v01.city-440100", "drift": ["CKA_ENCRYPT True", "validity None..None"]}]
retired:
  description:
    - Keys destroyed because no block carries them any more (a version retired after a rotation, revoked, or no
      longer granted) - label, object class and KCV computed before destruction, never a value.
  type: list
  elements: dict
  returned: always
  sample: [{"label": "recharge.load_auth.v01.city-440100", "object_class": "secret_key", "kcv": "8CA64D"}]
keys:
  description: Every key the city holds from its blocks, per block name, with version and KCV (never a value).
  type: dict
  returned: always
  sample: {"purchase.v01": {"key_type": "purchase", "version": 1, "kcv": "8CA64D", "label": "..."}}
ids_set:
  description:
    - Objects the token held without the C(CKA_ID) of the label scheme (made before IDs were set) that this run gave
      their ID in place - the KEK, the RSA transport pair, granted keys; in check mode, those it would.
  type: list
  elements: str
  returned: when the city's blocks were checked
  sample: ["internal.kek.v01.city-440100", "recharge.load.v01.city-440100"]
kek:
  description: Version and KCV of the city KEK.
  type: dict
  returned: always
kek_installed:
  description: Whether this run installed the KEK.
  type: bool
  returned: always
status_reported:
  description: Whether the status record in OpenBao was (re)written.
  type: bool
  returned: always
note:
  description: In check mode, for a city that this same run would enrol first - nothing could be verified yet.
  type: str
  returned: when it applies
"""

from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils import argspec
from ansible_collections.tunion.keymgmt.plugins.module_utils.base import TunionModule
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows import journal
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.distribution.install import install_for_city
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.grants import check_city
from ansible_collections.tunion.keymgmt.plugins.module_utils.openbao.client import HVAC_REQUIREMENT, connect
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.session import PKCS11_REQUIREMENT
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import session_from_params


def run(module: TunionModule) -> dict[str, Any]:
    p = module.params
    check_city(p["city"], p["city_code"])  # refused before anything is reached
    bao = module.opened(connect(p))
    with session_from_params(p, rw=not module.check_mode) as hsm:
        result = install_for_city(bao, hsm, p["city"], p["city_code"], check_mode=module.check_mode)
    kek_info, installed = result["kek"], result["installed"]
    if module._diff and result["changed"]:
        lines = (
            ([f"KEK v{kek_info['version']} ({kek_info['kcv']})\n"] if result["kek_installed"] else [])
            + [f"{label}\n" for label in installed]
            + [f"{label}: CKA_ID set\n" for label in result.get("ids_set") or []]
            + [f"{r['label']}: replaced ({', '.join(r['drift'])})\n" for r in result.get("replaced") or []]
        )
        gone = "".join(f"{d['label']} ({d.get('kcv', '')})\n" for d in result.get("retired") or [])
        result["diff"] = {"before": gone, "after": "".join(lines)}
    return result


def main() -> None:
    groups = (argspec.OPENBAO, argspec.PKCS11, argspec.CITY)
    TunionModule(
        {},
        *groups,
        requires=[HVAC_REQUIREMENT, PKCS11_REQUIREMENT],
        journal="install",
        journal_keys=journal.installed_keys,
    ).run(run)


if __name__ == "__main__":
    main()
