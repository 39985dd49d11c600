# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test helpers for the HSM layer: throw-away SoftHSM tokens, the tests-only keys, independent reference crypto.

The tests-only keys below exist only in the lab and in tests. Their components are public by design (they are in
this file), which is what lets tests prove that the values never appear anywhere else.

Also a small CLI for the lab:
    .venv/bin/python tests/hsm_helpers.py custodians .lab/custodians   # write the tests-only custodian files
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"
REPO = Path(__file__).resolve().parents[1]
COLLECTIONS = REPO / "collections"
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))

#: tests-only components (3 custodians each) of the lab's Ministry keys; see inventories/lab/.../key_catalogue.yml
TEST_COMPONENTS: dict[str, list[str]] = {
    "purchase": [
        "250A41031FFD5B24D95CF00EC114EDA3",
        "AE44EF8DF1E1C93EFAE2B8509C81D1F8",
        "C7DC4B1AF016E55355C5298D7DCE3B90",
    ],
    "tac": ["C646FD7E8EA6B637ECB3B7B1CB422422", "561942FC218A8C5B0BE446CC680E18E5", "16808DA66A82CB06FB28D69E893C75F7"],
}
SO_PIN = "87654321"
USER_PIN = "123456"


def xor(*parts: bytes) -> bytes:
    out = bytearray(len(parts[0]))
    for p in parts:
        for i, b in enumerate(p):
            out[i] ^= b
    return bytes(out)


def clear_test_key(name: str) -> bytes:
    """The clear value of a tests-only key (XOR of its components)."""
    return xor(*(bytes.fromhex(c) for c in TEST_COMPONENTS[name]))


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


def all_encodings(value: bytes) -> list[bytes]:
    """The ways a secret could show up in output or files: raw bytes, hex upper/lower."""
    return [value, value.hex().encode(), value.hex().upper().encode()]


@contextmanager
def temp_token(label: str = "test", *, init: bool = True) -> Iterator[Path]:
    """A throw-away SoftHSM2 token directory; sets SOFTHSM2_CONF for this process and its children."""
    old = os.environ.get("SOFTHSM2_CONF")
    with tempfile.TemporaryDirectory(prefix="tunion-hsm-") as tmp:
        tdir = Path(tmp) / "tokens"
        tdir.mkdir()
        conf = Path(tmp) / "softhsm2.conf"
        conf.write_text(f"directories.tokendir = {tdir}\nobjectstore.backend = file\nlog.level = ERROR\n")
        os.environ["SOFTHSM2_CONF"] = str(conf)
        try:
            if init:
                subprocess.run(
                    [
                        "softhsm2-util",
                        "--init-token",
                        "--free",
                        "--label",
                        label,
                        "--so-pin",
                        SO_PIN,
                        "--pin",
                        USER_PIN,
                    ],
                    check=True,
                    capture_output=True,
                )
            yield Path(tmp)
        finally:
            if old is None:
                os.environ.pop("SOFTHSM2_CONF", None)
            else:
                os.environ["SOFTHSM2_CONF"] = old


def write_custodian_files(root: Path, names: list[str] | None = None) -> list[Path]:
    """One directory per custodian, one 0600 YAML file per key: what each custodian would type in."""
    written = []
    for name in names or list(TEST_COMPONENTS):
        for i, comp in enumerate(TEST_COMPONENTS[name], 1):
            d = root / f"custodian-{i}"
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
            f = d / f"{name}-v01.yml"
            fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(f"value: {comp}\nkcv: {kcv_des3(bytes.fromhex(comp)).hex().upper()}\n")
            written.append(f)
    return written


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "custodians":
        for p in write_custodian_files(Path(sys.argv[2])):
            print(p)
    elif len(sys.argv) == 2 and sys.argv[1] == "kcvs":
        for n in TEST_COMPONENTS:
            print(n, kcv_des3(clear_test_key(n)).hex().upper())
    else:
        print(__doc__)
        sys.exit(2)
