"""Diversification data: a city code or card number as PBOC diversification input, and its derivation data."""

from __future__ import annotations

import pytest
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import HsmError
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.algorithms import (
    check_kcv,
    diversification_data,
    pboc_derivation_data,
)


def test_diversification_data():
    assert diversification_data("440100") == bytes.fromhex("0000000000440100")
    assert diversification_data("3100440100000001234") == bytes.fromhex("0440100000001234")
    assert pboc_derivation_data(bytes.fromhex("0000000000440100")) == bytes.fromhex("0000000000440100FFFFFFFFFFBBFEFF")
    with pytest.raises(HsmError):
        diversification_data("44-01")


@pytest.mark.parametrize(
    ("expected", "message"),
    [
        (None, "exactly 3 bytes"),
        (b"", "exactly 3 bytes"),
        (b"\x12", "exactly 3 bytes"),
        (b"\x12\x34", "exactly 3 bytes"),
        (b"\x12\x34\x56\x00", "exactly 3 bytes"),
        (b"\x12\x34\x57", "differs from the expected"),
    ],
)
def test_check_kcv_refuses_short_padded_and_wrong_kcvs(expected, message):
    with pytest.raises(HsmError, match=f"purchase.v01: .*{message}"):
        check_kcv("purchase.v01", b"\x12\x34\x56", expected)


def test_check_kcv_accepts_the_exact_kcv_only():
    check_kcv("purchase.v01", b"\x12\x34\x56", b"\x12\x34\x56")
    with pytest.raises(HsmError):  # a computed value of another length never matches
        check_kcv("purchase.v01", b"\x12\x34\x56\x78", b"\x12\x34\x56")
