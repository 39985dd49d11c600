# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Statuses of holders (docs/revocation.md): the model, the names a status may refer to, and what is in force.

``active`` / ``suspended`` (access cut, material kept: reversible) / ``revoked`` (access cut, material destroyed,
with a reason and a date), for city operators, holders, single SAMs and key versions (粤交〔2019〕11号 第十七条).
An unknown holder, or the province's own identity, is refused before anything changes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.clock import parse_day
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import RevocationError
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.names import (
    CITY_CODE_RE,
    KeyName,
    check_cities,
    version_name,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.catalogue import load_catalogue
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.sam_registry import Registry, load_registry

STATUSES = ("active", "suspended", "revoked")


KINDS = ("cities", "holders", "sams", "key_versions")


# Names that are the province itself: never revocable through these modules (it would lock the province out of
# its own key management; 第六条 makes the province the keeper of the keys).
PROVINCE_NAMES = frozenset({"province", "tunion-province", "province-admin", "root", "default"})


_KEY_VERSION_RE = re.compile(r"^[a-z][a-z0-9_]*\.v[0-9a-f]{2}\Z")


@dataclass(frozen=True)
class Status:
    status: str = "active"
    reason: str = ""
    date: str = ""
    source: str = "inventory"

    def as_dict(self) -> dict[str, str]:
        return {"status": self.status, "reason": self.reason, "date": self.date, "source": self.source}


def parse_status(kind: str, name: str, raw: Any, source: str = "inventory") -> Status:
    """One entry of ``tunion_status.<kind>.<name>``: a status word, or {status, reason, date}."""
    where = f"tunion_status.{kind}.{name}"
    if isinstance(raw, str):
        raw = {"status": raw}
    if not isinstance(raw, dict):
        raise RevocationError(f"{where}: expected {{status, reason, date}}, got {type(raw).__name__}")
    status = str(raw.get("status", "")).strip()
    if status not in STATUSES:
        raise RevocationError(f"{where}: status {status!r} is not one of {', '.join(STATUSES)}")
    reason = str(raw.get("reason") or "").strip()
    date = str(raw.get("date") or "").strip()
    if status != "active" and not reason:
        raise RevocationError(f"{where}: a {status} entry needs a reason (粤交〔2019〕11号 第十七条)")
    if status == "revoked" and not date:
        raise RevocationError(f"{where}: a revoked entry needs a date (YYYY-MM-DD)")
    if date:
        try:
            parse_day(date)
        except ValueError:
            raise RevocationError(f"{where}: date {date!r} is not YYYY-MM-DD") from None
    return Status(status, reason, date, str(raw.get("source") or source))


@dataclass
class Universe:
    """Everything a status may name: the inventory's cities (name -> code), the registry's holders and SAMs."""

    cities: dict[str, str]
    holders: set[str] = field(default_factory=set)
    sams: set[str] = field(default_factory=set)
    key_versions: set[str] = field(default_factory=set)

    def kind_of(self, name: str) -> str | None:
        if name in self.cities:
            return "cities"
        if name in self.holders:
            return "holders"
        if name.upper() in self.sams:
            return "sams"
        if name in self.key_versions:
            return "key_versions"
        return None


def refuse_province(name: str) -> None:
    if name in PROVINCE_NAMES or name.startswith("province-"):
        raise RevocationError(
            f"{name!r} is the province's own identity: the province cannot revoke or suspend itself through "
            "these playbooks (it keeps the keys, 粤交〔2019〕11号 第六条). Nothing was changed."
        )


def check_name(kind: str, name: str, universe: Universe) -> None:
    refuse_province(name)
    known = {
        "cities": set(universe.cities),
        "holders": universe.holders,
        "sams": universe.sams,
        "key_versions": universe.key_versions,
    }[kind]
    candidate = name.upper() if kind == "sams" else name
    if candidate not in known:
        hint = {
            "cities": f"cities are the inventory hosts of group cities ({', '.join(sorted(universe.cities)[:5])}, ...)",
            "holders": "holders are the transport companies and agents of the SAM registry",
            "sams": "SAMs are the serials of the SAM registry",
            "key_versions": "key versions are <type>.v<VV> of the key catalogue, e.g. purchase.v01",
        }[kind]
        singular = {"cities": "city", "holders": "holder", "sams": "SAM", "key_versions": "key version"}[kind]
        raise RevocationError(f"unknown {singular} {name!r}: {hint}. Nothing was changed.")


def desired_statuses(
    raw: dict[str, Any] | None, universe: Universe, recorded: dict[str, dict[str, Any]] | None = None
) -> dict[str, dict[str, Status]]:
    """kind -> name -> Status. Inventory entries win; a status recorded in OpenBao (e.g. by the emergency form,
    playbooks/revoke.yml) stays in force while the inventory says nothing about that name: lifting a revocation
    or suspension takes an explicit ``active`` entry. Every error is reported at once."""
    raw = raw or {}
    errors: list[str] = []
    out: dict[str, dict[str, Status]] = {kind: {} for kind in KINDS}
    for kind in raw:
        if kind not in KINDS:
            errors.append(f"tunion_status.{kind}: unknown section; expected {', '.join(KINDS)}")
    for kind in KINDS:
        for name, entry in (raw.get(kind) or {}).items():
            try:
                check_name(kind, str(name), universe)
                out[kind][str(name).upper() if kind == "sams" else str(name)] = parse_status(kind, str(name), entry)
            except RevocationError as exc:
                errors.append(str(exc).replace(" Nothing was changed.", ""))
    if errors:
        raise RevocationError("status refused: " + "; ".join(errors) + ". Nothing was changed.")
    for key, record in (recorded or {}).items():
        kind, _colon, name = key.partition(":")
        if kind not in KINDS or record.get("status") not in ("suspended", "revoked"):
            continue
        kept = Status(
            record["status"], record.get("reason", ""), record.get("date", ""), record.get("source", "recorded")
        )
        current = out[kind].get(name)
        if current is None or (
            record.get("source") == "emergency" and current.status == "active" and current.date < kept.date
        ):
            # an emergency revocation is lifted only by an inventory entry dated on or after it
            out[kind][name] = kept
    return out


def resolve_request(name: str, universe: Universe, kind: str | None = None) -> str:
    """Which kind of holder ``name`` is (the emergency form names one holder). Refuses the province and unknowns."""
    name = str(name or "").strip()
    if not name:
        raise RevocationError("name the holder to revoke (-e revoke_holder=<city, holder or SAM serial>)")
    refuse_province(name)
    found = kind or universe.kind_of(name)
    if found is None or found not in KINDS:
        raise RevocationError(
            f"unknown holder {name!r}: not a city of the inventory, a holder or SAM of the SAM registry, "
            "nor a key version of the catalogue. Nothing was changed."
        )
    check_name(found, name, universe)
    return found


def city_status(desired: dict[str, dict[str, Status]], city: str) -> Status:
    return desired["cities"].get(city, Status())


def status_differs(recorded: dict[str, Any] | None, status: Status) -> bool:
    """True when the recorded status (None: never recorded, i.e. active) is not ``status``."""
    if recorded is None:
        return status.status != "active"
    if status == Status():  # not listed in the inventory: an active record (with its reason) stays as it is
        return recorded.get("status", "active") != "active"
    return any(recorded.get(k) != v for k, v in status.as_dict().items() if k != "source")


def is_key_version(name: str) -> bool:
    return bool(_KEY_VERSION_RE.match(str(name)))


def version_selector(key_versions: Iterable[str]) -> Callable[[KeyName], bool]:
    """Accepts the objects of these key versions ('<type>.v<VV>', as in statuses and block names)."""
    wanted = set(key_versions)
    return lambda name: version_name(name.key_type, name.version) in wanted


def universe(cities: dict[str, str], registry: Registry | None, catalogue: list[dict[str, Any]] | None) -> Universe:
    holders: set[str] = set()
    sams: set[str] = set()
    if registry is not None:
        for serial, row in registry.rows.items():
            sams.add(serial)
            holders.add(row.holder)
    versions = {
        version_name(entry["name"], v["version"]) for entry in (catalogue or []) for v in entry.get("versions") or []
    }
    return Universe(cities={k: str(v) for k, v in cities.items()}, holders=holders, sams=sams, key_versions=versions)


def check_status_params(params: Mapping[str, Any]) -> None:
    """The cities, the day and the cities named by grants or targets: refused before anything is reached."""
    cities = params["cities"]
    check_cities(cities)
    bad = sorted(f"{name}: {code!r}" for name, code in cities.items() if not CITY_CODE_RE.match(str(code)))
    if bad:
        raise RevocationError(f"cities: city codes must be 6 digits ({', '.join(bad)}); nothing was changed")
    try:
        parse_day(params.get("today"))
    except ValueError as exc:
        raise RevocationError(f"today: {exc}; nothing was changed") from None
    named = set(params.get("grants") or {}) | {str(t.get("city")) for t in params.get("targets") or []}
    unknown = sorted(named - set(cities))
    if unknown:
        raise RevocationError(
            f"grants or targets name {', '.join(map(repr, unknown))}, which "
            f"{'is no city' if len(unknown) == 1 else 'are no cities'} of the inventory "
            f"(cities: {', '.join(sorted(cities))}); nothing was changed"
        )


def world_of(params: Mapping[str, Any]) -> tuple[Registry | None, Universe]:
    """The SAM registry (if any) and every name a status may refer to, from the module's parameters.

    A bad catalogue, or a registry line for a city the inventory lacks, is refused here, before anything is reached."""
    check_status_params(params)
    if params["catalogue"] is not None:
        load_catalogue(params["catalogue"])
    registry = load_registry(params["sam_registry"], params["cities"])
    return registry, universe(params["cities"], registry, params["catalogue"])


def status_dicts(desired: dict[str, dict[str, Status]], world: Universe) -> dict[str, dict[str, dict[str, str]]]:
    """Statuses in force as plain data: kind -> name -> {status, reason, date, source}; every city is listed."""
    statuses = {kind: {name: s.as_dict() for name, s in sorted(desired[kind].items())} for kind in KINDS}
    statuses["cities"] = {c: city_status(desired, c).as_dict() for c in sorted(world.cities)}
    return statuses
