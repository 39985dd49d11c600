# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Packing of PKCS#11 mechanism parameters that python-pkcs11 0.10.1 does not pack itself.

python-pkcs11 packs ``CK_KEY_DERIVATION_STRING_DATA`` only for ``CKM_AES_ECB_ENCRYPT_DATA``. For every other
mechanism it accepts a ``bytes`` parameter and passes a pointer to those bytes unchanged as ``pParameter``
(its documented "raw mode" escape hatch; ``MechanismWithParam`` keeps a reference to the bytes object for as long
as the mechanism lives, i.e. for the whole C call).

``CK_KEY_DERIVATION_STRING_DATA`` is ``{CK_BYTE_PTR pData; CK_ULONG ulLen}``: the parameter must hold a *pointer*
to the data. The context managers below build the struct with ctypes over a ctypes buffer they own, hand the caller
the struct's bytes, and keep the buffer alive until the ``with`` block ends; so the pointer inside the parameter is
valid for every PKCS#11 call made inside the block. On exit the data buffer is zeroed.

Used for:
- ``CKM_DES3_ECB_ENCRYPT_DATA`` / ``CKM_DES_ECB_ENCRYPT_DATA`` (PBOC diversification, session keys);
- ``CKM_XOR_BASE_AND_DATA`` / ``CKM_CONCATENATE_DATA_AND_BASE`` on HSMs that have them.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# PKCS#11 structures are packed to 1 byte on Windows and use natural alignment elsewhere (pkcs11.h, section 2.1).
_PACK = 1 if sys.platform == "win32" else 0


class _KeyDerivationStringData(ctypes.Structure):
    if _PACK:
        _pack_ = _PACK
    _fields_ = (("pData", ctypes.c_void_p), ("ulLen", ctypes.c_ulong))


@contextmanager
def key_derivation_string_data(data: bytes) -> Iterator[bytes]:
    """Yield a packed ``CK_KEY_DERIVATION_STRING_DATA`` pointing at a private copy of ``data``.

    The pointer is valid until the ``with`` block exits; make the PKCS#11 call inside it.
    """
    if not data:
        raise ValueError("derivation data must not be empty")
    buf = ctypes.create_string_buffer(bytes(data), len(data))
    try:
        struct = _KeyDerivationStringData(ctypes.cast(buf, ctypes.c_void_p), len(data))
        yield bytes(struct)
    finally:
        ctypes.memset(buf, 0, len(data))
