"""Diversification data: a city code or card number as PBOC diversification input, and its derivation data."""

from __future__ import annotations

import pytest
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import HsmError
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.algorithms import (
    diversification_data,
    pboc_derivation_data,
)


def test_diversification_data():
    assert diversification_data("440100") == bytes.fromhex("0000000000440100")
    assert diversification_data("3100440100000001234") == bytes.fromhex("0440100000001234")
    assert pboc_derivation_data(bytes.fromhex("0000000000440100")) == bytes.fromhex("0000000000440100FFFFFFFFFFBBFEFF")
    with pytest.raises(HsmError):
        diversification_data("44-01")
