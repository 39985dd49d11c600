# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A SAM master key cannot be exported to an RSA key the SO did not register (issue 10, item 3; Must show 3).

The attacker holds the province's user PIN and brings an RSA key pair of their own. The attacks use raw
python-pkcs11 and `cryptography` only; the project's functions appear only as the thing attacked."""

from __future__ import annotations

from collections.abc import Iterator

import pkcs11
import pytest
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import HsmError
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.sam_crypto import (
    manufacture_master_keys,
    manufacturer_label,
    register_manufacturer,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import hsm_session
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.constants import DEFAULT
from pkcs11.util.rsa import decode_rsa_public_key

from tests.support.sam import provision_test_keys
from tunion_lab.sam_supply import ISSUER_LABEL
from tunion_lab.scratch_token import SO_PIN, SOFTHSM, USER_PIN, temp_token

LABEL = "sammfr"
SERIALS = ["44440100000000000001", "44440100000000000002"]


def rsa_pair() -> tuple[rsa.RSAPrivateKey, bytes]:
    priv = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = priv.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    return priv, der


GENUINE, GENUINE_DER = rsa_pair()
ROGUE, ROGUE_DER = rsa_pair()
GENUINE_NO, ROGUE_NO = 1, 2  # the manufacturer the SO registered; a number nobody registered


@pytest.fixture(scope="module")
def token() -> Iterator[None]:
    with temp_token(LABEL):
        with hsm_session(SOFTHSM, LABEL, USER_PIN) as tok:
            provision_test_keys(tok, ["440100"])
        with hsm_session(SOFTHSM, LABEL, None, so_pin=SO_PIN) as so:
            register_manufacturer(so, GENUINE_NO, GENUINE_DER)
        yield


def user_session() -> pkcs11.Session:
    lib = pkcs11.lib(SOFTHSM)
    return lib.get_token(token_label=LABEL).open(rw=True, user_pin=USER_PIN)


def test_the_registered_manufacturer_receives_master_keys(token: None) -> None:
    with hsm_session(SOFTHSM, LABEL, USER_PIN, rw=False) as tok:
        blobs = manufacture_master_keys(tok, ISSUER_LABEL, GENUINE_NO, SERIALS)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    assert [len(GENUINE.decrypt(b, oaep)) for b in blobs] == [16, 16]


@pytest.mark.parametrize("number", [2, 3, 255])
def test_an_unregistered_manufacturer_gets_nothing(token: None, number: int) -> None:
    with hsm_session(SOFTHSM, LABEL, USER_PIN, rw=False) as tok, pytest.raises(HsmError, match="no SAM manufacturer"):
        manufacture_master_keys(tok, ISSUER_LABEL, number, SERIALS)


@pytest.mark.parametrize("number", [0, 256, -1, True, "1"])
def test_a_manufacturer_number_outside_1_255_is_refused(token: None, number: object) -> None:
    with hsm_session(SOFTHSM, LABEL, USER_PIN, rw=False) as tok, pytest.raises(HsmError, match=r"1\.\.255"):
        manufacture_master_keys(tok, ISSUER_LABEL, number, SERIALS)  # type: ignore[arg-type]


def test_the_so_cannot_silently_replace_a_registered_key(token: None) -> None:
    with hsm_session(SOFTHSM, LABEL, None, so_pin=SO_PIN) as so:
        with pytest.raises(HsmError, match="registered with another RSA key"):
            register_manufacturer(so, GENUINE_NO, ROGUE_DER)
        assert register_manufacturer(so, GENUINE_NO, GENUINE_DER)[1] is False  # the same key: nothing to do


def test_a_user_planted_key_under_a_manufacturer_label_is_refused(token: None) -> None:
    """The attacker creates, with the user PIN, a public key object named like a registered manufacturer: it is not
    trusted (only the SO can set CKA_TRUSTED), so nothing is exported to it; beside the genuine one it is ambiguous."""
    with user_session() as s:
        with pytest.raises(pkcs11.exceptions.PKCS11Error):  # the user cannot mark it trusted
            s.create_object(
                decode_rsa_public_key(ROGUE_DER)
                | {Attribute.TOKEN: False, Attribute.LABEL: "x", Attribute.WRAP: True, Attribute.TRUSTED: True}
            )
        for n in (ROGUE_NO, GENUINE_NO):
            s.create_object(
                decode_rsa_public_key(ROGUE_DER)
                | {Attribute.TOKEN: True, Attribute.LABEL: manufacturer_label(n), Attribute.WRAP: True}
            )
    try:
        with hsm_session(SOFTHSM, LABEL, USER_PIN, rw=False) as tok:
            with pytest.raises(HsmError, match="not marked trusted"):
                manufacture_master_keys(tok, ISSUER_LABEL, ROGUE_NO, SERIALS)
            with pytest.raises(HsmError):  # two objects under the genuine label: refused, never the first found
                manufacture_master_keys(tok, ISSUER_LABEL, GENUINE_NO, SERIALS)
    finally:
        with user_session() as s:
            for obj in s.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY}):
                if obj[Attribute.MODULUS] == decode_rsa_public_key(ROGUE_DER)[Attribute.MODULUS]:
                    obj.destroy()


def test_a_master_key_made_the_projects_way_does_not_wrap_under_a_rogue_key(token: None) -> None:
    """Raw python-pkcs11: a master key derived with the template the project uses (CKA_WRAP_WITH_TRUSTED) refuses
    to be wrapped under the attacker's own RSA key; the registered, trusted key wraps it."""
    with user_session() as s:
        issuer = s.get_key(label=ISSUER_LABEL, object_class=ObjectClass.SECRET_KEY)
        d = bytes.fromhex(SERIALS[0])[-8:]
        mk = issuer.derive_key(
            KeyType.DES2,
            128,
            mechanism=Mechanism.DES3_ECB_ENCRYPT_DATA,
            mechanism_param=_string_data(d + bytes(b ^ 0xFF for b in d)),
            template={
                Attribute.TOKEN: False,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: True,
                Attribute.WRAP_WITH_TRUSTED: True,
                Attribute.DERIVE: True,
                Attribute.ENCRYPT: False,
                Attribute.VALUE_LEN: DEFAULT,  # SoftHSM refuses CKA_VALUE_LEN for a DES2 key
            },
        )
        rogue = s.create_object(
            decode_rsa_public_key(ROGUE_DER) | {Attribute.TOKEN: False, Attribute.WRAP: True, Attribute.LABEL: "r"}
        )
        try:
            with pytest.raises(pkcs11.exceptions.PKCS11Error):
                rogue.wrap_key(mk, mechanism=Mechanism.RSA_PKCS_OAEP)
            genuine = s.get_key(label=manufacturer_label(GENUINE_NO), object_class=ObjectClass.PUBLIC_KEY)
            assert genuine[Attribute.TRUSTED] is True
            assert len(genuine.wrap_key(mk, mechanism=Mechanism.RSA_PKCS_OAEP)) == 256
        finally:
            rogue.destroy()
            mk.destroy()


def _string_data(data: bytes) -> bytes:
    """CK_KEY_DERIVATION_STRING_DATA for DES3_ECB_ENCRYPT_DATA, packed by hand (pointer, length)."""
    import ctypes

    buf = ctypes.create_string_buffer(data, len(data))
    _KEEP.append(buf)

    class Params(ctypes.Structure):
        _fields_ = [("pData", ctypes.c_void_p), ("ulLen", ctypes.c_ulong)]

    return bytes(Params(ctypes.addressof(buf), len(data)))


_KEEP: list[object] = []
