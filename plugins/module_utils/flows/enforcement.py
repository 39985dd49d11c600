# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The enforcement report's durable state in OpenBao, and the report files on the province host."""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.clock import now
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import RevocationError
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.files import atomic_write
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.report import (
    build_report,
    collect,
    merge,
    out_of_date,
    summary_text,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.openbao.client import OpenBao


def read_state(bao: OpenBao) -> dict[str, Any] | None:
    record = bao.kv_read(bao.layout.mount, bao.layout.enforcement_state)
    return record["data"] if record else None


def write_state(bao: OpenBao, state: dict[str, Any]) -> None:
    bao.kv_write(bao.layout.mount, bao.layout.enforcement_state, state)


def write_report(report: dict[str, Any], directory: str) -> dict[str, str]:
    """Write enforcement-<time>.json/.txt and latest.json/.txt under ``directory``. Returns the paths."""
    base = Path(os.path.expanduser(directory))
    base.mkdir(parents=True, exist_ok=True, mode=0o750)
    stamp = report["finished_at"].replace(":", "").replace("+0000", "Z")
    body = json.dumps(report, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    text = summary_text(report)
    paths = {
        "json": str(base / f"enforcement-{stamp}.json"),
        "text": str(base / f"enforcement-{stamp}.txt"),
    }
    atomic_write(Path(paths["json"]), body, 0o640)
    atomic_write(Path(paths["text"]), text, 0o640)
    atomic_write(base / "latest.json", body, 0o640)
    atomic_write(base / "latest.txt", text, 0o640)
    return paths


def _check_instant(value: str | None, option: str) -> None:
    """An ISO-8601 instant with its offset (2026-12-01T02:03:04Z or +00:00), refused by name before anything."""
    if not value:
        return
    try:
        parsed = _dt.datetime.fromisoformat(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise RevocationError(f"{option}: {value!r} is not an ISO-8601 instant with its offset, e.g. {now()}")


def enforcement_pass(params: Mapping[str, Any], connect: Callable[[], OpenBao], *, check_mode: bool) -> dict[str, Any]:
    """What module enforcement_report does: classify every part, merge with the durable state, write the report
    (and the state) when anything moved or anything is pending."""
    at = now()
    _check_instant(params["started_at"], "started_at")
    statuses = params["openbao_result"].get("statuses") or {}
    entries = collect(
        openbao_result=params["openbao_result"],
        province_result=params["province_result"],
        blacklist_result=params["blacklist_result"],
        nodes={
            host: {"revoke": params["city_revoke"].get(host), "blacklist": params["city_blacklist"].get(host)}
            for host in sorted(set(params["city_revoke"]) | set(params["city_blacklist"]))
        },
        stations=params["stations"],
        city_statuses=statuses.get("cities") or {},
    )
    bao = connect()
    previous = read_state(bao)
    blacklist = params["blacklist_result"]
    # A blacklist published on this run lists every SAM group in force: a group pending from an earlier run that it
    # no longer lists was reinstated, and is superseded rather than carried forever.
    published = bool(blacklist.get("version")) and not blacklist.get("failed")
    stamped, state = merge(previous, entries, at, complete_kinds=frozenset({"sam_group"}) if published else frozenset())
    report = build_report(
        stamped,
        started_at=params["started_at"] or at,
        finished_at=at,
        statuses=statuses,
        trigger=params["trigger"],
        blacklist={
            "version": blacklist.get("version"),
            "expires": blacklist.get("expires", ""),
            "entries": blacklist.get("entries", 0),
            "out_of_date": out_of_date(entries, int(blacklist.get("version") or 0)),
        }
        if blacklist.get("version")
        else None,
        rotation=params["rotation"],
    )
    pending_before = any(v.get("state") != "enforced" for v in ((previous or {}).get("parts") or {}).values())
    state["rotation"] = params["rotation"].get("progress") or []
    anything = (
        (previous or {}).get("rotation", []) != state["rotation"]  # a rotation moved on (new version held, retired)
        or any(e.get("changed") for e in entries)
        or params["openbao_result"].get("changed")
        or blacklist.get("changed")
        or not report["complete"]
        or pending_before
        or params["always_write"]
    )
    written: dict[str, str] = {}
    if anything and not check_mode:
        write_state(bao, state)
        written = write_report(report, params["report_dir"])
    return {
        "changed": bool(written),
        "written": written,
        "complete": report["complete"],
        "summary": report["summary"],
        "pending": [
            {k: e.get(k) for k in ("target", "state", "reason", "since")}
            for e in report["entries"]
            if e["state"] != "enforced"
        ],
        "report": report,
    }
