"""Province side of distribution: the type code a block carries comes from the province key's own CKA_ID, and the
province's copies of a city's KEK and public key made before IDs were set get theirs in place, in an SO session."""

from __future__ import annotations

import pytest
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import DistributionError
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.distribution.keys import kek_policy
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.distribution.publish import (
    assign_ids_as_so,
    granted_type_code,
    refuse_ungrantable,
    stale_ids,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.grants import CityTarget, Grant
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import hsm_session
from pkcs11 import Attribute

from tunion_lab.scratch_token import SO_PIN, SOFTHSM, USER_PIN, temp_token

TARGET = CityTarget("guangzhou", "440100", [], kek_version=2)


def test_the_type_code_is_the_one_in_the_province_key_s_id() -> None:
    info = {"label": "recharge.load.v01.city-440100", "id": "02210101440100"}
    assert granted_type_code(TARGET, info, "recharge", 1, "city-440100") == 0x21
    assert granted_type_code(TARGET, {"id": "02250100"}, "recharge", 1, "province") == 0x25
    for wrong in ("", "0221", "01210101440100", "02210201440100", "02210101440300"):
        with pytest.raises(DistributionError, match=r"not the label scheme's.*re-issue it"):
            granted_type_code(TARGET, dict(info, id=wrong), "recharge", 1, "city-440100")


def test_old_kek_and_public_key_copies_get_their_ids_in_place_as_so() -> None:
    with temp_token("province"):
        with hsm_session(SOFTHSM, "province", USER_PIN) as city:  # a city's public key, as enrolment publishes it
            der = city.public_key_der(city.generate_rsa_keypair(2048, "city", token=False)[0])
        with hsm_session(SOFTHSM, "province", None, so_pin=SO_PIN) as so:  # as make_envelope did, without IDs
            so.generate_secret("AES-256", "internal.kek.v02.city-440100", None, kek_policy(province=True))
            so.import_rsa_public_key(der, "internal.transport_rsa.v01.city-440100", trusted=True)
        with hsm_session(SOFTHSM, "province", USER_PIN, rw=False) as hsm:
            stale = stale_ids(hsm, TARGET)
        assert [(label, cls) for label, cls, _id in stale] == [
            ("internal.kek.v02.city-440100", "secret_key"),
            ("internal.transport_rsa.v01.city-440100", "public_key"),
        ]
        assign_ids_as_so(lambda: hsm_session(SOFTHSM, "province", None, so_pin=SO_PIN), stale)
        with hsm_session(SOFTHSM, "province", USER_PIN, rw=False) as hsm:
            assert stale_ids(hsm, TARGET) == []
            found = {(o.object_class.name, bytes(o[Attribute.ID]).hex()) for o in hsm.list_keys()}
        assert found == {("SECRET_KEY", "03f10201440100"), ("PUBLIC_KEY", "03f20101440100")}


def test_an_internal_key_in_the_province_token_is_refused_before_any_block() -> None:
    """Second line of defence, by the class the province token gives the key (the catalogue may not be passed)."""
    index = {("load", 1, "city-440100"): (object(), "recharge"), ("sam_issuer", 1, "province"): (object(), "internal")}
    fine = CityTarget("guangzhou", "440100", [Grant("load", 1)])
    bad = CityTarget("shenzhen", "440300", [Grant("load", 1), Grant("sam_issuer", 1)])
    refuse_ungrantable(index, [fine])
    with pytest.raises(DistributionError) as err:
        refuse_ungrantable(index, [fine, bad])
    for word in ("shenzhen", "'sam_issuer'", "internal-class", "第六条"):
        assert word in str(err.value)
