# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Recording key operations in the node's journal, and verifying it (粤交〔2019〕11号 第十五条, 第十六条).

:func:`record` is what ``TunionModule`` calls after a module that declares a journal operation changed key state
(docs/journal.md). Other code (backup, restore) calls it directly with its own events::

    record("backup", [{"label": "...", "version": 1, "kcv": "A1B2C3"}], params, outcome="ok")

The events say who (the unix user and, when the module logged in to OpenBao, its auth method and role name, never
the secret_id or token), what, which key (label, version, KCV), where (host, token label), when, the outcome and the
playbook run (``TUNION_RUN_ID`` in the environment, set by the playbooks).
"""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Iterable, Mapping
from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.clock import now
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.journal import Verdict, new_event, verify
from ansible_collections.tunion.keymgmt.plugins.module_utils.registry_store.journal import (
    DEFAULT_JOURNAL_PATH,
    Journal,
)

RUN_ID_ENV = "TUNION_RUN_ID"
JOURNAL_PATH_ENV = "TUNION_JOURNAL"


def journal_path() -> str:
    return os.environ.get(JOURNAL_PATH_ENV) or DEFAULT_JOURNAL_PATH


def who(params: Mapping[str, Any]) -> dict[str, Any]:
    """The unix user, and the OpenBao identity by auth method and role name (no credential)."""
    out: dict[str, Any] = {"unix_user": getpass.getuser()}
    if params.get("auth_method"):
        out["openbao_auth"] = params.get("auth_method")
    for name in ("role_name", "city"):
        if params.get(name):
            out[f"openbao_{name}"] = params[name]
    return out


def where(params: Mapping[str, Any]) -> dict[str, Any]:
    return {"host": socket.gethostname(), "token": params.get("token_label"), "openbao": params.get("url")}


def record(
    operation: str,
    keys: Iterable[Mapping[str, Any]],
    params: Mapping[str, Any],
    *,
    outcome: str = "ok",
    detail: str = "",
    path: str | None = None,
) -> list[dict[str, Any]]:
    """One event per key in ``keys`` (or one without a key when there is none), appended in one transaction."""
    when, by, at, run_id = now(), who(params), where(params), os.environ.get(RUN_ID_ENV)
    events = [
        new_event(operation, key, who=by, where=at, time=when, run_id=run_id, outcome=outcome, detail=detail)
        for key in (list(keys) or [{}])
    ]
    journal = Journal(path or journal_path())
    try:
        return journal.append(*events)
    finally:
        journal.close()


def verify_journal(path: str | None = None, anchors: Iterable[Mapping[str, Any]] = ()) -> Verdict:
    journal = Journal(path or journal_path(), create=False)
    try:
        return verify(journal.events(), anchors)
    finally:
        journal.close()


# ------------------------------------------------ what each module's result says it changed (TunionModule journal_keys)
# A key dict may carry ``what``: its own operation, when one module run does two (install, then retire).
def _pick(d: Mapping[str, Any], *names: str) -> dict[str, Any]:
    return {n: d[n] for n in names if d.get(n) is not None}


def hsm_key_operation(result: Mapping[str, Any]) -> str:
    """hsm_key: the master's action, or ``derive`` when only city keys were made."""
    actions = {"generated": "generate", "imported": "import", "unwrapped": "import", "destroyed": "destroy"}
    return actions.get(str(result.get("action")), "derive")


def destroyed_keys(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """city_hsm_revoke: each destroyed object (label, KCV of a secret key)."""
    return [_pick(d, "label", "kcv") for d in result.get("destroyed") or [] if isinstance(d, dict)]


def installed_keys(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """keyblock_install: each installed key (from ``keys``, by label) and each retired one."""
    by_label = {k.get("label"): k for k in (result.get("keys") or {}).values() if isinstance(k, dict)}
    out = [
        _pick({"label": label, **by_label.get(label, {})}, "label", "version", "kcv")
        for label in result.get("installed") or []
    ]
    out += [dict(_pick(d, "label", "kcv"), what="retire") for d in result.get("retired") or [] if isinstance(d, dict)]
    return out


def published_blocks(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """keyblock_publish: each block written (``<type>.vVV`` for a city) and each block retired."""
    out: list[dict[str, Any]] = []
    for city, entry in sorted((result.get("cities") or {}).items()):
        if not isinstance(entry, dict):
            continue
        out += [{"label": f"{name}@{city}"} for name in entry.get("blocks_written") or []]
        out += [{"label": f"{name}@{city}", "what": "retire"} for name in entry.get("blocks_retired") or []]
    return out


def blacklist_version(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """sam_blacklist_publish and sam_blacklist_install: the list's version."""
    return [{"label": "sam_blacklist", "version": result.get("version")}]


def injected_keys(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """sam_inject: each key written into each SAM (``<type>.vVV@<serial>``)."""
    return [
        {"label": f"{key}@{sam.get('serial')}"}
        for sam in result.get("sams") or []
        if isinstance(sam, dict)
        for key in sam.get("keys_loaded") or []
    ]


def enrolled_key(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """city_enrol: the transport key pair, by its public key's fingerprint."""
    return [{"label": f"transport-rsa:{result.get('fingerprint')}"}]


def revoked_cities(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """openbao_city_revoke: each city whose access changed, as ``revoke``, ``suspend`` or (reinstated) ``access``."""
    what = {"revoked": "revoke", "suspended": "suspend", "active": "access"}
    return [
        {"holder": city, "what": what.get(str(entry.get("status")), "access")}
        for city, entry in sorted((result.get("cities") or {}).items())
        if isinstance(entry, dict) and entry.get("changed")
    ]
