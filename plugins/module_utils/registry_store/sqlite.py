# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The observed SAM registry (docs/sam-registry.md), in SQLite on the SAM station.

What was actually loaded into each SAM and verified (key type, version, KCV, time, station, operator). It survives
restarts and answers per SAM, per city and per holder. A key is recorded only after the SAM proved it holds it
(MAC1 equal to the HSM's), never before.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import RegistryError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sam_keys (
    serial TEXT NOT NULL, key_type TEXT NOT NULL, version INTEGER NOT NULL, algorithm TEXT NOT NULL,
    kcv TEXT NOT NULL, city_code TEXT NOT NULL, holder TEXT NOT NULL, station TEXT NOT NULL,
    operator TEXT NOT NULL, loaded_at TEXT NOT NULL, verified_by TEXT NOT NULL,
    PRIMARY KEY (serial, key_type, version)
);
CREATE INDEX IF NOT EXISTS sam_keys_city ON sam_keys (city_code);
CREATE INDEX IF NOT EXISTS sam_keys_holder ON sam_keys (holder);
CREATE TABLE IF NOT EXISTS sam_runs (
    serial TEXT NOT NULL, at TEXT NOT NULL, station TEXT NOT NULL, operator TEXT NOT NULL,
    outcome TEXT NOT NULL, detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sam_runs_serial ON sam_runs (serial);
"""


_UPSERT = (
    "INSERT INTO sam_keys VALUES (:serial, :key_type, :version, :algorithm, :kcv, :city_code, :holder, "
    ":station, :operator, :loaded_at, :verified_by) ON CONFLICT (serial, key_type, version) DO UPDATE "
    "SET kcv = excluded.kcv, algorithm = excluded.algorithm, city_code = excluded.city_code, "
    "holder = excluded.holder, station = excluded.station, operator = excluded.operator, "
    "loaded_at = excluded.loaded_at, verified_by = excluded.verified_by"
)


class Observed:
    """What was loaded and verified, per SAM (SQLite, WAL)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        p = Path(path).expanduser()
        try:
            p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.db = sqlite3.connect(str(p), timeout=30, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA)
            if p.stat().st_mode & 0o077:
                p.chmod(0o600)
        except (OSError, sqlite3.Error) as exc:
            raise RegistryError([f"cannot open the observed SAM registry {p}: {exc}"]) from None

    def close(self) -> None:
        self.db.close()

    def loaded(self, serial: str) -> dict[tuple[str, int], str]:
        """(key type, version) -> KCV of what this SAM is recorded to hold."""
        cur = self.db.execute("SELECT key_type, version, kcv FROM sam_keys WHERE serial = ?", (serial,))
        return {(t, v): k for t, v, k in cur}

    def record_keys(self, rows: list[dict[str, Any]]) -> None:
        """Upsert verified keys (one row per SAM, key type and version: a re-run never duplicates)."""
        if rows:
            self.record(rows, [])

    def record(self, keys: list[dict[str, Any]], runs: list[tuple[str, str, str, str, str, str]]) -> None:
        """Verified keys (upserted) and run outcomes, in one transaction."""
        with self.db:
            if keys:
                self.db.executemany(_UPSERT, keys)
            if runs:
                self.db.executemany("INSERT INTO sam_runs VALUES (?, ?, ?, ?, ?, ?)", runs)

    def query(self, *, serial: str = "", city_code: str = "", holder: str = "", limit: int = 0) -> list[dict[str, Any]]:
        where, args = [], []
        for col, val in (("serial", serial.upper()), ("city_code", city_code), ("holder", holder)):
            if val:
                where.append(f"{col} = ?")
                args.append(val)
        # only fixed column names are interpolated; every value is a bound parameter
        sql = "SELECT * FROM sam_keys" + (" WHERE " + " AND ".join(where) if where else "")  # noqa: S608
        sql += " ORDER BY serial, key_type, version"
        if limit:
            sql += f" LIMIT {int(limit)}"
        cur = self.db.execute(sql, args)
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur]

    def summary(self, by: str) -> dict[str, int]:
        if by not in ("city_code", "holder"):
            raise ValueError("summary is by city_code or holder")
        cur = self.db.execute(f"SELECT {by}, COUNT(DISTINCT serial) FROM sam_keys GROUP BY {by}")  # noqa: S608
        return dict(cur.fetchall())
