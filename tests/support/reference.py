# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Independent reference computations with the `cryptography` package: what the project's HSM path must equal."""

from __future__ import annotations

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC


def xor(*parts: bytes) -> bytes:
    out = bytearray(len(parts[0]))
    for p in parts:
        for i, b in enumerate(p):
            out[i] ^= b
    return bytes(out)


def des3(key16: bytes) -> Cipher:
    """3DES with a 16-byte key expanded to K1K2K1 (cryptography no longer takes 16-byte keys directly)."""
    return Cipher(TripleDES(key16 + key16[:8]), modes.ECB())


def des3_ecb(key16: bytes, data: bytes) -> bytes:
    enc = des3(key16).encryptor()
    return enc.update(data) + enc.finalize()


def kcv_des3(key16: bytes) -> bytes:
    return des3_ecb(key16, bytes(8))[:3]


def kcv_aes(key: bytes, method: str = "ecb") -> bytes:
    if method == "cmac":
        c = CMAC(algorithms.AES(key))
        c.update(bytes(16))
        return c.finalize()[:3]
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return (enc.update(bytes(16)) + enc.finalize())[:3]


def pboc_diversify(mk16: bytes, d8: bytes) -> bytes:
    """Reference PBOC diversification: 3DES(MK, D) || 3DES(MK, ~D)."""
    return des3_ecb(mk16, d8 + bytes(b ^ 0xFF for b in d8))


def strip_parity(key: bytes) -> bytes:
    """DES keys compared without their parity bits (SoftHSM sets odd parity on derived keys)."""
    return bytes(b & 0xFE for b in key)
