"""City side of distribution on a throw-away SoftHSM token: installed keys get the CKA_ID the block's type code names,
and objects made before IDs were set get theirs in place (check mode only tells); a block without a type code
installs nothing outside check mode.

Blocks are made with the key block tests' `cryptography` fake from a test-only KEK whose value is loaded into the
token, so the city's checks (MAC, KCV, unwrap) run in SoftHSM."""

from __future__ import annotations

import datetime as dt

import pytest
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import DistributionError
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.distribution import install
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.distribution.install import (
    assign_ids,
    install_verified,
    verify_blocks,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.distribution.keys import kcv_hex
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats import keyblock as kb
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import hsm_session
from pkcs11 import Attribute, KeyType, ObjectClass

from tests.support.reference import kcv_des3
from tests.unit.plugins.module_utils.formats.test_keyblock import KEK, FakeHsm
from tunion_lab.scratch_token import SOFTHSM, USER_PIN, temp_token

CODE = "440100"
KEY = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
TODAY = dt.date.today()
KEK_ID = bytes.fromhex("03f10101440100")
RSA_ID = bytes.fromhex("03f20101440100")
LOAD_ID = bytes.fromhex("02210101440100")


@pytest.fixture
def city():
    with temp_token("city"), hsm_session(SOFTHSM, "city", USER_PIN) as hsm:
        kek = hsm.session.create_object(
            {
                Attribute.CLASS: ObjectClass.SECRET_KEY,
                Attribute.KEY_TYPE: KeyType.AES,
                Attribute.VALUE: KEK,
                Attribute.TOKEN: True,
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.UNWRAP: True,
                Attribute.DERIVE: True,
                Attribute.LABEL: f"internal.kek.v01.city-{CODE}",
            }
        )
        hsm.generate_rsa_keypair(2048, f"internal.transport_rsa.v01.city-{CODE}")  # made before IDs: none
        yield hsm, kek, {"version": 1, "kcv": kcv_hex(hsm, kek)}


def block(kek_kcv: str, type_code: int | None) -> str:
    header = header_for(kek_kcv, "load", 1, KEY, type_code)
    if type_code is not None:
        return kb.build(FakeHsm(), KEK, KEY, header)
    # as the province made blocks before they carried TY (nine optional blocks)
    optional = "".join(f"{i}{len(d) + 4:02X}{d}" for i, d in header.optional_blocks())
    body = FakeHsm().wrap_kwp(KEK, KEY)
    text = f"T{16 + len(optional) + 2 * len(body) + 32:04d}20TX01N0900" + optional
    return text + body.hex().upper() + FakeHsm().cmac(KEK, kb.KBAK_DERIVATION, text.encode() + body).hex().upper()


def ids(hsm) -> dict[tuple[str, str], str]:
    return {(o.object_class.name, o.label): bytes(o[Attribute.ID] or b"").hex() for o in hsm.list_keys()}


def test_installed_keys_take_the_id_of_the_block_s_type_code_and_old_objects_get_theirs(city) -> None:
    hsm, kek, info = city
    blocks = {"load.v01": block(info["kcv"], 0x21)}
    verified = verify_blocks(hsm, kek=kek, kek_info=info, city="guangzhou", city_code=CODE, blocks=blocks)
    assert install_verified(hsm, kek, verified) == [f"recharge.load.v01.city-{CODE}"]
    assert ids(hsm)[("SECRET_KEY", f"recharge.load.v01.city-{CODE}")] == LOAD_ID.hex()
    # the KEK and the RSA pair were made before IDs were set: check mode tells, the real pass sets them in place
    before = ids(hsm)
    assert len(assign_ids(hsm, CODE, info, verified, check_mode=True)) == 3
    assert ids(hsm) == before
    assert sorted(assign_ids(hsm, CODE, info, verified, check_mode=False)) == [
        f"internal.kek.v01.city-{CODE}",
        f"internal.transport_rsa.v01.city-{CODE} (private_key)",
        f"internal.transport_rsa.v01.city-{CODE} (public_key)",
    ]
    after = ids(hsm)
    assert len(after) == len(before) == 4  # nothing copied
    assert after[("SECRET_KEY", f"internal.kek.v01.city-{CODE}")] == KEK_ID.hex()
    assert after[("PUBLIC_KEY", f"internal.transport_rsa.v01.city-{CODE}")] == RSA_ID.hex()
    assert after[("PRIVATE_KEY", f"internal.transport_rsa.v01.city-{CODE}")] == RSA_ID.hex()
    # an installed key without an ID (an old token) is found by label and given it; then nothing is left to do
    hsm.find_key(label=f"recharge.load.v01.city-{CODE}")[Attribute.ID] = b""
    again = verify_blocks(hsm, kek=kek, kek_info=info, city="guangzhou", city_code=CODE, blocks=blocks)
    assert install_verified(hsm, kek, again) == []
    assert assign_ids(hsm, CODE, info, again, check_mode=False) == [f"recharge.load.v01.city-{CODE}"]
    assert ids(hsm)[("SECRET_KEY", f"recharge.load.v01.city-{CODE}")] == LOAD_ID.hex()
    assert assign_ids(hsm, CODE, info, again, check_mode=False) == []


def test_a_block_without_type_code_installs_nothing_but_check_mode_reports_the_id_to_come(city) -> None:
    hsm, kek, info = city
    current = {"load.v01": block(info["kcv"], 0x21)}
    install_verified(hsm, kek, verify_blocks(hsm, kek=kek, kek_info=info, city="g", city_code=CODE, blocks=current))
    hsm.find_key(label=f"recharge.load.v01.city-{CODE}")[Attribute.ID] = b""
    old = {"load.v01": block(info["kcv"], None)}
    with pytest.raises(DistributionError, match=r"type code .*must re-publish.*nothing installed"):
        verify_blocks(hsm, kek=kek, kek_info=info, city="g", city_code=CODE, blocks=old)
    verified = verify_blocks(hsm, kek=kek, kek_info=info, city="g", city_code=CODE, blocks=old, check_mode=True)
    assert f"recharge.load.v01.city-{CODE}" in assign_ids(hsm, CODE, info, verified, check_mode=True)
    assert ids(hsm)[("SECRET_KEY", f"recharge.load.v01.city-{CODE}")] == ""


# ------------------------------------------------- a block is bound to its OpenBao path by its MAC-verified header
MAINT = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")


def header_for(kek_kcv: str, key_type: str, version: int, key: bytes, type_code: int | None) -> kb.KeyBlockHeader:
    return kb.KeyBlockHeader(
        key_type=key_type,
        type_code=type_code,
        key_class="recharge",
        version=version,
        algorithm="3DES-2KEY",
        kcv=kcv_des3(key).hex().upper(),
        city=CODE,
        not_before=(TODAY - dt.timedelta(days=1)).isoformat(),
        not_after=(TODAY + dt.timedelta(days=30)).isoformat(),
        issuer="TEST",
        kek_version=1,
        kek_kcv=kek_kcv,
    )


def genuine(kek_kcv: str, key_type: str, version: int, key: bytes, type_code: int) -> str:
    """A block exactly as the province makes one (good MAC, this city, this KEK)."""
    header = header_for(kek_kcv, key_type, version, key, type_code)
    return kb.build(FakeHsm(), KEK, key, header)


def objects(hsm) -> set[tuple[str, str, str]]:
    """Every object of the token, read with python-pkcs11 itself (not the project's listing)."""
    return {
        (str(o[Attribute.CLASS]), str(o[Attribute.LABEL]), bytes(o[Attribute.ID] or b"").hex())
        for o in hsm.session.get_objects()
    }


@pytest.fixture
def installed(city, monkeypatch):
    """load.v01 and maintenance.v01 installed by a real pass; OpenBao is whatever dict the test puts in ``store``."""
    hsm, kek, info = city
    store: dict[str, str] = {}
    monkeypatch.setattr(install, "install_kek", lambda *_a: (False, info, kek))
    monkeypatch.setattr(install, "fetch_blocks", lambda _bao, _city: dict(store))
    monkeypatch.setattr(install, "report_status", lambda *_a: False)
    good = {
        "load.v01": genuine(info["kcv"], "load", 1, KEY, 0x21),
        "maintenance.v01": genuine(info["kcv"], "maintenance", 1, MAINT, 0x22),
    }
    store.update(good)
    result = install.install_for_city(None, hsm, "guangzhou", CODE, check_mode=False)
    assert sorted(result["installed"]) == [f"recharge.load.v01.city-{CODE}", f"recharge.maintenance.v01.city-{CODE}"]
    return hsm, store, good


@pytest.mark.parametrize(
    "swap",
    [
        pytest.param(lambda g: {"load.v01": g["maintenance.v01"], "maintenance.v01": g["load.v01"]}, id="swapped"),
        pytest.param(lambda g: {"load.v01": g["maintenance.v01"]}, id="other-type-in-place-of-one-to-retire"),
        pytest.param(
            lambda g: {"load.v02": g["load.v01"], "maintenance.v01": g["maintenance.v01"]}, id="other-version"
        ),
        pytest.param(lambda g: {"load": g["load.v01"], "maintenance.v01": g["maintenance.v01"]}, id="no-version-name"),
    ],
)
def test_a_genuine_block_at_another_key_s_path_is_refused_and_nothing_changes(installed, swap) -> None:
    hsm, store, good = installed
    before = objects(hsm)
    assert {label for _c, label, _i in before} >= {
        f"recharge.load.v01.city-{CODE}",
        f"recharge.maintenance.v01.city-{CODE}",
    }
    store.clear()
    store.update(swap(good))
    for check_mode in (True, False):
        with pytest.raises(DistributionError) as err:
            install.install_for_city(None, hsm, "guangzhou", CODE, check_mode=check_mode)
        msg = str(err.value)
        assert "blocks/" in msg and "MAC-verified header" in msg and "nothing installed, nothing retired" in msg, msg
        assert objects(hsm) == before
