# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The TUnion PSAM profile (docs/sam-profile.md): AID, key usage and algorithm codes, status words, key slots."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PSAM_AID = bytes.fromhex("D15600000150534D")


#: key usage byte of each consumption key type a PSAM can hold (第二条(四): consumption keys only)
USAGES: dict[str, int] = {"purchase": 0x01, "tac": 0x02}


USAGE_NAMES = {v: k for k, v in USAGES.items()}


ALGORITHM_CODES: dict[str, int] = {"3DES-2KEY": 0x01}


ALGORITHM_NAMES = {v: k for k, v in ALGORITHM_CODES.items()}


#: the loading channel's session keys: ``PBOC(SK, constant)`` per purpose, SK derived from MK and both challenges
SESSION_ENC = b"TU-S-ENC"
SESSION_MAC = b"TU-S-MAC"
SESSION_DEK = b"TU-S-DEK"


def session_base_data(host: bytes, card: bytes) -> bytes:
    """Derivation data of the session base key ``SK = 3DES-ECB(MK, data)``: each 8-byte block mixes both challenges,
    so no block is data the card alone chose."""
    return host[:4] + card[:4] + host[4:] + card[4:]


#: WRITE KEY P2: diversifications from the loaded key down to a card key, per MAC1 form of the catalogue
LEVELS_BY_MAC1_FORM = {"two-level": 2, "single-level": 1}


SW_TEXT = {
    0x6700: "wrong length",
    0x6982: "security status not satisfied (no EXTERNAL AUTHENTICATE)",
    0x6300: "authentication failed: the host cryptogram does not match the SAM's master key",
    0x6985: "conditions of use not satisfied",
    0x6988: "secure messaging MAC wrong",
    0x6A80: "wrong data (KCV mismatch, or a key usage the SAM does not accept)",
    0x6A82: "file or application not found (not a TUnion PSAM?)",
    0x6A84: "the SAM's key file is full",
    0x6A86: "wrong P1/P2",
    0x6A88: "referenced key not found in the SAM",
    0x6D00: "instruction not supported",
    0x6E00: "class not supported",
}


@dataclass(frozen=True)
class KeySlot:
    usage: int
    version: int
    algorithm: int
    kcv: str

    @property
    def key_type(self) -> str:
        return USAGE_NAMES.get(self.usage, f"usage-{self.usage:02x}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "key_type": self.key_type,
            "usage": self.usage,
            "version": self.version,
            "algorithm": ALGORITHM_NAMES.get(self.algorithm, f"{self.algorithm:02x}"),
            "kcv": self.kcv,
        }


@dataclass
class SamIdentity:
    serial: str
    terminal: str
    capacity: int = 0
    tsn: bytes = b"\x00\x00\x00\x00"  # the PSAM transaction serial its next MAC1 will use
    slots: list[KeySlot] = field(default_factory=list)

    def slot(self, usage: int, version: int) -> KeySlot | None:
        for s in self.slots:
            if s.usage == usage and s.version == version:
                return s
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "serial": self.serial,
            "terminal": self.terminal,
            "capacity": self.capacity,
            "free_slots": max(self.capacity - len(self.slots), 0),
            "keys": [s.as_dict() for s in self.slots],
        }
