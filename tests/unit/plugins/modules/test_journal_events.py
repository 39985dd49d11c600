"""TunionModule journals what a module changed (issue 13): hsm_key on a throw-away token, run in-process.

Every stored event is checked to name its key by label, version and KCV only."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tunion_lab.scratch_token import SOFTHSM, USER_PIN, temp_token

from .conftest import lab_catalogue, run_module


@pytest.fixture
def token() -> Iterator[str]:
    with temp_token("journalev"):
        yield "journalev"


def _args(token: str, **extra: Any) -> dict[str, Any]:
    base = {"pkcs11_library": SOFTHSM, "token_label": token, "user_pin": USER_PIN, "catalogue": lab_catalogue()}
    return base | {"key": "load", "version": 1} | extra


def _events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with sqlite3.connect(path) as db:
        return [json.loads(b) for (b,) in db.execute("SELECT body FROM events ORDER BY pos")]


def test_one_event_per_change_none_in_check_mode_or_when_unchanged(token: str, private_journal: Path) -> None:
    checked = run_module("hsm_key", _args(token, diversify_for=["440100"], _ansible_check_mode=True))
    assert checked["changed"] and not _events(private_journal)

    made = run_module("hsm_key", _args(token, diversify_for=["440100"]))
    assert made["changed"] and made["journal"]["events"] == [1, 2]
    events = _events(private_journal)
    assert [e["what"] for e in events] == ["generate", "generate"]
    assert events[0]["key"] == {"label": made["label"], "version": 1, "kcv": made["kcv"]}
    assert events[1]["key"]["label"] == made["derived"][0]["label"]
    assert events[1]["prev"] == events[0]["digest"] and events[0]["outcome"] == "ok"
    assert events[0]["who"]["unix_user"] and events[0]["where"]["token"] == token

    again = run_module("hsm_key", _args(token, diversify_for=["440100"]))
    assert not again["changed"] and "journal" not in again and len(_events(private_journal)) == 2

    gone = run_module("hsm_key", _args(token, state="absent"))
    assert gone["changed"] and _events(private_journal)[-1]["what"] == "destroy"
    allowed = {"label", "version", "kcv", "type", "holder"}
    assert all(set(e["key"]) <= allowed for e in _events(private_journal))


def test_journal_verify_names_the_first_bad_event(token: str, private_journal: Path) -> None:
    assert run_module("hsm_key", _args(token, diversify_for=["440100"]))["changed"]
    clean = run_module("journal_verify", {"path": str(private_journal)})
    assert not clean.get("failed") and clean["ok"] and clean["events"] == 2 and not clean["changed"]
    with sqlite3.connect(private_journal) as db:
        db.execute("UPDATE events SET body = replace(body, '\"ok\"', '\"failed\"') WHERE pos = 1")
    bad = run_module("journal_verify", {"path": str(private_journal)})
    assert bad["failed"] and bad["first_bad"] == 1 and "event 1" in bad["msg"]
    reported = run_module("journal_verify", {"path": str(private_journal), "fail_on_bad": False})
    assert not reported.get("failed") and reported["first_bad"] == 1
