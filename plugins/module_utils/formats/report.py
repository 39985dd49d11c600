# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The enforcement report: proof that a status change reached every node, OpenBao and every SAM group.

Each part of the province (a node, OpenBao, a SAM group) ends a run in one of:

* ``enforced`` (with the time it was enforced);
* ``unreachable`` (the node could not be reached: it stays pending and is enforced by the next run);
* ``failed`` (with the reason).

The pending state is durable: it lives in OpenBao at ``province/enforcement/state`` (KV v2, every version kept),
so the next run - from any province host - knows which parts were left over, and its report says so
("enforced on this run; unreachable since ..."). Reports are written on the province host as JSON and as a
readable text summary (``enforcement-<time>.json|.txt``, and ``latest.json|.txt``).
粤交〔2019〕11号 第十七条: revocation is worth nothing unless it is shown to be enforced everywhere.
"""

from __future__ import annotations

import unicodedata
from typing import Any

REPORT_FORMAT = 1


STATES = ("enforced", "unreachable", "failed")


SINGULAR = {"cities": "city", "holders": "holder", "sams": "SAM", "key_versions": "key version"}


def node_entry(host: str, result: dict[str, Any] | None, *, kind: str = "node", what: str = "") -> dict[str, Any]:
    """Classify one host's registered task result (possibly unreachable or failed) as a report entry."""
    entry: dict[str, Any] = {"target": f"{kind}:{host}", "kind": kind, "name": host, "what": what}
    if not result:
        # the node never ran the task: unreachable earlier in the run, or dropped by an earlier failure
        entry.update(
            state="unreachable", reason="no result from this node on this run (unreachable or dropped earlier)"
        )
        return entry
    if result.get("skipped"):
        entry.update(state="enforced", detail="nothing to enforce on this node")
        return entry
    if result.get("unreachable"):
        entry.update(state="unreachable", reason=str(result.get("msg", "unreachable"))[:300])
    elif result.get("failed"):
        entry.update(state="failed", reason=str(result.get("msg", "failed"))[:500])
    else:
        entry.update(state="enforced", changed=bool(result.get("changed")))
        for key in ("destroyed", "version", "actions", "path"):
            if key in result:
                entry[key] = result[key]
    return entry


def merge(
    previous: dict[str, Any] | None,
    entries: list[dict[str, Any]],
    at: str,
    *,
    complete_kinds: frozenset[str] = frozenset(),
) -> tuple[list, dict]:
    """Stamp this run's entries against the durable state; return (entries, new state).

    An entry enforced now that was pending before says since when. A part that was pending and is not part of this
    run stays pending in the state (and in the report), unless this run lists every part of its kind
    (``complete_kinds``: e.g. the SAM groups of a blacklist published on this run): then the part no longer exists
    in the desired state (its SAMs were reinstated), and it is reported once as superseded and dropped."""
    before = (previous or {}).get("parts") or {}
    parts: dict[str, Any] = {}
    out: list[dict[str, Any]] = []
    for given in entries:
        target = given["target"]
        old = before.get(target) or {}
        entry = dict(given)
        if entry["state"] == "enforced":
            entry["at"] = at if entry.get("changed", True) or old.get("state") != "enforced" else old.get("at", at)
            if old.get("state") in ("unreachable", "failed"):
                entry["after"] = f"{old['state']} since {old.get('since', old.get('at', '?'))}"
        else:
            entry["at"] = at
            entry["since"] = old.get("since", at) if old.get("state") == entry["state"] else at
        parts[target] = {k: entry[k] for k in ("state", "at", "since", "reason", "what") if k in entry}
        out.append(entry)
    for target, old in before.items():
        if target in parts or old.get("state") not in ("unreachable", "failed"):
            continue
        kind, name = target.split(":", 1)
        if kind in complete_kinds:
            since = old.get("since", old.get("at", "?"))
            out.append(
                {
                    "target": target,
                    "kind": kind,
                    "name": name,
                    "state": "enforced",
                    "at": at,
                    "what": "no longer in the desired state (superseded by this run)",
                    "after": f"{old['state']} since {since}",
                }
            )
            continue
        parts[target] = old
        out.append(dict(old, target=target, kind=kind, name=name, carried=True))
    return out, {"parts": parts, "updated_at": at}


def build_report(
    entries: list[dict[str, Any]],
    *,
    started_at: str,
    finished_at: str,
    statuses: dict[str, Any],
    trigger: str,
    blacklist: dict[str, Any] | None = None,
    rotation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    counts = {state: sum(1 for e in entries if e["state"] == state) for state in STATES}
    return {
        "format": REPORT_FORMAT,
        "trigger": trigger,
        "started_at": started_at,
        "finished_at": finished_at,
        "statuses": statuses,
        "blacklist": blacklist or {},
        "rotation": rotation or {},
        "summary": counts,
        "complete": counts["unreachable"] == 0 and counts["failed"] == 0,
        "entries": sorted(entries, key=lambda e: (e["kind"] != "openbao", e["kind"], e["name"])),
    }


def rotation_lines(rot: dict[str, Any]) -> list[str]:
    """Rotations in force: who holds the new version (with the province's KCV), who does not yet, retirement."""
    lines = []
    for r in rot.get("progress") or rot.get("rotations") or []:
        old, new = f"v{int(r['old_version']):02x}", f"v{int(r['new_version']):02x}"
        lines.append(
            f"rotation: {r['key_type']} {old} -> {new} (because {', '.join(r.get('because') or []) or '?'}), "
            f"{old} retired after {r['retire_after']}"
        )
        if "new_held_by" in r:
            held, pending = r["new_held_by"], r["new_pending"]
            kcv = "/".join(r.get("new_kcv") or []) or "-"
            lines.append(f"  {new} held with the province's KCV {kcv} by {len(held)} of {len(held) + len(pending)}")
            if pending:
                lines.append(f"  {new} not yet held by: {', '.join(pending)} (run playbooks/distribute.yml)")
            if r.get("old_retired"):
                left = r.get("old_still_reported_by") or []
                lines.append(f"  {old} retired" + (f"; still reported by {', '.join(left)}" if left else ""))
    lines += [f"rotation needed: {missing}" for missing in rot.get("missing_versions") or []]
    if rot.get("revoked_versions"):
        lines.append(f"key versions revoked: {', '.join(rot['revoked_versions'])}")
    if rot.get("rotations"):
        reload = rot.get("reload_sams") or []
        lines.append(
            f"SAMs to reload after rotation: {len(reload)}"
            + (f" ({', '.join(reload)})" if reload else "")
            + ("" if reload else " - the rotated keys are not held by SAMs")
        )
    return ["", *lines] if lines else []


_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """One line of text a terminal shows as written: every control, format, separator or unassigned character
    (Unicode C*, Zl, Zp: newlines, ESC, NUL, U+2028, U+202E ...) becomes a visible escape, so free text from the
    inventory or a node (reasons, notes, names) can neither start a line of its own nor drive the terminal.
    Chinese text and ordinary punctuation are kept as they are."""
    out = []
    for ch in text:
        if unicodedata.category(ch)[0] == "C" or unicodedata.category(ch) in ("Zl", "Zp"):
            code = ord(ch)
            out.append(_NAMED_ESCAPES.get(ch) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"))
        else:
            out.append(ch)
    return "".join(out)


def summary_text(report: dict[str, Any]) -> str:
    """A summary a key officer can read: what was asked, then every part and its outcome."""
    lines = [
        "TUnion key enforcement report (粤交〔2019〕11号 第十七条)",
        f"trigger: {report['trigger']}",
        f"run: {report['started_at']} .. {report['finished_at']}",
        "complete: " + ("yes" if report["complete"] else "NO - parts pending, re-run playbooks/enforce_status.yml"),
        "summary: " + ", ".join(f"{k} {v}" for k, v in report["summary"].items()),
        "",
        "status (not active):",
    ]
    any_status = False
    for kind, names in sorted((report.get("statuses") or {}).items()):
        for name, status in sorted(names.items()):
            if status.get("status") != "active":
                any_status = True
                lines.append(
                    f"  {SINGULAR.get(kind, kind):<11} {name:<24} {status['status']:<9} {status.get('date', ''):<10} "
                    f"{status.get('reason', '')}"
                )
    if not any_status:
        lines.append("  (none)")
    bl = report.get("blacklist") or {}
    if bl:
        expires = f", expires {bl['expires']}" if bl.get("expires") else ""
        lines += ["", f"SAM blacklist: version {bl.get('version')}{expires}, {bl.get('entries', 0)} SAM(s)"]
        stale = bl.get("out_of_date") or {}
        lines.append("out of date (no valid, current SAM blacklist confirmed):" + ("" if stale else " (none)"))
        lines += [f"  {host:<28} {why}" for host, why in sorted(stale.items())]
    lines += rotation_lines(report.get("rotation") or {})
    lines += ["", "parts:"]
    for entry in report["entries"]:
        state = entry["state"].upper() if entry["state"] != "enforced" else "enforced"
        extra = ""
        if entry["state"] == "enforced":
            extra = f"at {entry.get('at', '')}"
            if entry.get("after"):
                extra += f" (was {entry['after']})"
        else:
            extra = f"since {entry.get('since', entry.get('at', ''))}: {entry.get('reason', '')}"
        what = f" [{entry['what']}]" if entry.get("what") else ""
        lines.append(f"  {entry['kind']:<9} {entry['name']:<28} {state:<11} {extra}{what}")
        if entry.get("destroyed"):
            lines.append(f"            destroyed: {', '.join(d['label'] for d in entry['destroyed'])}")
    # every line is escaped as a whole: the report's own lines hold no control character, free text may
    return "\n".join(printable(line) for line in lines) + "\n"


def _combine(host: str, parts: list[tuple[str, dict[str, Any] | None]], what: str) -> dict[str, Any]:
    """One entry per node from several task results: the worst outcome wins (unreachable > failed > enforced)."""
    entries = [node_entry(host, result, what=name) for name, result in parts]
    for state in ("unreachable", "failed"):
        bad = [e for e in entries if e["state"] == state]
        if bad:
            return dict(bad[0], what=what)
    merged: dict[str, Any] = {"target": f"node:{host}", "kind": "node", "name": host, "state": "enforced", "what": what}
    merged["changed"] = any(e.get("changed") for e in entries)
    for e in entries:
        for key in ("destroyed", "version"):
            if key in e:
                merged[key] = e[key]
    return merged


def out_of_date(entries: list[dict[str, Any]], version: int) -> dict[str, str]:
    """Nodes and stations that did not confirm blacklist ``version`` on this run, and why (an expired list they
    hold, a refusal, unreachable): each of them holds no list known to be valid and current."""
    stale: dict[str, str] = {}
    for entry in entries:
        if entry.get("kind") != "node" or "SAM blacklist" not in str(entry.get("what", "")):
            continue
        if entry["state"] != "enforced":
            stale[entry["name"]] = f"{entry['state']}: {entry.get('reason', '')}"[:300]
        elif int(entry.get("version") or 0) < version:
            stale[entry["name"]] = f"holds v{entry.get('version') or 0}, not v{version}"
    return stale


def collect(
    *,
    openbao_result: dict[str, Any],
    province_result: dict[str, Any],
    blacklist_result: dict[str, Any],
    nodes: dict[str, dict[str, Any]],
    stations: dict[str, dict[str, Any] | None],
    city_statuses: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """Every part of the province, classified (see the module documentation of enforcement_report)."""
    entries: list[dict[str, Any]] = []
    failures = openbao_result.get("failures") or {}
    bao: dict[str, Any] = {
        "target": "openbao:openbao",
        "kind": "openbao",
        "name": "openbao",
        "what": "policies, AppRoles, tokens",
    }
    if openbao_result.get("failed"):
        bao.update(state="failed", reason=str(openbao_result.get("msg", "failed")))
    elif failures:
        bao.update(state="failed", reason="; ".join(f"{c}: {m}" for c, m in sorted(failures.items())))
    else:
        bao.update(state="enforced", changed=bool(openbao_result.get("changed")))
        bao["actions"] = {c: r.get("actions", []) for c, r in (openbao_result.get("cities") or {}).items()}
    entries.append(bao)
    entries.append(
        _combine(
            "province-hsm",
            [  # the province runs these tasks or fails its play: an empty result is a skipped task
                ("province KEK copies", province_result or {"skipped": True}),
                ("blacklist MACs", blacklist_result or {"skipped": True}),
            ],
            "city KEK copies destroyed, blacklist MACs",
        )
    )
    bl_version = int(blacklist_result.get("version") or 0)
    confirmations: dict[str, tuple[str, int]] = {}
    for host, results in sorted(nodes.items()):
        status = (city_statuses.get(host) or {}).get("status", "active")
        what = {
            "revoked": "keys and KEK destroyed in the city HSM",
            "suspended": "suspended: access cut in OpenBao, material kept",
            "active": f"SAM blacklist v{bl_version} confirmed" if bl_version else "nothing to do",
        }[status]
        entry = _combine(host, [("revoke", results.get("revoke")), ("blacklist", results.get("blacklist"))], what)
        if status == "active" and entry.get("destroyed"):
            entry["what"] = f"{what}; retired or revoked key versions destroyed"
        entries.append(entry)
        if status == "active" and bl_version:
            confirmations[host] = (entry["state"], int(entry.get("version") or 0))
    for host, result in sorted(stations.items()):
        entry = _combine(host, [("blacklist", result)], f"SAM blacklist v{bl_version} confirmed")
        entries.append(entry)
        if bl_version:
            confirmations[host] = (entry["state"], int(entry.get("version") or 0))
    for group, serials in sorted((blacklist_result.get("groups") or {}).items()):
        lacking = {h: s for h, (s, v) in confirmations.items() if v < bl_version}
        entry = {
            "target": f"sam_group:{group}",
            "kind": "sam_group",
            "name": group,
            "what": f"{len(serials)} SAM(s) on blacklist v{bl_version}",
            "serials": serials,
        }
        if blacklist_result.get("failed"):
            entry.update(state="failed", reason=str(blacklist_result.get("msg", "blacklist not published")))
        elif not lacking:
            entry.update(state="enforced", changed=bool(blacklist_result.get("changed")))
        else:
            state = "unreachable" if all(s == "unreachable" for s in lacking.values()) else "failed"
            entry.update(state=state, reason=f"not confirmed by {', '.join(sorted(lacking))}")
        entries.append(entry)
    return entries
