# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One way to reach OpenBao: address, CA, token or AppRole login, and errors a person can act on.

Every tunion.keymgmt module that talks to OpenBao takes the options of the
`tunion.keymgmt.openbao` doc fragment (argspec.py) and calls `connect()`.
Tokens, secret_ids and role_ids are `no_log` in the argument spec and never appear in an
error message: `OpenBaoError` texts name the address, the path and the HTTP status only.

AppRole login follows the response-wrapping pattern: the province issues a secret_id wrapped in a
single-use, short-lived wrapping token; the city looks the wrapping token up first (it must have been
created by `auth/<mount>/role/<role>/secret-id`), then unwraps it. A wrapping token someone else
already unwrapped fails the lookup, and we say so: that is how an interception shows.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import ssl
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, fields
from typing import Any

try:
    import hvac
    import hvac.exceptions
    import requests.exceptions

    HAS_HVAC = True
    HVAC_IMPORT_ERROR = ""
except ImportError as exc:  # reported by the module through missing_required_lib
    HAS_HVAC = False
    HVAC_IMPORT_ERROR = str(exc)

#: for base.TunionModule(requires=...): the library name, whether it imported, and why not
HVAC_REQUIREMENT = ("hvac", HAS_HVAC, HVAC_IMPORT_ERROR)

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import OpenBaoError
from ansible_collections.tunion.keymgmt.plugins.module_utils.openbao.layout import (
    DEFAULT_MOUNT,
    DEFAULT_TOKEN_PATH,
    OpenBaoLayout,
)


@dataclass
class OpenBaoSettings:
    url: str
    ca_cert: str | None = None
    auth_method: str = "token"
    token: str | None = None
    token_path: str | None = DEFAULT_TOKEN_PATH
    approle_mount: str = "approle"
    role_name: str | None = None
    role_id: str | None = None
    wrapped_secret_id: str | None = None
    timeout: int = 10
    mount: str = DEFAULT_MOUNT

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> OpenBaoSettings:
        """The settings of the ``tunion.keymgmt.openbao`` options; an option a caller lacks keeps its default."""
        if not params.get("url"):
            raise OpenBaoError("no OpenBao address: set url (or BAO_ADDR), e.g. https://127.0.0.1:8200")
        given = {f.name: params[f.name] for f in fields(cls) if f.name in params}
        return cls(**given)


def describe(exc: Exception, action: str, url: str) -> str:
    """Turn an hvac/requests exception into one line a person can act on (no secrets in it)."""
    if not HAS_HVAC:
        return f"{action} failed: {type(exc).__name__}"
    answers: list[tuple[type, str]] = [
        (hvac.exceptions.Forbidden, "OpenBao denied {action} (403 permission denied): the token's policies forbid it"),
        (hvac.exceptions.VaultDown, "OpenBao at {url} is sealed or in standby ({action}): unseal it (lab: bin/lab up)"),
        (hvac.exceptions.InvalidPath, "OpenBao has nothing at the path for {action} (404)"),
        (hvac.exceptions.RateLimitExceeded, "OpenBao rate-limited {action} (429): retry later"),
        (requests.exceptions.SSLError, "TLS verification of OpenBao at {url} failed ({action}): check ca_cert"),
        (requests.exceptions.ConnectionError, "cannot reach OpenBao at {url} ({action}): is it up, is the url right?"),
        (requests.exceptions.Timeout, "OpenBao at {url} did not answer in time ({action})"),
    ]
    for kind, text in answers:
        if isinstance(exc, kind):
            reason = f" [{_ssl_reason(exc)}]" if isinstance(exc, requests.exceptions.SSLError) else ""
            return text.format(action=action, url=url) + reason
    if isinstance(exc, hvac.exceptions.VaultError):
        errors = "; ".join(str(e) for e in (getattr(exc, "errors", None) or [])) or type(exc).__name__
        return f"OpenBao refused {action}: {errors}"
    return f"{action} failed: {type(exc).__name__}"


def _ssl_reason(exc: BaseException) -> str:
    """The innermost TLS reason (certificate/handshake text only: no request data)."""
    inner: BaseException | None = exc
    while inner is not None and inner.__context__ is not None and not isinstance(inner, ssl.SSLError):
        inner = inner.__cause__ or inner.__context__
    return str(getattr(inner, "reason", None) or inner)[:200]


_ERR_CLEAR: Any = None


def clear_openssl_errors() -> None:
    """Empty this thread's OpenSSL error queue before a TLS request.

    SoftHSM2 shares libcrypto with Python's ssl module and leaves errors in the queue (e.g. "ENGINE:
    no such engine" when it probes for engines). Python's ssl then reports that stale error as a failure
    of the next TLS handshake. Clearing the queue first is what OpenSSL expects of every caller.
    """
    global _ERR_CLEAR  # noqa: PLW0603 - resolved once per process
    if _ERR_CLEAR is None:
        name = ctypes.util.find_library("crypto")
        try:
            _ERR_CLEAR = ctypes.CDLL(name).ERR_clear_error if name else False
        except (OSError, AttributeError):
            _ERR_CLEAR = False
    if _ERR_CLEAR:
        _ERR_CLEAR()


class _Absent(Exception):
    """Raised inside :func:`translated` with ``absent_ok`` for a 404; :meth:`OpenBao.call_or_none` turns it to None."""


@contextmanager
def translated(action: str, url: str, *, absent_ok: bool = False) -> Iterator[None]:
    """Re-raise OpenBao/transport failures inside the block as OpenBaoError with a readable message."""
    clear_openssl_errors()
    try:
        yield
    except OpenBaoError:
        raise
    except Exception as exc:
        if absent_ok and HAS_HVAC and isinstance(exc, hvac.exceptions.InvalidPath):
            raise _Absent from None
        if HAS_HVAC and isinstance(exc, hvac.exceptions.VaultError | requests.exceptions.RequestException):
            raise OpenBaoError(describe(exc, action, url)) from None
        raise


class OpenBao:
    """An authenticated hvac client plus the few KV v2 calls the collection uses."""

    def __init__(self, settings: OpenBaoSettings, client: Any) -> None:
        self.settings = settings
        self.client = client
        self.layout = OpenBaoLayout(settings.mount)
        self.logged_in_by_approle = False

    @property
    def url(self) -> str:
        return self.settings.url

    def call(self, action: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        with translated(action, self.url):
            return func(*args, **kwargs)

    def call_or_none(self, action: str, func: Any, *args: Any, **kwargs: Any) -> Any | None:
        """Like :meth:`call`, but None when OpenBao has nothing there (404): the one way "absent" is detected."""
        try:
            with translated(action, self.url, absent_ok=True):
                return func(*args, **kwargs)
        except _Absent:
            return None

    # ---- KV v2
    def kv_read(self, mount: str, path: str) -> dict[str, Any] | None:
        """Latest version of a KV v2 secret as {'data': ..., 'metadata': ...}, or None if absent or deleted."""
        answer = self.call_or_none(
            f"reading {mount}/{path}",
            self.client.secrets.kv.v2.read_secret_version,
            path=path,
            mount_point=mount,
            raise_on_deleted_version=True,
        )
        return answer["data"] if answer is not None else None

    def kv_write(self, mount: str, path: str, data: dict[str, Any], cas: int | None = None) -> int:
        with translated(f"writing {mount}/{path}", self.url):
            answer = self.client.secrets.kv.v2.create_or_update_secret(
                path=path, mount_point=mount, secret=data, cas=cas
            )
        return int(answer["data"]["version"])

    def kv_list(self, mount: str, path: str) -> list[str]:
        answer = self.call_or_none(
            f"listing {mount}/{path}", self.client.secrets.kv.v2.list_secrets, path=path, mount_point=mount
        )
        return list(answer["data"]["keys"]) if answer is not None else []

    # ---- raft snapshots (backup and restore, 粤交〔2019〕11号 第十四条)
    def raft_snapshot(self) -> bytes:
        """The raft snapshot (``GET sys/storage/raft/snapshot``): OpenBao's whole storage, still under its barrier."""
        with translated("taking a raft snapshot", self.url):
            response = self.client.sys.take_raft_snapshot()
            response.raise_for_status()
            return bytes(response.content)

    def raft_restore(self, snapshot: bytes, *, force: bool) -> None:
        """Install a raft snapshot. ``force`` (``snapshot-force``) is what a new cluster needs: its keys differ from
        the snapshot's, and afterwards it unseals with the snapshot's cluster's keys and tokens."""
        func = self.client.sys.force_restore_raft_snapshot if force else self.client.sys.restore_raft_snapshot
        with translated("restoring a raft snapshot", self.url):
            response = func(snapshot)
            if hasattr(response, "raise_for_status"):
                response.raise_for_status()

    def close(self) -> None:
        """What a module calls when it ends (base.TunionModule.opened)."""
        self.revoke_self()

    def revoke_self(self) -> None:
        """Drop a token we got by AppRole login: it should not outlive the task that used it."""
        if self.logged_in_by_approle:
            with suppress(Exception):  # it expires anyway; nothing here the operator must act on
                self.client.auth.token.revoke_self()
            self.logged_in_by_approle = False


def _read_token_file(path: str | None) -> str | None:
    if not path:
        return None
    expanded = os.path.expanduser(path)
    # Only a file that is not there means "no token file"; anything else in the way is said as it is.
    try:
        with open(expanded, encoding="ascii") as handle:
            token = handle.read().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OpenBaoError(f"cannot read the OpenBao token file {expanded}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise OpenBaoError(f"the OpenBao token file {expanded} is not a token: it is not ASCII text") from None
    if not token:
        raise OpenBaoError(f"the OpenBao token file {expanded} is empty; put the province's token in it")
    return token


def new_client(settings: OpenBaoSettings, token: str | None = None) -> Any:
    if not HAS_HVAC:
        raise OpenBaoError(f"the Python library hvac is required on the managed node: {HVAC_IMPORT_ERROR}")
    verify: bool | str = settings.ca_cert if settings.ca_cert else True
    return hvac.Client(url=settings.url, token=token, verify=verify, timeout=settings.timeout)


def unwrap_secret_id(settings: OpenBaoSettings) -> str:
    """Check where the wrapping token came from, then unwrap it (once) to get the secret_id."""
    if not settings.wrapped_secret_id:
        raise OpenBaoError("auth_method=approle needs wrapped_secret_id (a response-wrapped secret_id)")
    client = new_client(settings)
    try:
        # sys/wrapping/lookup needs no token of its own: the wrapping token is the credential.
        clear_openssl_errors()
        lookup = client.adapter.post("/v1/sys/wrapping/lookup", json={"token": settings.wrapped_secret_id})
    except Exception as exc:  # noqa: BLE001 - sorted below; every other failure means the same to the operator
        if HAS_HVAC and isinstance(exc, requests.exceptions.RequestException | hvac.exceptions.VaultDown):
            raise OpenBaoError(describe(exc, "looking up the wrapping token", settings.url)) from None
        raise OpenBaoError(
            "the wrapped secret_id is not valid: it expired, or someone already unwrapped it. "
            "If this city did not use it, treat it as intercepted and tell the province (粤交〔2019〕11号 第十六条)."
        ) from None
    creation_path = lookup["data"]["creation_path"]
    if settings.role_name:
        expected = f"auth/{settings.approle_mount}/role/{settings.role_name}/secret-id"
        if creation_path != expected:
            raise OpenBaoError(
                f"the wrapping token was created by {creation_path!r}, not {expected!r}: refusing to use it"
            )
    unwrapper = new_client(settings, settings.wrapped_secret_id)  # the wrapping token authenticates its unwrap
    with translated("unwrapping the secret_id", settings.url):
        unwrapped = unwrapper.sys.unwrap()
    return unwrapped["data"]["secret_id"]


def connect(params: dict[str, Any] | OpenBaoSettings) -> OpenBao:
    """Authenticated connection from module params (or settings); raises OpenBaoError."""
    settings = params if isinstance(params, OpenBaoSettings) else OpenBaoSettings.from_params(params)
    if settings.auth_method == "approle":
        if not settings.role_id:
            raise OpenBaoError("auth_method=approle needs role_id")
        secret_id = unwrap_secret_id(settings)
        client = new_client(settings)
        with translated(f"AppRole login as {settings.role_name or 'the given role'}", settings.url):
            client.auth.approle.login(role_id=settings.role_id, secret_id=secret_id, mount_point=settings.approle_mount)
        bao = OpenBao(settings, client)
        bao.logged_in_by_approle = True
        return bao
    token = settings.token or _read_token_file(settings.token_path)
    if not token:
        raise OpenBaoError(
            f"no OpenBao token: set token (or BAO_TOKEN), or put one in {settings.token_path or DEFAULT_TOKEN_PATH}"
        )
    client = new_client(settings, token)
    with translated("checking the token", settings.url):
        client.auth.token.lookup_self()
    return OpenBao(settings, client)
