# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The SAM blacklist: versioned, authenticated by MACs computed in HSMs (format in docs/blacklist.md).

Every SAM that is revoked or suspended - itself, or through its city operator or its holder (粤交〔2019〕11号
第十七条) - is listed. The province computes, inside its HSM:

* a province MAC (AES-CMAC under ``internal.blacklist_mac.v01.province``, an AES-256 key that never leaves it), which
  the province's own hosts (the SAM station) verify;
* one MAC per active city, under a MAC key derived inside the HSM from that city's KEK (as key blocks derive their
  KBAK, with a different label), which the city verifies in its own HSM before installing the list.

A node refuses a list that fails its MAC, and a version older than the one it holds.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import hmac
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils.distribution import HsmKeyOps, holder
from ansible_collections.tunion.keymgmt.plugins.module_utils.hsm import HsmToken, KeyPolicy, key_label, parse_key_label
from ansible_collections.tunion.keymgmt.plugins.module_utils.revocation import object_label

FORMAT = "TUNION-SAMBL-1"
OPENBAO_PATH = "province/blacklist"
PROVINCE_KEY_LABEL = key_label("internal", "blacklist_mac", 1, "province")
# MAC key derivation data (TR-31 version D KDF input, as key blocks, with the label TUNIONBL): keeps the
# blacklist MAC key separate from the key-block KBAK derived from the same KEK.
BL_LABEL = b"TUNIONBL"
BL_DERIVATION = b"".join(bytes([counter]) + bytes.fromhex("0001000004" + "0100") + BL_LABEL for counter in (1, 2))
SEVERITY = {"active": 0, "suspended": 1, "revoked": 2}


class BlacklistError(Exception):
    """The blacklist is malformed, fails its MAC, or is older than the one held. Nothing was installed."""


def entries_for(
    rows: list[dict[str, str]],
    statuses: dict[str, dict[str, dict[str, Any]]],
    cities: dict[str, str],
) -> list[dict[str, str]]:
    """Blacklisted SAMs: rows are registry assignments (serial, city_code, holder, status); statuses is the status in
    force per kind and name. A SAM is listed with the most severe of its own, its city's and its holder's status."""
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


def next_document(previous: dict[str, Any] | None, entries: list[dict[str, str]], issuer: str) -> dict[str, Any]:
    """The unsigned document: the previous version when the list is unchanged, else version + 1."""
    if previous and previous.get("entries") == entries and previous.get("issuer") == issuer:
        return {k: v for k, v in previous.items() if k != "mac"}
    version = int((previous or {}).get("version", 0)) + 1
    return {
        "format": FORMAT,
        "version": version,
        "issuer": issuer,
        "issued_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "entries": entries,
        "count": len(entries),
    }


def province_mac_key(hsm: HsmToken, *, create: bool) -> Any:
    key = hsm.find_key(label=PROVINCE_KEY_LABEL)
    if key is None and create:
        key = hsm.generate_secret(
            "AES-256", PROVINCE_KEY_LABEL, None, KeyPolicy(usage="mac", extractable=False, wrap_with_trusted=False)
        )
    return key


def city_keks(hsm: HsmToken, codes: list[str]) -> dict[str, tuple[Any, int]]:
    """Highest-version KEK per city code found in the token: code -> (key, version)."""
    wanted = {holder(c): c for c in codes}
    found: dict[str, tuple[Any, int]] = {}
    for obj in hsm.list_keys():
        name = parse_key_label(object_label(obj))
        if name and name.key_type == "kek" and name.holder in wanted and obj.object_class.name == "SECRET_KEY":
            code = wanted[name.holder]
            if code not in found or found[code][1] < name.version:
                found[code] = (obj, name.version)
    return found


def sign(hsm: HsmToken, doc: dict[str, Any], city_codes: list[str], *, create_key: bool) -> dict[str, Any]:
    """MACs over the body: the province's, and one per city code whose KEK the province token holds."""
    data = body_bytes(doc)
    key = province_mac_key(hsm, create=create_key)
    mac: dict[str, Any] = {"digest": hashlib.sha256(data).hexdigest(), "cities": {}}
    if key is not None:
        mac["province"] = {"key": PROVINCE_KEY_LABEL, "cmac": hsm.cmac(key, data).hex().upper()}
    ops = HsmKeyOps(hsm)
    for code, (kek, version) in sorted(city_keks(hsm, city_codes).items()):
        mac["cities"][code] = {"kek_version": version, "cmac": ops.cmac(kek, BL_DERIVATION, data).hex().upper()}
    return dict(doc, mac=mac)


def verify(hsm: HsmToken, doc: dict[str, Any], *, city_code: str | None) -> None:
    """Check format and MAC in this HSM: the city's KEK-derived key, or the province key when city_code is None."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "mac" not in doc:
        raise BlacklistError(f"not a {FORMAT} blacklist; nothing installed")
    data = body_bytes(doc)
    mac = doc["mac"] or {}
    if mac.get("digest") != hashlib.sha256(data).hexdigest():
        raise BlacklistError(f"blacklist v{doc.get('version')}: its body does not match its digest; nothing installed")
    if city_code is None:
        entry = mac.get("province") or {}
        key = province_mac_key(hsm, create=False)
        if key is None or not entry.get("cmac"):
            raise BlacklistError("blacklist: no province MAC or no province blacklist key here; nothing installed")
        good = hmac.compare_digest(hsm.cmac(key, data).hex().upper(), str(entry["cmac"]).upper())
    else:
        entry = (mac.get("cities") or {}).get(city_code) or {}
        if not entry.get("cmac"):
            raise BlacklistError(f"blacklist v{doc.get('version')} carries no MAC for city {city_code}; not installed")
        kek = hsm.find_key(label=key_label("internal", "kek", int(entry["kek_version"]), holder(city_code)))
        if kek is None:
            raise BlacklistError(
                f"blacklist v{doc.get('version')}: MAC made under KEK v{entry['kek_version']}, which this HSM lacks"
            )
        good = HsmKeyOps(hsm).cmac_verify(kek, BL_DERIVATION, data, bytes.fromhex(str(entry["cmac"])))
    if not good:
        raise BlacklistError(f"blacklist v{doc.get('version')}: MAC check failed in the HSM; nothing installed")


def held(path: str) -> dict[str, Any] | None:
    p = Path(os.path.expanduser(path))
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def install(path: str, doc: dict[str, Any], *, check_mode: bool) -> bool:
    """Write the verified list (atomically) unless the same version is already held. Refuses a rollback."""
    current = held(path)
    if current is not None:
        have = int(current.get("version", 0))
        if have > int(doc["version"]):
            raise BlacklistError(f"this node holds blacklist v{have}; refusing to go back to v{doc['version']}")
        if have == int(doc["version"]) and body_bytes(current) == body_bytes(doc) and current.get("mac") == doc["mac"]:
            return False
    if not check_mode:
        target = Path(os.path.expanduser(path))
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".blacklist.")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(doc, handle, indent=1, ensure_ascii=False, sort_keys=True)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    return True


def fingerprint(doc: dict[str, Any]) -> str:
    return base64.b32encode(hashlib.sha256(body_bytes(doc)).digest()[:10]).decode()


def sam_groups(entries: list[dict[str, str]]) -> dict[str, list[str]]:
    """'<city code>/<holder>' -> serials: the SAM groups the report lists."""
    groups: dict[str, list[str]] = {}
    for entry in entries:
        groups.setdefault(f"{entry['city_code'] or '-'}/{entry['holder'] or '-'}", []).append(entry["serial"])
    return groups
