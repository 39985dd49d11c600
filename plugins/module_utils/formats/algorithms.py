# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Key algorithms and usages by name (no PKCS#11 attribute here), and PBOC diversification data."""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import HsmError


@dataclass(frozen=True)
class AlgorithmSpec:
    name: str
    length: int  # bytes
    block: int  # cipher block size in bytes
    family: str  # "des3", "aes", "sm4"


ALGORITHMS: dict[str, AlgorithmSpec] = {
    "3DES-2KEY": AlgorithmSpec("3DES-2KEY", 16, 8, "des3"),
    "AES-128": AlgorithmSpec("AES-128", 16, 16, "aes"),
    "AES-256": AlgorithmSpec("AES-256", 32, 16, "aes"),
    # Declarable in the catalogue; no PKCS#11 standard mechanism exists, so a token must prove vendor support.
    "SM4": AlgorithmSpec("SM4", 16, 16, "sm4"),
}


#: what a key may do inside the HSM. The capability flags are deliberately narrow: a diversification master key
#: can derive but not encrypt (CKA_ENCRYPT on a PBOC master key would let anyone compute card keys as data).
USAGES: dict[str, tuple[str, ...]] = {
    "derive": ("derive",),
    "kek": ("wrap", "unwrap"),
    "mac": ("sign", "verify"),
    "encrypt": ("encrypt", "decrypt"),
    "cryptogram": ("encrypt", "sign", "verify"),
}


def diversification_data(value: str | bytes) -> bytes:
    """The 8-byte PBOC diversification factor D for a city code, SAM serial or card number.

    ``bytes`` of length 8 are used as given. A string of hex digits is right-aligned: the rightmost 16 digits are
    taken (card application serial numbers), shorter strings are left-padded with ``0`` (city code ``440100`` ->
    ``00 00 00 00 00 44 01 00``).
    """
    if isinstance(value, bytes | bytearray):
        if len(value) != 8:
            raise HsmError(f"diversification data must be 8 bytes, got {len(value)}")
        return bytes(value)
    text = str(value).strip()
    if not re.fullmatch(r"[0-9A-Fa-f]{1,32}", text):
        raise HsmError(f"diversification data {value!r} must be hex digits (city code, SAM serial, card number)")
    return bytes.fromhex(text[-16:].rjust(16, "0"))


def pboc_derivation_data(d: bytes) -> bytes:
    """``D || ~D``: encrypting it under MK in ECB gives ``DK = 3DES(MK, D) || 3DES(MK, ~D)``."""
    d = diversification_data(d) if len(d) != 8 else bytes(d)
    return d + bytes(b ^ 0xFF for b in d)


KCV_LENGTH = 3  # bytes (6 hex digits): the catalogue's, the key blocks' and docs/hsm.md's KCV


def check_kcv(what: str, computed: bytes, expected: bytes | None, length: int = KCV_LENGTH) -> None:
    """Exact comparison of a KCV computed in the HSM with the expected one (constant time).

    A missing, empty or short expected KCV is refused: a prefix comparison would let it pass any key.
    """
    if expected is None or len(expected) != length:
        got = "none" if expected is None else f"{len(expected)} bytes"
        raise HsmError(f"{what}: the expected KCV must be exactly {length} bytes ({2 * length} hex digits), got {got}")
    if len(computed) != length or not hmac.compare_digest(bytes(computed), bytes(expected)):
        raise HsmError(
            f"{what}: the KCV {bytes(computed).hex().upper()} differs from the expected {bytes(expected).hex().upper()}"
        )
