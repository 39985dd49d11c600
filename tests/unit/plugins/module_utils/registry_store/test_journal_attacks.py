"""Attacks on the journal (issue 13): the attacker edits the SQLite file with plain sqlite3, never project code;
journal_verify's check then names the first bad event. Every position is swept."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import JournalError
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.journal import record, verify_journal
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.journal import new_event

N = 6


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    path = tmp_path / "journal.sqlite"
    for i in range(1, N + 1):
        record(
            "generate",
            [{"label": f"recharge.load.v{i:02d}.province", "version": i, "kcv": "A1B2C3"}],
            {},
            path=str(path),
        )
    return path


def _rows(path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT pos, body FROM events ORDER BY pos").fetchall()


def _exec(path: Path, sql: str, *args: object) -> None:
    with sqlite3.connect(path) as db:
        db.execute(sql, args)


def test_clean_chain_verifies(journal: Path) -> None:
    verdict = verify_journal(str(journal))
    assert verdict.ok and verdict.events == N and verdict.head_seq == N


@pytest.mark.parametrize("victim", range(1, N + 1))
def test_changed_event_is_named(journal: Path, victim: int) -> None:
    pos, body = _rows(journal)[victim - 1]
    event = json.loads(body)
    event["key"]["kcv"] = "000000"
    _exec(journal, "UPDATE events SET body = ? WHERE pos = ?", json.dumps(event), pos)
    verdict = verify_journal(str(journal))
    assert verdict.first_bad == victim and "digest" in verdict.reason


@pytest.mark.parametrize("victim", range(1, N + 1))
def test_changed_event_with_recomputed_digest_is_named_at_the_next(journal: Path, victim: int) -> None:
    """The attacker recomputes the changed event's digest (sha256, independently): the next event's link breaks,
    and only an anchor catches a change to the last one."""
    pos, body = _rows(journal)[victim - 1]
    event = json.loads(body)
    event["outcome"] = "failed"
    del event["digest"]
    enc = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    event["digest"] = hashlib.sha256(enc).hexdigest()
    original = json.loads(body)
    _exec(journal, "UPDATE events SET body = ? WHERE pos = ?", json.dumps(event), pos)
    verdict = verify_journal(str(journal))
    if victim < N:
        assert verdict.first_bad == victim + 1 and "does not follow" in verdict.reason
    else:
        assert verdict.ok
        anchored = verify_journal(str(journal), [{"seq": N, "digest": original["digest"]}])
        assert anchored.first_bad == N and "anchored" in anchored.reason


@pytest.mark.parametrize("victim", range(1, N + 1))
def test_deleted_event_is_named(journal: Path, victim: int) -> None:
    pos, _ = _rows(journal)[victim - 1]
    _exec(journal, "DELETE FROM events WHERE pos = ?", pos)
    anchors = [{"seq": N, "digest": json.loads(_rows(journal)[-1][1])["digest"]}] if victim == N else []
    verdict = verify_journal(str(journal), anchors)
    assert verdict.first_bad == victim


@pytest.mark.parametrize("first", range(1, N))
def test_swapped_events_are_named(journal: Path, first: int) -> None:
    rows = _rows(journal)
    (pa, ba), (pb, bb) = rows[first - 1], rows[first]
    _exec(journal, "UPDATE events SET body = ? WHERE pos = ?", bb, pa)
    _exec(journal, "UPDATE events SET body = ? WHERE pos = ?", ba, pb)
    verdict = verify_journal(str(journal))
    assert verdict.first_bad == first


@pytest.mark.parametrize("keep", range(0, N))
def test_truncated_tail_is_found_by_the_anchor(journal: Path, keep: int) -> None:
    head = json.loads(_rows(journal)[-1][1])
    _exec(journal, "DELETE FROM events WHERE pos > ?", _rows(journal)[keep - 1][0] if keep else 0)
    assert verify_journal(str(journal)).ok  # the chain alone cannot see a shorter tail
    verdict = verify_journal(str(journal), [{"seq": head["seq"], "digest": head["digest"]}])
    assert verdict.first_bad == keep + 1 and "truncated" in verdict.reason


def test_appending_after_tampering_does_not_repair_it(journal: Path) -> None:
    pos, body = _rows(journal)[2]
    _exec(journal, "UPDATE events SET body = ? WHERE pos = ?", body.replace("A1B2C3", "FFFFFF"), pos)
    record("destroy", [{"label": "x", "kcv": "A1B2C3"}], {}, path=str(journal))
    assert verify_journal(str(journal)).first_bad == 3


@pytest.mark.parametrize("key", [{"value": "00" * 16}, {"kcv": "A1B2C3D4"}, {"kcv": "00" * 16}, {"pin": "1234"}])
def test_an_event_never_holds_a_value(key: dict[str, str]) -> None:
    with pytest.raises(JournalError):
        new_event("generate", key, who={}, where={}, time="t", run_id=None)


def test_journal_file_is_private(journal: Path) -> None:
    assert journal.stat().st_mode & 0o077 == 0
