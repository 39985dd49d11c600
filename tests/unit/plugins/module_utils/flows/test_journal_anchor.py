"""Journal anchors on a throw-away SoftHSM token: a head CMAC'd in the HSM, a forged or altered anchor refused, and a
journal truncated after its anchor named at the first missing event. The attacker edits with plain sqlite3 and
json."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import JournalError
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.journal import record, verify_journal
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.journal_anchor import (
    anchor_key_label,
    check_anchor,
    sign_anchor,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import HsmToken, hsm_session
from pkcs11 import Attribute

from tunion_lab.scratch_token import SOFTHSM, USER_PIN, temp_token


@pytest.fixture(scope="module")
def hsm() -> Iterator[HsmToken]:
    with temp_token("journalanchor"), hsm_session(SOFTHSM, "journalanchor", USER_PIN) as tok:
        yield tok


def _journal(tmp_path: Path, n: int = 5) -> Path:
    path = tmp_path / "journal.sqlite"
    for i in range(1, n + 1):
        record("install", [{"label": f"recharge.load.v{i:02d}.city-440100", "kcv": "A1B2C3"}], {}, path=str(path))
    return path


def test_anchor_is_made_in_the_hsm_and_checks(hsm: HsmToken, tmp_path: Path) -> None:
    path = _journal(tmp_path)
    anchor = sign_anchor(hsm, verify_journal(str(path)), "city-440100", "city-440100", create_key=True)
    assert anchor["seq"] == 5 and anchor["key"] == anchor_key_label("city-440100") and len(anchor["cmac"]) == 32
    check_anchor(hsm, anchor, "city-440100")
    key = hsm.find_key(label=anchor_key_label("city-440100"))
    assert key is not None and not key[Attribute.EXTRACTABLE]
    assert key[Attribute.SENSITIVE]


@pytest.mark.parametrize(("field", "value"), [("seq", 2), ("digest", "0" * 64), ("chain", "province"), ("time", "x")])
def test_an_altered_anchor_is_refused(hsm: HsmToken, tmp_path: Path, field: str, value: Any) -> None:
    anchor = sign_anchor(hsm, verify_journal(str(_journal(tmp_path))), "c", "city-440100", create_key=True)
    with pytest.raises(JournalError, match="MAC check failed"):
        check_anchor(hsm, dict(anchor, **{field: value}), "city-440100")


def test_a_forged_mac_is_refused(hsm: HsmToken, tmp_path: Path) -> None:
    anchor = sign_anchor(hsm, verify_journal(str(_journal(tmp_path))), "c", "city-440100", create_key=True)
    for forged in ("", "00" * 16, anchor["cmac"][:-2] + "00"):
        with pytest.raises(JournalError):
            check_anchor(hsm, dict(anchor, cmac=forged), "city-440100")


@pytest.mark.parametrize("keep", [0, 1, 3, 4])
def test_truncation_after_the_anchor_is_named(hsm: HsmToken, tmp_path: Path, keep: int) -> None:
    path = _journal(tmp_path)
    anchor = sign_anchor(hsm, verify_journal(str(path)), "c", "city-440100", create_key=True)
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM events WHERE pos > ?", (keep,))
    check_anchor(hsm, anchor, "city-440100")
    verdict = verify_journal(str(path), [anchor])
    assert verdict.first_bad == keep + 1 and "truncated" in verdict.reason


def test_a_broken_chain_is_never_anchored(hsm: HsmToken, tmp_path: Path) -> None:
    path = _journal(tmp_path)
    with sqlite3.connect(path) as db:
        pos, body = db.execute("SELECT pos, body FROM events WHERE pos = 2").fetchone()
        event = json.loads(body)
        event["key"]["kcv"] = "FFFFFF"
        db.execute("UPDATE events SET body = ? WHERE pos = ?", (json.dumps(event), pos))
    with pytest.raises(JournalError, match="event 2"):
        sign_anchor(hsm, verify_journal(str(path)), "c", "city-440100", create_key=True)
