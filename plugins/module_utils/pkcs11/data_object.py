# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Small private data objects (CKO_DATA) in a token: a value that must outlive the files beside it.

Used for the highest SAM blacklist version a node has accepted (docs/blacklist.md). The object is a token object,
private (invisible without login); a new value is a new object. What protects it is
the token: on an HSM, the user PIN (a PIN holder can destroy the object); on SoftHSM, also the token directory's file
permissions (the node's unix user can delete the object's file, as it can delete every key's).
"""

from __future__ import annotations

import contextlib
from typing import Any

with contextlib.suppress(ImportError):  # pkcs11/session.py reports the missing library (HAS_PKCS11)
    from pkcs11 import Attribute, ObjectClass

APPLICATION = "tunion.keymgmt"


def _find(hsm: Any, label: str) -> list[Any]:
    query = {Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: label, Attribute.APPLICATION: APPLICATION}
    return list(hsm.session.get_objects(query))


def read_data(hsm: Any, label: str) -> list[bytes]:
    """The values of the data objects called ``label`` (normally one; two after an interrupted :func:`write_data`)."""
    return [bytes(obj[Attribute.VALUE]) for obj in _find(hsm, label)]


def write_data(hsm: Any, label: str, value: bytes) -> None:
    """Replace data object ``label`` by one holding ``value``: the new one is created before the old is destroyed
    (tokens such as SoftHSM refuse to change CKA_VALUE), so an interruption leaves both, never neither."""
    old = _find(hsm, label)
    hsm.session.create_object(
        {
            Attribute.CLASS: ObjectClass.DATA,
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.MODIFIABLE: False,
            Attribute.LABEL: label,
            Attribute.APPLICATION: APPLICATION,
            Attribute.VALUE: value,
        }
    )
    for obj in old:
        obj.destroy()
