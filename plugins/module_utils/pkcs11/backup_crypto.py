# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The PKCS#11 calls of backup and restore (flows/backup.py): wrap and unwrap under the backup KEK with
``CKM_AES_KEY_WRAP_PAD``, encrypt the OpenBao snapshot with ``CKM_AES_CBC_PAD``, re-create a public key, relabel.

Everything happens inside the HSM; the only bytes returned are wrapped blobs, ciphertext and public values.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from contextlib import suppress
from typing import Any

with suppress(ImportError):  # pkcs11/session.py reports a missing python-pkcs11 (HAS_PKCS11)
    from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.session import pkcs11_errors

#: attributes a restore sets from the manifest; the rest (local, always_sensitive, ...) the token decides
RESTORED_ATTRIBUTES = (
    "token",
    "private",
    "sensitive",
    "extractable",
    "wrap_with_trusted",
    "trusted",
    "encrypt",
    "decrypt",
    "sign",
    "verify",
    "wrap",
    "unwrap",
    "derive",
)


def token_objects(session: Any) -> list[Any]:
    with pkcs11_errors("listing the token's objects"):
        return list(session.get_objects({Attribute.TOKEN: True}))


def label_of(obj: Any) -> str:
    with pkcs11_errors("reading a label"):
        return str(obj[Attribute.LABEL])


def set_label(obj: Any, label: str) -> None:
    with pkcs11_errors(f"relabelling {label}"):
        obj[Attribute.LABEL] = label


def wrap_pad(kek: Any, obj: Any, what: str) -> bytes:
    with pkcs11_errors(f"wrapping {what} under the backup KEK"):
        return bytes(kek.wrap_key(obj, mechanism=Mechanism.AES_KEY_WRAP_PAD))


def random_bytes(session: Any, count: int) -> bytes:
    with pkcs11_errors("drawing random bytes"):
        return bytes(session.generate_random(count * 8))


def encrypt_cbc_pad(key: Any, data: bytes, iv: bytes) -> bytes:
    with pkcs11_errors("encrypting the OpenBao snapshot"):
        return bytes(key.encrypt(data, mechanism=Mechanism.AES_CBC_PAD, mechanism_param=iv))


def decrypt_cbc_pad(key: Any, data: bytes, iv: bytes) -> bytes:
    with pkcs11_errors("decrypting the OpenBao snapshot"):
        return bytes(key.decrypt(data, mechanism=Mechanism.AES_CBC_PAD, mechanism_param=iv))


def rsa_public(obj: Any, what: str) -> dict[str, str]:
    with pkcs11_errors(f"reading public key {what}"):
        return {
            "modulus": bytes(obj[Attribute.MODULUS]).hex(),
            "public_exponent": bytes(obj[Attribute.PUBLIC_EXPONENT]).hex(),
        }


def _template(entry: Mapping[str, Any], label: str) -> dict[Any, Any]:
    attrs = entry.get("attributes", {})
    tpl: dict[Any, Any] = {getattr(Attribute, a.upper()): bool(attrs[a]) for a in RESTORED_ATTRIBUTES if a in attrs}
    tpl[Attribute.LABEL] = label
    tpl[Attribute.ID] = bytes.fromhex(entry.get("id") or "")
    for field_name, attr in (("not_before", Attribute.START_DATE), ("not_after", Attribute.END_DATE)):
        if entry.get(field_name):
            tpl[attr] = _dt.date.fromisoformat(entry[field_name])
    return tpl


def restore_public_key(session: Any, entry: Mapping[str, Any], label: str) -> Any:
    """An RSA public key from the manifest's public values, with its original attributes and ID."""
    tpl = _template(entry, label)
    for attr in (Attribute.SENSITIVE, Attribute.EXTRACTABLE, Attribute.WRAP_WITH_TRUSTED):
        tpl.pop(attr, None)
    tpl |= {
        Attribute.CLASS: ObjectClass.PUBLIC_KEY,
        Attribute.KEY_TYPE: KeyType.RSA,
        Attribute.PRIVATE: False,
        Attribute.MODULUS: bytes.fromhex(entry["public"]["modulus"]),
        Attribute.PUBLIC_EXPONENT: bytes.fromhex(entry["public"]["public_exponent"]),
    }
    with pkcs11_errors(f"restoring public key {entry['label']}"):
        return session.create_object(tpl)


def restore_secret_key(kek: Any, blob: bytes, entry: Mapping[str, Any], label: str) -> Any:
    """A secret key unwrapped from the set under the backup KEK, with its original attributes, ID and validity."""
    key_type = str(entry.get("key_type"))
    if key_type not in ("AES", "DES2", "DES3"):
        raise ValueError(f"{entry['label']}: key type {key_type!r} is not one a backup set holds")
    with pkcs11_errors(f"unwrapping {entry['label']} from the backup set"):
        return kek.unwrap_key(
            ObjectClass.SECRET_KEY,
            KeyType[key_type],
            blob,
            mechanism=Mechanism.AES_KEY_WRAP_PAD,
            store=True,
            template=_template(entry, label),
        )
