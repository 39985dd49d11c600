# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The SAM blacklist in an HSM and on a node: signed by the province, verified and installed by each node.

A node refuses a list that fails its MAC, and a version older than the one it holds.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import BlacklistError
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.files import atomic_write
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.names import (
    CITY_CODE_RE,
    city_holder,
    key_label,
    parse_key_label,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.distribution.keys import HsmKeyOps
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.holder_keys import object_label
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.blacklist import FORMAT, body_bytes
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.policy import KeyPolicy
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import HsmToken

PROVINCE_KEY_LABEL = key_label("internal", "blacklist_mac", 1, "province")


# MAC key derivation data (TR-31 version D KDF input, as key blocks, with the label TUNIONBL): keeps the
# blacklist MAC key separate from the key-block KBAK derived from the same KEK.
BL_LABEL = b"TUNIONBL"


BL_DERIVATION = b"".join(bytes([counter]) + bytes.fromhex("0001000004" + "0100") + BL_LABEL for counter in (1, 2))


def province_mac_key(hsm: HsmToken, *, create: bool) -> Any:
    key = hsm.find_key(label=PROVINCE_KEY_LABEL)
    if key is None and create:
        key = hsm.generate_secret(
            "AES-256", PROVINCE_KEY_LABEL, None, KeyPolicy(usage="mac", extractable=False, wrap_with_trusted=False)
        )
    return key


def city_keks(hsm: HsmToken, codes: list[str]) -> dict[str, tuple[Any, int]]:
    """Highest-version KEK per city code found in the token: code -> (key, version)."""
    wanted = {city_holder(c): c for c in codes}
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


def check_document(doc: Any, *, city_code: str | None) -> None:
    """What needs no HSM - the city code, the format, the version, the digest - refused before any session."""
    if city_code is not None and not CITY_CODE_RE.match(str(city_code)):
        raise BlacklistError(f"city_code {city_code!r} is not a 6-digit city code; nothing installed")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("mac"), dict):
        raise BlacklistError(f"the blacklist given is not a {FORMAT} document; nothing installed")
    version = doc.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise BlacklistError(f"blacklist version {version!r} is not a positive number; nothing installed")
    if doc["mac"].get("digest") != hashlib.sha256(body_bytes(doc)).hexdigest():
        raise BlacklistError(f"blacklist v{version}: its body does not match its digest; nothing installed")


def verify(hsm: HsmToken, doc: dict[str, Any], *, city_code: str | None) -> None:
    """Check format and MAC in this HSM: the city's KEK-derived key, or the province key when city_code is None."""
    check_document(doc, city_code=city_code)
    data = body_bytes(doc)
    mac = doc["mac"]
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
        try:
            kek_version, cmac = int(entry["kek_version"]), bytes.fromhex(str(entry["cmac"]))
        except (KeyError, TypeError, ValueError):
            raise BlacklistError(
                f"blacklist v{doc.get('version')}: the MAC for city {city_code} is malformed; nothing installed"
            ) from None
        kek = hsm.find_key(label=key_label("internal", "kek", kek_version, city_holder(city_code)))
        if kek is None:
            raise BlacklistError(
                f"blacklist v{doc.get('version')}: MAC made under KEK v{kek_version}, which this HSM lacks"
            )
        good = HsmKeyOps(hsm).cmac_verify(kek, BL_DERIVATION, data, cmac)
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
        atomic_write(target, json.dumps(doc, indent=1, ensure_ascii=False, sort_keys=True), 0o644)
    return True
