# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The journal of key operations in SQLite, on the node that made them, under that node's unix user (docs/journal.md).

SQLite rather than a file of lines: Ansible runs up to ``forks`` module processes at once under one unix user (the
province's HSM, OpenBao and SAM-station hosts share ``tunion-province``), and appending to a hash chain is read the
head, then write after it. ``BEGIN IMMEDIATE`` serialises that across processes, and a crash leaves the last
complete event, never half a line. The table holds each event's canonical JSON in insertion order; the chain is in
the JSON (formats/journal.py), so the database adds no trust: editing it is what journal_verify detects.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import JournalError
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.journal import GENESIS, canonical, chained

#: where a node keeps its journal, in the home of the unix user that runs the modules
DEFAULT_JOURNAL_PATH = "~/.tunion/journal.sqlite"

_SCHEMA = "CREATE TABLE IF NOT EXISTS events (pos INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL);"


class Journal:
    """One node's chain of events (SQLite, WAL, mode 0600 in a 0700 directory)."""

    def __init__(self, path: str | os.PathLike[str] = DEFAULT_JOURNAL_PATH, *, create: bool = True) -> None:
        p = Path(path).expanduser()
        self.path = p
        if not create and not p.exists():
            raise JournalError(f"no journal at {p}")
        try:
            p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.db = sqlite3.connect(str(p), timeout=60, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(_SCHEMA)
            if p.stat().st_mode & 0o077:
                p.chmod(0o600)
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(f"cannot open the journal {p}: {exc}") from None

    def close(self) -> None:
        self.db.close()

    def append(self, *events: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Chain ``events`` after the head, in one transaction; returns them as stored."""
        out: list[dict[str, Any]] = []
        try:
            self.db.execute("BEGIN IMMEDIATE")
            row = self.db.execute("SELECT body FROM events ORDER BY pos DESC LIMIT 1").fetchone()
            head: dict[str, Any] = json.loads(row[0]) if row else {"seq": 0, "digest": GENESIS}
            seq, prev = int(head.get("seq", 0)), str(head.get("digest", GENESIS))
            for event in events:
                seq += 1
                stored = chained(event, seq, prev)
                self.db.execute("INSERT INTO events (body) VALUES (?)", (canonical(stored).decode(),))
                prev = stored["digest"]
                out.append(stored)
            self.db.execute("COMMIT")
        except (sqlite3.Error, ValueError) as exc:
            self.db.execute("ROLLBACK") if self.db.in_transaction else None
            raise JournalError(f"cannot append to the journal {self.path}: {exc}") from None
        return out

    def events(self) -> Iterator[dict[str, Any]]:
        """Every event in stored order; a row that is not JSON comes back as ``{"unreadable": pos}``."""
        try:
            rows = self.db.execute("SELECT pos, body FROM events ORDER BY pos").fetchall()
        except sqlite3.Error as exc:
            raise JournalError(f"cannot read the journal {self.path}: {exc}") from None
        for pos, body in rows:
            try:
                event = json.loads(body)
            except ValueError:
                event = None
            yield event if isinstance(event, dict) else {"unreadable": pos}
