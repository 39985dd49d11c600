"""vpcd plumbing and the feeder: emulated SAMs inserted one after another into each virtual reader.

vpcd (inside pcscd) is the TCP server, one port per reader; a connection is a card in the reader, closing it pulls
the card out. Messages are a 2-byte big-endian length and a payload; 1-byte payloads are control (00 power off,
01 power on, 02 reset, 04 get ATR), anything else is a C-APDU answered by an R-APDU.

vpcd writes the length and the payload separately and does not set TCP_NODELAY, so with Linux's delayed ACK every
exchange waits ~40 ms; answering in one write with TCP_NODELAY and re-arming TCP_QUICKACK before each read brings
a round trip to a fraction of a millisecond.

The feeder is a personalisation machine: each reader has a hopper (queue). When the station ends its session
with a reset (``SCardDisconnect(SCARD_RESET_CARD)``) after sending the SAM APDUs, the machine moves that SAM out
and the next one in; pcscd's own power-downs do not move cards. An empty hopper leaves the reader empty.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunion_lab.sam_emulator.card import ATR, Faults, PsamCard
from tunion_lab.sam_emulator.store import StateStore, check_serial

log = logging.getLogger("tunion.sam_emulator")
TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", 12)
#: A session that goes silent this long after an APDU is wedged: vpcd (Debian's vsmartcard 3.3) lets pcscd's
#: presence poll and a client's APDU read the same socket at once, and when their reads interleave both wait
#: forever. Pulling the card out unblocks them (EOF); it is then inserted again, as an operator would reseat a SAM,
#: and the station's next attempt completes it. pcscd polls a powered card every 0.4 s; once it has powered the
#: card down it may stay silent, so the watchdog then waits longer (a reseat of an idle SAM is harmless).
WATCHDOG_SECONDS = 1.2
WATCHDOG_POWERED_DOWN_SECONDS = 5.0
#: inside a station's session (APDUs since the last power event) the gaps are milliseconds: a wedge is found sooner
WATCHDOG_IN_SESSION_SECONDS = 0.6
CTRL_OFF, CTRL_ON, CTRL_RESET, CTRL_ATR = 0, 1, 2, 4


@dataclass
class Feed:
    serial: str
    faults: Faults = field(default_factory=Faults)


class CardRemoved(Exception):
    pass


class ReaderWedged(Exception):
    pass


class ReaderSlot(threading.Thread):
    """One virtual reader: takes SAMs from its hopper and presents them to vpcd."""

    def __init__(self, index: int, host: str, port: int, emulator: Emulator) -> None:
        super().__init__(name=f"reader-{index}", daemon=True)
        self.index, self.host, self.port, self.emu = index, host, port, emulator
        self.hopper: deque[Feed] = deque()
        self.cond = threading.Condition()
        self.present: str | None = None
        self.card_now: PsamCard | None = None
        self.stopping = False
        self.sock: socket.socket | None = None

    # ------------------------------------------------------------------ socket I/O
    def _recv(self, n: int) -> bytes:
        assert self.sock is not None
        buf = bytearray()
        while len(buf) < n:
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.IPPROTO_TCP, TCP_QUICKACK, 1)
            try:
                chunk = self.sock.recv(n - len(buf))
            except TimeoutError:
                raise ReaderWedged(f"vpcd silent for {self.sock.gettimeout()} s") from None
            # ACK now: vpcd does not set TCP_NODELAY, so after a control message that gets no answer (power,
            # reset) its next message waits for this ACK, which Linux would otherwise delay by ~40 ms
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.IPPROTO_TCP, TCP_QUICKACK, 1)
            if not chunk:
                raise CardRemoved("vpcd closed the connection")
            buf += chunk
        return bytes(buf)

    def _send(self, payload: bytes) -> None:
        assert self.sock is not None
        self.sock.sendall(struct.pack(">H", len(payload)) + payload)

    def _connect(self) -> None:
        while not self.stopping:
            try:
                s = socket.create_connection((self.host, self.port), timeout=5)
            except OSError:
                time.sleep(0.5)  # pcscd not (yet) listening: keep the card in the machine
                continue
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock = s
            return

    def _pull(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
        self.sock = None
        self.present = None

    # ------------------------------------------------------------------ machine
    def _next(self) -> Feed | None:
        with self.cond:
            while not self.hopper and not self.stopping:
                self.cond.wait(0.5)
            return self.hopper.popleft() if self.hopper else None

    def run(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("reader %d: feeder stopped", self.index)
            self._pull()
            raise

    def _run(self) -> None:
        feed = self._next()
        while feed is not None and not self.stopping:
            try:
                card = self.emu.card(feed)
            except (OSError, ValueError) as exc:
                log.error("reader %d: cannot present SAM %s: %s", self.index, feed.serial, exc)
                self.emu.record(self.index, feed.serial, 0, f"not presented: {exc}")
                feed = self._next()
                continue
            if self.sock is None:
                self._connect()
            self.present = feed.serial
            self.card_now = card
            outcome, keep_socket = self._serve(card)
            self.card_now = None
            self.emu.record(self.index, feed.serial, card.apdus, outcome, card.heard)
            if not keep_socket:
                self._pull()
            if outcome.startswith("reseated"):
                continue  # the same SAM goes back in
            with self.cond:
                feed = self.hopper.popleft() if self.hopper else None
            if feed is None:
                self._pull()  # hopper empty: the reader stays empty until more SAMs are inserted
                feed = self._next()

    def _serve(self, card: PsamCard) -> tuple[str, bool]:
        """Answer vpcd until the SAM leaves. Returns (outcome, whether the socket stays for the next SAM)."""
        session_apdus = 0
        powered_down = False
        in_session = False
        assert self.sock is not None
        try:
            while not self.stopping:
                if in_session:
                    self.sock.settimeout(WATCHDOG_IN_SESSION_SECONDS)
                else:
                    self.sock.settimeout(WATCHDOG_POWERED_DOWN_SECONDS if powered_down else WATCHDOG_SECONDS)
                (n,) = struct.unpack(">H", self._recv(2))
                msg = self._recv(n)
                if n == 1:
                    ctrl = msg[0]
                    log.debug(
                        "reader %d: control %02X (SAM %s, %d APDUs)", self.index, ctrl, card.state.serial, session_apdus
                    )
                    if ctrl == CTRL_ATR:
                        self._send(ATR)
                    elif ctrl == CTRL_RESET and session_apdus:
                        with self.cond:
                            more = bool(self.hopper)
                        return "done", more  # the station is done with this SAM: next one in (same socket)
                    elif ctrl in (CTRL_ON, CTRL_OFF, CTRL_RESET):
                        card.power_on()
                    powered_down = ctrl == CTRL_OFF
                    in_session = in_session and ctrl == CTRL_ATR
                    continue
                if card.faults.remove_after and card.apdus >= card.faults.remove_after:
                    return f"removed after {card.apdus} APDUs", False
                session_apdus += 1
                powered_down = False
                in_session = True
                try:
                    rapdu = card.process(msg)
                except Exception:  # a card never goes silent: answer "no precise diagnosis" and log why
                    log.exception("reader %d: SAM %s failed on %s", self.index, card.state.serial, msg[:4].hex())
                    rapdu = b"\x6f\x00"
                self._send(rapdu)
        except ReaderWedged as exc:
            log.warning("reader %d: %s; reseating SAM %s", self.index, exc, card.state.serial)
            return f"reseated ({exc})", False
        except (CardRemoved, OSError) as exc:
            return f"connection lost: {exc}", False
        return "stopped", False

    def insert(self, feeds: list[Feed]) -> None:
        with self.cond:
            self.hopper.extend(feeds)
            self.cond.notify_all()

    def eject(self) -> None:
        """Pull the SAM out of the reader (the feeder then moves on to its hopper)."""
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self.stopping = True
        with self.cond:
            self.cond.notify_all()
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)


class Emulator:
    def __init__(self, state_dir: str | os.PathLike[str], ports: list[int], host: str = "127.0.0.1") -> None:
        self.store = StateStore(state_dir)
        self.readers = [ReaderSlot(i, host, p, self) for i, p in enumerate(ports)]
        self.history: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self._rr = 0

    def start(self) -> None:
        for r in self.readers:
            r.start()

    def stop(self) -> None:
        for r in self.readers:
            r.stop()
        self.store.flush()

    def card(self, feed: Feed) -> PsamCard:
        if not self.store.exists(feed.serial):
            raise ValueError("unknown SAM, and no manufacturing keys were given for it")
        return PsamCard(self.store.load(feed.serial), self.store.save, feed.faults)

    def record(self, reader: int, serial: str, apdus: int, outcome: str, heard: list[bytes] | None = None) -> None:
        """One SAM out of a reader; a rogue card's record of what the station sent goes into the history."""
        log.info("reader %d: SAM %s out after %d APDUs (%s)", reader, serial, apdus, outcome)
        with self.lock:
            entry: dict[str, Any] = {"reader": reader, "serial": serial, "apdus": apdus, "outcome": outcome}
            if heard:
                entry["heard"] = [a.hex().upper() for a in heard]
            self.history.append(entry)

    # ------------------------------------------------------------------ control operations
    def op_insert(self, req: dict[str, Any]) -> dict[str, Any]:
        """Queue SAMs. A SAM not seen before needs ``mk`` (its master key, RSA-OAEP wrapped under the manufacturer's
        key) and the request's ``batch_kek`` (likewise wrapped): the emulator then manufactures it."""
        sams = req.get("sams") or []
        per_reader: dict[int, list[Feed]] = {}
        for sam in sams:  # manufactured now, as SAMs are long before they reach a personalisation machine
            serial = check_serial(sam["serial"])
            if sam.get("mk") and not self.store.exists(serial):
                self.store.manufacture(serial, sam.get("terminal") or None, sam["mk"], req["batch_kek"])
            elif not self.store.exists(serial):
                raise ValueError(f"SAM {serial} is unknown to the emulator and comes without manufacturing keys")
        for sam in sams:
            serial = check_serial(sam["serial"])
            if "reader" in sam and sam["reader"] is not None:
                idx = int(sam["reader"]) % len(self.readers)
            else:
                idx, self._rr = self._rr, (self._rr + 1) % len(self.readers)
            per_reader.setdefault(idx, []).append(Feed(serial, Faults.from_dict(sam.get("faults"))))
        for idx, feeds in per_reader.items():
            self.readers[idx].insert(feeds)
        return {"ok": True, "queued": len(sams)}

    def op_manufacturer_key(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "public_key": self.store.manufacturer_public_key().hex()}

    def op_status(self, req: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "readers": [
                {
                    "index": r.index,
                    "port": r.port,
                    "present": r.present,
                    "apdus": r.card_now.apdus if r.card_now else 0,
                    "queued": len(r.hopper),
                }
                for r in self.readers
            ],
            "handled": len(self.history),
        }

    def op_history(self, req: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            out = list(self.history)
            if req.get("clear"):
                self.history.clear()
        return {"ok": True, "history": out}

    def op_clear(self, req: dict[str, Any]) -> dict[str, Any]:
        """Empty the hoppers; with ``eject``, also pull out the SAMs in the readers."""
        for r in self.readers:
            with r.cond:
                r.hopper.clear()
            if req.get("eject"):
                r.eject()
        return {"ok": True}

    def op_wait_idle(self, req: dict[str, Any]) -> dict[str, Any]:
        deadline = time.monotonic() + float(req.get("timeout", 30))
        while time.monotonic() < deadline:
            if all(not r.hopper and r.present is None for r in self.readers):
                return {"ok": True}
            time.sleep(0.05)
        return {"ok": False, "error": "the readers still hold SAMs", **self.op_status(req)}

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = getattr(self, f"op_{req.get('op', '')}", None)
        if op is None:
            return {"ok": False, "error": f"unknown op {req.get('op')!r}"}
        try:
            return op(req)
        except (KeyError, TypeError, ValueError) as exc:
            return {"ok": False, "error": str(exc)}


def serve_control(emu: Emulator, sock_path: Path, stop: threading.Event) -> None:
    """Line-delimited JSON requests on a unix socket (mode 0600): one request, one answer per line."""
    with contextlib.suppress(FileNotFoundError):
        sock_path.unlink()
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        srv.bind(str(sock_path))
    finally:
        os.umask(old)
    srv.listen(8)
    srv.settimeout(0.5)

    def client(conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as f:
            for line in f:
                try:
                    req = json.loads(line)
                except ValueError:
                    resp: dict[str, Any] = {"ok": False, "error": "not JSON"}
                else:
                    resp = emu.handle(req)
                f.write(json.dumps(resp).encode() + b"\n")
                f.flush()

    while not stop.is_set():
        try:
            conn, _ = srv.accept()
        except TimeoutError:
            continue
        threading.Thread(target=client, args=(conn,), daemon=True).start()
    srv.close()
    with contextlib.suppress(FileNotFoundError):
        sock_path.unlink()
