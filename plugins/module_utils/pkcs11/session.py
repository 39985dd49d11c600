# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PKCS#11 libraries, tokens and logins (python-pkcs11), and C_InitToken, which python-pkcs11 does not bind.

* errors are :class:`HsmError` with a message a person can act on, which never carries a PIN or key bytes;
* a PIN is presented once per session: a wrong PIN is reported, never retried (the token's retry counter is not
  spent by this code), and a PIN whose token flags say "final try" or "locked" is not presented at all;
* a PIN the token refused (CKR_PIN_INCORRECT) is never presented to that token again, by any later module call of
  the same run or of a later run: the refusal is recorded on the host (:func:`refusal_dir`), so a loop of N items
  spends one try, not N. A token's PIN stays wrong until it is changed, so the record outlives the run; it names a
  file to delete once the token's PIN has been reset (an Ansible run has no identity a module could key it on).
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import hmac
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    import pkcs11
    from pkcs11 import TokenFlag
    from pkcs11 import exceptions as p11e

    HAS_PKCS11 = True
    PKCS11_IMPORT_ERROR: str | None = None
except ImportError as _exc:  # pragma: no cover - reported by the modules through missing_required_lib
    HAS_PKCS11 = False
    PKCS11_IMPORT_ERROR = str(_exc)

#: for base.TunionModule(requires=...): the library name, whether it imported, and why not
PKCS11_REQUIREMENT = ("python-pkcs11", HAS_PKCS11, PKCS11_IMPORT_ERROR)

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.clock import now
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import HsmError
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.files import atomic_write

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


def hsm_error(what: str, exc: BaseException) -> HsmError:
    name = type(exc).__name__
    hint = _ERROR_HINTS.get(name)
    return HsmError(f"{what}: PKCS#11 {name}" + (f" ({hint})" if hint else ""))


@contextmanager
def pkcs11_errors(what: str) -> Iterator[None]:
    """Translate python-pkcs11 errors into HsmError. Messages carry the operation and the PKCS#11 error only."""
    try:
        yield
    except HsmError:
        raise
    except p11e.PKCS11Error as exc:
        raise hsm_error(what, exc) from None


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
    with pkcs11_errors(f"listing tokens of {library}"):
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


#: where refused PINs are remembered, per unix user (overridable for tests and for a site's own private directory)
REFUSAL_DIR_ENV = "TUNION_PIN_REFUSAL_DIR"
#: bytes of HMAC kept per refused PIN: enough to tell PINs apart, too few to test PIN guesses against offline
_TAG_BYTES = 4


def refusal_dir() -> Path:
    return Path(os.environ.get(REFUSAL_DIR_ENV) or Path.home() / ".tunion" / "pin-refusals")


def _refusal_key(base: Path) -> bytes:
    """A random key of this host user: a refused PIN is kept as a truncated HMAC under it, never as itself."""
    path = base / ".key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as handle:
        key = os.urandom(32)
        handle.write(key)
    return key


def _token_file(base: Path, token: Any) -> Path:
    serial = bytes(token.serial or b"")
    return base / f"{hashlib.sha256(serial + b'/' + str(token.label).encode()).hexdigest()[:16]}.json"


def _refusals(token: Any, who: str, pin: str, record: bool) -> tuple[str | None, Path]:
    """(time of an earlier refusal of this PIN by this token or None, the record's file); ``record`` adds one."""
    base = refusal_dir()
    try:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = _token_file(base, token)
        with os.fdopen(os.open(base / ".lock", os.O_WRONLY | os.O_CREAT, 0o600), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            tag = hmac.new(_refusal_key(base), f"{who}:{pin}".encode(), "sha256").hexdigest()[: 2 * _TAG_BYTES]
            data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {"token": str(token.label)}
            data.setdefault("refused", {})
            when = data["refused"].get(tag)
            if record and when is None:
                data["refused"][tag] = {"who": who, "at": now()}
                atomic_write(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        # fail closed: without the record a loop would spend one try per item
        raise HsmError(
            f"cannot read or write the record of refused PINs under {base} ({type(exc).__name__}); "
            f"no PIN was presented to token {token.label!r}"
        ) from None
    return (when or {}).get("at") if isinstance(when, dict) else None, path


def forget_refusals(token: Any) -> None:
    """Drop the record of PINs refused by ``token`` (its PINs were just set)."""
    path = _token_file(refusal_dir(), token)
    if path.exists():
        path.unlink()


def open_session(token: Any, rw: bool, user_pin: str | None, so_pin: str | None) -> Any:
    who = "SO" if so_pin is not None else "user"
    pin = so_pin if so_pin is not None else user_pin
    if pin is not None:
        _login_guard(token, "so" if so_pin is not None else "user")
        refused_at, record = _refusals(token, who, pin, record=False)
        if refused_at is not None:
            raise HsmError(
                f"the {who} PIN given for token {token.label!r} was refused by it at {refused_at}; not presented "
                f"again (each wrong PIN spends one of the token's tries): correct the PIN source. Once the token's "
                f"PIN has been reset to this value, delete {record}"
            )
    try:
        if so_pin is not None:
            return token.open(rw=rw, so_pin=so_pin)
        return token.open(rw=rw, user_pin=user_pin)
    except p11e.PinIncorrect:
        _at, record = _refusals(token, who, pin or "", record=True)
        raise HsmError(
            f"the {who} PIN was rejected by token {token.label!r}; not retrying "
            "(each wrong PIN spends one of the token's tries); it will not be presented to this token again "
            f"(recorded in {record})"
        ) from None
    except p11e.PinLocked:
        raise HsmError(f"the {who} PIN of token {token.label!r} is locked") from None
    except (p11e.PinLenRange, p11e.PinInvalid):
        raise HsmError(f"the {who} PIN given for token {token.label!r} has an invalid length or characters") from None
    except p11e.PKCS11Error as exc:
        raise hsm_error(f"opening a session on token {token.label!r}", exc) from None


_CLOSE_ALL_SESSIONS_INDEX = 14


_INIT_TOKEN_INDEX = 9  # CK_FUNCTION_LIST: version, C_Initialize, C_Finalize, C_GetInfo, C_GetFunctionList,


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
    if not fn_addr:
        raise HsmError(f"{library} offers no function at index {index} of its CK_FUNCTION_LIST")
    return ctypes.CFUNCTYPE(ctypes.c_ulong, *argtypes)(fn_addr)


def _c_init_token(library: str, slot_id: int, so_pin: str, label: str) -> int:
    """C_CloseAllSessions (this process's own) then C_InitToken; python-pkcs11 0.10.1 binds neither."""
    close_all = _function(library, _CLOSE_ALL_SESSIONS_INDEX, ctypes.c_ulong)
    close_all(slot_id)
    init = _function(library, _INIT_TOKEN_INDEX, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
    pin = so_pin.encode()
    return int(init(slot_id, pin, len(pin), label.encode().ljust(32)[:32]))


def _count_objects(token: Any, user_pin: str | None) -> int:
    session = open_session(token, False, user_pin, None)
    try:
        with pkcs11_errors("counting objects"):
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
        with pkcs11_errors("listing slots"):
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
    session = open_session(token, True, None, so_pin)
    try:
        with pkcs11_errors("setting the user PIN"):
            session.init_pin(user_pin)
    finally:
        session.close()
    forget_refusals(token)  # new PINs: what the old ones refused says nothing about them
    result["serial"] = token.serial.decode(errors="replace").strip()
    return result


def _login_guard_so_slot(lib: Any, slot_id: int) -> None:
    for slot in lib.get_slots(token_present=True):
        if slot.slot_id == slot_id:
            token = slot.get_token()
            if int(token.flags) & int(TokenFlag.TOKEN_INITIALIZED):
                _login_guard(token, "so")
