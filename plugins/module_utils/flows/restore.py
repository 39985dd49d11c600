# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore of the province from a backup set (粤交〔2019〕11号 第十四条), all checks before any write.

Order: the shares (each against its own check value, by custodian) → the quorum's KEK, as a session object, against
the manifest's KEK KCV → the manifest MAC and every entry's digest → the set's age against the newest known set →
only then the writes: keys under staging labels (each KCV checked), the backup KEK, the labels, the OpenBao
snapshot, the state files. A failure before the relabelling destroys every staged object: the target token is left
as it was (it must be empty to begin with).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import BackupError
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.files import atomic_write
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows import backup
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats import backup_manifest as bm
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.component import Component
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.shares import Scheme
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11 import backup_crypto as p11
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import HsmToken

#: opens a session on the target token: ``so=True`` for the security officer, else the user
Opener = Callable[[bool], AbstractContextManager[HsmToken]]


def newer_sets(set_path: str, known_dir: str | None, created: str) -> list[dict[str, Any]]:
    """Sets in ``known_dir`` newer than this one, each with what this one lacks (keys, state names)."""
    if not known_dir or not os.path.isdir(known_dir):
        return []
    this = Path(set_path).resolve()
    _manifest_bytes, _mac, mine, _entries = backup.read_set(set_path)
    my_labels = {k["label"] for k in mine["keys"]}
    out = []
    for manifest_path in sorted(Path(known_dir).glob(f"*/{bm.MANIFEST}")):
        if manifest_path.parent.resolve() == this:
            continue
        try:
            other = bm.parse_manifest(manifest_path.read_bytes())
        except BackupError:
            continue
        if str(other["created"]) > created:
            out.append(
                {
                    "set_id": other["set_id"],
                    "created": other["created"],
                    "keys_missing": sorted({k["label"] for k in other["keys"]} - my_labels),
                    "state_in_newer": sorted(other["state"]),
                }
            )
    return out


def restore_set(
    open_token: Opener,
    *,
    set_path: str,
    scheme: Scheme,
    shares: Mapping[str, Component],
    kek_label: str,
    kek_id: bytes,
    known_dir: str | None,
    force_older: bool,
    state_files: Mapping[str, str],
    restore_snapshot: Callable[[bytes], None] | None,
    check_mode: bool,
) -> dict[str, Any]:
    """Restore one set into the (empty) target token; returns the report (KCVs, never values)."""
    with open_token(False) as tok:
        present = [p11.label_of(o) for o in p11.token_objects(tok.session)]
        if present:
            raise BackupError(
                f"token {tok.label!r} is not empty ({len(present)} objects): a restore goes onto a fresh token only; "
                "nothing was written"
            )
        quorum, parts, kcvs = backup.quorum_parts(scheme, shares, tok)
        _manifest_bytes, _mac, manifest, _entries = backup.read_set(set_path)
        kek = backup.session_kek(tok, parts, kcvs, manifest["backup_kek"]["kcv"])
        verified = backup.verify_set(tok, kek, set_path)
        newer = newer_sets(set_path, known_dir, str(manifest["created"]))
        if newer and not force_older:
            lacks = "; ".join(
                f"{n['set_id']} ({n['created']}) also holds {', '.join(n['keys_missing']) or 'no other keys'}"
                for n in newer
            )
            err = BackupError(
                f"backup set {manifest['set_id']} ({manifest['created']}) is older than the newest known: {lacks}. "
                "Restore the newest set, or force_older to restore this one; nothing was written"
            )
            err.errors = [str(n) for n in newer]
            raise err
        snapshot = backup.decrypt_snapshot(tok, kek, verified)
        report: dict[str, Any] = {
            "set": backup.summary(manifest),
            "quorum": list(quorum),
            "older_than": newer,
            "keys_restored": [],
            "state_restored": [],
            "state_not_declared": sorted(set(manifest["state"]) - set(state_files)),
            "snapshot_restored": False,
        }
        if check_mode:
            report["keys_restored"] = [k["label"] for k in manifest["keys"]]
            return report
        staged = backup.restore_keys(tok, kek, verified, so_session=False)
    try:
        with open_token(True) as so:
            so_kek = backup.session_kek(so, parts, kcvs, manifest["backup_kek"]["kcv"])
            staged += backup.restore_keys(so, so_kek, verified, so_session=True)
            backup.store_kek(so, parts, kcvs, label=kek_label, key_id=kek_id, kcv=manifest["backup_kek"]["kcv"])
    except BaseException:
        with open_token(False) as tok:
            backup.destroy_staged(tok)
        raise
    with open_token(False) as tok:
        report["keys_restored"] = backup.commit_staged(tok)
    report["keys"] = staged
    if snapshot is not None and restore_snapshot is not None:
        restore_snapshot(snapshot)
        report["snapshot_restored"] = True
    for name, declared in sorted(state_files.items()):
        path = os.path.expanduser(declared)
        data = verified.files.get(f"state/{name}")
        if data is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, data, 0o600)
            report["state_restored"].append(name)
    return report
