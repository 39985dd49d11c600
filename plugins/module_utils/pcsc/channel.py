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


def _check(hresult: int, what: str) -> None:
    if hresult != scard.SCARD_S_SUCCESS:
        raise SamError(f"{what}: {scard.SCardGetErrorMessage(hresult)} (0x{hresult & 0xFFFFFFFF:08X})")


class SamChannel:
    """One SAM connected in one reader."""

    def __init__(self, reader: str, hcard: Any, protocol: int, trace: list[str] | None = None) -> None:
        self.reader = reader
        self.hcard = hcard
        self.protocol = protocol
        self.trace = trace
        self.apdus = 0

    def transmit(self, apdu: bytes, what: str, length: int | None = None) -> bytes:
        """Send one APDU; return its data on 9000, else raise. A lost card raises CardGone.

        ``length``: the data length the profile defines; any other length is a garbled exchange (reported as
        CardGone, so the station tries the SAM again) and never taken as an answer.
        """
        self.apdus += 1
        if self.trace is not None:
            self.trace.append(f"{self.reader} > {apdu.hex().upper()}")
        resp = self._exchange(apdu, what)
        if self.trace is not None:
            self.trace.append(f"{self.reader} < {bytes(resp).hex().upper()}")
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

    def get_challenge(self) -> bytes:
        return self.transmit(bytes.fromhex("0084000008"), "GET CHALLENGE", 8)

    def external_authenticate(self, cryptogram: bytes) -> None:
        self.transmit(bytes([0x00, 0x82, 0x00, 0x00, 0x08]) + cryptogram, "EXTERNAL AUTHENTICATE", 0)

    def write_key(self, body: bytes, what: str) -> None:
        self.transmit(bytes([0x80, 0xD4, 0x01, 0x00, len(body)]) + body, what, 0)

    def mac1(self, data28: bytes) -> tuple[bytes, bytes]:
        """80 70 (MAC1): returns (PSAM transaction serial, MAC1)."""
        out = self.transmit(bytes([0x80, 0x70, 0x00, 0x00, 0x1C]) + data28, "MAC1 (80 70)", 8)
        return out[:4], out[4:8]

    def des_mac(self, usage: int, version: int, card_serial: bytes, data: bytes) -> bytes:
        self.transmit(bytes([0x80, 0x1A, usage, version, 0x08]) + card_serial, "DES init (80 1A)", 0)
        return self.transmit(bytes([0x80, 0xFA, 0x05, 0x00, len(data)]) + data, "DES MAC (80 FA)", 4)


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

    def connect(self, reader: str, trace: list[str] | None = None) -> SamChannel | None:
        """Connect to the SAM in ``reader``; None when the reader is empty (or its SAM is being swapped)."""
        hresult, hcard, proto = scard.SCardConnect(
            self.ctx, reader, scard.SCARD_SHARE_EXCLUSIVE, scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1
        )
        if hresult != scard.SCARD_S_SUCCESS:
            return None
        pci = scard.SCARD_PCI_T0 if proto == scard.SCARD_PROTOCOL_T0 else scard.SCARD_PCI_T1
        return SamChannel(reader, hcard, pci, trace)

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
