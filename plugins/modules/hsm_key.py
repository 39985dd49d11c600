#!/usr/bin/python
# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: hsm_key
short_description: Manage one catalogue key (type and version) in a PKCS#11 token, and its per-city diversified keys
version_added: 0.1.0
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
author: tunion-keyops engineers (@tunion-keyops)
extends_documentation_fragment:
  - tunion.keymgmt.attributes
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
    type: list
    elements: dict
    suboptions:
      value:
        description: The component in hex (16 bytes for 3DES-2KEY and AES-128, 32 for AES-256).
        type: str
        required: true
      kcv:
        description: KCV of this component (hex), as printed on the custodian's form.
        type: str
        required: true
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
    support: full
    details: In check mode components are still checked against their KCVs (with transient session objects).
  diff_mode:
    support: full
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
    components:
      - "{{ lookup('ansible.builtin.file', custodian_dir ~ '/custodian-1/purchase-v01.yml') | from_yaml }}"
      - "{{ lookup('ansible.builtin.file', custodian_dir ~ '/custodian-2/purchase-v01.yml') | from_yaml }}"
      - "{{ lookup('ansible.builtin.file', custodian_dir ~ '/custodian-3/purchase-v01.yml') | from_yaml }}"
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

import datetime as _dt
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tunion.keymgmt.plugins.module_utils.catalogue import (
    KeyTypeEntry,
    KeyVersion,
    load_catalogue,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.hsm import (
    HsmError,
    HsmToken,
    KeyPolicy,
    hsm_session,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.hsm_module import pkcs11_argument_spec, run_module


def _hex(value: str, what: str) -> bytearray:
    text = "".join(str(value).split())
    try:
        return bytearray.fromhex(text)
    except ValueError:
        raise HsmError(f"{what} is not hex") from None


def _policy(entry: KeyTypeEntry, ver: KeyVersion, trusted: bool) -> KeyPolicy:
    return KeyPolicy(
        usage=entry.usage,
        start_date=ver.not_before,
        end_date=ver.not_after,
        trusted=trusted,
        private=not trusted,
        extractable=not trusted if entry.usage == "kek" else True,
    )


def _create(  # noqa: PLR0917
    tok: HsmToken,
    module: AnsibleModule,
    entry: KeyTypeEntry,
    ver: KeyVersion,
    label: str,
    key_id: bytes,
    expected: bytes | None,
) -> tuple[Any, str, bytes | None]:
    p = module.params
    source = p["source"] or entry.source
    policy = _policy(entry, ver, p["trusted"])
    method = entry.kcv_method if entry.algorithm.startswith("AES") else "ecb"
    tok.require_algorithm(entry.algorithm, label)
    if source == "generate":
        if module.check_mode:
            return None, "generated", None
        key = tok.generate_secret(entry.algorithm, label, key_id, policy)
        return key, "generated", tok.kcv(key, method)
    if source == "components":
        raw = p["components"] or []
        if not raw:
            raise HsmError(f"{label} is absent and source is 'components', but no components were given")
        comps: list[bytearray] = []
        try:
            kcvs = [bytes(_hex(c["kcv"], f"the KCV of component {i}")) for i, c in enumerate(raw, 1)]
            comps = [_hex(c["value"], f"component {i}") for i, c in enumerate(raw, 1)]
            key, kcv = tok.import_components(
                entry.algorithm,
                comps,
                kcvs,
                expected_kcv=expected,
                label=label,
                id=key_id,
                policy=policy,
                kcv_method=method,
                check_mode=module.check_mode,
            )
        finally:
            for c in comps:
                c[:] = bytes(len(c))
        return key, "imported", kcv
    if source == "wrapped":
        w = p["wrapped"] or {}
        if not w.get("blob"):
            raise HsmError(f"{label} is absent and source is 'wrapped', but no wrapped.blob was given")
        kek_label = w.get("kek_label") or entry.wrapped_by
        if not kek_label:
            raise HsmError(f"{label}: give wrapped.kek_label or wrapped_by in the catalogue")
        kek = tok.get_key(kek_label)
        blob = bytes(_hex(w["blob"], "wrapped.blob"))
        probe_policy = KeyPolicy(usage="encrypt" if method == "ecb" else "mac", token=False, extractable=False)
        probe = tok.unwrap(
            kek,
            blob,
            entry.algorithm,
            label=None,
            id=None,
            policy=probe_policy,
            mechanism=w.get("mechanism") or "aes-key-wrap-pad",
        )
        try:
            kcv = tok.kcv(probe, method)
        finally:
            tok.destroy(probe)
        if expected is not None and kcv[: len(expected)] != expected:
            raise HsmError(
                f"{label}: the unwrapped key's KCV {kcv.hex().upper()} differs from the expected "
                f"{expected.hex().upper()}; nothing was stored"
            )
        if module.check_mode:
            return None, "unwrapped", kcv
        key = tok.unwrap(
            kek,
            blob,
            entry.algorithm,
            label=label,
            id=key_id,
            policy=policy,
            mechanism=w.get("mechanism") or "aes-key-wrap-pad",
        )
        return key, "unwrapped", kcv
    raise HsmError(f"unknown source {source!r}")


def _run(module: AnsibleModule) -> dict[str, Any]:  # noqa: PLR0912, PLR0915 - one pass over master then cities
    p = module.params
    cat = load_catalogue(p["catalogue"])
    try:
        entry = cat.entry(p["key"])
        ver = entry.version(p["version"])
    except KeyError as exc:
        raise HsmError(str(exc.args[0])) from None
    if p["diversify_for"] and entry.scope != "city":
        raise HsmError(f"key type {entry.name!r} has scope {entry.scope!r}; only city-scoped keys are diversified")
    if p["trusted"] and not p["so_pin"]:
        raise HsmError("trusted keys are created by the security officer: give so_pin")
    label = entry.label(ver.version, p["holder"])
    key_id = entry.id(ver.version, p["holder"])
    method = entry.kcv_method if entry.algorithm.startswith("AES") else "ecb"
    expected_txt = p["expected_kcv"] or ver.kcv
    expected = bytes(_hex(expected_txt, "expected_kcv")) if expected_txt else None
    result: dict[str, Any] = {
        "changed": False,
        "label": label,
        "id": key_id.hex(),
        "kcv": None,
        "kcv_method": method,
        "action": "none",
        "derived": [],
    }
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    city_labels = [(f"city-{c}", entry.label(ver.version, f"city-{c}"), c) for c in p["diversify_for"]]
    user_pin = None if p["trusted"] else p["user_pin"]
    so_pin = p["so_pin"] if p["trusted"] else None
    with hsm_session(p["pkcs11_library"], p["token_label"], user_pin, rw=not module.check_mode, so_pin=so_pin) as tok:
        tok.validity_lookup = cat.validity_for
        key = tok.find_key(label=label)
        if p["state"] == "absent":
            for holder, clabel, _code in city_labels:
                obj = tok.find_key(label=clabel)
                before[clabel] = "present" if obj else "absent"
                after[clabel] = "absent"
                if obj is not None:
                    if not module.check_mode:
                        tok.destroy(obj)
                    result["changed"] = True
                result["derived"].append({"holder": holder, "label": clabel, "kcv": None, "changed": obj is not None})
            before[label] = "present" if key else "absent"
            after[label] = "absent"
            if key is not None:
                if not module.check_mode:
                    tok.destroy(key)
                result.update(changed=True, action="destroyed")
            result["diff"] = {"before": before, "after": after}
            return result
        if key is not None:
            kcv = tok.kcv(key, method)
            if expected is not None and kcv[: len(expected)] != expected:
                raise HsmError(
                    f"{label} exists with KCV {kcv.hex().upper()}, but {expected.hex().upper()} is expected; "
                    "refusing to replace it (remove it with state=absent if it is really wrong)"
                )
            result["kcv"] = kcv.hex().upper()
            before[label] = after[label] = result["kcv"]
        else:
            key, action, kcv = _create(tok, module, entry, ver, label, key_id, expected)
            result.update(changed=True, action=action, kcv=kcv.hex().upper() if kcv else None)
            before[label] = "absent"
            after[label] = result["kcv"] or "(new key)"
        if city_labels:
            if key is not None:
                tok.check_validity(key, _dt.date.today())
            city_policy = KeyPolicy(usage="derive", start_date=ver.not_before, end_date=ver.not_after)
            for holder, clabel, code in city_labels:
                obj = tok.find_key(label=clabel)
                changed = obj is None
                if obj is None and not module.check_mode:
                    obj = tok.derive_pboc(key, code, label=clabel, id=entry.id(ver.version, holder), policy=city_policy)
                ckcv = tok.kcv(obj, method).hex().upper() if obj is not None else None
                before[clabel] = "absent" if changed else ckcv
                after[clabel] = ckcv or "(new key)"
                result["derived"].append({"holder": holder, "label": clabel, "kcv": ckcv, "changed": changed})
                result["changed"] = result["changed"] or changed
    result["diff"] = {"before": before, "after": after}
    return result


def main() -> None:
    spec = pkcs11_argument_spec()
    spec.update(
        catalogue={"type": "list", "elements": "dict", "required": True},
        key={"type": "str", "required": True, "no_log": False},
        version={"type": "int", "required": True},
        holder={"type": "str", "default": "province"},
        state={"type": "str", "default": "present", "choices": ["present", "absent"]},
        source={"type": "str", "choices": ["generate", "components", "wrapped"]},
        components={
            "type": "list",
            "elements": "dict",
            "options": {
                "value": {"type": "str", "required": True, "no_log": True},
                "kcv": {"type": "str", "required": True},
            },
        },
        expected_kcv={"type": "str"},
        wrapped={
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
        diversify_for={"type": "list", "elements": "str", "default": []},
        trusted={"type": "bool", "default": False},
    )
    module = AnsibleModule(
        argument_spec=spec, supports_check_mode=True, required_if=[("trusted", False, ("user_pin",))]
    )
    run_module(module, _run)


if __name__ == "__main__":
    main()
