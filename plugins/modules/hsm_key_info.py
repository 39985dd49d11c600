#!/usr/bin/python
# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: hsm_key_info
short_description: List the keys in a PKCS#11 token, with KCVs and attributes, never values
description:
  - Lists the keys of a token - label, CKA_ID, class, type, version and holder (parsed from the project's label
    scheme), algorithm, KCV, validity and attributes. Key values are never read.
  - The KCV is computed inside the HSM (docs/hsm.md). AES keys use O(kcv_method), or the catalogue's method when
    O(catalogue) is given.
extends_documentation_fragment:
  - tunion.keymgmt.attributes
  - tunion.keymgmt.attributes.no_diff
  - tunion.keymgmt.pkcs11
options:
  user_pin:
    required: true
  label_prefix:
    description: Only objects whose label starts with this (for example V(consumption.)).
    type: str
  object_class:
    description: Which objects to list.
    type: str
    choices: [secret_key, public_key, private_key, all]
    default: secret_key
  kcv_method:
    description:
      - AES KCV method. V(ecb) is the first 3 bytes of AES-ECB over 16 zero bytes (PKCS#11 CKA_CHECK_VALUE),
        V(cmac) the first 3 bytes of AES-CMAC over 16 zero bytes. 3DES keys always use ECB over 8 zero bytes.
    type: str
    choices: [ecb, cmac]
    default: ecb
  catalogue:
    description:
      - The key catalogue. Gives each AES key type's KCV method and the validity periods that SoftHSM cannot
        return for private objects.
    type: list
    elements: dict
"""

EXAMPLES = r"""
- name: What the province token holds
  tunion.keymgmt.hsm_key_info:
    token_label: tunion-province
    user_pin: "{{ hsm_user_pin }}"
    catalogue: "{{ key_catalogue }}"
  register: province_keys
"""

RETURN = r"""
keys:
  description: One entry per object.
  returned: success
  type: list
  elements: dict
  contains:
    label: {description: CKA_LABEL., type: str}
    id: {description: CKA_ID in hex., type: str}
    key_class: {description: 'consumption, recharge or internal (from the label scheme).', type: str}
    type: {description: Key type name (from the label scheme)., type: str}
    version: {description: Key version (one byte)., type: int}
    holder: {description: 'province, city-<code> or sam-<serial>.', type: str}
    algorithm: {description: '3DES-2KEY, AES-128, AES-256 or RSA-<bits>.', type: str}
    kcv: {description: Key check value in upper-case hex (3 bytes)., type: str}
    kcv_method: {description: 'ecb or cmac.', type: str}
    not_before: {description: Start of validity (ISO date)., type: str}
    not_after: {description: End of validity (ISO date)., type: str}
    attributes: {description: 'Boolean PKCS#11 attributes: sensitive, extractable, derive and the others.', type: dict}
count:
  description: Number of objects listed.
  returned: success
  type: int
"""

from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils import argspec
from ansible_collections.tunion.keymgmt.plugins.module_utils.base import Spec, TunionModule
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.names import parse_key_label
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.catalogue import load_catalogue
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.session import PKCS11_REQUIREMENT
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import session_from_params

OPTIONS: Spec = {
    "user_pin": {"type": "str", "no_log": True, "required": True},
    "label_prefix": {"type": "str"},
    "object_class": {
        "type": "str",
        "default": "secret_key",
        "choices": ["secret_key", "public_key", "private_key", "all"],
    },
    "kcv_method": {"type": "str", "default": "ecb", "choices": ["ecb", "cmac"]},
    "catalogue": {"type": "list", "elements": "dict"},
}


def run(module: TunionModule) -> dict[str, Any]:
    p = module.params
    cat = load_catalogue(p["catalogue"]) if p["catalogue"] is not None else None
    methods = {e.name: e.kcv_method for e in cat} if cat else {}
    keys = []
    with session_from_params(p, rw=False) as tok:
        if cat is not None:
            tok.validity_lookup = cat.validity_for
        for obj in tok.list_keys(None if p["object_class"] == "all" else p["object_class"]):
            label = obj.label if hasattr(obj, "label") else ""
            if p["label_prefix"] and not str(label).startswith(p["label_prefix"]):
                continue
            name = parse_key_label(str(label))
            method = methods.get(name.key_type, p["kcv_method"]) if name else p["kcv_method"]
            keys.append(tok.describe(obj, kcv_method=method))
    keys.sort(key=lambda k: k["label"])
    return {"changed": False, "keys": keys, "count": len(keys)}


def main() -> None:
    TunionModule(OPTIONS, argspec.PKCS11, requires=[PKCS11_REQUIREMENT]).run(run)


if __name__ == "__main__":
    main()
