# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The desired SAM registry (docs/sam-registry.md).

Which city and holder (transport company or agent, 第八条) each SAM serial is assigned to, and its status. A CSV file
beside the inventory's YAML (``inventories/<env>/sam_registry.csv``): one line per SAM, read as a stream into a
compact index by serial, so 100,000 SAMs load in well under a second and diff well in git. What was loaded into
each SAM is the observed registry (registry_store/).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import RegistryError

STATUSES = ("active", "suspended", "revoked")


COLUMNS = ("serial", "city_code", "holder", "status", "station", "note")


_SERIAL_RE = re.compile(r"^[0-9A-F]{20}\Z")


_CITY_RE = re.compile(r"^[0-9]{6}\Z")


_HOLDER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")


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
    def load(cls, path: str | os.PathLike[str], cities: Mapping[str, str] | None = None) -> Registry:
        p = Path(path)
        if not p.exists():
            raise RegistryError([f"{p} does not exist; the registry is a CSV with columns {', '.join(COLUMNS)}"])
        try:
            with p.open(newline="", encoding="utf-8") as f:
                return cls.parse(f, str(p), cities)
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise RegistryError([f"cannot read the SAM registry {p}: {exc}"]) from None

    @classmethod
    def parse(cls, lines: Iterable[str], source: str = "registry", cities: Mapping[str, str] | None = None) -> Registry:
        """``cities`` (name -> code, the inventory's): a line for any other city code is refused."""
        # Comment lines become empty records, so reader.line_num stays the line number in the file.
        reader = csv.reader("\n" if line.lstrip().startswith("#") else line for line in lines)
        header = next((rec for rec in reader if rec), None)
        if header is None:
            return cls({}, source)
        header = [h.strip() for h in header]
        missing = [c for c in COLUMNS[:4] if c not in header]
        if missing:
            raise RegistryError([f"{source}: header lacks column(s) {', '.join(missing)}"])
        idx = {c: header.index(c) for c in COLUMNS if c in header}
        rows: dict[str, SamAssignment] = {}
        errors: list[str] = []
        known = {str(code): name for name, code in (cities or {}).items()}
        unknown_city = False
        for rec in reader:
            if not rec or not "".join(rec).strip():
                continue
            n = reader.line_num

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
            elif cities is not None and city not in known:
                errors.append(f"{where}: city_code {city} is no city of the inventory")
                unknown_city = True
            if not _HOLDER_RE.match(holder):
                errors.append(f"{where}: holder {holder!r} must be letters, digits, '.', '_' or '-'")
            if status not in STATUSES:
                errors.append(f"{where}: status {status!r} is not one of {', '.join(STATUSES)}")
            rows[serial] = SamAssignment(serial, city, holder, status, get("station"))
        if unknown_city:
            errors.append("the inventory's cities: " + ", ".join(f"{c} {known[c]}" for c in sorted(known)))
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


def load_registry(path: str | None, cities: Mapping[str, str] | None = None) -> Registry | None:
    """The SAM registry (desired CSV) if one is configured and present; None otherwise. See Registry.parse."""
    if not path:
        return None
    expanded = os.path.expanduser(path)
    if not os.path.exists(expanded):
        return None
    return Registry.load(expanded, cities)
