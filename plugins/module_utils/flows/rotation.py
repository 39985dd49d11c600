# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rotations in OpenBao (``province/rotation/<type>.v<VV>``): the durable record, retirement, and progress per city."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.clock import parse_day
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import RevocationError
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.names import version_name
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.distribution.blocks import remove_blocks
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats import keyblock
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.rotation import _RECORD_KEYS, plan
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.sam_registry import Registry
from ansible_collections.tunion.keymgmt.plugins.module_utils.openbao.client import OpenBao


def read_records(bao: Any) -> list[dict[str, Any]]:
    records = []
    for name in bao.kv_list(bao.layout.mount, bao.layout.rotation):
        record = bao.kv_read(bao.layout.mount, f"{bao.layout.rotation}/{name}")
        if record:
            records.append(record["data"])
    return records


def write_records(bao: Any, plan_: dict[str, Any], recorded: list[dict[str, Any]], check_mode: bool) -> list[str]:
    """Record every rotation of the plan that OpenBao does not hold as is. Returns what was (or would be) recorded."""
    have = {(r["key_type"], int(r["old_version"])): r for r in recorded}
    done = []
    for r in plan_["rotations"]:
        wanted = {k: r[k] for k in _RECORD_KEYS}
        current = have.get((r["key_type"], int(r["old_version"])))
        if current is not None and {k: current.get(k) for k in _RECORD_KEYS} == wanted:
            continue
        name = version_name(r["key_type"], r["old_version"])
        done.append(f"rotation {name} -> v{int(r['new_version']):02x} recorded")
        if not check_mode:
            bao.kv_write(bao.layout.mount, f"{bao.layout.rotation}/{name}", wanted)
    return done


def enforce_retirement(bao: Any, plan_: dict[str, Any], active: list[str], check_mode: bool) -> dict[str, Any]:
    """Retired and revoked key versions leave OpenBao for every active city (their blocks, every version); the
    active cities whose last report still lists one must destroy it in their HSM (hsm_destroy). Adds the rotation
    progress to the plan."""
    changes: list[str] = []
    reported: dict[str, Any] = {}
    hsm_destroy: dict[str, list[str]] = {}
    for city in active:
        record = bao.kv_read(bao.layout.mount, bao.layout.city(city, "status"))
        reported[city] = record["data"] if record else None
        gone = remove_blocks(bao, city, plan_["destroy_versions"], check_mode)
        if gone:
            changes.append(f"{city}: block(s) {', '.join(gone)} destroyed")
        held = sorted(set(plan_["destroy_versions"]) & set((reported[city] or {}).get("keys") or {}))
        if held:
            hsm_destroy[city] = held
    plan_["progress"] = progress(bao, plan_, active, reported)
    return {"changes": changes, "hsm_destroy": hsm_destroy}


def progress(bao: Any, plan_: dict[str, Any], active: list[str], reported: dict[str, Any]) -> list[dict]:
    """Per rotation: which active cities report the new version with the KCV of the province's block, which do
    not yet, and which still report the old version after its retirement. ``reported``: city -> status record."""
    out = []
    retired_now = set(plan_["retired"])
    for r in plan_["rotations"]:
        new, old = version_name(r["key_type"], r["new_version"]), version_name(r["key_type"], r["old_version"])
        held, pending, kcvs, old_left = [], [], set(), []
        for city in active:
            keys = (reported.get(city) or {}).get("keys") or {}
            record = bao.kv_read(bao.layout.mount, bao.layout.city(city, f"blocks/{new}"))
            granted = {(g["key_type"], g["version"]) for g in plan_["new_grants"].get(city, [])}
            if record is None and (r["key_type"], int(r["new_version"])) not in granted:
                continue  # not for this city (it was never granted the old version)
            try:
                want = keyblock.parse(str(record["data"].get("block", ""))).header.kcv if record else None
            except keyblock.KeyBlockError:
                want = None
            got = (keys.get(new) or {}).get("kcv")
            if want and got == want:
                held.append(city)
                kcvs.add(want)
            else:
                pending.append(city)
            if old in retired_now and old in keys:
                old_left.append(city)
        out.append(
            dict(
                {k: r[k] for k in _RECORD_KEYS},
                new_held_by=held,
                new_pending=pending,
                new_kcv=sorted(kcvs),
                old_retired=old in retired_now,
                old_still_reported_by=old_left,
            )
        )
    return out


def rotation_plan(
    bao: OpenBao,
    params: Mapping[str, Any],
    statuses: dict[str, dict[str, dict[str, str]]],
    registry: Registry | None,
    grants: dict[str, list[dict[str, Any]]],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(plan, recorded rotations) for ``params['today']`` (see revocation_rotation.plan)."""
    recorded = read_records(bao)
    try:
        today = parse_day(params.get("today"))
    except ValueError as exc:
        raise RevocationError(f"today: {exc}. Nothing was changed.") from None
    rotation = plan(
        params["catalogue"] or [],
        grants,
        statuses["cities"],
        grace_days=params["grace_days"],
        sam_rows=[r.as_dict() for r in registry.rows.values()] if registry else None,
        city_codes=params["cities"],
        recorded=recorded,
        key_versions=statuses.get("key_versions"),
        today=today,
    )
    return rotation, recorded
