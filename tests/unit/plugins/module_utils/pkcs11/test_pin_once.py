"""A wrong PIN reaches the token once, whatever the loop: later calls (in this process or in fresh ones, as the
module calls of one playbook run are) refuse it without presenting it (issue 10 item 13)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import HsmError
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11 import token as token_module
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.session import (
    REFUSAL_DIR_ENV,
    ensure_token,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import hsm_session

from tunion_lab.lab import CHILD_PYTHONPATH, REPO
from tunion_lab.scratch_token import SO_PIN, SOFTHSM, USER_PIN, temp_token

WRONG = "000000"


@pytest.fixture
def refusals(tmp_path, monkeypatch):
    monkeypatch.setenv(REFUSAL_DIR_ENV, str(tmp_path / "refusals"))
    return tmp_path / "refusals"


class _CountingToken:
    """The token python-pkcs11 found, with every Token.open (where python-pkcs11 calls C_Login) counted by PIN."""

    def __init__(self, token, seen):
        self._token, self._seen = token, seen

    def open(self, **kwargs):
        self._seen.append(kwargs.get("user_pin") or kwargs.get("so_pin"))
        return self._token.open(**kwargs)

    def __getattr__(self, name):
        return getattr(self._token, name)


@pytest.fixture
def logins(monkeypatch):
    """Every login attempt that reaches the library, by PIN."""
    seen: list[str | None] = []
    real = token_module.find_token

    def counting(library, label):
        found = real(library, label)
        return None if found is None else _CountingToken(found, seen)

    monkeypatch.setattr(token_module, "find_token", counting)
    return seen


@pytest.mark.parametrize("loop", [2, 5, 10])
def test_wrong_user_pin_reaches_the_token_once_per_loop(refusals, logins, loop):
    with temp_token("pinonce"):
        messages = []
        for _item in range(loop):
            with pytest.raises(HsmError) as exc, hsm_session(SOFTHSM, "pinonce", WRONG):
                pass
            messages.append(str(exc.value))
        assert logins.count(WRONG) == 1
        assert sum("rejected by token 'pinonce'" in m for m in messages) == 1
        assert sum("not presented again" in m for m in messages) == loop - 1
        assert all(WRONG not in m for m in messages)
        # the right PIN is not affected, and does not clear the refusal of the wrong one
        with hsm_session(SOFTHSM, "pinonce", USER_PIN):
            pass
        with pytest.raises(HsmError, match="not presented again"), hsm_session(SOFTHSM, "pinonce", WRONG):
            pass
        assert logins.count(WRONG) == 1


def test_wrong_so_pin_reaches_the_token_once(refusals, logins):
    with temp_token("sopin"):
        for _item in range(4):
            with pytest.raises(HsmError), hsm_session(SOFTHSM, "sopin", None, so_pin="11111111"):
                pass
        assert logins.count("11111111") == 1


def test_refusal_holds_across_processes_and_no_pin_is_stored(refusals):
    """Each module call of a run is its own process: N fresh processes, one 'rejected', N-1 'not presented'."""
    with temp_token("procs") as tmp:
        code = (
            "from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import hsm_session\n"
            "from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import HsmError\n"
            "try:\n"
            f"    with hsm_session({SOFTHSM!r}, 'procs', {WRONG!r}):\n"
            "        pass\n"
            "except HsmError as exc:\n"
            "    print(exc)\n"
        )
        env = dict(os.environ, SOFTHSM2_CONF=str(tmp / "softhsm2.conf"), PYTHONPATH=CHILD_PYTHONPATH)
        out = [
            subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, check=True)
            for _ in range(4)
        ]
        stdout = [o.stdout for o in out]
        assert sum("rejected by token 'procs'" in s for s in stdout) == 1, stdout
        assert sum("not presented again" in s for s in stdout) == 3, stdout
        for path in refusals.rglob("*"):
            if path.is_file():
                assert oct(path.stat().st_mode & 0o777) == "0o600"
                assert WRONG.encode() not in path.read_bytes()
        assert oct(refusals.stat().st_mode & 0o777) == "0o700"


def test_setting_the_pins_forgets_the_refusals(refusals):
    with temp_token(init=False):
        ensure_token(SOFTHSM, "reset", SO_PIN, USER_PIN)
        with pytest.raises(HsmError, match="rejected"):
            ensure_token(SOFTHSM, "reset", SO_PIN, WRONG)
        with pytest.raises(HsmError, match="not presented again"):
            ensure_token(SOFTHSM, "reset", SO_PIN, WRONG)
        # the token is re-initialised (new PINs): the old refusals say nothing about them and are forgotten
        ensure_token(SOFTHSM, "reset", SO_PIN, USER_PIN, force=True)
        assert not any(p.suffix == ".json" for p in refusals.iterdir())
        with pytest.raises(HsmError, match="rejected"):
            ensure_token(SOFTHSM, "reset", SO_PIN, WRONG)


def test_unwritable_record_presents_no_pin(tmp_path, monkeypatch, logins):
    blocked = tmp_path / "ro"
    blocked.mkdir(mode=0o500)
    monkeypatch.setenv(REFUSAL_DIR_ENV, str(blocked / "sub"))
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    with temp_token("ro"), pytest.raises(HsmError, match="no PIN was presented"), hsm_session(SOFTHSM, "ro", WRONG):
        pass
    assert logins == []
