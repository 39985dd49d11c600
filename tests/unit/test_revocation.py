# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Revocation without the lab: the status model, request checks, report merging, HSM destruction on SoftHSM."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ansible_collections.tunion.keymgmt.plugins.module_utils import enforcement_report as er
from ansible_collections.tunion.keymgmt.plugins.module_utils import revocation as rv
from ansible_collections.tunion.keymgmt.plugins.module_utils.hsm import KeyPolicy, hsm_session, key_label
from hsm_helpers import SOFTHSM, USER_PIN, temp_token
from revocation_unit import isolated

WORLD = rv.Universe(
    cities={"guangzhou": "440100", "shantou": "440500"},
    holders={"gz-metro"},
    sams={"44010000000000000001"},
    key_versions={"purchase.v01"},
)


def test_statuses_parse_and_default_to_active() -> None:
    desired = rv.desired_statuses(
        {"cities": {"shantou": {"status": "revoked", "reason": "keys passed on", "date": "2026-11-24"}}}, WORLD
    )
    assert desired["cities"]["shantou"].status == "revoked"
    assert rv.city_status(desired, "guangzhou").status == "active"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"cities": {"atlantis": "active"}}, "unknown city 'atlantis'"),
        ({"cities": {"province": "active"}}, "province's own identity"),
        ({"cities": {"shantou": {"status": "revoked", "reason": "x"}}}, "needs a date"),
        ({"cities": {"shantou": {"status": "suspended"}}}, "needs a reason"),
        ({"cities": {"shantou": {"status": "gone", "reason": "x"}}}, "is not one of"),
        ({"holders": {"nobody": {"status": "revoked", "reason": "x", "date": "2026-01-01"}}}, "unknown holder"),
        ({"sams": {"FFFF": {"status": "revoked", "reason": "x", "date": "2026-01-01"}}}, "unknown SAM"),
        ({"planets": {}}, "unknown section"),
    ],
)
def test_bad_statuses_are_refused_with_every_error(raw: dict, message: str) -> None:
    with pytest.raises(rv.RevocationError, match=message) as info:
        rv.desired_statuses(raw, WORLD)
    assert "Nothing was changed" in str(info.value)


def test_recorded_status_stays_until_the_inventory_lifts_it() -> None:
    recorded = {"cities:shantou": {"status": "revoked", "reason": "r", "date": "2026-11-24", "source": "emergency"}}
    assert rv.desired_statuses({}, WORLD, recorded)["cities"]["shantou"].status == "revoked"
    older = {"cities": {"shantou": {"status": "active", "date": "2026-11-01"}}}
    assert rv.desired_statuses(older, WORLD, recorded)["cities"]["shantou"].status == "revoked"
    newer = {"cities": {"shantou": {"status": "active", "date": "2026-11-25"}}}
    assert rv.desired_statuses(newer, WORLD, recorded)["cities"]["shantou"].status == "active"


@pytest.mark.parametrize("name", ["province", "tunion-province", "province-admin", "province-hsm"])
def test_request_for_the_province_is_refused(name: str) -> None:
    with pytest.raises(rv.RevocationError, match="province's own identity"):
        rv.resolve_request(name, WORLD)


def test_request_resolves_kind_and_refuses_unknown() -> None:
    assert rv.resolve_request("shantou", WORLD) == "cities"
    assert rv.resolve_request("gz-metro", WORLD) == "holders"
    assert rv.resolve_request("44010000000000000001", WORLD) == "sams"
    with pytest.raises(rv.RevocationError, match="unknown holder 'atlantis'"):
        rv.resolve_request("atlantis", WORLD)


def test_status_differs() -> None:
    assert not rv.status_differs(None, rv.Status())
    assert rv.status_differs(None, rv.Status("revoked", "r", "2026-01-01"))
    recorded = {"status": "revoked", "reason": "r", "date": "2026-01-01", "source": "emergency"}
    assert not rv.status_differs(recorded, rv.Status("revoked", "r", "2026-01-01", "inventory"))
    reinstated = {"status": "active", "reason": "audit closed", "date": "2026-02-01", "source": "inventory"}
    assert not rv.status_differs(reinstated, rv.Status())  # the entry left the inventory: nothing to record


def test_unreachable_node_is_pending_then_enforced_and_the_report_says_so(tmp_path: Path) -> None:
    first = er.collect(
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
    entries, state = er.merge(None, first, "2026-11-24T10:00:00+00:00")
    states = {e["target"]: e["state"] for e in entries}
    assert states == {
        "openbao:openbao": "enforced",
        "node:province-hsm": "enforced",
        "node:shantou": "unreachable",
        "node:guangzhou": "enforced",
        "sam_group:440500/bus": "enforced",
    }
    second = [
        er.node_entry("shantou", {"changed": True, "destroyed": [{"label": "recharge.load.v01.city-440500"}]}),
    ]
    entries2, state2 = er.merge(state, second, "2026-11-24T11:00:00+00:00")
    shantou = next(e for e in entries2 if e["target"] == "node:shantou")
    assert shantou["state"] == "enforced"
    assert shantou["after"] == "unreachable since 2026-11-24T10:00:00+00:00"
    assert state2["parts"]["node:shantou"]["state"] == "enforced"
    report = er.build_report(
        entries2, started_at="a", finished_at="2026-11-24T11:00:00+00:00", statuses={}, trigger="test"
    )
    paths = er.write_report(report, str(tmp_path))
    text = Path(paths["text"]).read_text()
    assert "was unreachable since 2026-11-24T10:00:00+00:00" in text
    assert "recharge.load.v01.city-440500" in text
    assert json.loads((tmp_path / "latest.json").read_text())["complete"] is True


def test_pending_part_not_in_this_run_is_carried_over() -> None:
    state = {"parts": {"node:shantou": {"state": "unreachable", "at": "t0", "since": "t0"}}}
    entries, new_state = er.merge(state, [], "t1")
    assert entries[0]["target"] == "node:shantou" and entries[0]["carried"]
    assert new_state["parts"]["node:shantou"]["state"] == "unreachable"


def _destroy_holder_objects_on_softhsm_body(tmp_path: Path) -> None:
    del tmp_path
    with temp_token("rv"), hsm_session(SOFTHSM, "rv", USER_PIN) as hsm:
        for holder in ("city-440500", "city-440100"):
            for key_type in ("load", "kek"):
                hsm.generate_secret(
                    "AES-256",
                    key_label("internal" if key_type == "kek" else "recharge", key_type, 1, holder),
                    None,
                    KeyPolicy(usage="encrypt", extractable=False),
                )
        planned = rv.destroy_holder_objects(hsm, "city-440500", check_mode=True)
        assert {d["label"] for d in planned} == {"recharge.load.v01.city-440500", "internal.kek.v01.city-440500"}
        assert all(len(d["kcv"]) == 6 for d in planned)
        assert len(rv.holder_objects(hsm, "city-440500")) == 2  # check mode destroyed nothing
        only_kek = rv.destroy_holder_objects(hsm, "city-440500", key_types=["kek"], check_mode=False)
        assert [d["label"] for d in only_kek] == ["internal.kek.v01.city-440500"]
        rv.destroy_holder_objects(hsm, "city-440500", check_mode=False)
        assert rv.holder_objects(hsm, "city-440500") == []
        assert len(rv.holder_objects(hsm, "city-440100")) == 2
        assert rv.destroy_holder_objects(hsm, "city-440500", check_mode=False) == []  # idempotent


def test_destroy_holder_objects_on_softhsm(tmp_path: Path) -> None:
    isolated(_destroy_holder_objects_on_softhsm_body, tmp_path)


def test_rotation_plan_for_shared_keys_only() -> None:
    from ansible_collections.tunion.keymgmt.plugins.module_utils import revocation_rotation as rot

    catalogue = [
        {"name": "purchase", "scope": "city", "holders": ["hsm", "sam"], "versions": [{"version": 1}, {"version": 2}]},
        {
            "name": "psam_shared",
            "scope": "province",
            "holders": ["hsm", "sam"],
            "versions": [{"version": 1}, {"version": 2}],
        },
        {"name": "load_shared", "shared": True, "holders": ["hsm"], "versions": [{"version": 1}]},
    ]
    grants = {
        c: [
            {"key_type": "purchase", "version": 1},
            {"key_type": "psam_shared", "version": 1},
            {"key_type": "load_shared", "version": 1},
        ]
        for c in ("shantou", "guangzhou", "zhuhai")
    }
    statuses = {
        "shantou": {"status": "revoked", "date": "2026-11-24"},
        "guangzhou": {"status": "active"},
        "zhuhai": {"status": "suspended"},
    }
    rows = [
        {"serial": "A", "city_code": "440100", "status": "active"},
        {"serial": "B", "city_code": "440500", "status": "active"},
    ]
    result = rot.plan(
        catalogue,
        grants,
        statuses,
        grace_days=30,
        sam_rows=rows,
        city_codes={"guangzhou": "440100", "shantou": "440500"},
    )
    assert [(r["key_type"], r["old_version"], r["new_version"]) for r in result["rotations"]] == [("psam_shared", 1, 2)]
    assert result["rotations"][0]["retire_after"] == "2026-12-24"
    assert result["new_grants"] == {"guangzhou": [{"key_type": "psam_shared", "version": 2}]}
    assert result["missing_versions"] == ["load_shared.v01: the catalogue declares no newer version - add one"]
    assert result["reload_sams"] == ["A"]
    assert result["retired"] == []  # grace not over on 2026-12-01
    later = rot.plan(catalogue, grants, statuses, grace_days=30, today="2026-12-24")
    assert later["retired"] == ["psam_shared.v01"] and later["destroy_versions"] == ["psam_shared.v01"]


SHARED_CATALOGUE = [
    {"name": "load", "scope": "city", "versions": [{"version": 1}, {"version": 2}]},
    {
        "name": "load_auth",
        "scope": "province",
        "origin": "province",
        "holders": ["hsm"],
        "versions": [{"version": 1}, {"version": 2, "standby": True}, {"version": 3, "standby": True}],
    },
]


def _grants(*cities: str) -> dict[str, list[dict]]:
    return {c: [{"key_type": "load", "version": 1}, {"key_type": "load_auth", "version": 1}] for c in cities}


def test_rotation_is_recorded_and_survives_reinstatement() -> None:
    from ansible_collections.tunion.keymgmt.plugins.module_utils import revocation_rotation as rot

    grants = _grants("shantou", "guangzhou")
    revoked = {"shantou": {"status": "revoked", "date": "2026-11-24"}, "guangzhou": {"status": "active"}}
    first = rot.plan(SHARED_CATALOGUE, grants, revoked, grace_days=30, today="2026-11-24")
    (rotation,) = first["rotations"]
    assert (rotation["old_version"], rotation["new_version"], rotation["because"]) == (1, 2, ["shantou"])
    assert first["issue"] == [{"key": "load_auth", "version": 2}]
    targets = [{"city": c, "city_code": "x", "grants": g} for c, g in grants.items()]
    during = rot.effective_targets(targets, first, ["guangzhou"])
    assert during == [
        {
            "city": "guangzhou",
            "city_code": "x",
            "grants": [
                {"key_type": "load", "version": 1},
                {"key_type": "load_auth", "version": 1},
                {"key_type": "load_auth", "version": 2},
            ],
        }
    ]
    # the city is reinstated: the recorded rotation stays, and after the grace period v1 is gone for everyone
    record = {k: rotation[k] for k in ("key_type", "old_version", "new_version", "since", "retire_after", "because")}
    back = {"shantou": {"status": "active"}, "guangzhou": {"status": "active"}}
    after = rot.plan(SHARED_CATALOGUE, grants, back, grace_days=30, recorded=[record], today="2026-12-24")
    assert after["retired"] == ["load_auth.v01"]
    for target in rot.effective_targets(targets, after, ["shantou", "guangzhou"]):
        assert target["grants"] == [{"key_type": "load", "version": 1}, {"key_type": "load_auth", "version": 2}]


def test_second_revocation_after_a_rotation_needs_the_next_version() -> None:
    from ansible_collections.tunion.keymgmt.plugins.module_utils import revocation_rotation as rot

    record = {
        "key_type": "load_auth",
        "old_version": 1,
        "new_version": 2,
        "since": "2026-11-24",
        "retire_after": "2026-12-24",
        "because": ["shantou"],
    }
    statuses = {
        "shantou": {"status": "revoked", "date": "2026-11-24"},
        "zhuhai": {"status": "revoked", "date": "2026-12-30"},
        "guangzhou": {"status": "active"},
    }
    grants = _grants("shantou", "zhuhai", "guangzhou")
    result = rot.plan(SHARED_CATALOGUE, grants, statuses, grace_days=30, recorded=[record], today="2026-12-30")
    pairs = [(r["old_version"], r["new_version"], r["because"]) for r in result["rotations"]]
    assert pairs == [(1, 2, ["shantou", "zhuhai"]), (2, 3, ["zhuhai"])]  # zhuhai held v2 too
    grants_now = rot.effective_targets([{"city": "guangzhou", "grants": grants["guangzhou"]}], result, ["guangzhou"])
    assert [g["version"] for g in grants_now[0]["grants"] if g["key_type"] == "load_auth"] == [2, 3]


def test_revoked_key_version_is_taken_from_every_grant() -> None:
    from ansible_collections.tunion.keymgmt.plugins.module_utils import revocation_rotation as rot

    grants = _grants("guangzhou")
    result = rot.plan(
        SHARED_CATALOGUE,
        grants,
        {"guangzhou": {"status": "active"}},
        grace_days=30,
        key_versions={"load.v01": {"status": "revoked"}, "load_auth.v01": {"status": "suspended"}},
    )
    assert result["destroy_versions"] == ["load.v01"] and result["rotations"] == []
    (target,) = rot.effective_targets([{"city": "guangzhou", "grants": grants["guangzhou"]}], result, ["guangzhou"])
    assert target["grants"] == [{"key_type": "load_auth", "version": 1}]
    # a revoked version of a shared key: everyone moves to the next version at once
    shared = rot.plan(
        SHARED_CATALOGUE,
        grants,
        {"guangzhou": {"status": "active"}},
        grace_days=30,
        key_versions={"load_auth.v01": {"status": "revoked", "date": "2026-11-24"}},
        today="2026-11-24",
    )
    assert [(r["old_version"], r["new_version"]) for r in shared["rotations"]] == [(1, 2)]
    assert shared["destroy_versions"] == ["load_auth.v01"]
    (target,) = rot.effective_targets([{"city": "guangzhou", "grants": grants["guangzhou"]}], shared, ["guangzhou"])
    assert target["grants"] == [{"key_type": "load", "version": 1}, {"key_type": "load_auth", "version": 2}]


def test_a_bad_day_is_refused() -> None:
    from ansible_collections.tunion.keymgmt.plugins.module_utils import revocation_rotation as rot

    with pytest.raises(ValueError, match="is not a day"):
        rot.parse_day("24/11/2026")
