#!/usr/bin/python
# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: city_hsm_revoke
short_description: Destroy the keys a revoked city holds in an HSM, and say what was destroyed
description:
  - Destroys every object in the token whose label names the holder C(city-<city code>) - the keys it was granted,
    its KEKs (every version) and its RSA transport pair (粤交〔2019〕11号 第十七条, the keys are taken back).
  - On the city node it runs as the city's own unix user with the user PIN. At the province it removes the
    province's copies of that city's KEK and public key (O(key_types)=[kek, transport_rsa], with the SO PIN -
    the province's KEKs are trusted objects, which only the security officer handles).
  - On an active city's node, with O(key_versions), it destroys only the keys of those versions - retired at the
    end of a rotation's grace period, or revoked by a C(key_versions) status.
  - Returns the label, object class and KCV (computed in the HSM before destruction) of each object destroyed;
    never a value. A second run finds nothing and changes nothing.
extends_documentation_fragment:
  - tunion.keymgmt.attributes
  - tunion.keymgmt.attributes.full
  - tunion.keymgmt.pkcs11
options:
  city_codes:
    description: Six-digit codes of the revoked cities whose objects are destroyed.
    type: list
    elements: str
    required: true
  key_types:
    description: Only objects of these key types (for example V(kek), V(transport_rsa)); empty means all.
    type: list
    elements: str
    default: []
  key_versions:
    description: Only the objects of these key versions, C(<type>.v<VV>) (for example V(load_auth.v01)).
    type: list
    elements: str
    default: []
attributes:
  check_mode:
    details: Lists what would be destroyed, destroys nothing.
"""

EXAMPLES = r"""
- name: Destroy a revoked city's keys on its own node
  tunion.keymgmt.city_hsm_revoke:
    token_label: "{{ hsm_token_label }}"
    user_pin: "{{ hsm_user_pin }}"
    city_codes: ["{{ city_code }}"]

- name: Destroy the province's copies of the revoked cities' KEKs and public keys
  tunion.keymgmt.city_hsm_revoke:
    token_label: tunion-province
    so_pin: "{{ hsm_so_pin }}"
    city_codes: ["440500"]
    key_types: [kek, transport_rsa]

- name: Destroy a retired key version on an active city's node
  tunion.keymgmt.city_hsm_revoke:
    token_label: "{{ hsm_token_label }}"
    user_pin: "{{ hsm_user_pin }}"
    city_codes: ["{{ city_code }}"]
    key_versions: [load_auth.v01]
"""

RETURN = r"""
destroyed:
  description: What was (or in check mode would be) destroyed - label, object class, KCV of secret keys.
  type: list
  elements: dict
  returned: always
  sample: [{"label": "recharge.load.v01.city-440500", "object_class": "secret_key", "kcv": "8CA64D"}]
token:
  description: Label of the token worked on.
  type: str
  returned: always
"""

from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils import argspec
from ansible_collections.tunion.keymgmt.plugins.module_utils.base import Spec, TunionModule
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import HsmError, RevocationError
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.names import CITY_CODE_RE, city_holder
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows import journal
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.holder_keys import destroy_holder_objects
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.status import is_key_version, version_selector
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.session import PKCS11_REQUIREMENT
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import session_from_params

OPTIONS: Spec = {
    "city_codes": {"type": "list", "elements": "str", "required": True},
    "key_types": {"type": "list", "elements": "str", "no_log": False, "default": []},
    "key_versions": {"type": "list", "elements": "str", "no_log": False, "default": []},
}


def run(module: TunionModule) -> dict[str, Any]:
    p = module.params
    codes = [str(c) for c in p["city_codes"]]
    for code in codes:
        if not CITY_CODE_RE.match(code):
            raise RevocationError(f"city code {code!r} is not six digits; nothing was destroyed")
    bad = [v for v in p["key_versions"] if not is_key_version(v)]
    if bad:
        raise RevocationError(f"key versions {bad} are not <type>.v<VV> (e.g. load_auth.v01); nothing was destroyed")
    if not p["user_pin"] and not p["so_pin"]:
        raise HsmError("give user_pin (city node) or so_pin (the province's trusted KEK copies)")
    destroyed: list[dict[str, str]] = []
    with session_from_params(p, rw=True, so=bool(p["so_pin"])) as hsm:
        for code in codes:
            destroyed += destroy_holder_objects(
                hsm,
                city_holder(code),
                key_types=p["key_types"],
                select=version_selector(p["key_versions"]) if p["key_versions"] else None,
                check_mode=module.check_mode,
            )
    result: dict[str, Any] = {"changed": bool(destroyed), "destroyed": destroyed, "token": p["token_label"]}
    if module._diff and destroyed:
        result["diff"] = {"before": "".join(f"{d['label']}\n" for d in destroyed), "after": ""}
    return result


def main() -> None:
    TunionModule(
        OPTIONS, argspec.PKCS11, requires=[PKCS11_REQUIREMENT], journal="destroy", journal_keys=journal.destroyed_keys
    ).run(run)


if __name__ == "__main__":
    main()
