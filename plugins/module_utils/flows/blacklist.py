# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The SAM blacklist in an HSM and on a node: signed by the province, verified and installed by each node.

A node refuses a list that fails its MAC, that has expired, or whose version is below the highest it has ever
accepted. That highest version is kept in the node's token (a private data object, RECORD_LABEL), apart from the
list file, so deleting the file does not reopen the door to a genuine older list. Everything fails closed: no
list, an unreadable list, an expired list or an unreadable record means no valid blacklist (docs/blacklist.md).
"""

from __future__ import annotations

import datetime as _dt
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
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.blacklist import FORMAT, body_bytes, check_fresh
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.data_object import read_data, write_data
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.policy import KeyPolicy
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import HsmToken

PROVINCE_KEY_LABEL = key_label("internal", "blacklist_mac", 1, "province")
#: label of the data object holding the highest blacklist version this token's node has accepted
RECORD_LABEL = "tunion.sam_blacklist.highest_accepted"


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
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def highest_accepted(hsm: HsmToken) -> int:
    """The highest version this node ever accepted (0: none yet). A damaged record is refused, never read as 0."""
    versions = []
    for raw in read_data(hsm, RECORD_LABEL):  # two only after an interrupted update: the higher counts
        try:
            version = json.loads(raw.decode("utf-8"))["version"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            version = None
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise BlacklistError(
                f"token {hsm.label}: the record of the highest accepted blacklist version ({RECORD_LABEL}) is "
                "damaged; no blacklist is trusted until it is repaired (docs/blacklist.md)"
            )
        versions.append(version)
    return max(versions, default=0)


def _record(hsm: HsmToken, doc: dict[str, Any]) -> None:
    value = {"version": int(doc["version"]), "digest": hashlib.sha256(body_bytes(doc)).hexdigest()}
    write_data(hsm, RECORD_LABEL, json.dumps(value, sort_keys=True).encode())


def check_not_older(hsm: HsmToken, doc: dict[str, Any]) -> int:
    """Refuse a version below the highest this node accepted (the record in its token); return that highest."""
    highest = highest_accepted(hsm)
    if int(doc["version"]) < highest:
        raise BlacklistError(
            f"blacklist v{doc['version']} is older than v{highest}, the highest this node has accepted "
            f"(recorded in token {hsm.label}); refusing to go back"
        )
    return highest


def install(hsm: HsmToken, path: str, doc: dict[str, Any], *, today: _dt.date, check_mode: bool) -> tuple[bool, int]:
    """After :func:`verify`: refuse an expired list or a rollback, write the list (atomically) and raise the record.

    Returns (changed, the highest version accepted before). The same version, body and MAC already in place and
    recorded is left alone.
    """
    check_fresh(doc, today)
    highest = check_not_older(hsm, doc)
    current = held(path)
    if current is not None:
        have = current.get("version")
        if isinstance(have, int) and not isinstance(have, bool) and have > int(doc["version"]):
            raise BlacklistError(f"this node holds blacklist v{have}; refusing to go back to v{doc['version']}")
    same_file = current is not None and body_bytes(current) == body_bytes(doc) and current.get("mac") == doc["mac"]
    if same_file and highest == int(doc["version"]):
        return False, highest
    if not check_mode:
        if int(doc["version"]) > highest:
            _record(hsm, doc)  # first: a crash between the two leaves the door shut, not open
        if not same_file:
            target = Path(os.path.expanduser(path))
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            atomic_write(target, json.dumps(doc, indent=1, ensure_ascii=False, sort_keys=True), 0o644)
    return True, highest


def station_list(hsm: HsmToken, path: str, *, today: _dt.date) -> dict[str, Any]:
    """The SAM station's list, trusted only when present, MAC-verified under the province key, unexpired and not
    older than the highest version the station accepted. Anything else stops the batch before any SAM."""
    if not os.path.exists(os.path.expanduser(path)):
        raise BlacklistError(
            f"no SAM blacklist at {path}: no SAM is loaded without one; install it first "
            "(playbooks/enforce_status.yml publishes and installs it)"
        )
    doc = held(path)
    if doc is None:
        raise BlacklistError(f"the SAM blacklist at {path} cannot be read; no SAM is loaded until it is replaced")
    verify(hsm, doc, city_code=None)
    check_fresh(doc, today)
    check_not_older(hsm, doc)
    return doc
