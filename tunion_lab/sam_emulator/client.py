"""Talking to a running emulator through its control socket (tests, bench, the CLI)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tunion_lab.lab import LAB_DIR, REPO

SOCKET_NAME = "sam-emulator.sock"


class EmulatorClient:
    def __init__(self, sock_path: str | Path, timeout: float = 120.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(sock_path))
        self.f = self.sock.makefile("rwb")

    def call(self, op: str, **kw: Any) -> dict[str, Any]:
        self.f.write(json.dumps({"op": op, **kw}).encode() + b"\n")
        self.f.flush()
        resp = json.loads(self.f.readline())
        if not resp.get("ok"):
            raise RuntimeError(f"SAM emulator refused {op}: {resp.get('error')}")
        return resp

    def insert(self, sams: list[dict[str, Any]], batch_kek: str | None = None) -> dict[str, Any]:
        return self.call("insert", sams=sams, batch_kek=batch_kek)

    def manufacturer_key(self) -> bytes:
        return bytes.fromhex(self.call("manufacturer_key")["public_key"])

    def close(self) -> None:
        self.f.close()
        self.sock.close()

    def __enter__(self) -> EmulatorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def emulator_socket(lab_dir: Path = LAB_DIR) -> Path:
    return lab_dir / "run" / "sam-emulator.sock"


def ensure_emulator(lab_dir: Path = LAB_DIR) -> bool:
    """Start the lab's emulator if it is not running; True if this call started it."""
    sock = emulator_socket(lab_dir)
    if sock.exists():
        try:
            EmulatorClient(sock, timeout=5).close()
            return False
        except OSError:
            pass
    subprocess.run(
        [sys.executable, "-m", "tunion_lab.sam_emulator", "--lab-dir", str(lab_dir), "start"],
        check=True,
        cwd=REPO,
        capture_output=True,
    )
    for _ in range(100):
        if sock.exists():
            return True
        time.sleep(0.05)
    raise RuntimeError("the SAM emulator did not start")


def stop_emulator(lab_dir: Path = LAB_DIR) -> None:
    subprocess.run(
        [sys.executable, "-m", "tunion_lab.sam_emulator", "--lab-dir", str(lab_dir), "stop"], cwd=REPO, check=False
    )
