"""The label and ID scheme of every HSM object (docs/hsm.md)."""

from __future__ import annotations

import pytest
from ansible_collections.tunion.keymgmt.plugins.module_utils import hsm


def test_label_and_id_scheme():
    assert hsm.key_label("consumption", "purchase", 1) == "consumption.purchase.v01.province"
    assert hsm.key_label("recharge", "load", 0x12, "city-440100") == "recharge.load.v12.city-440100"
    assert hsm.key_id("recharge", 0x21, 1, "city-440100") == bytes.fromhex("02210101440100")
    assert hsm.key_id("consumption", 0x11, 2) == bytes.fromhex("01110200")
    name = hsm.parse_key_label("recharge.load.v12.city-440100")
    assert name == hsm.KeyName("recharge", "load", 0x12, "city-440100")
    assert hsm.parse_key_label("some vendor object") is None
    with pytest.raises(hsm.HsmError, match="one byte"):
        hsm.key_label("consumption", "purchase", 256)
    with pytest.raises(hsm.HsmError, match="unknown key class"):
        hsm.key_label("secret", "purchase", 1)
