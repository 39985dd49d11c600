# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Keys of the catalogue in an HSM (what module hsm_key does): generate, import from components, unwrap, diversify.

A key that exists is never replaced: a KCV that differs from the expected one is an error, and the key is left.
Clear components are wiped from memory once the HSM has them (粤交〔2019〕11号 第十六条).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.clock import today
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import ComponentError, HsmError
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.names import CITY_CODE_RE
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.algorithms import KCV_LENGTH, check_kcv
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.catalogue import (
    KeyTypeEntry,
    KeyVersion,
    load_catalogue,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.component import FORMAT, Component, component_of
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.policy import KeyPolicy
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import HsmToken, hsm_session


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


def _components(p: Mapping[str, Any], label: str) -> list[Component]:
    """The custodians' components for an absent key, each read as typed; a missing file is named, not guessed."""
    missing = p.get("missing_components") or []
    if missing:  # fewer components would only show as a KCV mismatch
        raise ComponentError(
            f"{label} is absent and {len(missing)} custodian component file(s) are missing: {', '.join(missing)}; "
            f"each custodian puts theirs there ({FORMAT}). Nothing was imported"
        )
    raw = p["components"] or []
    if not raw:
        raise HsmError(f"{label} is absent and source is 'components', but no components were given")
    return [component_of(c, f"component {i}") for i, c in enumerate(raw, 1)]


def _create(  # noqa: PLR0917
    tok: HsmToken,
    p: Mapping[str, Any],
    check_mode: bool,
    entry: KeyTypeEntry,
    ver: KeyVersion,
    label: str,
    key_id: bytes,
    expected: bytes | None,
) -> tuple[Any, str, bytes | None]:
    source = p["source"] or entry.source
    policy = _policy(entry, ver, p["trusted"])
    method = entry.kcv_method if entry.algorithm.startswith("AES") else "ecb"
    tok.require_algorithm(entry.algorithm, label)
    if source == "generate":
        if check_mode:
            return None, "generated", None
        key = tok.generate_secret(entry.algorithm, label, key_id, policy)
        return key, "generated", tok.kcv(key, method)
    if source == "components":
        given = _components(p, label)
        comps: list[bytearray] = []
        try:
            kcvs = [bytes(_hex(c.kcv, f"the KCV of component {i}")) for i, c in enumerate(given, 1)]
            comps = [_hex(c.value, f"component {i}") for i, c in enumerate(given, 1)]
            key, kcv = tok.import_components(
                entry.algorithm,
                comps,
                kcvs,
                expected_kcv=expected,
                label=label,
                id=key_id,
                policy=policy,
                kcv_method=method,
                check_mode=check_mode,
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
        mechanism = w.get("mechanism") or "aes-key-wrap-pad"

        def unwrap(as_label: str | None, as_id: bytes | None, as_policy: KeyPolicy) -> Any:
            algorithm = entry.algorithm
            return tok.unwrap(kek, blob, algorithm, label=as_label, id=as_id, policy=as_policy, mechanism=mechanism)

        # a session copy first: its KCV is checked before anything is stored
        probe_usage = "encrypt" if method == "ecb" else "mac"
        probe = unwrap(None, None, KeyPolicy(usage=probe_usage, token=False, extractable=False))
        try:
            kcv = tok.kcv(probe, method)
        finally:
            tok.destroy(probe)
        if expected is not None:
            check_kcv(f"{label}: the unwrapped key (nothing was stored)", kcv, expected)
        if check_mode:
            return None, "unwrapped", kcv
        return unwrap(label, key_id, policy), "unwrapped", kcv
    raise HsmError(f"unknown source {source!r}")


def ensure_key(p: Mapping[str, Any], *, check_mode: bool) -> dict[str, Any]:  # noqa: PLR0912, PLR0915 - master, then cities
    """What module hsm_key does: one key version of the catalogue present (generated, imported from components or
    unwrapped) or absent, and its per-city diversified keys (``diversify_for``)."""
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
    expected_txt = p["expected_kcv"] if p["expected_kcv"] is not None else ver.kcv
    expected = bytes(_hex(expected_txt, "expected_kcv")) if expected_txt is not None else None
    if expected is not None and len(expected) != KCV_LENGTH:  # refused before the HSM is opened
        raise HsmError(f"{label}: expected_kcv must be exactly {KCV_LENGTH} bytes ({2 * KCV_LENGTH} hex digits)")
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
    bad = [c for c in p["diversify_for"] if not CITY_CODE_RE.match(str(c))]
    if bad:  # a 5-digit code would still make a label (city-44010) and a key for no city
        raise HsmError(f"diversify_for: {', '.join(map(repr, bad))} is not a 6-digit city code; nothing was changed")
    city_labels = [(f"city-{c}", entry.label(ver.version, f"city-{c}"), c) for c in p["diversify_for"]]
    user_pin = None if p["trusted"] else p["user_pin"]
    so_pin = p["so_pin"] if p["trusted"] else None
    with hsm_session(p["pkcs11_library"], p["token_label"], user_pin, rw=not check_mode, so_pin=so_pin) as tok:
        tok.validity_lookup = cat.validity_for
        key = tok.find_key(label=label)
        if p["state"] == "absent":
            for holder, clabel, _code in city_labels:
                obj = tok.find_key(label=clabel)
                before[clabel] = "present" if obj else "absent"
                after[clabel] = "absent"
                if obj is not None:
                    if not check_mode:
                        tok.destroy(obj)
                    result["changed"] = True
                result["derived"].append({"holder": holder, "label": clabel, "kcv": None, "changed": obj is not None})
            before[label] = "present" if key else "absent"
            after[label] = "absent"
            if key is not None:
                if not check_mode:
                    tok.destroy(key)
                result.update(changed=True, action="destroyed")
            result["diff"] = {"before": before, "after": after}
            return result
        if key is not None:
            kcv = tok.kcv(key, method)
            if expected is not None:
                check_kcv(
                    f"{label} exists; refusing to replace it (state=absent removes it if it is wrong)", kcv, expected
                )
            result["kcv"] = kcv.hex().upper()
            before[label] = after[label] = result["kcv"]
        else:
            key, action, new_kcv = _create(tok, p, check_mode, entry, ver, label, key_id, expected)
            result.update(changed=True, action=action, kcv=new_kcv.hex().upper() if new_kcv else None)
            before[label] = "absent"
            after[label] = result["kcv"] or "(new key)"
        if city_labels:
            if key is not None:
                tok.check_validity(key, today())
            city_policy = KeyPolicy(usage="derive", start_date=ver.not_before, end_date=ver.not_after)
            for holder, clabel, code in city_labels:
                obj = tok.find_key(label=clabel)
                changed = obj is None
                if obj is None and not check_mode:
                    obj = tok.derive_pboc(key, code, label=clabel, id=entry.id(ver.version, holder), policy=city_policy)
                ckcv = tok.kcv(obj, method).hex().upper() if obj is not None else None
                before[clabel] = "absent" if changed else ckcv
                after[clabel] = ckcv or "(new key)"
                result["derived"].append({"holder": holder, "label": clabel, "kcv": ckcv, "changed": changed})
                result["changed"] = result["changed"] or changed
    result["diff"] = {"before": before, "after": after}
    return result
