#!/usr/bin/python
# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: hsm_key
short_description: Manage one catalogue key (type and version) in a PKCS#11 token, and its per-city diversified keys
description:
  - Makes sure the key O(key) version O(version) of the catalogue exists in the token (O(state=present)) or does
    not (O(state=absent)). The catalogue is validated first; nothing touches the token if it breaks a rule.
  - The key is labelled C(<class>.<type>.v<VV>.<holder>) with a matching CKA_ID (docs/hsm.md), is sensitive, and can
    leave the HSM only wrapped under a trusted KEK (CKA_WRAP_WITH_TRUSTED). Its validity goes into
    CKA_START_DATE/CKA_END_DATE, and a key outside its validity is refused for use.
  - "Sources: V(generate) inside the HSM; V(components): 2 or 3 clear components entered by different custodians,
    each checked against its own KCV, combined inside the HSM and checked against the expected KCV before anything
    is stored; V(wrapped): a key block under a KEK already in the token. The catalogue entry gives the default."
  - With O(diversify_for), also derives the key's per-city keys inside the HSM by PBOC diversification
    C(DK = 3DES(MK, D) || 3DES(MK, ~D)) with CKM_DES3_ECB_ENCRYPT_DATA, D being the city code.
  - Returns KCVs, never values. 3DES KCV is the first 3 bytes of ECB over 8 zero bytes; for AES the method is the
    catalogue's C(kcv_method) (V(ecb) or V(cmac), over 16 zero bytes).
  - A key that exists is left alone (C(changed=false)); if its KCV differs from the expected one the module fails
    rather than replace it.
extends_documentation_fragment:
  - tunion.keymgmt.attributes
  - tunion.keymgmt.attributes.full
  - tunion.keymgmt.pkcs11
options:
  catalogue:
    description: The key catalogue (validated before the token is touched).
    type: list
    elements: dict
    required: true
  key:
    description: Key type name in the catalogue, for example V(purchase).
    type: str
    required: true
  version:
    description: Key version (one byte, as on PBOC cards).
    type: int
    required: true
  holder:
    description: Holder part of the label; V(province) for the province's master keys.
    type: str
    default: province
  state:
    description: Whether the key (and the O(diversify_for) keys) should exist.
    type: str
    choices: [present, absent]
    default: present
  source:
    description: Where a missing key comes from; defaults to the catalogue entry's source.
    type: str
    choices: [generate, components, wrapped]
  components:
    description:
      - Clear key components for O(source=components), one per custodian, each with its KCV. They come from the
        custodians' own files or prompts, never from the inventory. Ignored when the key already exists.
      - Each is the text of a custodian's component file, two lines C(value) (the component in hex, 16 bytes for
        3DES-2KEY and AES-128, 32 for AES-256) and C(kcv) (its KCV in hex, as printed on the custodian's form), read
        exactly as typed; or a mapping C({value, kcv}) whose values are text. A number where hex was typed (what
        C(from_yaml) makes of an unquoted C(043430)) is refused.
    type: list
    elements: raw
  missing_components:
    description:
      - Custodian component files that were looked for and not found. When the key is absent, the module names them
        and imports nothing (fewer components would only show as a KCV mismatch). Ignored when the key exists.
    type: list
    elements: str
    default: []
  expected_kcv:
    description: KCV the key must have; defaults to the catalogue version's C(kcv).
    type: str
  wrapped:
    description: Key block for O(source=wrapped).
    type: dict
    suboptions:
      blob:
        description: The wrapped key, hex.
        type: str
        required: true
      kek_label:
        description: Label of the KEK in the token; defaults to the catalogue entry's C(wrapped_by).
        type: str
      mechanism:
        description: Unwrapping mechanism.
        type: str
        choices: [aes-key-wrap-pad, aes-key-wrap, rsa-oaep]
        default: aes-key-wrap-pad
  diversify_for:
    description:
      - City codes to derive per-city keys for (label holder C(city-<code>)); each is D for PBOC diversification.
      - Only for key types with C(scope=city) in the catalogue.
    type: list
    elements: str
    default: []
  trusted:
    description:
      - Create the key as a trusted KEK (CKA_TRUSTED, not private) so that keys can be wrapped under it. Needs
        O(so_pin), because only the security officer may mark a key trusted; O(user_pin) is then not used.
    type: bool
    default: false
attributes:
  check_mode:
    details: In check mode components are still checked against their KCVs (with transient session objects).
"""

EXAMPLES = r"""
- name: Generate the load master key (recharge class) and derive it for every city
  tunion.keymgmt.hsm_key:
    token_label: tunion-province
    user_pin: "{{ hsm_user_pin }}"
    catalogue: "{{ key_catalogue }}"
    key: load
    version: 1
    diversify_for: "{{ groups['cities'] | map('extract', hostvars, 'city_code') | list }}"

- name: Import the Ministry's purchase master key from three custodians' components
  tunion.keymgmt.hsm_key:
    token_label: tunion-province
    user_pin: "{{ hsm_user_pin }}"
    catalogue: "{{ key_catalogue }}"
    key: purchase
    version: 1
    source: components
    components:  # each file's text, read as typed (not from_yaml, which makes a number of an unquoted 043430)
      - "{{ lookup('ansible.builtin.file', custodian_dir ~ '/custodian-1/purchase-v01.yml') }}"
      - "{{ lookup('ansible.builtin.file', custodian_dir ~ '/custodian-2/purchase-v01.yml') }}"
      - "{{ lookup('ansible.builtin.file', custodian_dir ~ '/custodian-3/purchase-v01.yml') }}"
  no_log: true
"""

RETURN = r"""
label:
  description: CKA_LABEL of the key.
  returned: always
  type: str
  sample: consumption.purchase.v01.province
id:
  description: CKA_ID of the key, hex.
  returned: always
  type: str
kcv:
  description: KCV of the key (hex, 3 bytes); null when absent or in check mode for a key that would be generated.
  returned: always
  type: str
kcv_method:
  description: V(ecb) or V(cmac).
  returned: always
  type: str
action:
  description: What was (or would be) done to the key - V(none), V(generated), V(imported), V(unwrapped), V(destroyed).
  returned: always
  type: str
derived:
  description: Per-city keys, one entry per O(diversify_for) code.
  returned: always
  type: list
  elements: dict
  contains:
    holder: {description: city-<code>., type: str}
    label: {description: CKA_LABEL., type: str}
    kcv: {description: KCV (hex)., type: str}
    changed: {description: Whether this key was (or would be) created or destroyed., type: bool}
"""

from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils import argspec
from ansible_collections.tunion.keymgmt.plugins.module_utils.base import Spec, TunionModule
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows import journal
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.hsm_keys import ensure_key
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.session import PKCS11_REQUIREMENT

OPTIONS: Spec = {
    "catalogue": {"type": "list", "elements": "dict", "required": True},
    "key": {"type": "str", "required": True, "no_log": False},
    "version": {"type": "int", "required": True},
    "holder": {"type": "str", "default": "province"},
    "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
    "source": {"type": "str", "choices": ["generate", "components", "wrapped"]},
    # the text of each custodian's file (read as typed, formats/component.py), or {value, kcv}: clear components
    "components": {"type": "list", "elements": "raw", "no_log": True},
    "missing_components": {"type": "list", "elements": "str", "default": []},
    "expected_kcv": {"type": "str"},
    "wrapped": {
        "type": "dict",
        "options": {
            "blob": {"type": "str", "required": True},
            "kek_label": {"type": "str"},
            "mechanism": {
                "type": "str",
                "default": "aes-key-wrap-pad",
                "choices": ["aes-key-wrap-pad", "aes-key-wrap", "rsa-oaep"],
            },
        },
    },
    "diversify_for": {"type": "list", "elements": "str", "default": []},
    "trusted": {"type": "bool", "default": False},
}


def run(module: TunionModule) -> dict[str, Any]:
    return ensure_key(module.params, check_mode=module.check_mode)


def main() -> None:
    TunionModule(
        OPTIONS,
        argspec.PKCS11,
        requires=[PKCS11_REQUIREMENT],
        journal=journal.hsm_key_operation,
        required_if=[("trusted", False, ("user_pin",))],
    ).run(run)


if __name__ == "__main__":
    main()
