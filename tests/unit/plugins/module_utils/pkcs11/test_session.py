"""Token lifecycle: initialise, check mode, a wrong PIN is not retried, force."""

from __future__ import annotations

import datetime as dt

import pytest
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import HsmError
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.policy import KeyPolicy
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.session import ensure_token, find_token
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import hsm_session

from tunion_lab.scratch_token import SO_PIN, SOFTHSM, USER_PIN, temp_token

TODAY = dt.date.today()
VALID = KeyPolicy(start_date=TODAY - dt.timedelta(days=1), end_date=TODAY + dt.timedelta(days=365))


def test_token_lifecycle_wrong_pin_and_force():
    with temp_token(init=False):
        r = ensure_token(SOFTHSM, "life", SO_PIN, USER_PIN, check_mode=True)
        assert r["changed"] and r["action"] == "initialise"
        assert find_token(SOFTHSM, "life") is None, "check mode initialises nothing"
        assert ensure_token(SOFTHSM, "life", SO_PIN, USER_PIN)["changed"]
        assert not ensure_token(SOFTHSM, "life", SO_PIN, USER_PIN)["changed"]
        with pytest.raises(HsmError, match=r"user PIN was rejected.*not retrying"):
            ensure_token(SOFTHSM, "life", SO_PIN, "000000")
        with hsm_session(SOFTHSM, "life", USER_PIN) as tok:
            tok.generate_secret("3DES-2KEY", "recharge.load.v01.province", None, VALID)
            tok.generate_secret("3DES-2KEY", "recharge.load.v02.province", None, VALID)
        r = ensure_token(SOFTHSM, "life", SO_PIN, USER_PIN, force=True, check_mode=True)
        assert r["destroyed"] == 2
        with hsm_session(SOFTHSM, "life", USER_PIN) as tok:
            assert len(tok.list_keys()) == 2
        r = ensure_token(SOFTHSM, "life", SO_PIN, USER_PIN, force=True)
        assert r["changed"] and r["destroyed"] == 2
        with hsm_session(SOFTHSM, "life", USER_PIN) as tok:
            assert tok.list_keys() == []
