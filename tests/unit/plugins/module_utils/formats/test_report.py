# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The enforcement report: merging runs, unreachable parts carried over, the readable text."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.enforcement import write_report
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.report import (
    build_report,
    collect,
    merge,
    node_entry,
    summary_text,
)


def test_unreachable_node_is_pending_then_enforced_and_the_report_says_so(tmp_path: Path) -> None:
    first = collect(
        openbao_result={"changed": True, "cities": {"shantou": {"actions": ["policy city-shantou removed"]}}},
        province_result={"changed": True, "destroyed": []},
        blacklist_result={"changed": True, "version": 2, "groups": {"440500/bus": ["44050000000000000001"]}},
        nodes={
            "shantou": {"revoke": {"unreachable": True, "msg": "ssh: connect refused"}, "blacklist": {"skipped": True}},
            "guangzhou": {"revoke": {"skipped": True}, "blacklist": {"changed": True, "version": 2}},
        },
        stations={},
        city_statuses={"shantou": {"status": "revoked"}, "guangzhou": {"status": "active"}},
    )
    entries, state = merge(None, first, "2026-11-24T10:00:00+00:00")
    states = {e["target"]: e["state"] for e in entries}
    assert states == {
        "openbao:openbao": "enforced",
        "node:province-hsm": "enforced",
        "node:shantou": "unreachable",
        "node:guangzhou": "enforced",
        "sam_group:440500/bus": "enforced",
    }
    second = [
        node_entry("shantou", {"changed": True, "destroyed": [{"label": "recharge.load.v01.city-440500"}]}),
    ]
    entries2, state2 = merge(state, second, "2026-11-24T11:00:00+00:00")
    shantou = next(e for e in entries2 if e["target"] == "node:shantou")
    assert shantou["state"] == "enforced"
    assert shantou["after"] == "unreachable since 2026-11-24T10:00:00+00:00"
    assert state2["parts"]["node:shantou"]["state"] == "enforced"
    report = build_report(
        entries2, started_at="a", finished_at="2026-11-24T11:00:00+00:00", statuses={}, trigger="test"
    )
    paths = write_report(report, str(tmp_path))
    text = Path(paths["text"]).read_text()
    assert "was unreachable since 2026-11-24T10:00:00+00:00" in text
    assert "recharge.load.v01.city-440500" in text
    assert json.loads((tmp_path / "latest.json").read_text())["complete"] is True


def test_pending_part_not_in_this_run_is_carried_over() -> None:
    state = {"parts": {"node:shantou": {"state": "unreachable", "at": "t0", "since": "t0"}}}
    entries, new_state = merge(state, [], "t1")
    assert entries[0]["target"] == "node:shantou" and entries[0]["carried"]
    assert new_state["parts"]["node:shantou"]["state"] == "unreachable"


def test_pending_sam_group_no_longer_listed_is_superseded_not_carried() -> None:
    state = {
        "parts": {
            "sam_group:440400/zhuhai-bus": {"state": "failed", "at": "t0", "since": "t0", "reason": "not confirmed"},
            "node:shantou": {"state": "unreachable", "at": "t0", "since": "t0"},
        }
    }
    entries, new_state = merge(state, [], "t1", complete_kinds=frozenset({"sam_group"}))
    by_target = {e["target"]: e for e in entries}
    group = by_target["sam_group:440400/zhuhai-bus"]
    assert group["state"] == "enforced" and group["after"] == "failed since t0" and "carried" not in group
    assert "sam_group:440400/zhuhai-bus" not in new_state["parts"]
    # a node is never superseded: it stays pending until a run reaches it
    assert by_target["node:shantou"]["carried"] and new_state["parts"]["node:shantou"]["state"] == "unreachable"


def test_pending_sam_group_is_carried_when_no_blacklist_was_published() -> None:
    state = {"parts": {"sam_group:440400/zhuhai-bus": {"state": "failed", "at": "t0", "since": "t0"}}}
    entries, new_state = merge(state, [], "t1")
    assert entries[0]["carried"] and new_state["parts"]["sam_group:440400/zhuhai-bus"]["state"] == "failed"


ATTACKER_REASONS = [
    "stolen\n  node     guangzhou                    enforced    at 2026-11-24T10:00:00+00:00",
    "line one\rOVERWRITTEN",
    "\x1b[2Jscreen cleared",
    "\x1b]0;fake title\x07",
    "nul\x00byte",
    "para\u2028graph\u2029end",
    "\u202edecnerofne",
    "tab\there",
]


def test_free_text_cannot_forge_lines_or_drive_the_terminal() -> None:
    statuses = {
        "cities": {
            f"city{i}": {"status": "revoked", "date": "2026-11-24", "reason": r} for i, r in enumerate(ATTACKER_REASONS)
        }
    }
    chinese = "密钥泄露，已报告（第十七条）"
    statuses["cities"]["shenzhen"] = {"status": "revoked", "date": "2026-11-24", "reason": chinese}
    entries = [
        {"target": f"node:n{i}", "kind": "node", "name": f"n{i}\n", "state": "failed", "reason": r, "what": r}
        for i, r in enumerate(ATTACKER_REASONS)
    ]
    report = build_report(entries, started_at="a", finished_at="b", statuses=statuses, trigger="test\nforged")
    text = summary_text(report)
    clean = summary_text(
        build_report(
            [dict(e, name=f"n{i}", reason="x", what="x") for i, e in enumerate(entries)],
            started_at="a",
            finished_at="b",
            statuses={"cities": {k: dict(v, reason="x") for k, v in statuses["cities"].items()}},
            trigger="test",
        )
    )
    assert len(text.splitlines()) == len(clean.splitlines())
    assert text.count("\n") == clean.count("\n")
    bad = [c for c in text if c != "\n" and unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")]
    assert bad == []
    assert "\\x1b[2J" in text and "\\u202e" in text and "\\n  node" in text and "\\x00" in text
    assert chinese in text
    assert not any(line.startswith("  node     guangzhou") for line in text.splitlines()), "a forged line"


@pytest.mark.parametrize("result", [None, {}])
def test_a_node_with_no_result_is_not_reported_enforced(result: dict | None) -> None:
    # dropped from the play (unreachable at the first ping, or failed earlier): it never ran enforcement
    entry = node_entry("maoming", result)
    assert entry["state"] == "unreachable" and "no result" in entry["reason"]


def test_a_skipped_task_is_nothing_to_enforce() -> None:
    assert node_entry("zhuhai", {"skipped": True, "changed": False})["state"] == "enforced"
