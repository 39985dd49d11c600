# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How a key is stored in a token: :class:`KeyPolicy`, the PKCS#11 template built from a usage name."""

from __future__ import annotations

import datetime as _dt
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

with suppress(ImportError):  # pkcs11/session.py reports a missing python-pkcs11 (HAS_PKCS11)
    from pkcs11 import Attribute

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import HsmError
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.algorithms import USAGES

_CAP_ATTRS = {
    "encrypt": "ENCRYPT",
    "decrypt": "DECRYPT",
    "sign": "SIGN",
    "verify": "VERIFY",
    "wrap": "WRAP",
    "unwrap": "UNWRAP",
    "derive": "DERIVE",
}


@dataclass(frozen=True)
class KeyPolicy:
    """How a key is stored. Defaults: token object, private, sensitive, exportable only under trusted KEKs."""

    usage: str = "derive"
    token: bool = True
    private: bool = True
    extractable: bool = True
    wrap_with_trusted: bool = True
    trusted: bool = False  # only an SO session can create a trusted (KEK) object
    start_date: _dt.date | None = None
    end_date: _dt.date | None = None
    extra: dict[str, bool] = field(default_factory=dict)  # capability overrides, e.g. {"encrypt": True}
    #: False adds CKA_MODIFIABLE/CKA_COPYABLE false: no C_SetAttributeValue, no C_CopyObject (SoftHSM 2.6.1 accepts
    #: both in C_GenerateKey, but refuses them in C_DeriveKey/C_UnwrapKey with CKR_ATTRIBUTE_READ_ONLY)
    modifiable: bool = True
    copyable: bool = True

    def template(self, *, fixed: bool = False) -> dict[Any, Any]:
        """The PKCS#11 template.

        ``fixed`` adds CKA_MODIFIABLE=false. It is off by default: SoftHSM 2.6.1 rejects it together with
        CKA_WRAP_WITH_TRUSTED in C_DeriveKey/C_UnwrapKey (CKR_ATTRIBUTE_READ_ONLY), and it forbids the transient
        copy through which a KCV is computed for keys without CKA_ENCRYPT/CKA_SIGN (docs/hsm.md).
        """
        if self.usage not in USAGES:
            raise HsmError(f"unknown key usage {self.usage!r}; expected one of {', '.join(USAGES)}")
        caps = dict.fromkeys(_CAP_ATTRS, False)
        caps.update(dict.fromkeys(USAGES[self.usage], True))
        caps.update(self.extra)
        tpl: dict[Any, Any] = {getattr(Attribute, _CAP_ATTRS[c]): v for c, v in caps.items()}
        tpl.update(
            {
                Attribute.TOKEN: self.token,
                Attribute.PRIVATE: self.private,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: self.extractable,
            }
        )
        if fixed or not self.modifiable:
            tpl[Attribute.MODIFIABLE] = False
        if not self.copyable:
            tpl[Attribute.COPYABLE] = False
        if self.extractable and self.wrap_with_trusted:
            tpl[Attribute.WRAP_WITH_TRUSTED] = True
        if self.trusted:
            tpl[Attribute.TRUSTED] = True
        if self.start_date:
            tpl[Attribute.START_DATE] = self.start_date
        if self.end_date:
            tpl[Attribute.END_DATE] = self.end_date
        return tpl
