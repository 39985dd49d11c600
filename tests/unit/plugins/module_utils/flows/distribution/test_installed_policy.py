"""Keys a city installs (issue 10 item 2, must show 2), on a throw-away SoftHSM token: a holder of the city PIN cannot
encrypt arbitrary data with any of them, and each carries its block's validity as CKA_START_DATE/CKA_END_DATE. A key
an older install left with CKA_ENCRYPT and no dates is replaced from its verified block (check mode reports it).

The attacks use python-pkcs11 alone in a session of their own, logged in with the city PIN; the dates are read from
the token's object files (SoftHSM 2.6.1 stores them in clear but answers CKR_GENERAL_ERROR when a private object's
dates are read back)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from pathlib import Path

import pkcs11
import pytest
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.distribution import install
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats import keyblock as kb
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11e
from pkcs11._pkcs11 import DecryptMixin, EncryptMixin, Object, SecretKey, SignMixin

from tests.unit.plugins.module_utils.flows.distribution.test_install import CODE, KEY, MAINT, city, header_for
from tests.unit.plugins.module_utils.formats.test_keyblock import KEK, FakeHsm
from tunion_lab.scratch_token import SOFTHSM, USER_PIN

__all__ = ["city"]  # the scratch city token fixture

MAC_KEY = bytes.fromhex("FEDCBA98765432100123456789ABCDEF")
START, END = dt.date.today() - dt.timedelta(days=3), dt.date.today() + dt.timedelta(days=47)


def block(kek_kcv: str, key_type: str, key: bytes, code: int, mode: str, start: dt.date, end: dt.date) -> str:
    header = dataclasses.replace(
        header_for(kek_kcv, key_type, 1, key, code),
        mode_of_use=mode,
        not_before=start.isoformat(),
        not_after=end.isoformat(),
    )
    return kb.build(FakeHsm(), KEK, key, header)


def grants(kek_kcv: str) -> dict[str, str]:
    """Two derive-only masters and one MAC key, each with validity dates of its own."""
    return {
        "load.v01": block(kek_kcv, "load", KEY, 0x21, "X", START, END),
        "maintenance.v01": block(kek_kcv, "maintenance", MAINT, 0x22, "X", START, END + dt.timedelta(days=1)),
        "load_auth.v01": block(kek_kcv, "load_auth", MAC_KEY, 0x25, "C", START + dt.timedelta(days=1), END),
    }


LABELS = {name: f"recharge.{name.split('.')[0]}.v01.city-{CODE}" for name in ("load.v01", "maintenance.v01")}
LABELS["load_auth.v01"] = f"recharge.load_auth.v01.city-{CODE}"


@pytest.fixture
def store(city, monkeypatch):
    hsm, kek, info = city
    blocks = grants(info["kcv"])
    monkeypatch.setattr(install, "install_kek", lambda *_a: (False, info, kek))
    monkeypatch.setattr(install, "fetch_blocks", lambda _bao, _city: dict(blocks))
    monkeypatch.setattr(install, "report_status", lambda *_a: False)
    return hsm, blocks


def attacker_session():
    """The city PIN holder's own session, python-pkcs11 only (PKCS#11 login is per process: the install's session
    logged this process in with the city PIN already)."""
    token = pkcs11.lib(SOFTHSM).get_token(token_label="city")
    try:
        return token.open(rw=True, user_pin=USER_PIN)
    except p11e.UserAlreadyLoggedIn:
        return token.open(rw=True)


def installed_keys(session) -> dict[str, object]:
    found = {}
    for label in LABELS.values():
        (found[label],) = list(session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: label}))
    return found


class AnyKey(SecretKey, EncryptMixin, DecryptMixin, SignMixin, Object):
    """python-pkcs11 offers encrypt() only on keys whose flags allow it: the same handle with every method, so the
    calls reach the token whatever the flags say, and the token has to refuse."""


def unrestricted(key) -> AnyKey:
    return AnyKey(key.wrapper)


def encrypt_attempts(key) -> list[tuple[str, object]]:
    """C_Encrypt (ECB, CBC) and C_Decrypt on the installed key's own handle."""
    any_key, block = unrestricted(key), bytes(8)
    return [
        ("C_Encrypt DES3_ECB", lambda: any_key.encrypt(block, mechanism=Mechanism.DES3_ECB)),
        ("C_Encrypt DES3_CBC", lambda: any_key.encrypt(block, mechanism=Mechanism.DES3_CBC, mechanism_param=block)),
        ("C_Decrypt DES3_ECB", lambda: any_key.decrypt(block, mechanism=Mechanism.DES3_ECB)),
    ]


def dates_in_token(token_root: Path) -> list[tuple[str, str]]:
    """(start, end) of every object file that holds both dates: SoftHSM's file backend writes CKA_START_DATE (0x110)
    and CKA_END_DATE (0x111) as 8 ASCII digits after type, kind 3 (byte string) and length 8, each a 64-bit field."""
    found = []
    for path in token_root.glob("tokens/*/*.object"):
        data = path.read_bytes()
        pair = []
        for attr in (0x110, 0x111):
            tag = attr.to_bytes(8, "big") + (3).to_bytes(8, "big") + (8).to_bytes(8, "big")
            at = data.find(tag)
            pair.append(data[at + len(tag) : at + len(tag) + 8].decode() if at >= 0 else "")
        if all(pair):
            found.append((pair[0], pair[1]))
    return sorted(found)


def ymd(day: dt.date) -> str:
    return day.strftime("%Y%m%d")


def test_installed_keys_refuse_encryption_to_the_city_pin_and_carry_their_dates(store) -> None:
    hsm, _blocks = store
    result = install.install_for_city(None, hsm, "guangzhou", CODE, check_mode=False)
    assert sorted(result["installed"]) == sorted(LABELS.values())
    with attacker_session() as session:
        keys = installed_keys(session)
        for label, key in keys.items():
            for what, attempt in encrypt_attempts(key):
                with pytest.raises(p11e.PKCS11Error) as refused:
                    attempt()
                    pytest.fail(f"{what} with {label} was allowed")
                # refused for the key's flags (CKR_KEY_FUNCTION_NOT_PERMITTED), not for a busy session
                assert "0x68" in str(refused.value), (
                    what,
                    label,
                    repr(refused.value),
                )
            assert key[Attribute.ENCRYPT] is False and key[Attribute.DECRYPT] is False, label
            assert key[Attribute.SENSITIVE] is True and key[Attribute.EXTRACTABLE] is False, label
            assert key[Attribute.PRIVATE] is True, label
        # each key has only what its mode of use names: derive for masters, MAC for the MAC key
        assert keys[LABELS["load.v01"]][Attribute.DERIVE] and not keys[LABELS["load.v01"]][Attribute.SIGN]
        mac = keys[LABELS["load_auth.v01"]]
        assert mac[Attribute.SIGN] and not mac[Attribute.DERIVE]
        with pytest.raises(p11e.PKCS11Error):
            unrestricted(keys[LABELS["load.v01"]]).sign(bytes(8), mechanism=Mechanism.DES3_MAC)
    token_root = Path(os.environ["SOFTHSM2_CONF"]).parent
    assert dates_in_token(token_root) == sorted(
        [
            (ymd(START), ymd(END)),
            (ymd(START), ymd(END + dt.timedelta(days=1))),
            (ymd(START + dt.timedelta(days=1)), ymd(END)),
        ]
    )


@pytest.mark.parametrize(
    "attack",
    [
        pytest.param(lambda key: key.__setitem__(Attribute.ENCRYPT, True), id="C_SetAttributeValue-ENCRYPT"),
        pytest.param(
            lambda key: key.copy({Attribute.TOKEN: False, Attribute.ENCRYPT: True}), id="C_CopyObject-ENCRYPT"
        ),
    ],
)
@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="open on SoftHSM while keys are CKA_MODIFIABLE/CKA_COPYABLE (the KCV copy path, issue 10 item 1)",
)
def test_the_city_pin_cannot_give_an_installed_key_encryption(store, attack) -> None:
    hsm, _blocks = store
    install.install_for_city(None, hsm, "guangzhou", CODE, check_mode=False)
    with attacker_session() as session:
        for label, key in installed_keys(session).items():
            try:
                attack(key)
            except p11e.PKCS11Error:
                continue
            raise AssertionError(f"{label}: the city PIN gave it CKA_ENCRYPT")


def test_a_key_from_an_older_install_is_replaced_from_its_block_and_check_mode_reports_it(store) -> None:
    hsm, _blocks = store
    # as the old installed policy made it: CKA_ENCRYPT, no dates
    old = hsm.session.create_object(
        {
            Attribute.CLASS: ObjectClass.SECRET_KEY,
            Attribute.KEY_TYPE: KeyType.DES2,
            Attribute.VALUE: KEY,
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.ENCRYPT: True,
            Attribute.DERIVE: True,
            Attribute.LABEL: LABELS["load.v01"],
            Attribute.ID: bytes.fromhex("02210101440100"),
        }
    )
    assert len(unrestricted(old).encrypt(bytes(8), mechanism=Mechanism.DES3_ECB)) == 8  # the attack works on it
    dry = install.install_for_city(None, hsm, "guangzhou", CODE, check_mode=True)
    assert [r["label"] for r in dry["replaced"]] == [LABELS["load.v01"]]
    assert "CKA_ENCRYPT True" in dry["replaced"][0]["drift"]
    assert old[Attribute.ENCRYPT] is True  # check mode changed nothing
    done = install.install_for_city(None, hsm, "guangzhou", CODE, check_mode=False)
    assert [r["label"] for r in done["replaced"]] == [LABELS["load.v01"]] and done["changed"]
    with attacker_session() as session:
        key = installed_keys(session)[LABELS["load.v01"]]
        with pytest.raises(p11e.PKCS11Error):
            unrestricted(key).encrypt(bytes(8), mechanism=Mechanism.DES3_ECB)
    again = install.install_for_city(None, hsm, "guangzhou", CODE, check_mode=False)
    assert again["replaced"] == [] and again["installed"] == []


@pytest.mark.parametrize("mode", ["B", "E", "D", "N", "G", "V", "x", " "])
def test_a_block_naming_any_other_mode_of_use_is_refused(mode) -> None:
    header = dataclasses.replace(header_for("A1B2C3", "load", 1, KEY, 0x21), mode_of_use=mode)
    with pytest.raises(kb.KeyBlockError, match="mode of use"):
        header.validate()


@pytest.mark.parametrize(
    ("capabilities", "mode"),
    [
        ({"derive": True, "encrypt": False}, "X"),
        ({"sign": True, "verify": True}, "C"),
        ({"derive": True, "sign": True}, "X"),
    ],
)
def test_the_mode_of_use_comes_from_the_province_key_s_capabilities(capabilities, mode) -> None:
    assert kb.mode_of_use_for(capabilities) == mode


def test_a_province_key_that_neither_derives_nor_macs_has_no_mode_for_a_city() -> None:
    with pytest.raises(kb.KeyBlockError, match="neither derive nor MAC"):
        kb.mode_of_use_for({"encrypt": True, "decrypt": True})
