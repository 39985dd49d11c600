"""Talking to a running emulator through its control socket (tests, bench, the CLI)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

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
