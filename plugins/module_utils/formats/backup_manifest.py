# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The manifest of a province backup set (粤交〔2019〕11号 第十四条): what the set holds, each entry's size and digest.

A set is a directory::

    manifest.json   this manifest, canonical JSON (the bytes the MAC covers)
    manifest.mac    hex AES-CMAC of manifest.json, computed in the HSM (key: ``mac_key_wrapped``, below)
    keys/<n>.bin    one key object, wrapped in the HSM under the backup KEK (AES key wrap with padding)
    openbao.snap.enc  the OpenBao raft snapshot, AES-CBC-PAD under the set's data key (IV first)
    state/<name>    the durable state kept outside OpenBao, as it was on disk

The set's data key and MAC key are made in the HSM for each set and stored wrapped under the backup KEK
(``data_key_wrapped``, ``mac_key_wrapped``): only a quorum of custodians can bring the KEK that opens them. Every
entry, the manifest included, is thus covered: the entry by its SHA-256 in the manifest, the manifest by the MAC.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import BackupError

FORMAT = "tunion-backup-set/1"
MANIFEST = "manifest.json"
MANIFEST_MAC = "manifest.mac"
SNAPSHOT = "openbao.snap.enc"
_ENTRY_RE = re.compile(r"^(keys/[0-9]{4}\.bin|openbao\.snap\.enc|state/[A-Za-z0-9_.-]{1,80})\Z")
_HEX_RE = re.compile(r"^[0-9a-fA-F]*\Z")
_REQUIRED = (
    "format",
    "set_id",
    "created",
    "operator",
    "software_version",
    "token_label",
    "backup_kek",
    "data_key_wrapped",
    "mac_key_wrapped",
    "entries",
    "keys",
    "not_backed_up",
    "state",
)


@dataclass(frozen=True)
class Entry:
    name: str
    size: int
    sha256: str


def canonical(manifest: dict[str, Any]) -> bytes:
    """The bytes of the manifest that the MAC covers: sorted keys, no spaces, UTF-8."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def check_entry_name(name: str) -> str:
    """An entry's name, refused when it could leave the set's directory or is not one the format knows."""
    if not isinstance(name, str) or not _ENTRY_RE.match(name):
        raise BackupError(f"backup set: entry name {name!r} is not one a backup set holds; refusing the set")
    return name


def parse_manifest(data: bytes) -> dict[str, Any]:
    """The manifest from ``manifest.json``; anything malformed is refused by name (the MAC is checked apart)."""
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BackupError(f"backup set: {MANIFEST} is not JSON ({exc.__class__.__name__}); refusing the set") from None
    if not isinstance(manifest, dict):
        raise BackupError(f"backup set: {MANIFEST} is not a JSON object; refusing the set")
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing:
        raise BackupError(f"backup set: {MANIFEST} lacks {', '.join(missing)}; refusing the set")
    if manifest["format"] != FORMAT:
        raise BackupError(f"backup set: format {manifest['format']!r} is not {FORMAT!r}; refusing the set")
    for field in ("data_key_wrapped", "mac_key_wrapped"):
        if not isinstance(manifest[field], str) or not _HEX_RE.match(manifest[field]):
            raise BackupError(f"backup set: {field} is not hex; refusing the set")
    entries(manifest)
    return manifest


def entries(manifest: dict[str, Any]) -> list[Entry]:
    """The manifest's entries, each name checked, none twice."""
    raw = manifest.get("entries")
    if not isinstance(raw, list):
        raise BackupError("backup set: the manifest's entries are not a list; refusing the set")
    out: list[Entry] = []
    for item in raw:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("size"), int)
            or not isinstance(item.get("sha256"), str)
        ):
            raise BackupError("backup set: a manifest entry lacks its name, size or sha256; refusing the set")
        out.append(Entry(check_entry_name(item.get("name", "")), item["size"], item["sha256"]))
    names = [e.name for e in out]
    if len(set(names)) != len(names):
        raise BackupError("backup set: an entry is listed twice; refusing the set")
    return out
