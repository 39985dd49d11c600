"""The emulated SAMs' persistent memory: one file per serial, keys encrypted at rest.

A SAM's state survives removal, reinsertion and lab restarts. Key values are sealed with AES-GCM under a random
storage key kept beside the states (mode 0600), as a secure element encrypts its NVM, so no file under the lab
directory ever holds a clear key value.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tunion_lab.sam_emulator.card import CardState, Slot

_SERIAL_RE = re.compile(r"^[0-9A-F]{20}$")
_TERMINAL_RE = re.compile(r"^[0-9A-F]{12}$")


def check_serial(serial: str) -> str:
    s = str(serial).upper()
    if not _SERIAL_RE.match(s):
        raise ValueError(f"SAM serial {serial!r} must be 20 hex digits (10 bytes)")
    return s


class StateStore:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        key_file = self.dir / "storage.key"
        if not key_file.exists():
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(AESGCM.generate_key(bit_length=256))
        self._aead = AESGCM(key_file.read_bytes())
        factory = self.dir / "manufacturer.pem"
        if not factory.exists():
            pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            fd = os.open(factory, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
        key = serialization.load_pem_private_key(factory.read_bytes(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        self._factory = key
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._sealed: dict[tuple[str, bytes], str] = {}
        self._live: dict[str, CardState] = {}
        self._unwrapped: dict[str, bytes] = {}
        self._dirty: set[str] = set()
        threading.Thread(target=self._writer, name="sam-state-writer", daemon=True).start()

    def _seal(self, serial: str, value: bytes) -> str:
        cached = self._sealed.get((serial, value))
        if cached is not None:  # unchanged secrets keep their sealed form: a save costs one JSON write
            return cached
        nonce = os.urandom(12)
        blob = (nonce + self._aead.encrypt(nonce, value, serial.encode())).hex()
        if len(self._sealed) > 20000:
            self._sealed.clear()
        self._sealed[(serial, value)] = blob
        return blob

    def _open(self, serial: str, blob: str) -> bytes:
        raw = bytes.fromhex(blob)
        return self._aead.decrypt(raw[:12], raw[12:], serial.encode())

    def path(self, serial: str) -> Path:
        return self.dir / f"{serial}.json"

    def exists(self, serial: str) -> bool:
        return serial in self._live or self.path(serial).exists()

    def load(self, serial: str) -> CardState:
        """The SAM's state: the live one if the SAM was seen since the emulator started, else from its file."""
        with self._lock:
            live = self._live.get(serial)
        return live if live is not None else self._read(serial)

    def _read(self, serial: str) -> CardState:
        d = json.loads(self.path(serial).read_text())
        return CardState(
            serial=d["serial"],
            terminal=d["terminal"],
            master_key=self._open(serial, d["master_key"]),
            batch_kek=self._open(serial, d["batch_kek"]),
            capacity=d["capacity"],
            tsn=d["tsn"],
            slots=[
                Slot(
                    s["usage"],
                    s["version"],
                    s["algorithm"],
                    bytes.fromhex(s["kcv"]),
                    self._open(serial, s["key"]),
                    int(s.get("levels", 1)),
                )
                for s in d["slots"]
            ],
        )

    def save(self, st: CardState) -> None:
        """Record a change of the SAM's memory. Written behind by a thread within ~10 ms (a SAM's EEPROM write is
        not on the APDU path either); :meth:`flush` writes everything at once (emulator stop)."""
        with self._lock:
            self._live[st.serial] = st
            self._dirty.add(st.serial)
            self._wake.notify()

    def flush(self) -> None:
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            states = [self._live[s] for s in dirty]
        for st in states:
            self._write(st)

    def _writer(self) -> None:
        while True:
            with self._lock:
                while not self._dirty:
                    self._wake.wait()
            time.sleep(0.01)  # coalesce the writes of one SAM session
            self.flush()

    def _write(self, st: CardState) -> None:
        d = {
            "serial": st.serial,
            "terminal": st.terminal,
            "master_key": self._seal(st.serial, st.master_key),
            "batch_kek": self._seal(st.serial, st.batch_kek),
            "capacity": st.capacity,
            "tsn": st.tsn,
            "slots": [
                {
                    "usage": s.usage,
                    "version": s.version,
                    "algorithm": s.algorithm,
                    "kcv": s.kcv.hex().upper(),
                    "key": self._seal(st.serial, s.key),
                    "levels": s.levels,
                }
                for s in st.slots
            ],
        }
        tmp = self.path(st.serial).with_suffix(f".tmp{threading.get_ident()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(d, f)
        os.replace(tmp, self.path(st.serial))

    def manufacturer_public_key(self) -> bytes:
        """The manufacturer's RSA public key (PKCS#1 DER): the province wraps a new SAM's keys under it."""
        return self._factory.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)

    def _unwrap(self, blob_hex: str) -> bytes:
        if blob_hex in self._unwrapped:  # the batch KEK comes once per batch
            return self._unwrapped[blob_hex]
        oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)  # noqa: S303
        return self._factory.decrypt(bytes.fromhex(blob_hex), oaep)

    def _unwrap_kek(self, blob_hex: str) -> bytes:
        key = self._unwrap(blob_hex)
        self._unwrapped = {blob_hex: key}
        return key

    def manufacture(
        self, serial: str, terminal: str | None, master_key: str, batch_kek: str, capacity: int = 8
    ) -> CardState:
        """A blank SAM as its manufacturer delivers it: serial, terminal number, its master key (diversified by the
        province's HSM from the SAM issuer key and this serial) and the batch transport KEK, both received
        RSA-OAEP wrapped under the manufacturer's key."""
        serial = check_serial(serial)
        terminal = (terminal or serial[-12:]).upper()
        if not _TERMINAL_RE.match(terminal):
            raise ValueError(f"terminal number {terminal!r} must be 12 hex digits")
        try:
            mk, kek = self._unwrap(master_key), self._unwrap_kek(batch_kek)
        except (TypeError, ValueError):
            raise ValueError(f"the keys for SAM {serial} do not unwrap under the manufacturer's key") from None
        st = CardState(
            serial=serial,
            terminal=terminal,
            master_key=mk,
            batch_kek=kek,
            capacity=capacity,
        )
        self.save(st)
        return st
