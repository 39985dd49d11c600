# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PC/SC access to PSAMs through pyscard, and the APDUs of the TUnion PSAM profile (docs/sam-profile.md).

The same code drives a real personalisation station and the lab's vpcd readers. It uses pyscard's thin
``smartcard.scard`` layer (one C call per APDU), keeps an optional APDU trace that only ever holds what crossed the
wire (serials, challenges, cryptograms and MACs; a SAM never returns a key value and the host never sends one in
clear), and turns status words and lost cards into :class:`SamError` messages a person can act on.
"""

from __future__ import annotations

import fnmatch
import time
from typing import Any

try:
    from smartcard import scard

    HAS_PYSCARD = True
    PYSCARD_IMPORT_ERROR: str | None = None
except ImportError as _exc:  # pragma: no cover - reported through missing_required_lib
    scard = None
    HAS_PYSCARD = False
    PYSCARD_IMPORT_ERROR = str(_exc)

#: for base.TunionModule(requires=...): the library name, whether it imported, and why not
PYSCARD_REQUIREMENT = ("pyscard", HAS_PYSCARD, PYSCARD_IMPORT_ERROR)

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import CardGone, SamError, StatusWordError
from ansible_collections.tunion.keymgmt.plugins.module_utils.pcsc.psam import PSAM_AID, SW_TEXT, KeySlot, SamIdentity

#: INITIALIZE UPDATE, EXTERNAL AUTHENTICATE, WRITE KEY: their data stays out of the trace unless asked for
_CHANNEL_INS = frozenset({0x50, 0x82, 0xD4})


def _check(hresult: int, what: str) -> None:
    if hresult != scard.SCARD_S_SUCCESS:
        raise SamError(f"{what}: {scard.SCardGetErrorMessage(hresult)} (0x{hresult & 0xFFFFFFFF:08X})")


class SamChannel:
    """One SAM connected in one reader."""

    def __init__(
        self, reader: str, hcard: Any, protocol: int, trace: list[str] | None = None, trace_channel: bool = False
    ) -> None:
        self.reader = reader
        self.hcard = hcard
        self.protocol = protocol
        self.trace = trace
        #: trace the loading channel's data too (challenges, cryptograms, C-MACs): debugging only, never in
        #: production (docs/sam-profile.md): an authentication pair is what an attacker on the station wants
        self.trace_channel = trace_channel
        self.apdus = 0

    def _traced(self, data: bytes, ins: int) -> str:
        if self.trace_channel or ins not in _CHANNEL_INS:
            return data.hex().upper()
        return f"{data[:5].hex().upper()} [{max(len(data) - 5, 0)} bytes of the loading channel withheld]"

    def transmit(self, apdu: bytes, what: str, length: int | None = None) -> bytes:
        """Send one APDU; return its data on 9000, else raise. A lost card raises CardGone.

        ``length``: the data length the profile defines; any other length is a garbled exchange (reported as
        CardGone, so the station tries the SAM again) and never taken as an answer.
        """
        self.apdus += 1
        ins = apdu[1] if len(apdu) > 1 else 0
        if self.trace is not None:
            self.trace.append(f"{self.reader} > {self._traced(apdu, ins)}")
        resp = self._exchange(apdu, what)
        if self.trace is not None:
            out = bytes(resp).hex().upper()
            if not self.trace_channel and ins in _CHANNEL_INS and len(resp) > 2:
                out = f"[{len(resp) - 2} bytes of the loading channel withheld] {out[-4:]}"
            self.trace.append(f"{self.reader} < {out}")
        sw = (resp[-2] << 8) | resp[-1]
        if sw != 0x9000:
            raise StatusWordError(what, sw, SW_TEXT.get(sw, "unexpected status"))
        if length is not None and len(resp) - 2 != length:
            raise CardGone(f"{what}: garbled answer ({len(resp) - 2} bytes, the profile has {length}); retrying")
        return bytes(resp[:-2])

    def _exchange(self, apdu: bytes, what: str) -> list[int]:
        hresult, resp = scard.SCardTransmit(self.hcard, self.protocol, list(apdu))
        if hresult != scard.SCARD_S_SUCCESS or len(resp) < 2:
            raise CardGone(
                f"{what}: the SAM left reader {self.reader!r} or stopped answering "
                f"({scard.SCardGetErrorMessage(hresult)})"
            )
        return list(resp)

    # ------------------------------------------------------------------ profile commands
    def select(self) -> None:
        fci = self.transmit(
            bytes([0x00, 0xA4, 0x04, 0x00, len(PSAM_AID)]) + PSAM_AID, "SELECT PSAM application", 4 + len(PSAM_AID)
        )
        if fci[4:] != PSAM_AID:
            raise CardGone("SELECT PSAM application: garbled answer (not the PSAM FCI); retrying")

    def identity(self, with_keys: bool = True) -> SamIdentity:
        return self.details(self.read_serial(), with_keys)

    def read_serial(self) -> str:
        return self.transmit(bytes.fromhex("00B095000E"), "READ BINARY EF15 (serial)", 14)[:10].hex().upper()

    def details(self, serial: str, with_keys: bool = True) -> SamIdentity:
        """Terminal number and key slots of the SAM whose serial was just read."""
        ef16 = self.transmit(bytes.fromhex("00B0960006"), "READ BINARY EF16 (terminal number)", 6)
        ident = SamIdentity(serial=serial, terminal=ef16[:6].hex().upper())
        if with_keys:
            info = self.transmit(bytes.fromhex("80CA000000"), "GET DATA key slots")
            if len(info) < 5 or (len(info) - 5) % 6:
                raise CardGone(f"GET DATA key slots: garbled answer ({len(info)} bytes); retrying")
            ident.tsn = info[:4]
            ident.capacity = info[4]
            for i in range(5, len(info) - 5, 6):
                rec = info[i : i + 6]
                ident.slots.append(KeySlot(rec[0], rec[1], rec[2], rec[3:6].hex().upper()))
        return ident

    def initialize_update(self, host_challenge: bytes) -> tuple[bytes, bytes]:
        """80 50: the host's challenge in; (card challenge, card cryptogram) out. The card proves itself first."""
        out = self.transmit(bytes([0x80, 0x50, 0x00, 0x00, 0x08]) + host_challenge, "INITIALIZE UPDATE", 16)
        return out[:8], out[8:]

    def external_authenticate(self, host_cryptogram_and_mac: bytes) -> None:
        """84 82: host cryptogram(8) C-MAC(8)."""
        self.transmit(bytes([0x84, 0x82, 0x00, 0x00, 0x10]) + host_cryptogram_and_mac, "EXTERNAL AUTHENTICATE", 0)

    def write_key(self, apdu: bytes, what: str) -> None:
        """84 D4: the whole command, made (and C-MAC'd) in the HSM (:meth:`SamKeys.write_key_apdu`)."""
        self.transmit(apdu, what, 0)

    def mac1(self, data: bytes) -> tuple[bytes, bytes]:
        """80 70 00 00 (MAC1), 36 bytes (two-level: card serial then issuer factor) or 28 (single-level): returns
        (PSAM transaction serial, MAC1)."""
        if len(data) not in (28, 36):
            raise SamError(f"MAC1 data is {len(data)} bytes; the profile has 36 (two-level) or 28 (single-level)")
        out = self.transmit(bytes([0x80, 0x70, 0x00, 0x00, len(data)]) + data, "MAC1 (80 70)", 8)
        return out[:4], out[4:8]

    def mac2(self, mac2: bytes) -> bool:
        """80 72: the card's MAC2; True when the SAM accepts it (9000), False on 6988."""
        try:
            self.transmit(bytes([0x80, 0x72, 0x00, 0x00, 0x04]) + mac2, "MAC2 (80 72)", 0)
        except StatusWordError as exc:
            if exc.sw == 0x6988:
                return False
            raise
        return True

    def des_mac(self, usage: int, version: int, factors: bytes, data: bytes, iv: bytes = bytes(8)) -> bytes:
        """80 1A with one 8-byte factor per level (card serial first), then 80 FA 05 00 with the initial value
        first and the message padded here (80 00..): the PSAM pads nothing itself."""
        self.transmit(bytes([0x80, 0x1A, usage, version, len(factors)]) + factors, "DES init (80 1A)", 0)
        body = iv + data + b"\x80" + bytes(-(len(data) + 1) % 8)
        return self.transmit(bytes([0x80, 0xFA, 0x05, 0x00, len(body)]) + body, "DES MAC (80 FA)", 4)


class PcscContext:
    """A PC/SC context; ``readers()`` filters reader names by shell-style patterns."""

    def __init__(self) -> None:
        if not HAS_PYSCARD:
            raise SamError(f"pyscard is not installed: {PYSCARD_IMPORT_ERROR}")
        hresult, self.ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        _check(hresult, "cannot reach pcscd (is it running?)")

    def readers(self, patterns: list[str] | None = None) -> list[str]:
        hresult, names = scard.SCardListReaders(self.ctx, [])
        if hresult == scard.SCARD_E_NO_READERS_AVAILABLE:
            return []
        _check(hresult, "listing readers")
        if not patterns:
            return list(names)
        return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]

    def connect(self, reader: str, trace: list[str] | None = None, trace_channel: bool = False) -> SamChannel | None:
        """Connect to the SAM in ``reader``; None when the reader is empty (or its SAM is being swapped)."""
        hresult, hcard, proto = scard.SCardConnect(
            self.ctx, reader, scard.SCARD_SHARE_EXCLUSIVE, scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1
        )
        if hresult != scard.SCARD_S_SUCCESS:
            return None
        pci = scard.SCARD_PCI_T0 if proto == scard.SCARD_PROTOCOL_T0 else scard.SCARD_PCI_T1
        return SamChannel(reader, hcard, pci, trace, trace_channel)

    def wait_for_card(self, reader: str, timeout: float) -> None:
        """Wait (at most ``timeout`` s) for pcscd to report a change in ``reader``."""
        hresult, states = scard.SCardGetStatusChange(self.ctx, 0, [(reader, scard.SCARD_STATE_UNAWARE)])
        if hresult != scard.SCARD_S_SUCCESS:
            time.sleep(min(timeout, 0.1))
            return
        current = states[0][1] & ~scard.SCARD_STATE_CHANGED
        if current & scard.SCARD_STATE_PRESENT and not current & scard.SCARD_STATE_EXCLUSIVE:
            time.sleep(min(timeout, 0.02))  # present: pcscd has not caught up with the swap yet
            return
        scard.SCardGetStatusChange(self.ctx, max(int(timeout * 1000), 1), [(reader, current)])

    @staticmethod
    def release(channel: SamChannel, advance: bool) -> None:
        """End the session. ``advance`` resets the SAM: a personalisation machine takes it out and feeds the next."""
        scard.SCardDisconnect(channel.hcard, scard.SCARD_RESET_CARD if advance else scard.SCARD_LEAVE_CARD)

    def close(self) -> None:
        scard.SCardReleaseContext(self.ctx)


def read_sams(pc: PcscContext, readers: list[str], attempts: int = 3) -> tuple[list[dict[str, Any]], list[str]]:
    """Serial, terminal and key slots of the SAM in each reader (left in place). Returns (sams, empty readers)."""
    sams: list[dict[str, Any]] = []
    empty: list[str] = []
    for reader in readers:
        for attempt in range(attempts):
            ch = pc.connect(reader)
            if ch is None:
                if attempt + 1 < attempts:
                    pc.wait_for_card(reader, 0.5)
                    continue
                empty.append(reader)
                break
            try:
                ch.select()
                ident = ch.identity()
            except CardGone:
                continue  # a garbled exchange: read again
            except StatusWordError:
                empty.append(reader)  # a card, but not a TUnion PSAM
                break
            finally:
                pc.release(ch, advance=False)
            sams.append({"reader": reader, **ident.as_dict()})
            break
        else:
            empty.append(reader)
    return sams, empty
