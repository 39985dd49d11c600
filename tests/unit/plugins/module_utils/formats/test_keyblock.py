"""Key block format (docs/keyblock.md): build, parse, verify, and refusal of every modified character.

The HSM is faked with the `cryptography` package (AES-KWP RFC 5649, AES-ECB derivation, AES-CMAC), which is also
the independent reference: a block made by SoftHSM through the project's code must equal the fake's byte for byte.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys

import pytest
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats import keyblock as kb
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding, aes_key_wrap_with_padding

from tunion_lab.lab import CHILD_PYTHONPATH
from tunion_lab.scratch_token import SO_PIN, USER_PIN, temp_token

KEK = bytes(range(32))
KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
TODAY = datetime.date(2026, 6, 1)


class FakeHsm:
    """Keys are plain bytes here: tests only."""

    def wrap_kwp(self, kek: bytes, key: bytes) -> bytes:
        return aes_key_wrap_with_padding(kek, key)

    def cmac(self, kek: bytes, derivation: bytes, data: bytes) -> bytes:
        enc = Cipher(algorithms.AES(kek), modes.ECB()).encryptor()
        kbak = enc.update(derivation) + enc.finalize()
        mac = CMAC(algorithms.AES(kbak))
        mac.update(data)
        return mac.finalize()

    def cmac_verify(self, kek: bytes, derivation: bytes, data: bytes, mac: bytes) -> bool:
        return self.cmac(kek, derivation, data) == mac


def header(**changes: object) -> kb.KeyBlockHeader:
    fields: dict[str, object] = {
        "key_type": "purchase",
        "type_code": 0x11,
        "key_class": "consumption",
        "version": 1,
        "algorithm": "3DES-2KEY",
        "kcv": "08D7B4",
        "city": "440100",
        "not_before": "2025-01-01",
        "not_after": "2030-12-31",
        "issuer": "GD-TUNION-PROVINCE",
        "kek_version": 1,
        "kek_kcv": "A1B2C3",
    }
    fields.update(changes)
    return kb.KeyBlockHeader(**fields)  # type: ignore[arg-type]


@pytest.fixture
def block() -> str:
    return kb.build(FakeHsm(), KEK, KEY, header())


def test_round_trip(block: str) -> None:
    assert block.startswith("T") and int(block[1:5]) == len(block)
    parsed = kb.verify(FakeHsm(), KEK, block, city="440100", today=TODAY, kek_version=1)
    assert parsed.header == header()
    assert aes_key_unwrap_with_padding(KEK, parsed.body) == KEY
    assert block[5:7] == "10" and block[7] == "T" and block[8] == "X" and block[9:11] == "01" and block[11] == "N"


def test_recharge_and_aes_codes() -> None:
    made = kb.build(FakeHsm(), KEK, bytes(32), header(key_class="recharge", algorithm="AES-256", version=0x1F))
    parsed = kb.parse(made)
    assert made[5:7] == "20" and made[7] == "A" and made[9:11] == "1F" and parsed.header.version == 31


def test_mac_is_the_reference_cmac_over_header_and_body(block: str) -> None:
    parsed = kb.parse(block)
    assert parsed.mac == FakeHsm().cmac(KEK, kb.KBAK_DERIVATION, parsed.header_text.encode() + parsed.body)
    assert len(kb.KBAK_DERIVATION) == 32 and kb.KBAK_DERIVATION[0] == 1 and kb.KBAK_DERIVATION[16] == 2


def test_every_modified_character_is_refused(block: str) -> None:
    """A flipped bit anywhere - header, body or MAC - is refused, never accepted as another valid block."""
    hsm = FakeHsm()
    for index, char in enumerate(block):
        for bit in (0x01, 0x20):
            changed = chr(ord(char) ^ bit)
            tampered = block[:index] + changed + block[index + 1 :]
            with pytest.raises(kb.KeyBlockError):
                kb.verify(hsm, KEK, tampered, city="440100", today=TODAY, kek_version=1)


def test_wrong_kek_fails_the_mac(block: str) -> None:
    with pytest.raises(kb.KeyBlockError, match="failed its MAC check"):
        kb.verify(FakeHsm(), bytes(32), block, city="440100", today=TODAY)


def test_other_city_expired_or_other_kek_version(block: str) -> None:
    with pytest.raises(kb.KeyBlockError, match="is for city 440100, not 440300"):
        kb.verify(FakeHsm(), KEK, block, city="440300", today=TODAY)
    with pytest.raises(kb.KeyBlockError, match=r"valid 2025-01-01\.\.2030-12-31"):
        kb.verify(FakeHsm(), KEK, block, city="440100", today=datetime.date(2031, 1, 1))
    with pytest.raises(kb.KeyBlockError, match="KEK version 2"):
        kb.verify(FakeHsm(), KEK, block, city="440100", today=TODAY, kek_version=2)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"key_class": "secret"}, "class 'secret'"),
        ({"algorithm": "DES"}, "algorithm 'DES'"),
        ({"version": 256}, "does not fit one byte"),
        ({"not_after": "2024-01-01"}, "ends"),
        ({"kcv": "xyz"}, "kcv"),
        ({"city": ""}, "city"),
        ({"not_before": "soon"}, "is not a date"),
        ({"type_code": None}, "type_code .* is required"),
        ({"type_code": 0}, "type code 0 must be one byte"),
        ({"type_code": 256}, "type code 256 must be one byte"),
    ],
)
def test_bad_headers_are_refused_before_the_hsm_is_used(changes: dict[str, object], message: str) -> None:
    class NoHsm(FakeHsm):
        def wrap_kwp(self, kek: bytes, key: bytes) -> bytes:
            raise AssertionError("the HSM must not be asked to wrap for a bad header")

    with pytest.raises(kb.KeyBlockError, match=message):
        kb.build(NoHsm(), KEK, KEY, header(**changes))


def test_type_code_is_in_the_macd_header(block: str) -> None:
    """The type code (TY, 2 hex digits) is the last optional block of the header the MAC covers."""
    parsed = kb.parse(block)
    assert parsed.header_text.endswith("IS16GD-TUNION-PROVINCETY0611") and parsed.header.type_code == 0x11
    assert block[12:14] == "10"  # ten optional blocks
    forged = block.replace("TY0611", "TY0612", 1)
    with pytest.raises(kb.KeyBlockError, match="failed its MAC check"):
        kb.verify(FakeHsm(), KEK, forged, city="440100", today=TODAY)


def _block_without_type_code() -> str:
    """A block as the province made them before TY existed (nine optional blocks), built here by hand."""
    h = header(type_code=None)
    optional = "".join(f"{i}{len(d) + 4:02X}{d}" for i, d in h.optional_blocks())
    body = aes_key_wrap_with_padding(KEK, KEY)
    total = 16 + len(optional) + 2 * len(body) + 32
    text = f"T{total:04d}10TX01N0900" + optional
    mac = FakeHsm().cmac(KEK, kb.KBAK_DERIVATION, text.encode() + body)
    return text + body.hex().upper() + mac.hex().upper()


def test_a_block_published_before_type_codes_still_verifies_without_one() -> None:
    old = _block_without_type_code()
    assert "TY" not in kb.parse(old).header_text
    parsed = kb.verify(FakeHsm(), KEK, old, city="440100", today=TODAY, kek_version=1)
    assert parsed.header.type_code is None and parsed.header.key_type == "purchase"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda b: b[:-1],
        lambda b: "D" + b[1:],
        lambda b: b[:1] + "9999" + b[5:],
        lambda b: b[:12] + "99" + b[14:],
        lambda b: b.replace("KT0C", "KTFF", 1),
        lambda b: b[:5] + "20" + b[7:],
        lambda b: b + "中",
    ],
)
def test_malformed_blocks_are_refused_with_a_message(block: str, mangle) -> None:
    with pytest.raises(kb.KeyBlockError, match=r"refused|MAC"):
        kb.verify(FakeHsm(), KEK, mangle(block), city="440100", today=TODAY)


_SOFTHSM_BUILD = r"""
import json, sys
from pkcs11 import Attribute as A, KeyType, ObjectClass
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.distribution.keys import HsmKeyOps
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats import keyblock as kb
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import hsm_session
args = json.loads(sys.argv[1])
with hsm_session("/usr/lib/softhsm/libsofthsm2.so", "kb", None, so_pin=args["so"]) as so:
    so.session.create_object({A.CLASS: ObjectClass.SECRET_KEY, A.KEY_TYPE: KeyType.AES,
        A.VALUE: bytes.fromhex(args["kek"]),
        A.TOKEN: True, A.PRIVATE: False, A.TRUSTED: True, A.WRAP: True, A.DERIVE: True, A.LABEL: "kek",
        A.SENSITIVE: True, A.EXTRACTABLE: False})
with hsm_session("/usr/lib/softhsm/libsofthsm2.so", "kb", args["pin"]) as hsm:
    key = hsm.session.create_object({A.CLASS: ObjectClass.SECRET_KEY, A.KEY_TYPE: KeyType.DES2,
        A.VALUE: bytes.fromhex(args["key"]),
        A.TOKEN: False, A.SENSITIVE: True, A.EXTRACTABLE: True, A.WRAP_WITH_TRUSTED: True, A.LABEL: "k"})
    kek = hsm.find_key(label="kek")
    h = kb.KeyBlockHeader(**args["header"])
    block = kb.build(HsmKeyOps(hsm), kek, key, h)
    kb.verify(HsmKeyOps(hsm), kek, block, city=h.city)
    print(block)
"""


def test_softhsm_block_equals_the_reference(block: str) -> None:
    """The project's HSM path (hsm.py on SoftHSM: KWP wrap, ECB_ENCRYPT_DATA derivation, CMAC) makes the same
    block as the reference computation, from the same test-only KEK and key."""
    with temp_token("kb"):
        fields = header().as_dict()
        args = {"so": SO_PIN, "pin": USER_PIN, "kek": KEK.hex(), "key": KEY.hex(), "header": fields}
        env = dict(os.environ, PYTHONPATH=CHILD_PYTHONPATH)
        out = subprocess.run(
            [sys.executable, "-c", _SOFTHSM_BUILD, json.dumps(args)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == block
