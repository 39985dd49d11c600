# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PKCS#11 primitives of tunion.keymgmt: tokens, sessions, keys, KCVs, diversification, wrapping.

Everything that touches an HSM goes through this module (modules, distribution, SAM injection), so that:

* clear key material never leaves the HSM: keys are created sensitive, and only wrapped under *trusted* KEKs
  (``CKA_WRAP_WITH_TRUSTED``) can they be exported (粤交〔2019〕11号 第十六条: 落实密钥的安全保护责任);
* errors are :class:`HsmError` with a message a person can act on, which never carries a PIN or key bytes;
* a PIN is presented once per session: a wrong PIN is reported, never retried (the token's retry counter is not
  spent by this code), and a PIN whose token flags say "final try" or "locked" is not presented at all;
* a mechanism the token lacks is refused clearly, never replaced by a weaker one (SM4 on SoftHSM, for instance).

Label and ID scheme (docs/hsm.md): ``<class>.<type>.v<VV>.<holder>``, e.g. ``consumption.purchase.v01.province``
or ``recharge.load.v02.city-440100``, and ``CKA_ID = class || type code || version || holder id``.
Use :func:`key_label` / :func:`key_id` / :func:`parse_key_label` rather than formatting labels by hand.
"""

from __future__ import annotations

import ctypes
import datetime as _dt
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, ClassVar

try:
    import pkcs11
    from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass, TokenFlag
    from pkcs11 import exceptions as p11e
    from pkcs11.constants import DEFAULT as _P11_DEFAULT
    from pkcs11.util.rsa import decode_rsa_public_key, encode_rsa_public_key

    HAS_PKCS11 = True
    PKCS11_IMPORT_ERROR: str | None = None
except ImportError as _exc:  # pragma: no cover - reported by the modules through missing_required_lib
    HAS_PKCS11 = False
    PKCS11_IMPORT_ERROR = str(_exc)

from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11_derive import key_derivation_string_data

__all__ = [
    "ALGORITHMS",
    "KEY_CLASSES",
    "USAGES",
    "AlgorithmSpec",
    "HsmError",
    "HsmToken",
    "KeyName",
    "KeyPolicy",
    "diversification_data",
    "ensure_token",
    "hsm_session",
    "key_id",
    "key_label",
    "load_library",
    "parse_key_label",
    "pboc_derivation_data",
]


class HsmError(Exception):
    """An HSM operation failed. The message is safe to show: it never holds key material or PINs."""


# --------------------------------------------------------------------------------------------------------------------
# Label / ID scheme
# --------------------------------------------------------------------------------------------------------------------

#: key classes and their CKA_ID class byte. 消费类 / 充值类 (第二条(三)), plus internal keys (KEKs, SAM issuer keys).
KEY_CLASSES: dict[str, int] = {"consumption": 0x01, "recharge": 0x02, "internal": 0x03}
_CLASS_BY_CODE = {v: k for k, v in KEY_CLASSES.items()}

_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
_HOLDER_RE = re.compile(r"^(province|city-[0-9]{6}|sam-[0-9a-f]{2,32}|[a-z][a-z0-9-]{0,30})$")
_LABEL_RE = re.compile(r"^(?P<cls>[a-z]+)\.(?P<type>[a-z][a-z0-9_]*)\.v(?P<ver>[0-9a-f]{2})\.(?P<holder>[a-z0-9-]+)$")


@dataclass(frozen=True)
class KeyName:
    """The parts a project key label is made of."""

    key_class: str
    key_type: str
    version: int
    holder: str = "province"

    @property
    def label(self) -> str:
        return key_label(self.key_class, self.key_type, self.version, self.holder)


def _check_name(key_class: str, key_type: str, version: int, holder: str) -> None:
    if key_class not in KEY_CLASSES:
        raise HsmError(f"unknown key class {key_class!r}; expected one of {', '.join(KEY_CLASSES)}")
    if not _TYPE_RE.match(key_type):
        raise HsmError(f"key type name {key_type!r} must be lower-case letters, digits and _ (max 31)")
    if not isinstance(version, int) or not 0 <= version <= 0xFF:
        raise HsmError(f"key version {version!r} must be one byte (0..255), as on PBOC cards")
    if not _HOLDER_RE.match(holder):
        raise HsmError(f"holder {holder!r} must be 'province', 'city-<6-digit city code>' or 'sam-<hex serial>'")


def key_label(key_class: str, key_type: str, version: int, holder: str = "province") -> str:
    """``consumption.purchase.v01.province``: class, type, version (hex byte) and holder."""
    _check_name(key_class, key_type, version, holder)
    return f"{key_class}.{key_type}.v{version:02x}.{holder}"


def parse_key_label(label: str) -> KeyName | None:
    """The parts of a project label, or None for labels outside the scheme (foreign objects)."""
    m = _LABEL_RE.match(label or "")
    if not m or m["cls"] not in KEY_CLASSES:
        return None
    return KeyName(m["cls"], m["type"], int(m["ver"], 16), m["holder"])


def _holder_id(holder: str) -> bytes:
    if holder == "province":
        return b"\x00"
    if holder.startswith("city-"):
        return b"\x01" + bytes.fromhex(holder[5:])
    if holder.startswith("sam-"):
        serial = holder[4:]
        return b"\x02" + bytes.fromhex(serial if len(serial) % 2 == 0 else "0" + serial)
    return b"\x03" + holder.encode()


def key_id(key_class: str, type_code: int, version: int, holder: str = "province") -> bytes:
    """``CKA_ID``: class byte, type code (catalogue ``code``), version byte, then the holder id.

    Holder id: ``00`` province; ``01`` + city code in BCD (``city-440100`` -> ``01 44 01 00``); ``02`` + SAM serial.
    """
    _check_name(key_class, "x", version, holder)
    if not 0 < int(type_code) <= 0xFF:
        raise HsmError(f"key type code {type_code!r} must be one byte (1..255)")
    return bytes([KEY_CLASSES[key_class], int(type_code), version]) + _holder_id(holder)


# --------------------------------------------------------------------------------------------------------------------
# Algorithms, usages, policy
# --------------------------------------------------------------------------------------------------------------------


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
_CAP_ATTRS = {
    "encrypt": "ENCRYPT",
    "decrypt": "DECRYPT",
    "sign": "SIGN",
    "verify": "VERIFY",
    "wrap": "WRAP",
    "unwrap": "UNWRAP",
    "derive": "DERIVE",
}

# SM4: there is no CKK_/CKM_ constant in PKCS#11 up to 3.1; vendors use CKM_VENDOR_DEFINED values, which differ by
# vendor. None is known to this project yet, so SM4 is always refused with a clear message (never a fallback).
SM4_VENDOR_MECHANISMS: tuple[int, ...] = ()


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
        if fixed:
            tpl[Attribute.MODIFIABLE] = False
        if self.extractable and self.wrap_with_trusted:
            tpl[Attribute.WRAP_WITH_TRUSTED] = True
        if self.trusted:
            tpl[Attribute.TRUSTED] = True
        if self.start_date:
            tpl[Attribute.START_DATE] = self.start_date
        if self.end_date:
            tpl[Attribute.END_DATE] = self.end_date
        return tpl


# --------------------------------------------------------------------------------------------------------------------
# Diversification data
# --------------------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------------------
# Library and token
# --------------------------------------------------------------------------------------------------------------------

_LIBS: dict[str, Any] = {}
_ERROR_HINTS = {
    "MechanismInvalid": "the token does not offer this mechanism",
    "KeyTypeInconsistent": "the key type does not fit this mechanism",
    "KeyFunctionNotPermitted": "the key's attributes do not allow this use",
    "KeyNotWrappable": "the key may only be wrapped under a trusted KEK (CKA_WRAP_WITH_TRUSTED)",
    "KeyUnextractable": "the key is not extractable",
    "WrappedKeyInvalid": "the wrapped key block does not unwrap under this KEK (wrong KEK or damaged block)",
    "TemplateInconsistent": "the token refused the key template",
    "AttributeReadOnly": "an attribute may not be set by this user (CKA_TRUSTED needs the SO)",
    "UserNotLoggedIn": "the session is not logged in",
    "SessionReadOnly": "the session is read-only",
}


def _fail(what: str, exc: BaseException) -> HsmError:
    name = type(exc).__name__
    hint = _ERROR_HINTS.get(name)
    return HsmError(f"{what}: PKCS#11 {name}" + (f" ({hint})" if hint else ""))


@contextmanager
def _p11(what: str) -> Iterator[None]:
    """Translate python-pkcs11 errors into HsmError. Messages carry the operation and the PKCS#11 error only."""
    try:
        yield
    except HsmError:
        raise
    except p11e.PKCS11Error as exc:
        raise _fail(what, exc) from None


def load_library(library: str) -> Any:
    """Load a PKCS#11 module once per process (python-pkcs11 keeps it initialised)."""
    if not HAS_PKCS11:
        raise HsmError(f"python-pkcs11 is not installed: {PKCS11_IMPORT_ERROR}")
    lib = _LIBS.get(library)
    if lib is None:
        try:
            lib = pkcs11.lib(library)
        except (OSError, RuntimeError, p11e.PKCS11Error) as exc:
            raise HsmError(f"cannot load PKCS#11 library {library}: {type(exc).__name__}") from None
        _LIBS[library] = lib
    return lib


def find_token(library: str, token_label: str) -> Any | None:
    lib = load_library(library)
    with _p11(f"listing tokens of {library}"):
        tokens = [t for t in lib.get_tokens() if t.label == token_label]
    if len(tokens) > 1:
        raise HsmError(f"{len(tokens)} tokens are labelled {token_label!r}; labels must be unique")
    return tokens[0] if tokens else None


def _login_guard(token: Any, who: str) -> None:
    flags = int(token.flags)
    if who == "user":
        if flags & int(TokenFlag.USER_PIN_LOCKED):
            raise HsmError(f"the user PIN of token {token.label!r} is locked; the SO must reset it")
        if flags & int(TokenFlag.USER_PIN_FINAL_TRY):
            raise HsmError(
                f"token {token.label!r} is on its final user PIN try; refusing to present a PIN "
                "(a wrong one would lock the token). Verify the PIN, then log in by hand once."
            )
        if not flags & int(TokenFlag.USER_PIN_INITIALIZED):
            raise HsmError(f"token {token.label!r} has no user PIN yet; run tunion.keymgmt.hsm_token")
    else:
        if flags & int(TokenFlag.SO_PIN_LOCKED):
            raise HsmError(f"the SO PIN of token {token.label!r} is locked")
        if flags & int(TokenFlag.SO_PIN_FINAL_TRY):
            raise HsmError(f"token {token.label!r} is on its final SO PIN try; refusing to present the SO PIN")


def _open(token: Any, rw: bool, user_pin: str | None, so_pin: str | None) -> Any:
    who = "SO" if so_pin is not None else "user"
    if so_pin is not None or user_pin is not None:
        _login_guard(token, "so" if so_pin is not None else "user")
    try:
        if so_pin is not None:
            return token.open(rw=rw, so_pin=so_pin)
        return token.open(rw=rw, user_pin=user_pin)
    except p11e.PinIncorrect:
        raise HsmError(
            f"the {who} PIN was rejected by token {token.label!r}; not retrying "
            "(each wrong PIN spends one of the token's tries)"
        ) from None
    except p11e.PinLocked:
        raise HsmError(f"the {who} PIN of token {token.label!r} is locked") from None
    except (p11e.PinLenRange, p11e.PinInvalid):
        raise HsmError(f"the {who} PIN given for token {token.label!r} has an invalid length or characters") from None
    except p11e.PKCS11Error as exc:
        raise _fail(f"opening a session on token {token.label!r}", exc) from None


@contextmanager
def hsm_session(
    library: str,
    token_label: str,
    user_pin: str | None,
    rw: bool = True,
    *,
    so_pin: str | None = None,
) -> Iterator[HsmToken]:
    """Open one session on the token labelled ``token_label`` and log in once (user, or SO when ``so_pin``).

    Yields an :class:`HsmToken`. Session objects created through it disappear when the block ends.
    """
    token = find_token(library, token_label)
    if token is None:
        raise HsmError(f"no token labelled {token_label!r} in {library}; provision it (playbooks/provision_hsm.yml)")
    session = _open(token, rw, user_pin, so_pin)
    try:
        yield HsmToken(session, token, library)
    finally:
        with suppress(p11e.PKCS11Error):
            session.close()


# --------------------------------------------------------------------------------------------------------------------
# C_InitToken (python-pkcs11 0.10.1 has no binding for it)
# --------------------------------------------------------------------------------------------------------------------

_CLOSE_ALL_SESSIONS_INDEX = 14
_INIT_TOKEN_INDEX = 9  # CK_FUNCTION_LIST: version, C_Initialize, C_Finalize, C_GetInfo, C_GetFunctionList,
# C_GetSlotList, C_GetSlotInfo, C_GetTokenInfo, C_GetMechanismList, C_GetMechanismInfo, C_InitToken, ...


def _function(library: str, index: int, *argtypes: Any) -> Any:
    """Function ``index`` of the module's CK_FUNCTION_LIST (the library is already C_Initialize'd)."""
    dll = ctypes.CDLL(library)
    flist = ctypes.c_void_p()
    dll.C_GetFunctionList.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
    dll.C_GetFunctionList.restype = ctypes.c_ulong
    rv = dll.C_GetFunctionList(ctypes.byref(flist))
    if rv or not flist.value:
        raise HsmError(f"C_GetFunctionList of {library} failed with CKR 0x{int(rv):08X}")
    ptr_size = ctypes.sizeof(ctypes.c_void_p)
    # CK_VERSION (2 bytes), then function pointers: natural alignment, or packed to 1 byte on Windows.
    offset = 2 if sys.platform == "win32" else ptr_size
    fn_addr = ctypes.c_void_p.from_address(flist.value + offset + index * ptr_size).value
    return ctypes.CFUNCTYPE(ctypes.c_ulong, *argtypes)(fn_addr)


def _c_init_token(library: str, slot_id: int, so_pin: str, label: str) -> int:
    """C_CloseAllSessions (this process's own) then C_InitToken; python-pkcs11 0.10.1 binds neither."""
    close_all = _function(library, _CLOSE_ALL_SESSIONS_INDEX, ctypes.c_ulong)
    close_all(slot_id)
    init = _function(library, _INIT_TOKEN_INDEX, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
    pin = so_pin.encode()
    return int(init(slot_id, pin, len(pin), label.encode().ljust(32)[:32]))


def _count_objects(token: Any, user_pin: str | None) -> int:
    session = _open(token, False, user_pin, None)
    try:
        with _p11("counting objects"):
            return sum(1 for _obj in session.get_objects())
    finally:
        session.close()


def ensure_token(
    library: str,
    token_label: str,
    so_pin: str,
    user_pin: str,
    *,
    force: bool = False,
    check_mode: bool = False,
) -> dict[str, Any]:
    """Make sure a token labelled ``token_label`` exists and accepts ``user_pin``.

    * absent: initialise the first free slot with the SO PIN and label, then set the user PIN;
    * present: log in once with ``user_pin`` to prove it (a wrong PIN is an error, never retried);
    * present and ``force``: re-initialise it, destroying its objects; the count is returned.
    """
    if len(token_label.encode()) > 32:
        raise HsmError(f"token label {token_label!r} is longer than 32 bytes")
    lib = load_library(library)
    token = find_token(library, token_label)
    result: dict[str, Any] = {"changed": False, "token_label": token_label, "objects": 0, "destroyed": 0}
    if token is not None and not force:
        result["objects"] = _count_objects(token, user_pin)
        result["serial"] = token.serial.decode(errors="replace").strip()
        return result
    if token is not None:
        count = _count_objects(token, user_pin)
        slot_id = token.slot.slot_id
        result.update(changed=True, destroyed=count, action="reinitialise")
    else:
        with _p11("listing slots"):
            free = [
                s
                for s in lib.get_slots(token_present=True)
                if not int(s.get_token().flags) & int(TokenFlag.TOKEN_INITIALIZED)
            ]
        if not free:
            raise HsmError(f"token {token_label!r} does not exist and {library} has no uninitialised slot for it")
        slot_id = free[0].slot_id
        result.update(changed=True, action="initialise")
    if check_mode:
        return result
    _login_guard_so_slot(lib, slot_id)
    rv = _c_init_token(library, slot_id, so_pin, token_label)
    if rv == 0xA0:  # CKR_PIN_INCORRECT
        raise HsmError(f"the SO PIN was rejected by token {token_label!r}; not retrying")
    if rv:
        raise HsmError(f"C_InitToken on slot {slot_id} failed with CKR 0x{rv:08X}")
    token = find_token(library, token_label)
    if token is None:
        raise HsmError(f"token {token_label!r} did not appear after C_InitToken")
    session = _open(token, True, None, so_pin)
    try:
        with _p11("setting the user PIN"):
            session.init_pin(user_pin)
    finally:
        session.close()
    result["serial"] = token.serial.decode(errors="replace").strip()
    return result


def _login_guard_so_slot(lib: Any, slot_id: int) -> None:
    for slot in lib.get_slots(token_present=True):
        if slot.slot_id == slot_id:
            token = slot.get_token()
            if int(token.flags) & int(TokenFlag.TOKEN_INITIALIZED):
                _login_guard(token, "so")


# --------------------------------------------------------------------------------------------------------------------
# The session wrapper
# --------------------------------------------------------------------------------------------------------------------

_RFC3394_IV = bytes.fromhex("A6A6A6A6A6A6A6A6")
_ATTR_REPORT = (
    "token",
    "private",
    "sensitive",
    "extractable",
    "always_sensitive",
    "never_extractable",
    "wrap_with_trusted",
    "trusted",
    "modifiable",
    "local",
    "encrypt",
    "decrypt",
    "sign",
    "verify",
    "wrap",
    "unwrap",
    "derive",
)


def _xor(a: bytes | bytearray, b: bytes | bytearray) -> bytearray:
    return bytearray(x ^ y for x, y in zip(a, b, strict=True))


def _wipe(buf: bytearray | None) -> None:
    if buf is not None:
        for i in range(len(buf)):
            buf[i] = 0


class HsmToken:
    """One logged-in session on one token. Obtain it from :func:`hsm_session`."""

    def __init__(self, session: Any, token: Any, library: str) -> None:
        self.session = session
        self.token = token
        self.library = library
        self.label: str = token.label
        self._mechs: set[int] | None = None
        self._validity: dict[int, tuple[_dt.date | None, _dt.date | None, str]] = {}
        #: label -> (not_before, not_after); set it from the catalogue (catalogue.Catalogue.validity_for).
        self.validity_lookup: Callable[[str], tuple[_dt.date | None, _dt.date | None]] | None = None

    # ---------------------------------------------------------------- mechanisms
    @property
    def mechanisms(self) -> set[int]:
        if self._mechs is None:
            with _p11("listing mechanisms"):
                self._mechs = {int(m) for m in self.token.slot.get_mechanisms()}
        return self._mechs

    def has_mechanism(self, mechanism: Any) -> bool:
        return int(mechanism) in self.mechanisms

    def require_mechanism(self, mechanism: Any, purpose: str) -> None:
        if not self.has_mechanism(mechanism):
            name = getattr(mechanism, "name", f"0x{int(mechanism):08X}")
            raise HsmError(f"token {self.label!r} does not offer CKM_{name}, needed for {purpose}; refusing")

    def require_algorithm(self, algorithm: str, purpose: str = "this key") -> AlgorithmSpec:
        """Check that the token can hold keys of ``algorithm``. SM4 without vendor support is refused."""
        spec = ALGORITHMS.get(algorithm)
        if spec is None:
            raise HsmError(f"unknown algorithm {algorithm!r}; expected one of {', '.join(ALGORITHMS)}")
        if spec.family == "sm4":
            if not SM4_VENDOR_MECHANISMS or not any(m in self.mechanisms for m in SM4_VENDOR_MECHANISMS):
                raise HsmError(
                    f"token {self.label!r} offers no SM4 mechanism, needed for {purpose}; "
                    "refusing (no fallback to 3DES or AES)"
                )
            raise HsmError(f"token {self.label!r} offers a vendor SM4 mechanism, but this project has no SM4 support")
        if spec.family == "des3":
            self.require_mechanism(Mechanism.DES3_ECB, purpose)
        else:
            self.require_mechanism(Mechanism.AES_ECB, purpose)
        return spec

    # ---------------------------------------------------------------- lookup
    def find_key(self, label: str | None = None, id: bytes | None = None, object_class: Any = None) -> Any | None:
        """The one object with this label and/or ID, or None. Two matches are an error."""
        attrs: dict[Any, Any] = {Attribute.CLASS: object_class or ObjectClass.SECRET_KEY}
        if label is not None:
            attrs[Attribute.LABEL] = label
        if id is not None:
            attrs[Attribute.ID] = id
        with _p11(f"searching for {label or id!r}"):
            found = list(self.session.get_objects(attrs))
        if len(found) > 1:
            raise HsmError(f"{len(found)} objects match {label or id!r} in token {self.label!r}; labels must be unique")
        return found[0] if found else None

    def get_key(self, label: str, object_class: Any = None, *, check_validity: bool = True) -> Any:
        """The key labelled ``label``; missing keys and keys outside their validity period are errors."""
        key = self.find_key(label=label, object_class=object_class)
        if key is None:
            raise HsmError(f"no key labelled {label!r} in token {self.label!r}")
        if check_validity:
            self.check_validity(key)
        return key

    def list_keys(self, object_class: Any = None) -> list[Any]:
        attrs = {Attribute.CLASS: object_class} if object_class is not None else {}
        with _p11("listing objects"):
            objs = list(self.session.get_objects(attrs))
        return objs

    # ---------------------------------------------------------------- validity
    def _read_date(self, key: Any, attr: Any) -> _dt.date | None:
        try:
            return key[attr]
        except ValueError:  # python-pkcs11 cannot parse an empty CK_DATE: no date set
            return None
        except p11e.GeneralError:  # SoftHSM 2.6.1 cannot return the dates of private objects
            raise
        except p11e.PKCS11Error:
            return None

    def check_validity(self, key: Any, today: _dt.date | None = None) -> None:
        """Refuse a key outside [CKA_START_DATE, CKA_END_DATE]. Cached per handle for the session.

        SoftHSM 2.6.1 stores the dates of private objects but answers CKR_GENERAL_ERROR when they are read back;
        then the period comes from :attr:`validity_lookup` (the catalogue, keyed by label), if one is set.
        """
        cached = self._validity.get(key.handle)
        if cached is None:
            with _p11("reading the key label"):
                label = key[Attribute.LABEL]
            try:
                cached = (self._read_date(key, Attribute.START_DATE), self._read_date(key, Attribute.END_DATE), label)
            except p11e.GeneralError:
                start = end = None
                if self.validity_lookup is not None:
                    start, end = self.validity_lookup(label)
                cached = (start, end, label)
            self._validity[key.handle] = cached
        start, end, label = cached
        today = today or _dt.date.today()
        if start and today < start:
            raise HsmError(f"key {label!r} is not valid before {start.isoformat()}; refusing to use it")
        if end and today > end:
            raise HsmError(f"key {label!r} expired on {end.isoformat()}; refusing to use it")

    # ---------------------------------------------------------------- key creation
    def _id_label(self, label: str | None, id: bytes | None) -> dict[Any, Any]:
        tpl: dict[Any, Any] = {}
        if label is not None:
            tpl[Attribute.LABEL] = label
        if id is not None:
            tpl[Attribute.ID] = id
        return tpl

    def generate_secret(self, algorithm: str, label: str | None, id: bytes | None, policy: KeyPolicy) -> Any:
        spec = self.require_algorithm(algorithm, f"generating {label}")
        tpl = policy.template() | self._id_label(label, id)
        if spec.family == "des3":
            self.require_mechanism(Mechanism.DES2_KEY_GEN, f"generating {label}")
            with _p11(f"generating {label}"):
                return self.session.generate_key(
                    KeyType.DES2, None, mechanism=Mechanism.DES2_KEY_GEN, template=tpl, store=policy.token
                )
        self.require_mechanism(Mechanism.AES_KEY_GEN, f"generating {label}")
        with _p11(f"generating {label}"):
            return self.session.generate_key(KeyType.AES, spec.length * 8, template=tpl, store=policy.token)

    def generate_rsa_keypair(
        self, bits: int, label: str, id: bytes | None = None, *, token: bool = True, trusted_public: bool = False
    ) -> tuple[Any, Any]:
        """RSA pair for receiving keys (RSA-OAEP unwrap): the private key never leaves the token."""
        self.require_mechanism(Mechanism.RSA_PKCS_KEY_PAIR_GEN, f"generating {label}")
        pub_tpl = {Attribute.WRAP: True, Attribute.ENCRYPT: True, Attribute.VERIFY: False, Attribute.TOKEN: token}
        if trusted_public:
            pub_tpl[Attribute.TRUSTED] = True
        priv_tpl = {
            Attribute.UNWRAP: True,
            Attribute.DECRYPT: False,
            Attribute.SIGN: False,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.TOKEN: token,
            Attribute.PRIVATE: True,
        }
        with _p11(f"generating RSA pair {label}"):
            return self.session.generate_keypair(
                KeyType.RSA,
                bits,
                id=id,
                label=label,
                store=token,
                public_template=pub_tpl,
                private_template=priv_tpl,
            )

    def public_key_der(self, public_key: Any) -> bytes:
        """The SubjectPublicKeyInfo-free PKCS#1 DER of an RSA public key (public data, safe to publish)."""
        with _p11("exporting a public key"):
            return bytes(encode_rsa_public_key(public_key))

    def import_rsa_public_key(self, der: bytes, label: str, id: bytes | None = None, *, trusted: bool = False) -> Any:
        """Import a PKCS#1 DER RSA public key; ``trusted`` needs an SO session (CKA_TRUSTED)."""
        tpl = (
            decode_rsa_public_key(der)
            | {
                Attribute.TOKEN: True,
                Attribute.PRIVATE: False,
                Attribute.WRAP: True,
                Attribute.ENCRYPT: False,
                Attribute.VERIFY: False,
            }
            | self._id_label(label, id)
        )
        if trusted:
            tpl[Attribute.TRUSTED] = True
        with _p11(f"importing public key {label}"):
            return self.session.create_object(tpl)

    def destroy(self, obj: Any) -> None:
        with _p11("destroying an object"):
            obj.destroy()

    # ---------------------------------------------------------------- derivation
    def derive_ecb(
        self,
        base: Any,
        data: bytes,
        *,
        algorithm: str = "3DES-2KEY",
        label: str | None = None,
        id: bytes | None = None,
        policy: KeyPolicy | None = None,
        check_validity: bool = True,
    ) -> Any:
        """Derive a key whose value is ECB(base, data), inside the HSM.

        3DES base: ``CKM_DES3_ECB_ENCRYPT_DATA`` (parameter packed by pkcs11_derive); AES base:
        ``CKM_AES_ECB_ENCRYPT_DATA``. ``policy`` defaults to a transient session key (CKA_TOKEN false) usable for
        encryption and MACs, which is what cryptogram and session-key callers want.
        """
        if check_validity:
            self.check_validity(base)
        policy = policy or KeyPolicy(usage="cryptogram", token=False, extractable=False)
        spec = ALGORITHMS[algorithm]
        if len(data) != spec.length:
            raise HsmError(f"derivation data for {algorithm} must be {spec.length} bytes, got {len(data)}")
        tpl = policy.template(fixed=False) | self._id_label(label, id) | {Attribute.VALUE_LEN: _P11_DEFAULT}
        base_type = base.key_type
        what = f"deriving {label or 'a session key'}"
        if base_type in (KeyType.DES2, KeyType.DES3):
            self.require_mechanism(Mechanism.DES3_ECB_ENCRYPT_DATA, what)
            if spec.family != "des3":
                tpl[Attribute.VALUE_LEN] = spec.length
            kt = KeyType.DES2 if spec.family == "des3" else KeyType.AES
            with key_derivation_string_data(data) as param, _p11(what):
                return base.derive_key(
                    kt,
                    spec.length * 8,
                    mechanism=Mechanism.DES3_ECB_ENCRYPT_DATA,
                    mechanism_param=param,
                    template=tpl,
                    store=policy.token,
                )
        if base_type == KeyType.AES:
            self.require_mechanism(Mechanism.AES_ECB_ENCRYPT_DATA, what)
            kt = KeyType.DES2 if spec.family == "des3" else KeyType.AES
            tpl[Attribute.VALUE_LEN] = spec.length
            with _p11(what):
                return base.derive_key(
                    kt,
                    spec.length * 8,
                    mechanism=Mechanism.AES_ECB_ENCRYPT_DATA,
                    mechanism_param=bytes(data),
                    template=tpl,
                    store=policy.token,
                )
        raise HsmError(f"{what}: base key type {base_type!r} cannot derive")

    def derive_pboc(
        self,
        master: Any,
        diversifier: str | bytes,
        *,
        algorithm: str | None = None,
        label: str | None = None,
        id: bytes | None = None,
        policy: KeyPolicy | None = None,
    ) -> Any:
        """PBOC diversification inside the HSM: ``DK = 3DES(MK, D) || 3DES(MK, ~D)``.

        AES master keys (project convention, docs/hsm.md): AES-128 ``DK = AES(MK, D || ~D)``; AES-256
        ``DK = AES(MK, D || ~D || ~D || D)``. ``diversifier`` is a city code, SAM serial or card number.
        """
        d = diversification_data(diversifier)
        dd = pboc_derivation_data(d)
        if master.key_type == KeyType.AES:
            length = master.key_length // 8
            data = dd if length == 16 else dd + dd[8:] + dd[:8]
            algorithm = algorithm or ("AES-128" if length == 16 else "AES-256")
        else:
            data = dd
            algorithm = algorithm or "3DES-2KEY"
        return self.derive_ecb(master, data, algorithm=algorithm, label=label, id=id, policy=policy)

    # ---------------------------------------------------------------- cryptography with handles
    def encrypt(self, key: Any, data: bytes, *, mode: str = "ecb", iv: bytes | None = None) -> bytes:
        """ECB or CBC encryption inside the HSM (data must be whole blocks; no padding is added)."""
        if key.key_type in (KeyType.DES2, KeyType.DES3):
            mech = Mechanism.DES3_ECB if mode == "ecb" else Mechanism.DES3_CBC
            block = 8
        else:
            mech = Mechanism.AES_ECB if mode == "ecb" else Mechanism.AES_CBC
            block = 16
        if len(data) % block:
            raise HsmError(f"data to encrypt must be whole {block}-byte blocks")
        param = None if mode == "ecb" else bytes(iv if iv is not None else bytes(block))
        with _p11(f"{mode.upper()} encryption"):
            return bytes(key.encrypt(bytes(data), mechanism=mech, mechanism_param=param))

    def cmac(self, key: Any, data: bytes, length: int | None = None) -> bytes:
        mech = Mechanism.AES_CMAC if key.key_type == KeyType.AES else Mechanism.DES3_CMAC
        with _p11("CMAC"):
            mac = bytes(key.sign(bytes(data), mechanism=mech))
        return mac[:length] if length else mac

    # ---------------------------------------------------------------- KCV
    def kcv(self, key: Any, method: str = "ecb", length: int = 3) -> bytes:
        """Key check value, computed inside the HSM.

        * ``ecb`` (3DES and AES): first bytes of ECB encryption of one zero block (8 bytes 3DES, 16 bytes AES);
        * ``cmac`` (AES, X9.24-1:2017 style): first bytes of AES-CMAC over one zero block.

        Computed by encryption (or CMAC) inside the HSM: directly when the key allows it, otherwise on a transient
        session copy that does (C_CopyObject), destroyed at once. CKA_CHECK_VALUE is only the last resort, for
        tokens that refuse such a copy: SoftHSM 2.6.1 sets a *wrong* CKA_CHECK_VALUE on keys made by C_DeriveKey
        (docs/hsm.md), so it is never preferred.
        """
        if method not in ("ecb", "cmac"):
            raise HsmError(f"unknown KCV method {method!r}; expected 'ecb' or 'cmac'")
        kt = key.key_type
        block = 8 if kt in (KeyType.DES2, KeyType.DES3) else 16
        cap = Attribute.ENCRYPT if method == "ecb" else Attribute.SIGN
        with _p11("reading key capabilities"):
            allowed = bool(key[cap])
        tmp = None
        try:
            if not allowed:
                try:
                    tmp = key.copy({Attribute.TOKEN: False, cap: True})
                except p11e.PKCS11Error as exc:
                    cv = b""
                    if method == "ecb" and length <= 3:
                        with suppress(p11e.PKCS11Error):
                            cv = bytes(key[Attribute.CHECK_VALUE] or b"")
                    if len(cv) >= length:
                        return cv[:length]
                    raise _fail("making a transient copy to compute the KCV", exc) from None
            k = tmp or key
            out = self.encrypt(k, bytes(block)) if method == "ecb" else self.cmac(k, bytes(block))
            return out[:length]
        finally:
            if tmp is not None:
                tmp.destroy()

    # ---------------------------------------------------------------- wrap / unwrap
    _WRAP_MECHS: ClassVar[dict[str, str]] = {
        "aes-key-wrap-pad": "AES_KEY_WRAP_PAD",
        "aes-key-wrap": "AES_KEY_WRAP",
        "rsa-oaep": "RSA_PKCS_OAEP",
        "des3-cbc": "DES3_CBC",
    }

    def _wrap_mech(self, name: str) -> Any:
        if name not in self._WRAP_MECHS:
            raise HsmError(f"unknown wrapping mechanism {name!r}; expected one of {', '.join(self._WRAP_MECHS)}")
        return getattr(Mechanism, self._WRAP_MECHS[name])

    def wrap(self, kek: Any, key: Any, mechanism: str = "aes-key-wrap-pad", iv: bytes | None = None) -> bytes:
        """Wrap ``key`` under ``kek`` inside the HSM. Keys made by this module wrap only under trusted KEKs."""
        mech = self._wrap_mech(mechanism)
        self.require_mechanism(mech, "wrapping a key")
        self.check_validity(key)
        param = bytes(iv) if iv is not None else None
        with _p11(f"wrapping {key.label!r} under {kek.label!r}"):
            return bytes(kek.wrap_key(key, mechanism=mech, mechanism_param=param))

    def unwrap(
        self,
        kek: Any,
        blob: bytes,
        algorithm: str,
        *,
        label: str | None,
        id: bytes | None,
        policy: KeyPolicy,
        mechanism: str = "aes-key-wrap-pad",
        iv: bytes | None = None,
    ) -> Any:
        spec = self.require_algorithm(algorithm, f"unwrapping {label}")
        mech = self._wrap_mech(mechanism)
        self.require_mechanism(mech, f"unwrapping {label}")
        self.check_validity(kek)
        kt = KeyType.DES2 if spec.family == "des3" else KeyType.AES
        tpl = policy.template(fixed=False) | self._id_label(label, id)
        with _p11(f"unwrapping {label or 'a key'} under {kek.label!r}"):
            return kek.unwrap_key(
                ObjectClass.SECRET_KEY,
                kt,
                bytes(blob),
                mechanism=mech,
                mechanism_param=bytes(iv) if iv is not None else None,
                store=policy.token,
                template=tpl,
            )

    # ---------------------------------------------------------------- split knowledge
    def component_kcv(self, algorithm: str, component: bytes | bytearray, method: str = "ecb") -> bytes:
        """KCV of one clear component, computed in the HSM on a transient session object."""
        spec = self.require_algorithm(algorithm, "checking a key component")
        if len(component) != spec.length:
            raise HsmError(f"a {algorithm} component must be {spec.length} bytes, got {len(component)}")
        kt = KeyType.DES2 if spec.family == "des3" else KeyType.AES
        with _p11("loading a component for its KCV"):
            obj = self.session.create_object(
                {
                    Attribute.CLASS: ObjectClass.SECRET_KEY,
                    Attribute.KEY_TYPE: kt,
                    Attribute.VALUE: bytes(component),
                    Attribute.TOKEN: False,
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.ENCRYPT: method == "ecb",
                    Attribute.SIGN: method == "cmac",
                }
            )
        try:
            return self.kcv(obj, method)
        finally:
            obj.destroy()

    def import_components(  # noqa: PLR0912 - each check is one refusal with its own message
        self,
        algorithm: str,
        components: Sequence[bytearray],
        component_kcvs: Sequence[bytes | None],
        *,
        expected_kcv: bytes | None,
        label: str,
        id: bytes | None,
        policy: KeyPolicy,
        kcv_method: str = "ecb",
        check_mode: bool = False,
    ) -> tuple[Any | None, bytes]:
        """Form a key from 2 or 3 clear components (XOR) inside the HSM; returns (key, KCV).

        Each component is checked against its own KCV first, then the combined key against ``expected_kcv``
        (on a transient session copy) before anything is stored: a mismatch leaves the token unchanged.

        SoftHSM has no ``CKM_XOR_BASE_AND_DATA``. The XOR is done by the HSM while it computes an RFC 3394 key
        wrap of the combined key under an ephemeral AES-256 session KEK: the first wrap round's AES inputs are
        ``A | (c1 ^ m)``, computed as ``CBC(KEK, iv = 0^64 | m, A | c1)`` with ``m`` the XOR of the other
        components, and every later round only encrypts ciphertext. The result is unwrapped with
        ``CKM_AES_KEY_WRAP`` into the final key; the KEK is destroyed. The combined clear value never exists in
        this process. Callers pass components as ``bytearray``; they are zeroed here, whatever the outcome.
        """
        try:
            spec = self.require_algorithm(algorithm, f"importing {label} from components")
            if not 2 <= len(components) <= 3:
                raise HsmError(f"{label}: 2 or 3 components are required, got {len(components)}")
            if len(component_kcvs) != len(components):
                raise HsmError(f"{label}: give one KCV per component ({len(components)} components)")
            for i, comp in enumerate(components, 1):
                if len(comp) != spec.length:
                    raise HsmError(f"{label}: component {i} must be {spec.length} bytes, got {len(comp)}")
                got = self.component_kcv(algorithm, comp, kcv_method)
                want = component_kcvs[i - 1]
                if want is None:
                    raise HsmError(f"{label}: component {i} has no KCV; every custodian must give one")
                if got[: len(want)] != bytes(want):
                    raise HsmError(
                        f"{label}: component {i} of {len(components)} does not match its KCV "
                        f"(expected {bytes(want).hex().upper()}, computed {got[: len(want)].hex().upper()}); "
                        "nothing was stored"
                    )
            for mech in (Mechanism.AES_KEY_GEN, Mechanism.AES_CBC, Mechanism.AES_ECB, Mechanism.AES_KEY_WRAP):
                self.require_mechanism(mech, f"combining the components of {label}")
            kt = KeyType.DES2 if spec.family == "des3" else KeyType.AES
            with _p11("generating the ephemeral combination KEK"):
                kek = self.session.generate_key(
                    KeyType.AES,
                    256,
                    store=False,
                    template={
                        Attribute.TOKEN: False,
                        Attribute.SENSITIVE: True,
                        Attribute.EXTRACTABLE: False,
                        Attribute.ENCRYPT: True,
                        Attribute.DECRYPT: False,
                        Attribute.UNWRAP: True,
                        Attribute.WRAP: False,
                        Attribute.DERIVE: False,
                        Attribute.SIGN: False,
                    },
                )
            try:
                blob = self._wrap_xor(kek, components)
                cap = Attribute.ENCRYPT if kcv_method == "ecb" else Attribute.SIGN
                with _p11(f"checking the combined key of {label}"):
                    probe = kek.unwrap_key(
                        ObjectClass.SECRET_KEY,
                        kt,
                        blob,
                        mechanism=Mechanism.AES_KEY_WRAP,
                        store=False,
                        template={
                            Attribute.TOKEN: False,
                            Attribute.SENSITIVE: True,
                            Attribute.EXTRACTABLE: False,
                            cap: True,
                        },
                    )
                try:
                    kcv = self.kcv(probe, kcv_method)
                finally:
                    probe.destroy()
                if expected_kcv is not None and kcv[: len(expected_kcv)] != bytes(expected_kcv):
                    raise HsmError(
                        f"{label}: the combined key's KCV {kcv.hex().upper()} differs from the expected "
                        f"{bytes(expected_kcv).hex().upper()}; nothing was stored"
                    )
                if check_mode:
                    return None, kcv
                tpl = policy.template(fixed=False) | self._id_label(label, id)
                with _p11(f"storing {label}"):
                    key = kek.unwrap_key(
                        ObjectClass.SECRET_KEY,
                        kt,
                        blob,
                        mechanism=Mechanism.AES_KEY_WRAP,
                        store=policy.token,
                        template=tpl,
                    )
                return key, kcv
            finally:
                kek.destroy()
        finally:
            for comp in components:
                if isinstance(comp, bytearray):
                    _wipe(comp)

    def _wrap_xor(self, kek: Any, components: Sequence[bytes | bytearray]) -> bytes:
        """RFC 3394 wrap of XOR(components) under ``kek`` with the XOR done by the HSM (see import_components)."""
        first = components[0]
        n = len(first) // 8
        mask = bytearray(len(first))
        try:
            for comp in components[1:]:
                for i, b in enumerate(comp):
                    mask[i] ^= b
            a = _RFC3394_IV
            r: list[bytes] = [b""] * n
            for j in range(6):
                for i in range(n):
                    if j == 0:
                        iv = bytes(8) + bytes(mask[8 * i : 8 * i + 8])
                        with _p11("combining components"):
                            b = bytes(
                                kek.encrypt(
                                    a + bytes(first[8 * i : 8 * i + 8]), mechanism=Mechanism.AES_CBC, mechanism_param=iv
                                )
                            )
                    else:
                        with _p11("combining components"):
                            b = bytes(kek.encrypt(a + r[i], mechanism=Mechanism.AES_ECB))
                    t = n * j + i + 1
                    a = (int.from_bytes(b[:8], "big") ^ t).to_bytes(8, "big")
                    r[i] = b[8:]
            return a + b"".join(r)
        finally:
            _wipe(mask)

    # ---------------------------------------------------------------- reporting
    def describe(self, obj: Any, *, kcv_method: str = "ecb", with_kcv: bool = True) -> dict[str, Any]:
        """Label, ID, class, type, version, algorithm, KCV and attributes of an object. Never its value."""
        with _p11("reading object attributes"):
            cls = obj[Attribute.CLASS]
        info: dict[str, Any] = {"object_class": ObjectClass(cls).name.lower()}
        wanted = [Attribute.LABEL, Attribute.ID, Attribute.KEY_TYPE]
        wanted += [getattr(Attribute, a.upper()) for a in _ATTR_REPORT]
        attrs: dict[Any, Any] = {}
        for a in wanted:
            try:
                attrs[a] = obj[a]
            except p11e.PKCS11Error:
                continue
        label = attrs.get(Attribute.LABEL) or ""
        info["label"] = label
        info["id"] = bytes(attrs.get(Attribute.ID) or b"").hex()
        kt = attrs.get(Attribute.KEY_TYPE)
        info["key_type"] = KeyType(kt).name if kt is not None else None
        name = parse_key_label(label)
        info.update(
            key_class=name.key_class if name else None,
            type=name.key_type if name else None,
            version=name.version if name else None,
            holder=name.holder if name else None,
        )
        length = None
        if cls == ObjectClass.SECRET_KEY:
            try:
                length = obj.key_length // 8 if kt == KeyType.AES else {KeyType.DES2: 16, KeyType.DES3: 24}.get(kt)
            except p11e.PKCS11Error:
                length = None
        info["algorithm"] = _algorithm_name(kt, length)
        try:
            start, end = self._read_date(obj, Attribute.START_DATE), self._read_date(obj, Attribute.END_DATE)
            info["validity_source"] = "token"
        except p11e.GeneralError:
            start, end = self.validity_lookup(label) if self.validity_lookup else (None, None)
            info["validity_source"] = "catalogue" if self.validity_lookup else "unknown"
        info["not_before"] = start.isoformat() if start else None
        info["not_after"] = end.isoformat() if end else None
        info["attributes"] = {
            a: bool(attrs[getattr(Attribute, a.upper())])
            for a in _ATTR_REPORT
            if getattr(Attribute, a.upper()) in attrs
        }
        info["kcv"] = None
        info["kcv_method"] = None
        if with_kcv and cls == ObjectClass.SECRET_KEY and kt in (KeyType.DES2, KeyType.DES3, KeyType.AES):
            method = kcv_method if kt == KeyType.AES else "ecb"
            try:
                info["kcv"] = self.kcv(obj, method).hex().upper()
                info["kcv_method"] = method
            except HsmError as exc:
                info["kcv_error"] = str(exc)
        return info


def _algorithm_name(kt: Any, length: int | None) -> str | None:
    if kt is None:
        return None
    if kt == KeyType.DES2:
        return "3DES-2KEY"
    if kt == KeyType.DES3:
        return "3DES-3KEY"
    if kt == KeyType.AES and length:
        return f"AES-{length * 8}"
    return KeyType(kt).name
