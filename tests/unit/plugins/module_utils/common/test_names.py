"""The label and ID scheme of every HSM object (docs/hsm.md)."""

from __future__ import annotations

import pytest
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import HsmError
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.names import (
    KeyName,
    key_id,
    key_label,
    parse_key_label,
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
