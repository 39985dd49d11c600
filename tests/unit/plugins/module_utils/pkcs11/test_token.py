"""HSM primitives against a throw-away SoftHSM2 token, checked against independent `cryptography` computations."""

from __future__ import annotations

import datetime as dt
import os
import subprocess

import pytest
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import HsmError
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.names import key_id, key_label
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.algorithms import (
    diversification_data,
    pboc_derivation_data,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.params import key_derivation_string_data
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.policy import KeyPolicy
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import HsmToken, hsm_session
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.constants import DEFAULT

from tests.support.reference import des3_ecb, kcv_aes, kcv_des3, pboc_diversify, strip_parity
from tunion_lab.ministry_test_keys import TEST_COMPONENTS, clear_test_key
from tunion_lab.scratch_token import SO_PIN, SOFTHSM, USER_PIN, temp_token

TODAY = dt.date.today()
VALID = KeyPolicy(start_date=TODAY - dt.timedelta(days=1), end_date=TODAY + dt.timedelta(days=365))


@pytest.fixture(scope="module")
def token_dir():
    with temp_token("unit") as d:
        yield d


@pytest.fixture
def tok(token_dir):
    with hsm_session(SOFTHSM, "unit", USER_PIN) as t:
        yield t


def _import_clear(tok: HsmToken, value: bytes, kt=KeyType.DES2, caps=None):
    """Tests only: load a known key as a session object (production keys never take this path)."""
    attrs = {
        Attribute.CLASS: ObjectClass.SECRET_KEY,
        Attribute.KEY_TYPE: kt,
        Attribute.VALUE: value,
        Attribute.TOKEN: False,
        Attribute.SENSITIVE: True,
    }
    attrs.update(caps or {})
    return tok.session.create_object(attrs)


def _count(tok: HsmToken) -> int:
    return len(tok.list_keys())


def test_kcv_known_answers(tok):
    mk = clear_test_key("purchase")
    k = _import_clear(tok, mk)  # no CKA_ENCRYPT: the KCV comes from CKA_CHECK_VALUE or a transient copy
    assert tok.kcv(k) == kcv_des3(mk)
    aes = bytes(range(32))
    a = _import_clear(tok, aes, KeyType.AES)
    assert tok.kcv(a, "ecb") == kcv_aes(aes, "ecb")
    assert tok.kcv(a, "cmac") == kcv_aes(aes, "cmac")


def test_pboc_diversification_known_answer(tok):
    mk_value = clear_test_key("purchase")
    mk = _import_clear(tok, mk_value, caps={Attribute.DERIVE: True})
    d = diversification_data("440100")
    expected = pboc_diversify(mk_value, d)
    dk = tok.derive_pboc(mk, "440100")  # transient session key with encrypt/sign, inside the HSM
    assert tok.kcv(dk) == kcv_des3(expected)
    block = bytes.fromhex("0123456789ABCDEF")
    assert tok.encrypt(dk, block) == des3_ecb(expected, block)
    # And byte for byte, on a tests-only extractable copy derived through the same packed parameter.
    with key_derivation_string_data(pboc_derivation_data(d)) as param:
        raw = mk.derive_key(
            KeyType.DES2,
            128,
            mechanism=Mechanism.DES3_ECB_ENCRYPT_DATA,
            mechanism_param=param,
            template={Attribute.VALUE_LEN: DEFAULT, Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True},
        )
    assert strip_parity(raw[Attribute.VALUE]) == strip_parity(expected)


def test_generate_and_describe(tok):
    label = key_label("recharge", "load", 9)
    key = tok.generate_secret("3DES-2KEY", label, key_id("recharge", 0x21, 9), VALID)
    info = tok.describe(key)
    assert info["label"] == label and info["type"] == "load" and info["version"] == 9
    assert info["algorithm"] == "3DES-2KEY" and len(info["kcv"]) == 6
    assert info["attributes"]["sensitive"] and info["attributes"]["wrap_with_trusted"]
    assert info["attributes"]["derive"] and not info["attributes"]["encrypt"]
    assert "value" not in info
    tok.destroy(key)


@pytest.mark.parametrize("n", [2, 3])
def test_components_combined_inside_hsm(tok, n):
    comps = [bytearray.fromhex(c) for c in TEST_COMPONENTS["purchase"][:n]]
    clear = bytes(comps[0])
    for c in comps[1:]:
        clear = bytes(a ^ b for a, b in zip(clear, c, strict=True))
    kcvs = [kcv_des3(bytes(c)) for c in comps]
    label = key_label("consumption", "purchase", 0x70 + n)
    key, kcv = tok.import_components(
        "3DES-2KEY", comps, kcvs, expected_kcv=kcv_des3(clear), label=label, id=None, policy=VALID
    )
    assert kcv == kcv_des3(clear)
    assert tok.kcv(key) == kcv_des3(clear)
    assert all(c == bytearray(16) for c in comps), "component buffers are wiped"
    tok.destroy(key)


def test_aes_components(tok):
    comps = [bytearray(os.urandom(32)) for _ in range(2)]
    clear = bytes(a ^ b for a, b in zip(comps[0], comps[1], strict=True))
    kcvs = [kcv_aes(bytes(c), "cmac") for c in comps]
    key, kcv = tok.import_components(
        "AES-256",
        comps,
        kcvs,
        expected_kcv=None,
        label="internal.t.v01.province",
        id=None,
        policy=KeyPolicy(usage="kek"),
        kcv_method="cmac",
    )
    assert kcv == kcv_aes(clear, "cmac")
    tok.destroy(key)


def test_wrong_component_kcv_leaves_token_unchanged(tok):
    comps = [bytearray.fromhex(c) for c in TEST_COMPONENTS["tac"]]
    kcvs = [kcv_des3(bytes(c)) for c in comps]
    kcvs[1] = b"\x00\x00\x01"
    before = _count(tok)
    with pytest.raises(HsmError, match=r"component 2 of 3 does not match its KCV .*differs from the expected") as err:
        tok.import_components(
            "3DES-2KEY", comps, kcvs, expected_kcv=None, label="consumption.tac.v05.province", id=None, policy=VALID
        )
    assert _count(tok) == before
    assert TEST_COMPONENTS["tac"][1] not in str(err.value).upper()


def test_wrong_combined_kcv_leaves_token_unchanged(tok):
    comps = [bytearray.fromhex(c) for c in TEST_COMPONENTS["tac"]]
    kcvs = [kcv_des3(bytes(c)) for c in comps]
    before = _count(tok)
    with pytest.raises(HsmError, match="differs from the expected"):
        tok.import_components(
            "3DES-2KEY",
            comps,
            kcvs,
            expected_kcv=b"\xab\xcd\xef",
            label="consumption.tac.v06.province",
            id=None,
            policy=VALID,
        )
    assert _count(tok) == before


def test_sm4_refused_clearly(tok):
    before = _count(tok)
    with pytest.raises(HsmError, match=r"offers no SM4 mechanism.*no fallback"):
        tok.generate_secret("SM4", "consumption.sm4.v01.province", None, VALID)
    assert _count(tok) == before


def test_missing_key_and_token(tok):
    with pytest.raises(HsmError, match="no key labelled"):
        tok.get_key("consumption.nothing.v01.province")
    with pytest.raises(HsmError, match="no token labelled 'absent'"), hsm_session(SOFTHSM, "absent", "1"):
        pass


def test_key_outside_validity_is_refused(tok):
    expired = KeyPolicy(start_date=dt.date(2020, 1, 1), end_date=dt.date(2021, 1, 1))
    key = tok.generate_secret("3DES-2KEY", "recharge.old.v01.province", None, expired)
    # SoftHSM cannot read back dates of private objects: the catalogue supplies them.
    tok.validity_lookup = lambda label: (dt.date(2020, 1, 1), dt.date(2021, 1, 1))
    with pytest.raises(HsmError, match="expired on 2021-01-01"):
        tok.derive_pboc(key, "440100")
    tok.destroy(key)


def test_wrap_only_under_trusted_kek(token_dir):
    with hsm_session(SOFTHSM, "unit", None, so_pin=SO_PIN) as so:
        so.generate_secret(
            "AES-256",
            "internal.kek.v01.city-440100",
            None,
            KeyPolicy(usage="kek", trusted=True, private=False, extractable=False, token=True),
        )
    with hsm_session(SOFTHSM, "unit", USER_PIN) as tok:
        trusted = tok.get_key("internal.kek.v01.city-440100")
        untrusted = tok.generate_secret(
            "AES-256", "internal.kek.v02.province", None, KeyPolicy(usage="kek", token=False)
        )
        key = tok.generate_secret("3DES-2KEY", "recharge.load.v33.province", None, VALID)
        with pytest.raises(HsmError, match="trusted KEK"):
            tok.wrap(untrusted, key)
        blob = tok.wrap(trusted, key)
        back = tok.unwrap(trusted, blob, "3DES-2KEY", label=None, id=None, policy=KeyPolicy(token=False))
        assert tok.kcv(back) == tok.kcv(key)
        tok.destroy(key)
        tok.destroy(trusted)


def test_pkcs11_tool_lists_same_labels_and_ids(token_dir):
    with hsm_session(SOFTHSM, "unit", USER_PIN) as tok:
        labels = {}
        for holder in ("province", "city-440100"):
            label = key_label("recharge", "maintenance", 1, holder)
            kid = key_id("recharge", 0x22, 1, holder)
            tok.generate_secret("3DES-2KEY", label, kid, VALID)
            labels[label] = kid.hex()
    out = subprocess.run(
        ["pkcs11-tool", "--module", SOFTHSM, "--token-label", "unit", "--login", "--pin", USER_PIN, "-O"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for label, kid in labels.items():
        block = out[out.index(f"label:      {label}") :]
        assert block.splitlines()[1].split()[-1].lower() == kid


def test_ensure_id_sets_the_scheme_s_id_in_place_and_refuses_an_unmodifiable_object(tok):
    """Objects made before IDs were set get theirs in place (same object, no copy); check mode only tells; an object
    the token marks CKA_MODIFIABLE false is refused by name, never skipped."""
    label = key_label("internal", "kek", 7, "city-440100")
    want = key_id("internal", 0xF1, 7, "city-440100")
    key = tok.generate_secret("AES-256", label, None, KeyPolicy(usage="kek", extractable=False))
    before = _count(tok)
    assert bytes(key[Attribute.ID] or b"") == b""
    assert tok.ensure_id(key, want, check_mode=True) is True
    assert bytes(key[Attribute.ID] or b"") == b""
    assert tok.ensure_id(key, want) is True
    assert tok.find_key(label=label)[Attribute.ID] == want and _count(tok) == before
    assert tok.ensure_id(key, want) is False
    frozen_label = key_label("internal", "kek", 8, "city-440100")
    frozen = tok.session.generate_key(
        KeyType.AES, 256, label=frozen_label, store=True, template={Attribute.MODIFIABLE: False}
    )
    with pytest.raises(HsmError, match=f"{frozen_label}.*CKA_MODIFIABLE false.*re-create"):
        tok.ensure_id(frozen, key_id("internal", 0xF1, 8, "city-440100"), check_mode=True)
    for obj in (key, frozen):
        tok.destroy(obj)


def _bad_expected_kcvs(right: bytes) -> list[tuple[str, bytes, str]]:
    """Expected KCVs a prefix comparison let through (empty, 1, 2 bytes of the right one), padded or wrong ones."""
    return [
        ("empty", b"", "exactly 3 bytes"),
        ("1 byte", right[:1], "exactly 3 bytes"),
        ("2 bytes", right[:2], "exactly 3 bytes"),
        ("right prefix, padded", right + b"\x00", "exactly 3 bytes"),
        ("wrong", bytes(b ^ 0xFF for b in right), "differs from the expected"),
    ]


@pytest.mark.parametrize("case", range(5))
def test_combined_and_component_kcvs_are_compared_exactly(tok, case):
    comps = [bytearray.fromhex(c) for c in TEST_COMPONENTS["tac"]]
    clear = bytes(comps[0])
    for c in comps[1:]:
        clear = bytes(a ^ b for a, b in zip(clear, c, strict=True))
    kcvs = [kcv_des3(bytes(c)) for c in comps]
    name, bad, message = _bad_expected_kcvs(kcv_des3(clear))[case]
    before = _count(tok)
    with pytest.raises(HsmError, match=message):
        tok.import_components(
            "3DES-2KEY",
            [bytearray(c) for c in comps],
            kcvs,
            expected_kcv=bad,
            label="consumption.tac.v07.province",
            id=None,
            policy=VALID,
        )
    name, bad, message = _bad_expected_kcvs(kcvs[0])[case]
    with pytest.raises(HsmError, match=rf"component 1 of 3 .*{message}"):
        tok.import_components(
            "3DES-2KEY",
            [bytearray(c) for c in comps],
            [bad, *kcvs[1:]],
            expected_kcv=kcv_des3(clear),
            label="consumption.tac.v07.province",
            id=None,
            policy=VALID,
        )
    assert _count(tok) == before, name
    key, kcv = tok.import_components(
        "3DES-2KEY",
        comps,
        kcvs,
        expected_kcv=kcv_des3(clear),
        label="consumption.tac.v07.province",
        id=None,
        policy=VALID,
        check_mode=True,
    )
    assert key is None and kcv == kcv_des3(clear)


def test_list_keys_lists_keys_not_data_objects(tok):
    # a node's token holds a data object (the highest accepted blacklist version): it is not a key
    before = _count(tok)
    data = tok.session.create_object(
        {Attribute.CLASS: ObjectClass.DATA, Attribute.TOKEN: False, Attribute.LABEL: "data", Attribute.VALUE: b"7"}
    )
    key = _import_clear(tok, bytes(range(16)))
    try:
        listed = tok.list_keys()
        assert len(listed) == before + 1
        assert all(
            o.object_class in (ObjectClass.SECRET_KEY, ObjectClass.PUBLIC_KEY, ObjectClass.PRIVATE_KEY) for o in listed
        )
        assert len(tok.list_keys("secret_key")) == len([o for o in listed if o.object_class == ObjectClass.SECRET_KEY])
    finally:
        key.destroy()
        data.destroy()
