# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The SAM blacklist document (docs/blacklist.md): its entries, canonical body, next version and fingerprint.

Every SAM that is revoked or suspended - itself, or through its city operator or its holder (粤交〔2019〕11号
第十七条) - is listed with the most severe status that applies. Signing and verifying happen in an HSM
(flows/blacklist.py).
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import json
from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.clock import now, parse_day
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import BlacklistError

FORMAT = "TUNION-SAMBL-1"


SEVERITY = {"active": 0, "suspended": 1, "revoked": 2}


def entries_for(
    rows: list[dict[str, str]],
    statuses: dict[str, dict[str, dict[str, Any]]],
    cities: dict[str, str],
) -> list[dict[str, str]]:
    """Blacklisted SAMs: rows are registry assignments (serial, city_code, holder, status); statuses is the status in
    force per kind and name. A SAM is listed with the most severe of its own, its city's and its holder's status."""
    for kind in ("sams", "holders", "cities"):  # the statuses in force, as openbao_city_revoke returns them
        for name, status in (statuses.get(kind) or {}).items():
            if not isinstance(status, dict) or status.get("status", "active") not in SEVERITY:
                raise BlacklistError(
                    f"statuses.{kind}.{name}: {status!r} is not a status in force ({{status: "
                    f"{'|'.join(SEVERITY)}, reason, date}}, as openbao_city_revoke returns it); nothing was published"
                )
    city_by_code = {code: name for name, code in cities.items()}
    sams, holders, city_status = statuses.get("sams", {}), statuses.get("holders", {}), statuses.get("cities", {})
    listed: dict[str, dict[str, str]] = {}
    seen = set()
    for row in rows:
        serial = row["serial"].upper()
        seen.add(serial)
        reasons = [({"status": row.get("status", "active"), "reason": "SAM registry", "date": ""}, "sam")]
        if serial in sams:
            reasons.append((sams[serial], "sam"))
        if row.get("holder") in holders:
            reasons.append((holders[row["holder"]], f"holder {row['holder']}"))
        city = city_by_code.get(row.get("city_code", ""))
        if city and city in city_status:
            reasons.append((city_status[city], f"city {city}"))
        worst, why = max(reasons, key=lambda r: SEVERITY.get(r[0].get("status", "active"), 0))
        if worst.get("status", "active") != "active":
            listed[serial] = {
                "serial": serial,
                "city_code": row.get("city_code", ""),
                "holder": row.get("holder", ""),
                "status": worst["status"],
                "cause": why,
                "reason": worst.get("reason", ""),
                "since": worst.get("date", ""),
            }
    for serial, status in sams.items():  # a SAM given a status but absent from the registry is still listed
        if serial not in seen and status.get("status") != "active":
            listed[serial] = {
                "serial": serial,
                "city_code": "",
                "holder": "",
                "status": status["status"],
                "cause": "sam",
                "reason": status.get("reason", ""),
                "since": status.get("date", ""),
            }
    return [listed[s] for s in sorted(listed)]


def body_bytes(doc: dict[str, Any]) -> bytes:
    """The authenticated part: every field but ``mac``, canonical JSON (sorted keys, no spaces, UTF-8)."""
    body = {k: v for k, v in doc.items() if k != "mac"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def next_document(
    previous: dict[str, Any] | None,
    entries: list[dict[str, str]],
    issuer: str,
    *,
    today: _dt.date,
    validity_days: int,
) -> dict[str, Any]:
    """The unsigned document, valid until ``today + validity_days`` (``expires``, under the MAC).

    The previous version is kept only when its entries, issuer and expiry are all what this run would publish; any
    change - a new day renews the expiry - is version + 1, so a node can always tell a newer list from an older one.
    """
    if isinstance(validity_days, bool) or not isinstance(validity_days, int) or validity_days < 1:
        raise BlacklistError(f"validity_days {validity_days!r} is not a whole number of days >= 1; nothing published")
    expires = (today + _dt.timedelta(days=validity_days)).isoformat()
    if (
        previous
        and previous.get("entries") == entries
        and previous.get("issuer") == issuer
        and previous.get("expires") == expires
    ):
        return {k: v for k, v in previous.items() if k != "mac"}
    version = int((previous or {}).get("version", 0)) + 1
    return {
        "format": FORMAT,
        "version": version,
        "issuer": issuer,
        "issued_at": now(),
        "expires": expires,
        "entries": entries,
        "count": len(entries),
    }


def expiry(doc: dict[str, Any]) -> _dt.date:
    """The day the list stops being valid; a list without a well-formed ``expires`` is refused (fails closed)."""
    try:
        return parse_day(doc.get("expires") or "-")
    except ValueError:
        raise BlacklistError(
            f"blacklist v{doc.get('version')} carries no valid expiry ({str(doc.get('expires'))[:40]!r}); "
            "a list without one is never trusted"
        ) from None


def check_fresh(doc: dict[str, Any], today: _dt.date) -> _dt.date:
    """Refuse a list on or after its ``expires`` day (docs/blacklist.md); return that day."""
    expires = expiry(doc)
    if today >= expires:
        raise BlacklistError(
            f"blacklist v{doc.get('version')} expired on {expires.isoformat()} (today is {today.isoformat()}): "
            "OUT OF DATE - this node holds no valid SAM blacklist until the province publishes a new one "
            "(playbooks/enforce_status.yml)"
        )
    return expires


def fingerprint(doc: dict[str, Any]) -> str:
    return base64.b32encode(hashlib.sha256(body_bytes(doc)).digest()[:10]).decode()


def sam_groups(entries: list[dict[str, str]]) -> dict[str, list[str]]:
    """'<city code>/<holder>' -> serials: the SAM groups the report lists."""
    groups: dict[str, list[str]] = {}
    for entry in entries:
        groups.setdefault(f"{entry['city_code'] or '-'}/{entry['holder'] or '-'}", []).append(entry["serial"])
    return groups
