"""PKCS#11 mechanism parameters built with ctypes: they point at live data."""

from __future__ import annotations

import ctypes

from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.params import key_derivation_string_data


def test_derivation_param_is_a_pointer_to_live_data():
    data = b"\x11" * 16
    with key_derivation_string_data(data) as param:
        assert len(param) == 2 * ctypes.sizeof(ctypes.c_void_p)
        ptr = int.from_bytes(param[: ctypes.sizeof(ctypes.c_void_p)], "little")
        length = int.from_bytes(param[ctypes.sizeof(ctypes.c_void_p) :], "little")
        assert length == 16
        assert ctypes.string_at(ptr, length) == data
