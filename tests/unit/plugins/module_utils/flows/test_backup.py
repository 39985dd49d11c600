"""Backup and restore of a province token (issue 12, 第十四条) on throw-away SoftHSM tokens.

A source token gets a backup KEK from a 2-of-3 ceremony and keys like the province's (a private derive master, a
trusted public KEK, an RSA public key, a non-extractable MAC key); a set is made; a fresh token is restored from it
with one quorum's shares. Tamper sweeps refuse the set with the target token untouched. The attack opens the set
with ``cryptography`` alone and every key reachable without shares, and gets nothing.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import BackupError, TunionError
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows import backup
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.restore import restore_set
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.component import Component
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.shares import Scheme
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.policy import KeyPolicy
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.session import load_library
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import hsm_session
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap_with_padding
from pkcs11 import Attribute

from tunion_lab.scratch_token import SO_PIN, SOFTHSM, USER_PIN, temp_token

pytestmark = pytest.mark.slow

KEK_LABEL = "internal.backup_kek.v02.province"
SCHEME = Scheme(("alice", "bob", "carol"), 2)


def _init(label: str) -> None:
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", SO_PIN, "--pin", USER_PIN],
        check=True,
        capture_output=True,
    )
    load_library(SOFTHSM).reinitialize()


def _objects(label: str) -> list[tuple[str, str]]:
    with hsm_session(SOFTHSM, label, USER_PIN, rw=False) as tok:
        return sorted((str(o[Attribute.LABEL]), bytes(o[Attribute.ID] or b"").hex()) for o in tok.list_keys())


@pytest.fixture(scope="module")
def province(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    out = tmp_path_factory.mktemp("backup")
    with temp_token("src"):
        with hsm_session(SOFTHSM, "src", USER_PIN) as tok:
            parts, kek_kcv = backup.ceremony_components(tok, SCHEME, os.urandom)
            master = tok.generate_secret(
                "3DES-2KEY",
                "recharge.load.v01.province",
                bytes([0x21, 1]),
                KeyPolicy(usage="derive", start_date=_dt.date(2025, 1, 1), end_date=_dt.date(2030, 12, 31)),
            )
            tok.generate_secret(
                "AES-256",
                "internal.blacklist_mac.v01.province",
                b"\x34\x01",
                KeyPolicy(usage="mac", extractable=False, wrap_with_trusted=False),
            )
            _pub, _ = tok.generate_rsa_keypair(1024, "internal.transport_rsa.v01.city-440100", b"\xf2\x01")
            kcvs = {"recharge.load.v01.province": tok.kcv(master).hex().upper()}
        q0 = SCHEME.quorums[0]
        first = [(c, p, k) for c, q, p, k in parts if q == q0]
        with hsm_session(SOFTHSM, "src", None, so_pin=SO_PIN) as so:
            backup.store_kek(
                so, [p for _, p, _ in first], [k for _, _, k in first], label=KEK_LABEL, key_id=b"\x32\x02", kcv=kek_kcv
            )
            city_kek = so.generate_secret(
                "AES-256",
                "internal.kek.v01.city-440100",
                b"\xf1\x01",
                KeyPolicy(usage="kek", private=False, extractable=True, trusted=True, extra={"derive": True}),
            )
            kcvs["internal.kek.v01.city-440100"] = so.kcv(city_kek).hex().upper()
        state = out / "registry.sqlite"
        state.write_bytes(b"observed registry bytes")
        with hsm_session(SOFTHSM, "src", USER_PIN) as tok:
            manifest = backup.make_set(
                tok,
                kek_label=KEK_LABEL,
                kek_version=2,
                dest_dir=str(out / "sets"),
                set_id="set-1",
                operator="officer",
                software_version="0.1.0",
                snapshot=b"raft snapshot bytes" * 100,
                state_files={"registry.sqlite": str(state)},
                created="2026-12-02T04:00:00Z",
            )
        shares = {c: Component(p.hex(), k.hex()) for c, q, p, k in parts}
        by_quorum = {q: {c: Component(p.hex(), k.hex()) for c, qq, p, k in parts if qq == q} for q in SCHEME.quorums}
        del shares
        yield {
            "dir": out,
            "set": str(out / "sets" / "set-1"),
            "manifest": manifest,
            "kcvs": kcvs,
            "quorums": by_quorum,
            "kek_kcv": kek_kcv,
        }


def _restore(path: str, shares: dict[str, Component], label: str = "dst", **kw: Any) -> dict[str, Any]:
    """The restore module's sequence (flows/restore.py) onto the scratch token ``label``."""
    snapshots: list[bytes] = []
    report = restore_set(
        lambda so: hsm_session(SOFTHSM, label, None, so_pin=SO_PIN) if so else hsm_session(SOFTHSM, label, USER_PIN),
        set_path=path,
        scheme=SCHEME,
        shares=shares,
        kek_label=KEK_LABEL,
        kek_id=b"\x32\x02",
        known_dir=kw.get("known_dir"),
        force_older=kw.get("force_older", False),
        state_files=kw.get("state_files", {}),
        restore_snapshot=snapshots.append,
        check_mode=False,
    )
    return report | {"snapshot": snapshots[0] if snapshots else None}


@pytest.fixture
def fresh() -> Iterator[None]:
    _init("dst")
    yield
    # a fresh token per test: delete it by re-initialising over it
    subprocess.run(["softhsm2-util", "--delete-token", "--token", "dst"], check=False, capture_output=True)
    load_library(SOFTHSM).reinitialize()


def test_restore_brings_back_every_key(province: dict[str, Any], fresh: None) -> None:
    shares = province["quorums"][("bob", "carol")]
    state = province["dir"] / "restored" / "registry.sqlite"
    result = _restore(province["set"], shares, state_files={"registry.sqlite": str(state)})
    assert state.read_bytes() == b"observed registry bytes"
    assert result["state_restored"] == ["registry.sqlite"]
    assert result["snapshot"] == b"raft snapshot bytes" * 100
    with hsm_session(SOFTHSM, "dst", USER_PIN) as tok:
        for label, kcv in province["kcvs"].items():
            key = tok.get_key(label, check_validity=False)
            assert tok.kcv(key).hex().upper() == kcv
        master = tok.get_key("recharge.load.v01.province", check_validity=False)
        assert bytes(master[Attribute.ID]) == bytes([0x21, 1])
        assert master[Attribute.DERIVE] and not master[Attribute.ENCRYPT] and master[Attribute.SENSITIVE]
        assert master[Attribute.WRAP_WITH_TRUSTED]
        city_kek = tok.get_key("internal.kek.v01.city-440100", check_validity=False)
        assert city_kek[Attribute.TRUSTED]
        assert tok.kcv(tok.get_key(KEK_LABEL), "cmac").hex().upper() == province["kek_kcv"]
        assert tok.find_key("internal.transport_rsa.v01.city-440100", object_class="public_key") is not None
    labels = [label for label, _ in _objects("dst")]
    assert not [label for label in labels if label.startswith(backup.STAGING_PREFIX)]
    assert sorted((s["label"], s["object_class"]) for s in province["manifest"]["not_backed_up"]) == [
        ("internal.blacklist_mac.v01.province", "secret_key"),
        ("internal.transport_rsa.v01.city-440100", "private_key"),
    ]


def _tampered(province: dict[str, Any], tmp: Path, change: Any) -> str:
    copy = tmp / "tampered"
    shutil.copytree(province["set"], copy)
    change(copy)
    return str(copy)


def _flip(name: str, position: int) -> Any:
    def change(root: Path) -> None:
        data = bytearray((root / name).read_bytes())
        data[position % len(data)] ^= 0x01
        (root / name).write_bytes(bytes(data))

    return change


def _entry_names(province: dict[str, Any]) -> list[str]:
    return [e["name"] for e in province["manifest"]["entries"]] + ["manifest.json", "manifest.mac"]


@pytest.mark.parametrize("where", [0, 7, -1, 1000003])
def test_one_byte_changed_anywhere_is_refused(
    province: dict[str, Any], fresh: None, tmp_path: Path, where: int
) -> None:
    for name in _entry_names(province):
        path = _tampered(province, tmp_path / name.replace("/", "_"), _flip(name, where))
        with pytest.raises(BackupError):
            _restore(path, province["quorums"][("alice", "bob")])
        assert _objects("dst") == []


def test_entry_dropped_or_swapped_or_added_is_refused(province: dict[str, Any], fresh: None, tmp_path: Path) -> None:
    key_entries = [e["name"] for e in province["manifest"]["entries"] if e["name"].startswith("keys/")]
    changes = [
        lambda root: (root / "state" / "registry.sqlite").unlink(),
        lambda root: (root / "extra").write_bytes(b"x"),
    ]
    for a, b in itertools.combinations([*key_entries, "openbao.snap.enc"], 2):

        def swap(root: Path, a: str = a, b: str = b) -> None:
            da, db = (root / a).read_bytes(), (root / b).read_bytes()
            (root / a).write_bytes(db)
            (root / b).write_bytes(da)

        changes.append(swap)
    for number, change in enumerate(changes):
        path = _tampered(province, tmp_path / str(number), change)
        with pytest.raises(BackupError):
            _restore(path, province["quorums"][("alice", "bob")])
        assert _objects("dst") == []


def test_wrong_share_is_named_and_too_few_are_refused(province: dict[str, Any], fresh: None) -> None:
    shares = dict(province["quorums"][("alice", "carol")])
    value = bytearray.fromhex(shares["carol"].value)
    value[5] ^= 0x10
    shares["carol"] = Component(value.hex(), shares["carol"].kcv)
    with pytest.raises(BackupError, match="custodian carol"):
        _restore(province["set"], shares)
    with pytest.raises(TunionError, match="needs 2 of 3"):
        _restore(province["set"], {"alice": province["quorums"][("alice", "carol")]["alice"]})
    # a share of another set: right KCV, wrong set, the combined KEK fails the manifest's KCV
    mixed = {
        "alice": province["quorums"][("alice", "bob")]["alice"],
        "carol": province["quorums"][("alice", "carol")]["carol"],
    }
    with pytest.raises(TunionError):
        _restore(province["set"], mixed)
    assert _objects("dst") == []


def test_non_empty_target_is_refused(province: dict[str, Any], fresh: None) -> None:
    with hsm_session(SOFTHSM, "dst", USER_PIN) as tok:
        tok.generate_secret("AES-128", "other.key.v01.province", None, KeyPolicy(usage="mac"))
    with pytest.raises(BackupError, match="is not empty"):
        _restore(province["set"], province["quorums"][("alice", "bob")])
    assert [label for label, _ in _objects("dst")] == ["other.key.v01.province"]


def test_the_set_alone_opens_nothing(province: dict[str, Any]) -> None:
    """Attack without shares, without project code: every wrapped blob of the set against every key an attacker
    can reach: the token's keys readable as values (none: all sensitive), and guesses (zero key, the KCV-like
    bytes in the manifest); the snapshot under every candidate."""
    root = Path(province["set"])
    blobs = [p.read_bytes() for p in (root / "keys").iterdir()]
    manifest = province["manifest"]
    blobs += [bytes.fromhex(manifest["data_key_wrapped"]), bytes.fromhex(manifest["mac_key_wrapped"])]
    # what a PIN holder can read of the source token's key values: nothing (every secret is sensitive)
    candidates = [bytes(32), bytes.fromhex(province["kek_kcv"]).ljust(32, b"\0")]
    for kek in candidates:
        for blob in blobs:
            with pytest.raises(InvalidUnwrap):
                aes_key_unwrap_with_padding(kek, blob)
    snap = (root / "openbao.snap.enc").read_bytes()
    for kek in candidates:
        dec = Cipher(algorithms.AES(kek), modes.CBC(snap[:16])).decryptor()
        assert b"raft snapshot" not in dec.update(snap[16:]) + dec.finalize()
    body = (root / "manifest.json").read_bytes()
    assert b"value" not in body
    for shares in province["quorums"].values():
        for share in shares.values():
            for path in root.rglob("*"):
                if path.is_file():
                    assert share.value.encode() not in path.read_bytes()
                    assert bytes.fromhex(share.value) not in path.read_bytes()


def test_older_set_is_refused_unless_forced(province: dict[str, Any], fresh: None, tmp_path: Path) -> None:
    known = tmp_path / "known"
    shutil.copytree(province["set"], known / "set-1")
    newer = known / "set-2"
    newer.mkdir()
    manifest = dict(province["manifest"], set_id="set-2", created="2027-01-01T00:00:00Z")
    manifest["keys"] = [*manifest["keys"], {"label": "recharge.load.v02.province"}]
    (newer / "manifest.json").write_text(json.dumps(manifest))
    shares = province["quorums"][("alice", "bob")]
    with pytest.raises(BackupError, match=r"older than the newest known: set-2 .* recharge\.load\.v02\.province"):
        _restore(str(known / "set-1"), shares, known_dir=str(known))
    assert _objects("dst") == []
    report = _restore(str(known / "set-1"), shares, known_dir=str(known), force_older=True)
    assert report["older_than"][0]["keys_missing"] == ["recharge.load.v02.province"]
