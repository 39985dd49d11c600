# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rotation after a revocation: which shared keys must move to a new version, for whom, until when, and which SAMs
need reloading (docs/revocation.md, "Rotation").

A key type is *shared* when the catalogue says so: ``scope: province`` (one value for every holder) or an explicit
``shared: true``. City-scoped keys are diversified per city code, so a revoked city's keys tell nothing about the
others' and need no rotation. For each shared (type, version) the revoked holder was granted, the next version the
catalogue declares is granted to every remaining active city; the old version is retired ``grace_days`` after the
revocation date. This module only plans; distribution (keyblock_publish/keyblock_install) carries it out.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any


def shared_types(catalogue: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in catalogue if e.get("shared") or e.get("scope") == "province"}


def plan(
    catalogue: list[dict[str, Any]],
    grants: dict[str, list[dict[str, Any]]],
    city_statuses: dict[str, dict[str, Any]],
    *,
    grace_days: int,
    sam_rows: list[dict[str, str]] | None = None,
    city_codes: dict[str, str] | None = None,
) -> dict[str, Any]:
    """grants: city -> [{key_type, version}]; city_statuses: city -> {status, date}. Returns the rotation plan."""
    shared = shared_types(catalogue)
    revoked = sorted(c for c, s in city_statuses.items() if s.get("status") == "revoked")
    active = sorted(c for c, s in city_statuses.items() if s.get("status", "active") == "active")
    rotations: dict[tuple[str, int], dict[str, Any]] = {}
    missing: list[str] = []
    for city in revoked:
        when = str(city_statuses[city].get("date") or _dt.date.today().isoformat())[:10]
        for grant in grants.get(city, []):
            key_type, version = str(grant["key_type"]), int(grant["version"])
            if key_type not in shared:
                continue
            versions = sorted(int(v["version"]) for v in shared[key_type].get("versions") or [])
            newer = [v for v in versions if v > version]
            if not newer:
                missing.append(f"{key_type}.v{version:02x}: the catalogue declares no newer version - add one")
                continue
            retire = (_dt.date.fromisoformat(when) + _dt.timedelta(days=grace_days)).isoformat()
            item = rotations.setdefault(
                (key_type, version),
                {
                    "key_type": key_type,
                    "old_version": version,
                    "new_version": newer[0],
                    "retire_after": retire,
                    "because": [],
                },
            )
            item["because"].append(city)
            item["retire_after"] = min(item["retire_after"], retire)
    new_grants = {
        city: [{"key_type": r["key_type"], "version": r["new_version"]} for r in rotations.values()] for city in active
    }
    reload: list[str] = []
    sam_types = {r["key_type"] for r in rotations.values() if "sam" in (shared[r["key_type"]].get("holders") or [])}
    if sam_types and sam_rows:
        codes = {str((city_codes or {}).get(c, "")) for c in active}
        reload = sorted(r["serial"] for r in sam_rows if r.get("status") == "active" and r.get("city_code") in codes)
    return {
        "rotations": sorted(rotations.values(), key=lambda r: (r["key_type"], r["old_version"])),
        "missing_versions": missing,
        "new_grants": new_grants if rotations else {},
        "reload_sams": reload,
    }


def retired(plan_: dict[str, Any], today: _dt.date | None = None) -> list[str]:
    """'<type>.v<VV>' of old versions whose grace period is over."""
    day = (today or _dt.date.today()).isoformat()
    return [f"{r['key_type']}.v{r['old_version']:02x}" for r in plan_["rotations"] if r["retire_after"] <= day]
