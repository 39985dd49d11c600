# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The SAM registry (docs/sam-registry.md).

* **Desired**: which city and holder (transport company or agent, 第八条) each SAM serial is assigned to, and its
  status. A CSV file beside the inventory's YAML (``inventories/<env>/sam_registry.csv``): one line per SAM, read as
  a stream into a compact index by serial, so 100,000 SAMs load in well under a second and diff well in git.
* **Observed**: what was actually loaded into each SAM and verified (key type, version, KCV, time, station,
  operator), in SQLite on the SAM station. It survives restarts and answers per SAM, per city and per holder.
  A key is recorded only after the SAM proved it holds it (MAC1 equal to the HSM's), never before.
"""

from __future__ import annotations

import csv
import datetime as _dt
import os
import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATUSES = ("active", "suspended", "revoked")
COLUMNS = ("serial", "city_code", "holder", "status", "station", "note")
_SERIAL_RE = re.compile(r"^[0-9A-F]{20}$")
_CITY_RE = re.compile(r"^[0-9]{6}$")
_HOLDER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class RegistryError(ValueError):
    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        more = f" (and {len(errors) - 20} more)" if len(errors) > 20 else ""
        super().__init__("SAM registry refused: " + "; ".join(errors[:20]) + more)


@dataclass(frozen=True, slots=True)
class SamAssignment:
    serial: str
    city_code: str
    holder: str
    status: str
    station: str = ""

    def as_dict(self) -> dict[str, str]:
        return {
            "serial": self.serial,
            "city_code": self.city_code,
            "holder": self.holder,
            "status": self.status,
            "station": self.station,
        }


class Registry:
    """Desired state, indexed by serial."""

    def __init__(self, rows: dict[str, SamAssignment], source: str = "") -> None:
        self.rows = rows
        self.source = source

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, serial: str) -> SamAssignment | None:
        return self.rows.get(serial.upper())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Registry:
        p = Path(path)
        if not p.exists():
            raise RegistryError([f"{p} does not exist; the registry is a CSV with columns {', '.join(COLUMNS)}"])
        try:
            with p.open(newline="", encoding="utf-8") as f:
                return cls.parse(f, str(p))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise RegistryError([f"cannot read the SAM registry {p}: {exc}"]) from None

    @classmethod
    def parse(cls, lines: Iterable[str], source: str = "registry") -> Registry:
        reader = csv.reader(line for line in lines if line.strip() and not line.lstrip().startswith("#"))
        header = next(reader, None)
        if header is None:
            return cls({}, source)
        header = [h.strip() for h in header]
        missing = [c for c in COLUMNS[:4] if c not in header]
        if missing:
            raise RegistryError([f"{source}: header lacks column(s) {', '.join(missing)}"])
        idx = {c: header.index(c) for c in COLUMNS if c in header}
        rows: dict[str, SamAssignment] = {}
        errors: list[str] = []
        for n, rec in enumerate(reader, start=2):

            def get(column: str, rec: list[str] = rec) -> str:
                return rec[idx[column]].strip() if column in idx and idx[column] < len(rec) else ""

            serial, city, holder, status = get("serial").upper(), get("city_code"), get("holder"), get("status")
            where = f"{source} line {n}"
            if not _SERIAL_RE.match(serial):
                errors.append(f"{where}: serial {serial!r} is not 20 hex digits")
                continue
            if serial in rows:
                errors.append(f"{where}: SAM {serial} is listed twice")
                continue
            if not _CITY_RE.match(city):
                errors.append(f"{where}: city_code {city!r} is not a 6-digit city code")
            if not _HOLDER_RE.match(holder):
                errors.append(f"{where}: holder {holder!r} must be letters, digits, '.', '_' or '-'")
            if status not in STATUSES:
                errors.append(f"{where}: status {status!r} is not one of {', '.join(STATUSES)}")
            rows[serial] = SamAssignment(serial, city, holder, status, get("station"))
        if errors:
            raise RegistryError(errors)
        return cls(rows, source)

    def refusal(self, serial: str, *, station: str = "", city_code: str = "", holder: str = "") -> str | None:
        """Why a SAM must not receive keys here, or None. Checked before any key APDU is sent."""
        a = self.get(serial)
        if a is None:
            return f"SAM {serial} is not in the SAM registry ({self.source}); register it before loading keys"
        if a.status != "active":
            return f"SAM {serial} is {a.status} in the SAM registry; only active SAMs receive keys"
        if city_code and a.city_code != city_code:
            return f"SAM {serial} is assigned to city {a.city_code}, not {city_code}; refusing"
        if holder and a.holder != holder:
            return f"SAM {serial} is assigned to holder {a.holder!r}, not {holder!r}; refusing"
        if a.station and station and a.station != station:
            return f"SAM {serial} is assigned to SAM station {a.station!r}, not {station!r}; refusing"
        return None


# ---------------------------------------------------------------------------------------------- observed
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

    def record_runs(self, rows: list[tuple[str, str, str, str, str, str]]) -> None:
        self.record([], rows)

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


def now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
