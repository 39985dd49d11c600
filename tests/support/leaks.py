"""Looking for clear key material where it must never be: every file of the lab, in every form it could take."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

from tunion_lab.lab import LAB_DIR


def lab_file_paths() -> Iterator[Path]:
    """Every regular file under the lab directory (tokens, raft data, audit log, logs, homes)."""
    for path in LAB_DIR.rglob("*"):
        if path.is_file() and not path.is_symlink():
            yield path


def find_in_lab_files(needles: list[bytes]) -> list[str]:
    """Where any of the byte strings occurs in a lab file; empty when none does."""
    hits = []
    for path in lab_file_paths():
        try:
            data = path.read_bytes()
        except OSError:
            continue
        hits.extend(f"{path}: {needle[:4].hex()}…" for needle in needles if needle in data)
    return hits


def secret_forms(secret: bytes) -> list[bytes]:
    """The forms a clear key could leak in: raw bytes, hex in both cases, base64."""
    return [secret, secret.hex().encode(), secret.hex().upper().encode(), base64.b64encode(secret)]
