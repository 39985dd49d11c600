# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backup and restore of the province (粤交〔2019〕11号 第十四条: 密钥数据、管理记录及备份的保管和恢复).

* :func:`ceremony` makes the backup KEK from custodian components, one XOR set per quorum (formats/shares.py), in
  the HSM, and returns each custodian's components to be written to that custodian's own file;
* :func:`make_set` writes one backup set (formats/backup_manifest.py): every key object wrapped in the HSM under the
  backup KEK, the OpenBao snapshot encrypted in the HSM, the durable state files, a manifest MAC'd in the HSM;
* :func:`verify_set` and :func:`restore_keys` check a set against a quorum's components and put its keys into a
  fresh token, committing only when every key's KCV matches.

No clear key ever passes through here except the custodians' components (which are what they hold on paper).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import BackupError, TunionError
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats import backup_manifest as bm
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.component import Component
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.shares import Scheme, quorum_id
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11 import backup_crypto as p11
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.policy import KeyPolicy
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import HsmToken

KEK_ALGORITHM = "AES-256"
KEK_KCV_METHOD = "cmac"  # the catalogue's kcv_method for backup_kek
STAGING_PREFIX = "restore-staging."


def kek_policy(*, token: bool = True) -> KeyPolicy:
    """The backup KEK: a trusted wrapping key (keys leave the HSM only under trusted KEKs), never extractable.

    SoftHSM lets the SO create trusted objects only as public ones, like the city KEKs (docs/backup.md)."""
    return KeyPolicy(usage="kek", token=token, private=False, extractable=False, trusted=True)


def _xor(parts: Sequence[bytes | bytearray]) -> bytearray:
    out = bytearray(len(parts[0]))
    for part in parts:
        for i, byte in enumerate(part):
            out[i] ^= byte
    return out


# ---------------------------------------------------------------- ceremony
@dataclass
class CeremonyResult:
    kek_kcv: str
    #: (custodian, quorum, component) for each component to hand out; values never reach a result or a log
    components: list[tuple[str, tuple[str, ...], Component]] = field(repr=False)


def ceremony_components(
    user_hsm: HsmToken, scheme: Scheme, random: Callable[[int], bytes]
) -> tuple[list[tuple[str, tuple[str, ...], bytearray, bytes]], str]:
    """Every quorum's component set for one fresh KEK, checked in the HSM: (custodian, quorum, value, kcv), KEK KCV.

    The first quorum's components are random and define the KEK; every other set is random but its last member,
    chosen so that the set XORs to the same KEK. Each set is then combined in the HSM (check mode, nothing stored)
    and must give the first set's KCV."""
    quorums = scheme.quorums
    first = [bytearray(random(32)) for _member in quorums[0]]
    out: list[tuple[str, tuple[str, ...], bytearray, bytes]] = []
    kek_kcv = b""
    for number, quorum in enumerate(quorums):
        if number == 0:
            parts = first
        else:
            parts = [bytearray(random(32)) for _member in quorum[1:]]
            parts.insert(0, _xor([*first, *parts]))
        kcvs = [user_hsm.component_kcv(KEK_ALGORITHM, p, KEK_KCV_METHOD) for p in parts]
        _key, kcv = user_hsm.import_components(
            KEK_ALGORITHM,
            [bytearray(p) for p in parts],
            kcvs,
            expected_kcv=kek_kcv or None,
            label=f"check.{quorum_id(quorum)}",
            id=None,
            policy=kek_policy(token=False),
            kcv_method=KEK_KCV_METHOD,
            check_mode=True,
        )
        kek_kcv = kek_kcv or kcv
        out.extend((custodian, quorum, parts[i], kcvs[i]) for i, custodian in enumerate(quorum))
    return out, kek_kcv.hex().upper()


def store_kek(
    so_hsm: HsmToken, parts: Sequence[bytearray], kcvs: Sequence[bytes], *, label: str, key_id: bytes, kcv: str
) -> None:
    """Form the backup KEK in the token from one quorum's components (SO session: the KEK is trusted)."""
    if so_hsm.find_key(label=label) is not None:
        raise BackupError(f"{label} is already in token {so_hsm.label!r}; a backup KEK is made once, by one ceremony")
    so_hsm.import_components(
        KEK_ALGORITHM,
        [bytearray(p) for p in parts],
        list(kcvs),
        expected_kcv=bytes.fromhex(kcv),
        label=label,
        id=key_id,
        policy=kek_policy(),
        kcv_method=KEK_KCV_METHOD,
    )


# ---------------------------------------------------------------- shares at restore
def quorum_parts(
    scheme: Scheme, shares: Mapping[str, Component], user_hsm: HsmToken
) -> tuple[tuple[str, ...], list[bytearray], list[bytes]]:
    """The quorum's components from the custodians' shares, each checked against its own KCV in the HSM first:
    a mistyped share is named by custodian, and nothing is combined."""
    quorum = scheme.quorum_of(list(shares))
    parts: list[bytearray] = []
    kcvs: list[bytes] = []
    for custodian in quorum:
        share = shares[custodian]
        try:
            value = bytearray.fromhex(share.value)
            want = bytes.fromhex(share.kcv)
        except ValueError:
            raise BackupError(f"the share of custodian {custodian} is not hex; nothing was combined") from None
        if len(value) != 32:
            raise BackupError(f"the share of custodian {custodian} is not 32 bytes; nothing was combined")
        got = user_hsm.component_kcv(KEK_ALGORITHM, value, KEK_KCV_METHOD)
        if len(want) != 3 or not hmac.compare_digest(got, want):
            raise BackupError(
                f"the share of custodian {custodian} (set {quorum_id(quorum)}) does not match its own check value: "
                "mistyped or the wrong file; nothing was combined"
            )
        parts.append(value)
        kcvs.append(want)
    return quorum, parts, kcvs


def session_kek(hsm: HsmToken, parts: Sequence[bytearray], kcvs: Sequence[bytes], expected_kcv: str) -> Any:
    """The backup KEK as a session object (gone when the session ends), checked against the manifest's KCV."""
    key, _created = hsm.import_components(
        KEK_ALGORITHM,
        [bytearray(p) for p in parts],
        list(kcvs),
        expected_kcv=bytes.fromhex(expected_kcv),
        label="restore.backup_kek",
        id=None,
        policy=KeyPolicy(usage="kek", token=False, private=False, extractable=False),
        kcv_method=KEK_KCV_METHOD,
    )
    return key


# ---------------------------------------------------------------- backup
def _session_key(hsm: HsmToken, usage: str) -> Any:
    """A per-set AES-256 key made in the HSM, exportable only under a trusted KEK (the backup KEK)."""
    policy = KeyPolicy(usage=usage, token=False, private=False, extractable=True, wrap_with_trusted=True)
    return hsm.generate_secret(KEK_ALGORITHM, None, None, policy)


def _wrap(kek: Any, key: Any, what: str = "a per-set key") -> bytes:
    return p11.wrap_pad(kek, key, what)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_set(
    hsm: HsmToken,
    *,
    kek_label: str,
    kek_version: int,
    dest_dir: str,
    set_id: str,
    operator: str,
    software_version: str,
    snapshot: bytes | None,
    state_files: Mapping[str, str],
    created: str,
) -> dict[str, Any]:
    """Write one backup set at ``dest_dir/set_id`` (a temporary directory renamed into place: all or nothing).

    Returns the manifest (no key material: KCVs and wrapped blobs only)."""
    kek = hsm.get_key(kek_label)
    kek_kcv = hsm.kcv(kek, KEK_KCV_METHOD).hex().upper()
    target = Path(dest_dir) / set_id
    if target.exists():
        raise BackupError(f"backup set {target} exists already; a set is written once")
    Path(dest_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    data_key, mac_key = _session_key(hsm, "encrypt"), _session_key(hsm, "mac")
    files: dict[str, bytes] = {}
    keys: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for obj in p11.token_objects(hsm.session):
        info = hsm.describe(obj, with_kcv=False)
        label = info["label"]
        if label == kek_label:
            continue  # the KEK itself comes back from the custodians' shares, never from the set
        cls = info["object_class"]
        entry: dict[str, Any] = {k: info[k] for k in ("label", "id", "object_class", "key_type", "algorithm")}
        entry |= {"not_before": info["not_before"], "not_after": info["not_after"], "attributes": info["attributes"]}
        if cls == "public_key":
            entry["public"] = p11.rsa_public(obj, label)
        elif cls == "secret_key" and info["attributes"].get("extractable"):
            entry["kcv"] = hsm.kcv(obj).hex().upper()  # before wrapping
            entry["kcv_method"] = "ecb"
            name = f"keys/{len([k for k in keys if 'entry' in k]):04d}.bin"
            files[name] = _wrap(kek, obj, label)
            entry["entry"] = name
        else:
            skipped.append({"label": label, "object_class": cls, "reason": "not extractable: the token keeps it"})
            continue
        keys.append(entry)
    if snapshot is not None:
        iv = p11.random_bytes(hsm.session, 16)
        files[bm.SNAPSHOT] = iv + p11.encrypt_cbc_pad(data_key, snapshot, iv)
    state: dict[str, str] = {}
    for name, declared in sorted(state_files.items()):
        entry_name = bm.check_entry_name(f"state/{name}")
        path = os.path.expanduser(declared)
        if os.path.exists(path):
            files[entry_name] = Path(path).read_bytes()
            state[name] = path
    manifest: dict[str, Any] = {
        "format": bm.FORMAT,
        "set_id": set_id,
        "created": created,
        "operator": operator,
        "software_version": software_version,
        "token_label": hsm.label,
        "backup_kek": {"label": kek_label, "version": kek_version, "kcv": kek_kcv, "kcv_method": KEK_KCV_METHOD},
        "data_key_wrapped": _wrap(kek, data_key).hex(),
        "mac_key_wrapped": _wrap(kek, mac_key).hex(),
        "snapshot": bm.SNAPSHOT if snapshot is not None else None,
        "entries": [{"name": n, "size": len(d), "sha256": _sha256(d)} for n, d in sorted(files.items())],
        "keys": keys,
        "not_backed_up": skipped,
        "state": state,
    }
    body = bm.canonical(manifest)
    mac = hsm.cmac(mac_key, body).hex()
    _write_directory(Path(dest_dir), set_id, {**files, bm.MANIFEST: body, bm.MANIFEST_MAC: mac.encode()})
    return manifest


def _write_directory(dest_dir: Path, set_id: str, files: Mapping[str, bytes]) -> None:
    """All the set's files in a private temporary directory, renamed to ``set_id`` at the end: all or nothing."""
    target = dest_dir / set_id
    tmp = Path(tempfile.mkdtemp(dir=dest_dir, prefix=f".{set_id}."))
    try:
        for name, data in files.items():
            path = tmp / name
            path.parent.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp, 0o700)
        os.rename(tmp, target)
    except BaseException:
        for path in sorted(tmp.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        tmp.rmdir()
        raise


# ---------------------------------------------------------------- verify and restore
@dataclass
class VerifiedSet:
    manifest: dict[str, Any]
    files: dict[str, bytes] = field(repr=False)


def read_set(path: str) -> tuple[bytes, bytes, dict[str, Any], dict[str, bytes]]:
    """The set's manifest bytes, MAC, parsed manifest and entries, every entry's size and digest checked, and no
    file in the set the manifest does not list."""
    root = Path(path)
    try:
        body = (root / bm.MANIFEST).read_bytes()
        mac = (root / bm.MANIFEST_MAC).read_bytes().strip()
    except OSError as exc:
        raise BackupError(f"backup set {path}: cannot read its manifest ({exc.strerror}); refusing the set") from None
    manifest = bm.parse_manifest(body)
    files: dict[str, bytes] = {}
    for entry in bm.entries(manifest):
        try:
            data = (root / entry.name).read_bytes()
        except OSError:
            raise BackupError(f"backup set {path}: entry {entry.name} is missing; refusing the set") from None
        if len(data) != entry.size or not hmac.compare_digest(_sha256(data), entry.sha256):
            raise BackupError(f"backup set {path}: entry {entry.name} does not match its digest; refusing the set")
        files[entry.name] = data
    listed = {*files, bm.MANIFEST, bm.MANIFEST_MAC}
    extra = sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and str(p.relative_to(root)) not in listed
    )
    if extra:
        raise BackupError(f"backup set {path}: {', '.join(extra)} not listed in the manifest; refusing the set")
    return body, mac, manifest, files


def verify_set(hsm: HsmToken, kek: Any, path: str) -> VerifiedSet:
    """The set, its manifest MAC checked in the HSM under the set's MAC key (unwrapped under the quorum's KEK)."""
    body, mac, manifest, files = read_set(path)
    mac_key = _unwrap_session(hsm, kek, manifest["mac_key_wrapped"], "mac")
    try:
        good = hmac.compare_digest(hsm.cmac(mac_key, body).hex().encode(), mac)
    finally:
        hsm.destroy(mac_key)
    if not good:
        raise BackupError(f"backup set {path}: the manifest's MAC does not verify; refusing the set")
    return VerifiedSet(manifest, files)


def _unwrap_session(hsm: HsmToken, kek: Any, blob_hex: str, usage: str) -> Any:
    policy = KeyPolicy(usage=usage, token=False, private=False, extractable=False)
    try:
        return hsm.unwrap(kek, bytes.fromhex(blob_hex), KEK_ALGORITHM, label=None, id=None, policy=policy)
    except TunionError:
        raise BackupError(
            "the set's keys do not open under the custodians' backup KEK (a set of another KEK, or tampered); "
            "refusing the set"
        ) from None


def decrypt_snapshot(hsm: HsmToken, kek: Any, verified: VerifiedSet) -> bytes | None:
    """The OpenBao snapshot of a verified set, decrypted in the HSM under the set's data key."""
    name = verified.manifest.get("snapshot")
    if not name:
        return None
    data = verified.files[name]
    data_key = _unwrap_session(hsm, kek, verified.manifest["data_key_wrapped"], "encrypt")
    try:
        return p11.decrypt_cbc_pad(data_key, data[16:], data[:16])
    finally:
        hsm.destroy(data_key)


def _restores_in_so_session(entry: Mapping[str, Any]) -> bool:
    """Trusted and public objects (the city KEKs, RSA public keys) are made by the SO; the rest by the user."""
    attrs = entry.get("attributes", {})
    return bool(attrs.get("trusted")) or not attrs.get("private", True)


def restore_keys(hsm: HsmToken, kek: Any, verified: VerifiedSet, *, so_session: bool) -> list[dict[str, Any]]:
    """Put the set's keys of one kind (see :func:`_restores_in_so_session`) into the token under staging labels,
    each secret key's KCV checked against the manifest. On any failure every object staged here is destroyed."""
    staged: list[tuple[Any, dict[str, Any]]] = []
    try:
        for entry in verified.manifest["keys"]:
            if _restores_in_so_session(entry) != so_session:
                continue
            label = entry["label"]
            if entry["object_class"] == "public_key":
                staged.append((p11.restore_public_key(hsm.session, entry, STAGING_PREFIX + label), entry))
                continue
            try:
                obj = p11.restore_secret_key(kek, verified.files[entry["entry"]], entry, STAGING_PREFIX + label)
            except ValueError as exc:
                raise BackupError(f"{exc}; refusing the set") from None
            staged.append((obj, entry))
            got = hsm.kcv(obj).hex().upper()
            if len(entry.get("kcv") or "") != 6 or not hmac.compare_digest(got, entry["kcv"]):
                raise BackupError(f"{label}: restored key's KCV {got} is not the manifest's {entry.get('kcv')}")
        return [{k: e.get(k) for k in ("label", "id", "object_class", "algorithm", "kcv")} for _obj, e in staged]
    except BaseException:
        for obj, _entry in staged:
            hsm.destroy(obj)
        raise


def commit_staged(hsm: HsmToken) -> list[str]:
    """Give every staged object its real label (the last step of a restore)."""
    done = []
    for obj in p11.token_objects(hsm.session):
        label = p11.label_of(obj)
        if label.startswith(STAGING_PREFIX):
            p11.set_label(obj, label[len(STAGING_PREFIX) :])
            done.append(label[len(STAGING_PREFIX) :])
    return done


def destroy_staged(hsm: HsmToken) -> None:
    for obj in p11.token_objects(hsm.session):
        if p11.label_of(obj).startswith(STAGING_PREFIX):
            hsm.destroy(obj)


def summary(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """What a set holds, for reports: labels and KCVs, never values or wrapped blobs."""
    return {
        "set_id": manifest["set_id"],
        "created": manifest["created"],
        "operator": manifest["operator"],
        "backup_kek": manifest["backup_kek"],
        "keys": [{k: e.get(k) for k in ("label", "id", "object_class", "algorithm", "kcv")} for e in manifest["keys"]],
        "not_backed_up": manifest["not_backed_up"],
        "entries": manifest["entries"],
        "state": sorted(manifest["state"]),
    }


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
