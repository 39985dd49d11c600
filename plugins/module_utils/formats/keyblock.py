# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Authenticated key blocks, modelled on TR-31 / ANSI X9.143 version D (format: docs/keyblock.md).

A block is printable ASCII: a 16-character fixed header, TR-31-style optional blocks carrying the
key type and its type code, class, KCV, city, validity, issuer and KEK identity, then the body (the key wrapped inside
the province HSM under the city KEK with AES key wrap with padding, RFC 5649, in hex) and a 16-byte
AES-CMAC (hex) over header || body, computed in the HSM under a MAC key derived from the KEK.

This module holds the format and the order of the checks only. Every operation that touches key
material goes through a `KeyBlockHsm` (flows/distribution/keys.py over PKCS#11, or a
fake in the unit tests), so a clear key never exists in this process.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.clock import today as network_today
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import KeyBlockError

VERSION_ID = "T"  # tunion v1: AES-KWP body, AES-CMAC over header||body under a KEK-derived KBAK


FIXED_HEADER_LEN = 16


MAC_LEN = 16


EXPORTABILITY = "N"  # a city may not re-export what it receives (粤交〔2019〕11号 第十七条(一))


# Key usage (header bytes 5-6). TR-31 reserves usages that start with a digit for proprietary use.
KEY_USAGE = {"consumption": "10", "recharge": "20", "internal": "K0"}


# Algorithm (header byte 7): TR-31 letters; a digit is proprietary (SM4 has no TR-31 letter).
ALGORITHM_CODE = {"3DES-2KEY": "T", "3DES-3KEY": "T", "AES-128": "A", "AES-192": "A", "AES-256": "A", "SM4": "9"}


KEY_LENGTH = {"3DES-2KEY": 16, "3DES-3KEY": 24, "AES-128": 16, "AES-192": 24, "AES-256": 32, "SM4": 16}


# Mode of use (header byte 8, TR-31): what the city's HSM may do with the key it installs, so the narrowest
# capability each key needs travels under the MAC. 'X': derive other keys only (PBOC masters and issuer-level keys:
# card keys are derived, never computed as data); 'C': generate and verify MACs (a MAC key used as it is, load_auth).
MODES_OF_USE: dict[str, tuple[str, ...]] = {"X": ("derive",), "C": ("sign", "verify")}


def mode_of_use_for(capabilities: dict[str, bool]) -> str:
    """The mode of use of a key from its capabilities in the province token: derive -> 'X', sign -> 'C'."""
    if capabilities.get("derive"):
        return "X"
    if capabilities.get("sign"):
        return "C"
    raise KeyBlockError("the key can neither derive nor MAC: no mode of use a city may receive it with")


# Optional block identifiers (2 printable characters, then 2 hex digits of length, then data).
OPT_KEY_TYPE, OPT_CLASS, OPT_ALGORITHM, OPT_KCV = "KT", "CL", "AL", "KC"


# The catalogue's type code (2 hex digits), from which the city builds the key's CKA_ID (docs/hsm.md).
OPT_TYPE_CODE = "TY"


OPT_KEK, OPT_CITY, OPT_NOT_BEFORE, OPT_NOT_AFTER, OPT_ISSUER = "KP", "CI", "VB", "VA", "IS"


OPTIONAL_ORDER = (
    OPT_KEY_TYPE,
    OPT_CLASS,
    OPT_ALGORITHM,
    OPT_KCV,
    OPT_KEK,
    OPT_CITY,
    OPT_NOT_BEFORE,
    OPT_NOT_AFTER,
    OPT_ISSUER,
    OPT_TYPE_CODE,  # last: added later, so the fields before it keep their offsets
)


# KBAK derivation data, after TR-31 version D's KDF input (counter, usage 0001 = MAC, separator,
# algorithm 0004 = AES-256, length 0100 = 256 bits), padded to an AES block with a fixed label.
# KBAK = AES-ECB(KEK, D1 || D2) done by CKM_AES_ECB_ENCRYPT_DATA inside the HSM.
KBAK_LABEL = b"TUNIONKB"


KBAK_DERIVATION = b"".join(bytes([counter]) + bytes.fromhex("0001000004" + "0100") + KBAK_LABEL for counter in (1, 2))


_HEX = re.compile(r"^[0-9A-F]*\Z")


_PRINTABLE = re.compile(r"^[\x20-\x7e]*\Z")


class KeyBlockHsm(Protocol):
    """HSM operations a key block needs; handles are opaque (PKCS#11 objects in practice)."""

    def wrap_kwp(self, kek: Any, key: Any) -> bytes: ...

    def cmac(self, kek: Any, derivation: bytes, data: bytes) -> bytes: ...

    def cmac_verify(self, kek: Any, derivation: bytes, data: bytes, mac: bytes) -> bool: ...


@dataclass(frozen=True)
class KeyBlockHeader:
    """What the province asserts about the wrapped key; every field is covered by the MAC."""

    key_type: str
    key_class: str
    version: int
    algorithm: str
    kcv: str
    city: str
    not_before: str
    not_after: str
    issuer: str
    kek_version: int
    kek_kcv: str
    #: the catalogue's one-byte type code (CKA_ID); None only in a block published before blocks carried it
    type_code: int | None = None
    #: TR-31 mode of use (MODES_OF_USE): 'X' derive only (PBOC masters are diversified), 'C' MAC key
    mode_of_use: str = "X"
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    def validate(self, *, issuing: bool = False) -> None:  # noqa: PLR0912 - one check per field, each its message
        """Every field; ``issuing``: a block the province makes now, which must carry the type code."""
        problems = []
        if self.type_code is None and issuing:
            problems.append("type_code (the catalogue code, for the key's CKA_ID) is required")
        if self.type_code is not None and (not isinstance(self.type_code, int) or not 0 < self.type_code <= 255):
            problems.append(f"type code {self.type_code!r} must be one byte (1..255)")
        if self.key_class not in KEY_USAGE:
            problems.append(f"class {self.key_class!r} is not one of {sorted(KEY_USAGE)}")
        if self.algorithm not in ALGORITHM_CODE:
            problems.append(f"algorithm {self.algorithm!r} is not one of {sorted(ALGORITHM_CODE)}")
        if not 0 <= self.version <= 255:
            problems.append(f"key version {self.version} does not fit one byte")
        if not 0 <= self.kek_version <= 255:
            problems.append(f"KEK version {self.kek_version} does not fit one byte")
        for name in ("kcv", "kek_kcv"):
            value = getattr(self, name)
            if not value or not _HEX.match(value):
                problems.append(f"{name} {value!r} is not upper-case hex")
        for name in ("key_type", "city", "issuer"):
            value = getattr(self, name)
            if not value or not _PRINTABLE.match(value) or len(value) > 200:
                problems.append(f"{name} {value!r} must be 1-200 printable ASCII characters")
        try:
            if _date(self.not_after) < _date(self.not_before):
                problems.append(f"validity ends ({self.not_after}) before it starts ({self.not_before})")
        except ValueError as exc:
            problems.append(str(exc))
        if self.mode_of_use not in MODES_OF_USE:
            problems.append(f"mode of use {self.mode_of_use!r} is not one of {sorted(MODES_OF_USE)}")
        if problems:
            raise KeyBlockError("key block header refused: " + "; ".join(problems))

    def optional_blocks(self) -> list[tuple[str, str]]:
        values = {
            OPT_KEY_TYPE: self.key_type,
            OPT_TYPE_CODE: f"{self.type_code:02X}" if self.type_code is not None else None,
            OPT_CLASS: self.key_class,
            OPT_ALGORITHM: self.algorithm,
            OPT_KCV: self.kcv,
            OPT_KEK: f"{self.kek_version:02X}{self.kek_kcv}",
            OPT_CITY: self.city,
            OPT_NOT_BEFORE: self.not_before,
            OPT_NOT_AFTER: self.not_after,
            OPT_ISSUER: self.issuer,
        }
        return [(ident, data) for ident in OPTIONAL_ORDER if (data := values[ident]) is not None]

    def encode(self, total_length: int) -> str:
        self.validate(issuing=True)
        blocks = self.optional_blocks()
        optional = "".join(f"{ident}{len(data) + 4:02X}{data}" for ident, data in blocks)
        fixed = (
            f"{VERSION_ID}{total_length:04d}{KEY_USAGE[self.key_class]}{ALGORITHM_CODE[self.algorithm]}"
            f"{self.mode_of_use}{self.version:02X}{EXPORTABILITY}{len(blocks):02d}00"
        )
        return fixed + optional

    def as_dict(self) -> dict[str, Any]:
        return {
            "key_type": self.key_type,
            "type_code": self.type_code,
            "key_class": self.key_class,
            "version": self.version,
            "algorithm": self.algorithm,
            "kcv": self.kcv,
            "city": self.city,
            "not_before": self.not_before,
            "not_after": self.not_after,
            "issuer": self.issuer,
            "kek_version": self.kek_version,
            "kek_kcv": self.kek_kcv,
        }


@dataclass(frozen=True)
class ParsedBlock:
    header: KeyBlockHeader
    header_text: str
    body: bytes
    mac: bytes

    @property
    def authenticated_data(self) -> bytes:
        return self.header_text.encode("ascii") + self.body


def _date(text: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(text)
    except (TypeError, ValueError):
        raise ValueError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _header_length(header: KeyBlockHeader) -> int:
    return len(header.encode(0))


def build(hsm: KeyBlockHsm, kek: Any, key: Any, header: KeyBlockHeader) -> str:
    """Wrap `key` under `kek` (AES-KWP) and MAC header||body under the KEK's KBAK, all inside the HSM."""
    header.validate(issuing=True)
    body = hsm.wrap_kwp(kek, key)
    if len(body) % 8 or len(body) < 16:
        raise KeyBlockError(f"the HSM returned a {len(body)}-byte AES-KWP body; expected a multiple of 8")
    total = _header_length(header) + 2 * len(body) + 2 * MAC_LEN
    if total > 9999:
        raise KeyBlockError(f"key block would be {total} characters; the length field holds 4 digits")
    header_text = header.encode(total)
    mac = hsm.cmac(kek, KBAK_DERIVATION, header_text.encode("ascii") + body)
    if len(mac) != MAC_LEN:
        raise KeyBlockError(f"the HSM returned a {len(mac)}-byte CMAC; expected {MAC_LEN}")
    return header_text + body.hex().upper() + mac.hex().upper()


def parse(block: str) -> ParsedBlock:  # noqa: PLR0912 - one check per field, each with its own message
    """Split a block into header, body and MAC. Structure only: the MAC is NOT checked here."""
    if not isinstance(block, str) or not block.isascii() or not _PRINTABLE.match(block):
        raise KeyBlockError("key block refused: not printable ASCII")
    if len(block) < FIXED_HEADER_LEN + 2 * MAC_LEN:
        raise KeyBlockError(f"key block refused: {len(block)} characters is too short")
    if block[0] != VERSION_ID:
        raise KeyBlockError(f"key block refused: version ID {block[0]!r}, expected {VERSION_ID!r}")
    if not block[1:5].isdigit() or int(block[1:5]) != len(block):
        raise KeyBlockError(f"key block refused: length field {block[1:5]!r} does not match {len(block)} characters")
    usage, alg_code, mode, kvn, export, nopt = block[5:7], block[7], block[8], block[9:11], block[11], block[12:14]
    if export != EXPORTABILITY:
        raise KeyBlockError(f"key block refused: exportability {export!r}")
    if not nopt.isdigit() or not re.match(r"^[0-9A-F]{2}$", kvn):
        raise KeyBlockError("key block refused: fixed header is malformed")
    offset, values = FIXED_HEADER_LEN, {}
    for _index in range(int(nopt)):
        ident, length_hex = block[offset : offset + 2], block[offset + 2 : offset + 4]
        if not re.match(r"^[0-9A-F]{2}$", length_hex) or int(length_hex, 16) < 4:
            raise KeyBlockError(f"key block refused: optional block at {offset} is malformed")
        end = offset + int(length_hex, 16)
        if end > len(block) - 2 * MAC_LEN:
            raise KeyBlockError(f"key block refused: optional block {ident!r} runs past the header")
        values[ident] = block[offset + 4 : end]
        offset = end
    # TY came later: a block published before it still parses (a city's check run reads it before the province
    # re-publishes); the city then cannot name the key's CKA_ID and installs nothing from it (flows: install.py)
    missing = [ident for ident in OPTIONAL_ORDER if ident not in values and ident != OPT_TYPE_CODE]
    if missing:
        raise KeyBlockError(f"key block refused: optional blocks {missing} are missing")
    header_text, rest = block[:offset], block[offset:]
    if len(rest) <= 2 * MAC_LEN or len(rest) % 2 or not _HEX.match(rest):
        raise KeyBlockError("key block refused: body or MAC is not hex")
    type_code = values.get(OPT_TYPE_CODE)
    if type_code is not None and not re.match(r"^[0-9A-F]{2}$", type_code):
        raise KeyBlockError("key block refused: type code is not 2 hex digits")
    kek_field = values[OPT_KEK]
    if len(kek_field) < 3 or not _HEX.match(kek_field):
        raise KeyBlockError("key block refused: KEK identity is malformed")
    header = KeyBlockHeader(
        key_type=values[OPT_KEY_TYPE],
        type_code=int(type_code, 16) if type_code is not None else None,
        key_class=values[OPT_CLASS],
        version=int(kvn, 16),
        algorithm=values[OPT_ALGORITHM],
        kcv=values[OPT_KCV],
        city=values[OPT_CITY],
        not_before=values[OPT_NOT_BEFORE],
        not_after=values[OPT_NOT_AFTER],
        issuer=values[OPT_ISSUER],
        kek_version=int(kek_field[:2], 16),
        kek_kcv=kek_field[2:],
        mode_of_use=mode,
        extra={k: v for k, v in values.items() if k not in OPTIONAL_ORDER},
    )
    if KEY_USAGE.get(header.key_class) != usage or ALGORITHM_CODE.get(header.algorithm) != alg_code:
        raise KeyBlockError("key block refused: key usage or algorithm in the fixed header contradicts the fields")
    return ParsedBlock(header, header_text, bytes.fromhex(rest[: -2 * MAC_LEN]), bytes.fromhex(rest[-2 * MAC_LEN :]))


def verify(
    hsm: KeyBlockHsm,
    kek: Any,
    block: str,
    *,
    city: str,
    today: datetime.date | None = None,
    kek_version: int | None = None,
) -> ParsedBlock:
    """Parse, check the MAC in the HSM, then the city, KEK and validity. Raises KeyBlockError.

    The KCV can only be checked once the key is unwrapped (in a session object, before it is
    stored): see `distribution.install_blocks`.
    """
    parsed = parse(block)
    if kek_version is not None and parsed.header.kek_version != kek_version:
        raise KeyBlockError(
            f"key block {parsed.header.key_type!r} is under KEK version {parsed.header.kek_version}, "
            f"the city holds KEK version {kek_version}: the province must re-publish (or the city re-enrol)"
        )
    if not hsm.cmac_verify(kek, KBAK_DERIVATION, parsed.authenticated_data, parsed.mac):
        raise KeyBlockError(
            f"key block {parsed.header.key_type!r} failed its MAC check: its header or body was modified "
            "after the province issued it (or it was made under another KEK); nothing installed"
        )
    header = parsed.header
    header.validate()
    if header.city != city:
        raise KeyBlockError(f"key block {header.key_type!r} is for city {header.city}, not {city}; nothing installed")
    day = today or network_today()
    if not _date(header.not_before) <= day <= _date(header.not_after):
        raise KeyBlockError(
            f"key block {header.key_type!r} v{header.version} is valid {header.not_before}..{header.not_after}, "
            f"not on {day.isoformat()}; nothing installed"
        )
    if len(parsed.body) % 8 or len(parsed.body) < 16:
        raise KeyBlockError(f"key block {header.key_type!r}: body is not an AES-KWP output")
    return parsed
