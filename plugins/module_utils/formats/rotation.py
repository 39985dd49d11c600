# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rotation after a revocation, and what each active city is granted once statuses are in force
(docs/revocation.md, "Rotation"; 粤交〔2019〕11号 第十七条: the keys of a holder who misused them are taken back, so the
keys it shared with others must change for everyone else).

A key type is *shared* when the catalogue says so: ``scope: province`` (one value for every holder) or an explicit
``shared: true``. City-scoped keys are diversified per city code, so a revoked city's keys tell nothing about the
others' and need no rotation. For each shared (type, version) a revoked city held, the next version the catalogue
declares is granted to every remaining active city, and the old version is retired ``grace_days`` after the
revocation date: its blocks leave OpenBao and the cities destroy it in their HSMs.

A rotation is recorded in OpenBao (``province/rotation/<type>.v<VV>``, every version kept) the first time it is
planned, and stays: reinstating the revoked city later does not bring the compromised version back.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.clock import parse_day
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.names import version_name


def shared_types(catalogue: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in catalogue if e.get("shared") or e.get("scope") == "province"}


def _held(grants: list[dict[str, Any]], recorded: list[dict[str, Any]], city: str) -> set[tuple[str, int]]:
    """What a revoked city held: its grants, plus the new versions of rotations it was not the cause of."""
    held = {(str(g["key_type"]), int(g.get("version", 1))) for g in grants}
    for record in sorted(recorded, key=lambda r: int(r["old_version"])):
        if city in (record.get("because") or []):
            continue
        if (record["key_type"], int(record["old_version"])) in held:
            held.add((record["key_type"], int(record["new_version"])))
    return held


def _version_rotations(
    rotations: dict[tuple[str, int], dict[str, Any]],
    shared: dict[str, dict[str, Any]],
    revoked_versions: list[str],
    key_versions: dict[str, dict[str, Any]],
    day: _dt.date,
) -> list[str]:
    """A revoked version of a shared key: everyone moves to the next one at once (no grace). Returns what the
    catalogue lacks."""
    missing = []
    for name in revoked_versions:
        key_type, _sep, hexversion = name.rpartition(".v")
        version, when = int(hexversion, 16), parse_day(key_versions[name].get("date"), day).isoformat()
        if key_type not in shared or (key_type, version) in rotations:
            continue
        newer = [v for v in sorted(int(v["version"]) for v in shared[key_type].get("versions") or []) if v > version]
        if not newer:
            missing.append(f"{name}: revoked, and the catalogue declares no newer version - add one")
            continue
        rotations[(key_type, version)] = {
            "key_type": key_type,
            "old_version": version,
            "new_version": newer[0],
            "since": when,
            "retire_after": when,
            "because": [f"key version {name}"],
        }
    return missing


def plan(
    catalogue: list[dict[str, Any]],
    grants: dict[str, list[dict[str, Any]]],
    city_statuses: dict[str, dict[str, Any]],
    *,
    grace_days: int,
    sam_rows: list[dict[str, str]] | None = None,
    city_codes: dict[str, str] | None = None,
    recorded: list[dict[str, Any]] | None = None,
    key_versions: dict[str, dict[str, Any]] | None = None,
    today: _dt.date | str | None = None,
) -> dict[str, Any]:
    """The rotations in force (recorded ones, plus those the revoked cities now call for), and what follows from
    them on ``today``: new grants, retired old versions, key versions revoked by status, SAMs to reload, and the
    new versions the province must generate. grants: city -> [{key_type, version}] (the inventory's)."""
    day = parse_day(today)
    shared = shared_types(catalogue)
    recorded = [dict(r) for r in recorded or []]
    revoked = sorted(c for c, s in city_statuses.items() if s.get("status") == "revoked")
    active = sorted(c for c, s in city_statuses.items() if s.get("status", "active") == "active")
    rotations: dict[tuple[str, int], dict[str, Any]] = {
        (r["key_type"], int(r["old_version"])): dict(r, because=sorted(r.get("because") or [])) for r in recorded
    }
    missing: list[str] = []
    for city in revoked:
        when = parse_day(city_statuses[city].get("date"), day)
        retire = (when + _dt.timedelta(days=grace_days)).isoformat()
        for key_type, version in sorted(_held(grants.get(city, []), recorded, city)):
            if key_type not in shared:
                continue
            item = rotations.get((key_type, version))
            if item is None:
                versions = sorted(int(v["version"]) for v in shared[key_type].get("versions") or [])
                newer = [v for v in versions if v > version]
                if not newer:
                    name = version_name(key_type, version)
                    missing.append(f"{name}: the catalogue declares no newer version - add one")
                    continue
                item = rotations[(key_type, version)] = {
                    "key_type": key_type,
                    "old_version": version,
                    "new_version": newer[0],
                    "since": when.isoformat(),
                    "retire_after": retire,
                    "because": [],
                }
            if city not in item["because"]:
                item["because"] = sorted([*item["because"], city])
            item["retire_after"] = min(item["retire_after"], retire)
            item["since"] = min(item.get("since") or when.isoformat(), when.isoformat())
    revoked_versions = sorted(n for n, s in (key_versions or {}).items() if s.get("status") == "revoked")
    missing += _version_rotations(rotations, shared, revoked_versions, key_versions or {}, day)
    ordered = sorted(rotations.values(), key=lambda r: (r["key_type"], int(r["old_version"])))
    retired = [version_name(r["key_type"], r["old_version"]) for r in ordered if r["retire_after"] <= day.isoformat()]
    issue = []
    for r in ordered:
        entry = shared.get(r["key_type"]) or {}
        if entry.get("origin", "province") == "province" and entry.get("source", "generate") == "generate":
            issue.append({"key": r["key_type"], "version": int(r["new_version"])})
    new_grants = {}
    for city in active:
        added = [g for g in effective_grants(grants.get(city, []), ordered, set(), set()) if g.get("rotated")]
        if added:
            new_grants[city] = [{"key_type": g["key_type"], "version": g["version"]} for g in added]
    reload: list[str] = []
    sam_types = {r["key_type"] for r in ordered if "sam" in ((shared.get(r["key_type"]) or {}).get("holders") or [])}
    if sam_types and sam_rows:
        codes = {str((city_codes or {}).get(c, "")) for c in active}
        reload = sorted(r["serial"] for r in sam_rows if r.get("status") == "active" and r.get("city_code") in codes)
    return {
        "today": day.isoformat(),
        "rotations": ordered,
        "missing_versions": missing,
        "new_grants": new_grants,
        "retired": retired,
        "revoked_versions": revoked_versions,
        "destroy_versions": sorted(set(retired) | set(revoked_versions)),
        "issue": issue,
        "reload_sams": reload,
    }


def effective_grants(
    grants: list[dict[str, Any]],
    rotations: list[dict[str, Any]],
    retired: set[str],
    revoked: set[str],
    city: str | None = None,
) -> list[dict[str, Any]]:
    """One active city's grants once rotations are applied (the new version added wherever the old one is granted,
    rotated=True) and retired or revoked versions are taken away. A version rotated away because of ``city`` (its
    revocation) is taken from it at once, grace period or not: reinstated, it gets the new version only."""
    out = [dict(g, version=int(g.get("version", 1))) for g in grants]
    compromised = set()
    for r in sorted(rotations, key=lambda r: (r["key_type"], int(r["old_version"]))):
        have = {(g["key_type"], g["version"]) for g in out}
        if (r["key_type"], int(r["old_version"])) in have and (r["key_type"], int(r["new_version"])) not in have:
            out.append({"key_type": r["key_type"], "version": int(r["new_version"]), "rotated": True})
        if city is not None and city in (r.get("because") or []):
            compromised.add(version_name(r["key_type"], int(r["old_version"])))
    gone = retired | revoked | compromised
    return [g for g in out if version_name(g["key_type"], g["version"]) not in gone]


def effective_targets(targets: list[dict[str, Any]], plan_: dict[str, Any], active: list[str]) -> list[dict[str, Any]]:
    """Distribution targets of the active cities only, with their effective grants (module argument form)."""
    retired, revoked = set(plan_["retired"]), set(plan_["revoked_versions"])
    out = []
    for target in targets:
        if target["city"] not in active:
            continue
        grants = effective_grants(
            list(target.get("grants") or []), plan_["rotations"], retired, revoked, city=target["city"]
        )
        out.append(dict(target, grants=[{k: v for k, v in g.items() if k != "rotated"} for g in grants]))
    return out


_RECORD_KEYS = ("key_type", "old_version", "new_version", "since", "retire_after", "because")
