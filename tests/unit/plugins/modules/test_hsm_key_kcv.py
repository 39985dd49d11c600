"""hsm_key's KCV checks at the point of use: an existing key against expected_kcv, all 3 bytes or nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tunion_lab.scratch_token import SOFTHSM, USER_PIN, temp_token

from .conftest import lab_catalogue, run_module


@pytest.fixture(scope="module")
def token() -> Iterator[str]:
    with temp_token("kcvsweep"):
        yield "kcvsweep"


def _args(token: str, **extra: Any) -> dict[str, Any]:
    base = {"pkcs11_library": SOFTHSM, "token_label": token, "user_pin": USER_PIN, "catalogue": lab_catalogue()}
    return base | {"key": "load", "version": 1} | extra


def test_expected_kcv_of_an_existing_key_is_compared_exactly(token: str) -> None:
    made = run_module("hsm_key", _args(token))
    assert not made.get("failed"), made.get("msg")
    right = made["kcv"]
    assert len(right) == 6
    wrong = f"{int(right, 16) ^ 0xFFFFFF:06X}"
    for bad, message in [
        ("", "exactly 3 bytes"),
        (right[:2], "exactly 3 bytes"),
        (right[:4], "exactly 3 bytes"),
        (right + "00", "exactly 3 bytes"),
        (wrong, "differs from the expected"),
    ]:
        result = run_module("hsm_key", _args(token, expected_kcv=bad))
        assert result.get("failed") and message in result["msg"], (bad, result.get("msg"))
        assert "load" in result["msg"]
    same = run_module("hsm_key", _args(token, expected_kcv=right.lower()))
    assert not same.get("failed") and not same["changed"] and same["kcv"] == right
