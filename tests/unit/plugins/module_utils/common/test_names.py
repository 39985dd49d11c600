"""The label and ID scheme of every HSM object (docs/hsm.md)."""

from __future__ import annotations

import re

import pytest
from ansible_collections.tunion.keymgmt.plugins.module_utils.common import names
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import HsmError
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.names import (
    KeyName,
    key_id,
    key_label,
    parse_key_label,
    reserved_key_id,
)


def test_label_and_id_scheme():
    assert key_label("consumption", "purchase", 1) == "consumption.purchase.v01.province"
    assert key_label("recharge", "load", 0x12, "city-440100") == "recharge.load.v12.city-440100"
    assert key_id("recharge", 0x21, 1, "city-440100") == bytes.fromhex("02210101440100")
    assert key_id("consumption", 0x11, 2) == bytes.fromhex("01110200")
    name = parse_key_label("recharge.load.v12.city-440100")
    assert name == KeyName("recharge", "load", 0x12, "city-440100")
    assert parse_key_label("some vendor object") is None
    with pytest.raises(HsmError, match="one byte"):
        key_label("consumption", "purchase", 256)
    with pytest.raises(HsmError, match="unknown key class"):
        key_label("secret", "purchase", 1)


def test_kek_and_transport_rsa_ids_use_reserved_internal_codes():
    """KEKs and RSA transport keys are no catalogue types: their type codes are the collection's own (docs/hsm.md)."""
    assert reserved_key_id("kek", 1, "city-440100") == bytes.fromhex("03f10101440100")
    assert reserved_key_id("transport_rsa", 1, "city-445300") == bytes.fromhex("03f20101445300")
    assert reserved_key_id("kek", 2, "city-440100") == key_id("internal", 0xF1, 2, "city-440100")


@pytest.mark.parametrize("suffix", ["\n", "\r\n", "\n\n", "\nx", " "])
@pytest.mark.parametrize(
    ("pattern", "good"),
    [
        (names.CITY_CODE_RE, "440100"),
        (names.CITY_NAME_RE, "guangzhou"),
        (names.SAM_SERIAL_RE, "4401000000000000007F"),
        (names.VERSION_NAME_RE, "load_auth.v01"),
    ],
)
def test_name_patterns_refuse_a_trailing_newline(pattern: re.Pattern[str], good: str, suffix: str) -> None:
    # `$` matches before a final newline: a city name with one would end up in OpenBao paths and the policy HCL
    assert pattern.match(good)
    assert not pattern.match(good + suffix)


@pytest.mark.parametrize("suffix", ["\n", "\r\n", " "])
def test_key_labels_refuse_a_trailing_newline(suffix: str) -> None:
    assert parse_key_label("recharge.load.v01.city-440100") is not None
    assert parse_key_label("recharge.load.v01.city-440100" + suffix) is None
