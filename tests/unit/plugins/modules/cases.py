"""Arguments that would let each module run, except that nothing it would talk to exists.

The PKCS#11 library is a path that does not exist, OpenBao is a port nothing listens on, pcscd a socket that is not
there: a module given these reaches only its own validation, or fails on the first connection.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.blacklist import FORMAT, body_bytes

from .conftest import NO_LIBRARY, NO_OPENBAO, lab_catalogue

CITIES = {"guangzhou": "440100", "shenzhen": "440300"}
REGISTRY_HEADER = "serial,city_code,holder,status,station,note\n"
REGISTRY_LINES = [
    "44440100000000000001,440100,guangzhou-metro,active,,\n",
    "44440300000000000001,440300,shenzhen-bus,active,,\n",
]
GRANTS = [{"key_type": "purchase", "version": 1}, {"key_type": "load", "version": 1}]

OPENBAO = {"url": NO_OPENBAO, "token": "s.not-a-real-token", "timeout": 2}
PKCS11 = {"pkcs11_library": NO_LIBRARY, "token_label": "tunion-test", "user_pin": "1234"}

# Which option of each module carries a catalogue, and which a SAM registry file.
CATALOGUE_OPTION = {
    "distribution_plan": "catalogue",
    "hsm_key": "catalogue",
    "hsm_key_info": "catalogue",
    "key_catalogue_validate": "catalogue",
    "keyblock_publish": "catalogue",
    "keyblock_status": "catalogue",
    "openbao_city_revoke": "catalogue",
    "sam_inject": "catalogue",
}
REGISTRY_OPTION = {
    "distribution_plan": "sam_registry",
    "openbao_city_revoke": "sam_registry",
    "sam_blacklist_publish": "sam_registry",
    "sam_info": "registry",
    "sam_inject": "registry",
    "sam_registry_info": "registry",
}
# Modules that know the inventory's cities, so they can refuse a registry line for a city that is none of them.
KNOWS_CITIES = {"distribution_plan", "openbao_city_revoke", "sam_blacklist_publish"}


def blacklist_document() -> dict[str, Any]:
    """A well-formed blacklist (digest right, MAC made up): only the HSM could tell it is not genuine."""
    doc: dict[str, Any] = {
        "format": FORMAT,
        "version": 1,
        "issuer": "GD-TUNION-PROVINCE",
        "expires": "2099-01-01",
        "entries": [],
    }
    mac = {"digest": hashlib.sha256(body_bytes(doc)).hexdigest(), "cities": {"440100": {"kek_version": 1}}}
    mac["cities"]["440100"]["cmac"] = "00" * 16
    return {**doc, "mac": mac}


def write_registry(tmp: Path, lines: list[str] | None = None) -> str:
    path = tmp / "sam_registry.csv"
    path.write_text(REGISTRY_HEADER + "".join(REGISTRY_LINES if lines is None else lines), encoding="utf-8")
    return str(path)


def targets() -> list[dict[str, Any]]:
    return [{"city": c, "city_code": code, "grants": copy.deepcopy(GRANTS)} for c, code in CITIES.items()]


def base_args(name: str, tmp: Path) -> dict[str, Any]:
    """Complete, valid arguments for module ``name``; nothing they point at is reachable."""
    registry = write_registry(tmp)
    catalogue = lab_catalogue()
    status: dict[str, Any] = {"cities": {}, "holders": {}, "sams": {}, "key_versions": {}}
    city = {"city": "guangzhou", "city_code": "440100"}
    match name:
        case "city_enrol" | "keyblock_install":
            return {**OPENBAO, **PKCS11, **city}
        case "city_hsm_revoke":
            return {**PKCS11, "city_codes": ["440100"]}
        case "distribution_plan":
            return {
                **OPENBAO,
                "cities": dict(CITIES),
                "status": status,
                "sam_registry": registry,
                "catalogue": catalogue,
                "targets": targets(),
                "today": "2026-12-01",
            }
        case "enforcement_report":
            return {**OPENBAO, "openbao_result": {"changed": False}, "report_dir": str(tmp / "reports")}
        case "hsm_key":
            return {**PKCS11, "catalogue": catalogue, "key": "load", "version": 1}
        case "hsm_key_info":
            return {**PKCS11, "catalogue": catalogue}
        case "hsm_token":
            return {**PKCS11, "so_pin": "5678"}
        case "key_catalogue_validate":
            return {"catalogue": catalogue}
        case "keyblock_publish" | "keyblock_status":
            return {**OPENBAO, **PKCS11, "so_pin": "5678", "targets": targets(), "catalogue": catalogue}
        case "openbao_city_access" | "openbao_secret_id":
            return {**OPENBAO, "cities": list(CITIES)}
        case "openbao_city_revoke":
            return {
                **OPENBAO,
                "cities": dict(CITIES),
                "status": status,
                "sam_registry": registry,
                "catalogue": catalogue,
                "grants": {c: copy.deepcopy(GRANTS) for c in CITIES},
                "today": "2026-12-01",
            }
        case "sam_blacklist_install":
            return {
                **PKCS11,
                "blacklist": blacklist_document(),
                "city_code": "440100",
                "path": str(tmp / "blacklist.json"),
            }
        case "sam_blacklist_publish":
            return {
                **OPENBAO,
                **PKCS11,
                "cities": dict(CITIES),
                "statuses": {"cities": {}},
                "sam_registry": registry,
                "validity_days": 7,
            }
        case "sam_info":
            return {"readers": ["*"], "registry": registry}
        case "sam_inject":
            return {
                **PKCS11,
                "catalogue": catalogue,
                "registry": registry,
                "observed_db": str(tmp / "observed.db"),
                "blacklist": str(tmp / "no-blacklist.json"),
                "station": "sam-station-01",
                "operator": "officer",
                "readers": ["*"],
            }
        case "sam_registry_info":
            return {"registry": registry, "observed_db": str(tmp / "observed.db")}
        case "backup_ceremony":
            return {
                **PKCS11,
                "so_pin": "5678",
                "kek_label": "internal.backup_kek.v02.province",
                "kek_id": "03320200",
                "custodians": [{"name": n, "directory": str(tmp / n)} for n in ("alice", "bob", "carol")],
                "threshold": 2,
                "record_path": str(tmp / "ceremony.json"),
                "operator": "officer",
            }
        case "backup_create":
            return {
                **OPENBAO,
                **PKCS11,
                "kek_label": "internal.backup_kek.v02.province",
                "kek_version": 2,
                "dest_dir": str(tmp / "sets"),
                "operator": "officer",
                "software_version": "0.1.0",
            }
        case "backup_restore":
            return {
                **OPENBAO,
                **PKCS11,
                "so_pin": "5678",
                "set_path": str(tmp / "sets" / "one"),
                "custodians": ["alice", "bob", "carol"],
                "threshold": 2,
                "shares": {"alice": "value: 00\nkcv: 000000\n", "bob": "value: 00\nkcv: 000000\n"},
                "kek_label": "internal.backup_kek.v02.province",
                "kek_id": "03320200",
            }
        case "journal_verify":
            return {"path": str(tmp / "journal.sqlite")}
    raise AssertionError(f"no base arguments for module {name}; add them here")
