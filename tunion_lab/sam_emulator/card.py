"""One emulated PSAM: the TUnion PSAM profile (docs/sam-profile.md), modelled on PBOC / JT/T 978 PSAMs.

The card is the only place outside an HSM where keys exist in clear, exactly as in a real SAM. It never prints
them, never returns them in an R-APDU, and its persistent memory (the state directory) stores them encrypted under
the emulator's storage key (see :mod:`tunion_lab.sam_emulator.store`), as a secure element encrypts its NVM.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap

# ---------------------------------------------------------------------------------------------- profile constants
ATR = bytes.fromhex("3B08") + b"TUPSAM01"
PSAM_AID = bytes.fromhex("D15600000150534D")  # "...PSM": the PSAM application, docs/sam-profile.md
SW_OK = b"\x90\x00"
SW_WRONG_LENGTH = b"\x67\x00"
SW_SECURITY = b"\x69\x82"  # security status not satisfied (no EXTERNAL AUTHENTICATE yet)
SW_AUTH_FAILED = b"\x63\x00"
SW_CONDITIONS = b"\x69\x85"  # conditions of use (no 80 1A / 80 70 before)
SW_BAD_MAC = b"\x69\x88"  # secure messaging data object incorrect: MAC
SW_WRONG_DATA = b"\x6a\x80"
SW_FILE_FULL = b"\x6a\x84"
SW_NOT_FOUND = b"\x6a\x82"
SW_KEY_NOT_FOUND = b"\x6a\x88"  # referenced key not found
SW_WRONG_P1P2 = b"\x6a\x86"
SW_INS = b"\x6d\x00"
SW_CLA = b"\x6e\x00"

#: key usage byte -> name. 0x0_ consumption (消费类), 0x1_ recharge (充值类): a PSAM refuses recharge usages itself
#: (粤交〔2019〕11号 第二条(四)), the third line of defence after the catalogue and sam_inject.
USAGE_PURCHASE = 0x01
USAGE_TAC = 0x02
CONSUMPTION_USAGES = {USAGE_PURCHASE: "purchase", USAGE_TAC: "tac"}
ALG_3DES = 0x01


# ---------------------------------------------------------------------------------------------- card-side crypto
def _k3(key: bytes) -> bytes:
    """K1K2K1 / K1K1K1: cryptography only takes 24-byte 3DES keys."""
    if len(key) == 8:
        return key * 3
    if len(key) == 16:
        return key + key[:8]
    return key


def des3_ecb(key: bytes, data: bytes) -> bytes:
    enc = Cipher(TripleDES(_k3(key)), modes.ECB()).encryptor()  # noqa: S305 - PBOC diversification is ECB by definition
    return enc.update(data) + enc.finalize()


def des3_cbc(key: bytes, data: bytes, iv: bytes = bytes(8), decrypt: bool = False) -> bytes:
    c = Cipher(TripleDES(_k3(key)), modes.CBC(iv))
    op = c.decryptor() if decrypt else c.encryptor()
    return op.update(data) + op.finalize()


def pad80(data: bytes) -> bytes:
    data = data + b"\x80"
    return data + bytes(-len(data) % 8)


def cbc_mac(key: bytes, data: bytes) -> bytes:
    """ISO 9797-1 MAC algorithm 1, padding method 2, IV zero: DES for 8-byte keys, 3DES for 16 (4 bytes kept)."""
    return des3_cbc(key, pad80(data))[-8:][:4]


def pboc_diversify(master: bytes, d8: bytes) -> bytes:
    return des3_ecb(master, d8) + des3_ecb(master, bytes(b ^ 0xFF for b in d8))


def diversify_down(key: bytes, factors_card_first: bytes) -> bytes:
    """The card key from a slot key and the factors a command carries, card serial first (as in 80 70 00 00 24 and
    80 1A): the last factor (the issuer's) is applied first, the card serial last."""
    for i in range(len(factors_card_first) - 8, -1, -8):
        key = pboc_diversify(key, factors_card_first[i : i + 8])
    return key


#: the session-key constants of the loading channel (docs/sam-profile.md): PBOC(SK, constant) per purpose
SESSION_ENC = b"TU-S-ENC"
SESSION_MAC = b"TU-S-MAC"
SESSION_DEK = b"TU-S-DEK"


def session_base_data(host: bytes, card: bytes) -> bytes:
    """The derivation data of the session base key SK = 3DES-ECB(MK, data): each block mixes both challenges, so
    no block is data the card alone chose."""
    return host[:4] + card[:4] + host[4:] + card[4:]


def mac3(key: bytes, data: bytes, icv: bytes = bytes(8)) -> bytes:
    """Full 8-byte 3DES CBC-MAC (ISO 9797-1 algorithm 1, padding method 2) from ``icv``: the channel's MACs."""
    return des3_cbc(key, pad80(data), iv=icv)[-8:]


def kcv(key: bytes) -> bytes:
    return des3_ecb(key, bytes(8))[:3]


def serial_d8(serial: str) -> bytes:
    """The SAM's diversification data: the rightmost 8 bytes of its 10-byte serial."""
    return bytes.fromhex(serial)[-8:]


# ---------------------------------------------------------------------------------------------- card state
@dataclass
class Slot:
    usage: int
    version: int
    algorithm: int
    kcv: bytes
    key: bytes
    levels: int = 1  # diversifications down to the card key: 2 = Ministry-level master (issuer, card), 1 = issuer


@dataclass
class Faults:
    remove_after: int = 0  # the SAM is pulled out after this many APDUs (0: never)
    bad_mac: bool = False  # MAC1 / 80 FA answers are wrong (a faulty card)
    full: bool = False  # the key file has no free slot
    #: a rogue card that copies a registered serial: answers INITIALIZE UPDATE with these card challenges (hex, one
    #: per attempt, the last repeated) and a made-up cryptogram, and records every APDU the station sends
    rogue_challenges: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Faults:
        d = d or {}
        return cls(
            int(d.get("remove_after", 0)),
            bool(d.get("bad_mac", False)),
            bool(d.get("full", False)),
            tuple(str(c) for c in d.get("rogue_challenges") or ()),
        )


@dataclass
class CardState:
    serial: str  # 20 hex digits (10 bytes)
    terminal: str  # 12 hex digits (6 bytes)
    master_key: bytes  # MK, diversified from the province's SAM issuer key by serial: only ever a KDF parent
    batch_kek: bytes  # the AES-128 batch transport KEK the SAM was manufactured with: inner cryptogram layer
    capacity: int = 8
    tsn: int = 0  # PSAM transaction serial number (终端交易序号)
    slots: list[Slot] = field(default_factory=list)


class PsamCard:
    """APDU processor for one SAM. ``persist`` is called after every change of the card's memory."""

    def __init__(self, state: CardState, persist: Callable[[CardState], None], faults: Faults | None = None) -> None:
        self.state = state
        self.persist = persist
        self.faults = faults or Faults()
        self.apdus = 0
        self.rogue_attempts = 0
        self.heard: list[bytes] = []  # a rogue card's record of what the station sent
        self.power_on()

    def power_on(self) -> None:
        self.session: dict[str, bytes] | None = None  # S-ENC, S-MAC, S-DEK, host and card challenges after 80 50
        self.authenticated = False
        self.icv = bytes(8)  # the C-MAC chain
        self.seq = 0
        self.des_key: bytes | None = None  # after 80 1A
        self.purchase_session: tuple[bytes, bytes] | None = None  # (SESPK, amount) after 80 70

    # ------------------------------------------------------------------ dispatch
    def process(self, apdu: bytes) -> bytes:
        self.apdus += 1
        if self.faults.rogue_challenges:
            self.heard.append(bytes(apdu))
        if len(apdu) < 4:
            return SW_WRONG_LENGTH
        cla, ins, p1, p2 = apdu[:4]
        data = apdu[5 : 5 + apdu[4]] if len(apdu) > 5 else b""
        le = apdu[4] if len(apdu) == 5 else None
        handler = self._HANDLERS.get((cla, ins))
        if handler is None:
            return SW_CLA if cla not in (0x00, 0x80, 0x84) else SW_INS
        try:
            return handler(self, p1, p2, data, le)
        except (ValueError, IndexError):
            return SW_WRONG_DATA

    # ------------------------------------------------------------------ ISO commands
    def _select(self, p1: int, p2: int, data: bytes, le: int | None) -> bytes:
        if p1 != 0x04 or data != PSAM_AID:
            return SW_NOT_FOUND
        self.power_on()
        return bytes([0x6F, 2 + len(PSAM_AID), 0x84, len(PSAM_AID)]) + PSAM_AID + SW_OK

    def _read_binary(self, p1: int, p2: int, data: bytes, le: int | None) -> bytes:
        if p1 == 0x95:  # EF15 public information: serial(10) version(1) type(1) command set(1) FCI(1)
            body = bytes.fromhex(self.state.serial) + bytes([0x01, 0x06, 0x01, 0x00])
        elif p1 == 0x96:  # EF16 terminal number
            body = bytes.fromhex(self.state.terminal)
        else:
            return SW_NOT_FOUND
        return body[p2 : p2 + (le or len(body))] + SW_OK

    def _initialize_update(self, p1: int, p2: int, data: bytes, le: int | None) -> bytes:
        """80 50: the host's challenge in; the card's challenge and the card cryptogram out. The card proves it holds
        MK first: nothing the host sends later depends on what the card chose until the host has checked this."""
        self.power_on()
        if len(data) != 8:
            return SW_WRONG_LENGTH
        if self.faults.rogue_challenges:  # a card that does not hold MK: chosen challenge, made-up cryptogram
            chosen = self.faults.rogue_challenges[min(self.rogue_attempts, len(self.faults.rogue_challenges) - 1)]
            self.rogue_attempts += 1
            return bytes.fromhex(chosen) + bytes(8) + SW_OK
        host, card = bytes(data), os.urandom(8)
        sk = des3_ecb(self.state.master_key, session_base_data(host, card))
        self.session = {
            "enc": pboc_diversify(sk, SESSION_ENC),
            "mac": pboc_diversify(sk, SESSION_MAC),
            "dek": pboc_diversify(sk, SESSION_DEK),
            "host": host,
            "card": card,
        }
        return card + mac3(self.session["enc"], host + card) + SW_OK

    def _check_cmac(self, header: bytes, body: bytes, mac: bytes) -> bool:
        """C-MAC over the command, chained from the previous command's MAC (ICV 0 for EXTERNAL AUTHENTICATE)."""
        assert self.session is not None
        expect = mac3(self.session["mac"], header + body, self.icv)
        if mac != expect:
            self.session, self.authenticated = None, False  # a bad MAC ends the secure session
            return False
        self.icv = expect
        return True

    def _external_auth(self, p1: int, p2: int, data: bytes, le: int | None) -> bytes:
        """84 82 00 00 10: host cryptogram(8) C-MAC(8). The host proves it holds MK."""
        if self.session is None:
            return SW_CONDITIONS
        if len(data) != 16:
            return SW_WRONG_LENGTH
        host_crypto, mac = data[:8], data[8:]
        if not self._check_cmac(bytes([0x84, 0x82, p1, p2, 0x10]), host_crypto, mac):
            return SW_BAD_MAC
        s = self.session
        if host_crypto != mac3(s["enc"], s["card"] + s["host"]):
            self.session, self.authenticated = None, False
            return SW_AUTH_FAILED
        self.authenticated = True
        self.seq = 0
        return SW_OK

    # ------------------------------------------------------------------ proprietary commands
    def _key_info(self, p1: int, p2: int, data: bytes, le: int | None) -> bytes:
        """80 CA: PSAM transaction serial(4), capacity(1), then per slot usage, version, algorithm, KCV(3).
        Never a key value."""
        out = self.state.tsn.to_bytes(4, "big")
        out += bytes([self.state.capacity if not self.faults.full else len(self.state.slots)])
        for s in self.state.slots:
            out += bytes([s.usage, s.version, s.algorithm]) + s.kcv
        return out + SW_OK

    def _write_key(self, p1: int, p2: int, data: bytes, le: int | None) -> bytes:  # noqa: PLR0911 - one SW each
        """84 D4 01 <levels>: usage version alg KCV(3) cryptogram(24) C-MAC(8), under secure messaging.

        cryptogram = 3DES-CBC(S-DEK, IV = 3DES(S-DEK, n), AES-KW(batch KEK, key)) for the n-th WRITE KEY of the
        session; P2 is the number of diversifications from this key down to a card key (2: the Ministry-level
        master, diversified by issuer then card; 1: an issuer-level key, by card only)."""
        if not self.authenticated or self.session is None:
            return SW_SECURITY
        if len(data) != 6 + 24 + 8:
            return SW_WRONG_LENGTH
        header, cryptogram, mac = data[:6], data[6:30], data[30:]
        if not self._check_cmac(bytes([0x84, 0xD4, p1, p2, len(data)]), data[:30], mac):
            return SW_BAD_MAC
        if p1 != 0x01 or p2 not in (1, 2):
            return SW_WRONG_P1P2
        usage, version, alg = header[:3]
        if usage not in CONSUMPTION_USAGES or alg != ALG_3DES:
            return SW_WRONG_DATA  # 第二条(四): a PSAM stores consumption keys only
        self.seq += 1
        dek = self.session["dek"]
        inner = des3_cbc(dek, cryptogram, iv=des3_ecb(dek, self.seq.to_bytes(8, "big")), decrypt=True)
        try:
            key = aes_key_unwrap(self.state.batch_kek, inner)
        except InvalidUnwrap:
            return SW_WRONG_DATA
        if kcv(key) != header[3:6]:
            return SW_WRONG_DATA
        slots = [s for s in self.state.slots if not (s.usage == usage and s.version == version)]
        capacity = len(self.state.slots) if self.faults.full else self.state.capacity
        if len(slots) >= capacity:
            return SW_FILE_FULL
        slots.append(Slot(usage, version, alg, header[3:6], key, p2))
        self.state.slots = slots
        self.persist(self.state)
        return SW_OK

    def _slot(self, usage: int, version: int) -> Slot | None:
        for s in self.state.slots:
            if s.usage == usage and s.version == version:
                return s
        return None

    def _des_init(self, p1: int, p2: int, data: bytes, le: int | None) -> bytes:
        """80 1A <usage> <version>: diversify the key for a card. The data carries one factor per level, card serial
        first (8 bytes: an issuer-level key; 16: card serial then issuer factor, for the Ministry-level master)."""
        self.des_key = None
        slot = self._slot(p1, p2)
        if slot is None:
            return SW_KEY_NOT_FOUND
        if len(data) not in (8, 16, 24) or len(data) % 8:
            return SW_WRONG_LENGTH
        if len(data) // 8 != slot.levels:
            return SW_WRONG_DATA  # the data must carry exactly the levels between this key and the card key
        self.des_key = diversify_down(slot.key, data)
        return SW_OK

    def _des_calc(self, p1: int, p2: int, data: bytes, le: int | None) -> bytes:
        """80 FA 05 00: MAC with the key set up by 80 1A. The data is the initial value (8) followed by the message,
        which the caller has already padded (80 00..) to whole blocks: the PSAM adds no padding of its own."""
        if self.des_key is None:
            return SW_CONDITIONS
        if p1 != 0x05 or p2 != 0x00:
            return SW_WRONG_P1P2
        if len(data) < 16 or len(data) % 8:
            return SW_WRONG_LENGTH
        mac = des3_cbc(self.des_key, data[8:], iv=data[:8])[-8:][:4]
        return (self._corrupt(mac) if self.faults.bad_mac else mac) + SW_OK

    def _init_purchase(self, p1: int, p2: int, data: bytes, le: int | None) -> bytes:
        """80 70 00 00: MAC1. Data: card random(4) card counter(2) amount(4) type(1) date-time(7) key version(1)
        algorithm(1) card application serial(8), then (Lc 24) the issuer's diversification factor(8). The 36-byte
        form diversifies the Ministry-level key twice (issuer, then card); the 28-byte form, for closed schemes,
        diversifies an issuer-level key once. Answer: PSAM transaction serial(4) MAC1(4)."""
        if len(data) not in (28, 36):
            return SW_WRONG_LENGTH
        rnd, ctr, amount, ttype, when = data[0:4], data[4:6], data[6:10], data[10:11], data[11:18]
        version, factors = data[18], data[20:]
        slot = self._slot(USAGE_PURCHASE, version)
        if slot is None:
            return SW_KEY_NOT_FOUND
        if len(factors) // 8 != slot.levels:
            return SW_WRONG_DATA  # the Ministry-level key needs the issuer factor; an issuer key must not get one
        tsn = self.state.tsn.to_bytes(4, "big")
        self.state.tsn = (self.state.tsn + 1) & 0xFFFFFFFF
        self.persist(self.state)
        dpk = diversify_down(slot.key, factors)
        sespk = des3_ecb(dpk, rnd + ctr + tsn[2:])
        mac1 = cbc_mac(sespk, amount + ttype + bytes.fromhex(self.state.terminal) + when)
        self.purchase_session = (sespk, amount)
        return tsn + (self._corrupt(mac1) if self.faults.bad_mac else mac1) + SW_OK

    def _credit_purchase(self, p1: int, p2: int, data: bytes, le: int | None) -> bytes:
        """80 72: verify MAC2 = MAC(SESPK, amount) from the card."""
        session, self.purchase_session = self.purchase_session, None
        if session is None:
            return SW_CONDITIONS
        if len(data) != 4:
            return SW_WRONG_LENGTH
        return SW_OK if cbc_mac(session[0], session[1]) == data else SW_BAD_MAC

    @staticmethod
    def _corrupt(mac: bytes) -> bytes:
        return bytes([mac[0] ^ 0x5A]) + mac[1:]

    _HANDLERS: ClassVar[dict[tuple[int, int], Callable[..., bytes]]] = {
        (0x00, 0xA4): _select,
        (0x00, 0xB0): _read_binary,
        (0x80, 0x50): _initialize_update,
        (0x84, 0x82): _external_auth,
        (0x80, 0xCA): _key_info,
        (0x84, 0xD4): _write_key,
        (0x80, 0x1A): _des_init,
        (0x80, 0xFA): _des_calc,
        (0x80, 0x70): _init_purchase,
        (0x80, 0x72): _credit_purchase,
    }
