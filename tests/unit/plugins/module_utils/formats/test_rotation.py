# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rotation plan: shared keys only, recorded rotations, the next version."""

from __future__ import annotations

from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.rotation import effective_targets, plan


def test_rotation_plan_for_shared_keys_only() -> None:

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
    result = plan(
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
    later = plan(catalogue, grants, statuses, grace_days=30, today="2026-12-24")
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

    grants = _grants("shantou", "guangzhou")
    revoked = {"shantou": {"status": "revoked", "date": "2026-11-24"}, "guangzhou": {"status": "active"}}
    first = plan(SHARED_CATALOGUE, grants, revoked, grace_days=30, today="2026-11-24")
    (rotation,) = first["rotations"]
    assert (rotation["old_version"], rotation["new_version"], rotation["because"]) == (1, 2, ["shantou"])
    assert first["issue"] == [{"key": "load_auth", "version": 2}]
    targets = [{"city": c, "city_code": "x", "grants": g} for c, g in grants.items()]
    during = effective_targets(targets, first, ["guangzhou"])
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
    after = plan(SHARED_CATALOGUE, grants, back, grace_days=30, recorded=[record], today="2026-12-24")
    assert after["retired"] == ["load_auth.v01"]
    for target in effective_targets(targets, after, ["shantou", "guangzhou"]):
        assert target["grants"] == [{"key_type": "load", "version": 1}, {"key_type": "load_auth", "version": 2}]


def test_second_revocation_after_a_rotation_needs_the_next_version() -> None:

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
    result = plan(SHARED_CATALOGUE, grants, statuses, grace_days=30, recorded=[record], today="2026-12-30")
    pairs = [(r["old_version"], r["new_version"], r["because"]) for r in result["rotations"]]
    assert pairs == [(1, 2, ["shantou", "zhuhai"]), (2, 3, ["zhuhai"])]  # zhuhai held v2 too
    grants_now = effective_targets([{"city": "guangzhou", "grants": grants["guangzhou"]}], result, ["guangzhou"])
    assert [g["version"] for g in grants_now[0]["grants"] if g["key_type"] == "load_auth"] == [2, 3]


def test_revoked_key_version_is_taken_from_every_grant() -> None:

    grants = _grants("guangzhou")
    result = plan(
        SHARED_CATALOGUE,
        grants,
        {"guangzhou": {"status": "active"}},
        grace_days=30,
        key_versions={"load.v01": {"status": "revoked"}, "load_auth.v01": {"status": "suspended"}},
    )
    assert result["destroy_versions"] == ["load.v01"] and result["rotations"] == []
    (target,) = effective_targets([{"city": "guangzhou", "grants": grants["guangzhou"]}], result, ["guangzhou"])
    assert target["grants"] == [{"key_type": "load_auth", "version": 1}]
    # a revoked version of a shared key: everyone moves to the next version at once
    shared = plan(
        SHARED_CATALOGUE,
        grants,
        {"guangzhou": {"status": "active"}},
        grace_days=30,
        key_versions={"load_auth.v01": {"status": "revoked", "date": "2026-11-24"}},
        today="2026-11-24",
    )
    assert [(r["old_version"], r["new_version"]) for r in shared["rotations"]] == [(1, 2)]
    assert shared["destroy_versions"] == ["load_auth.v01"]
    (target,) = effective_targets([{"city": "guangzhou", "grants": grants["guangzhou"]}], shared, ["guangzhou"])
    assert target["grants"] == [{"key_type": "load", "version": 1}, {"key_type": "load_auth", "version": 2}]


def test_reinstated_city_never_gets_the_version_rotated_away_because_of_it() -> None:
    """Issue 10 item 14: reinstated while the old version is still in its grace period, the city that caused the
    rotation gets the new version only; the others keep both until the grace period ends. Swept over every day from
    the revocation to past the end of the grace period."""
    import datetime as dt

    grants = _grants("shantou", "guangzhou")
    targets = [{"city": c, "city_code": "x", "grants": g} for c, g in grants.items()]
    first = plan(SHARED_CATALOGUE, grants, {"shantou": {"status": "revoked", "date": "2026-11-24"}}, grace_days=30)
    (rotation,) = first["rotations"]
    record = {k: rotation[k] for k in ("key_type", "old_version", "new_version", "since", "retire_after", "because")}
    back = {"shantou": {"status": "active", "date": "2026-11-25"}}
    for offset in range(0, 35):
        day = (dt.date(2026, 11, 24) + dt.timedelta(days=offset)).isoformat()
        now = plan(SHARED_CATALOGUE, grants, back, grace_days=30, recorded=[record], today=day)
        by_city = {t["city"]: t["grants"] for t in effective_targets(targets, now, ["shantou", "guangzhou"])}
        assert {"key_type": "load_auth", "version": 1} not in by_city["shantou"], day
        assert {"key_type": "load_auth", "version": 2} in by_city["shantou"], day
        in_grace = day < record["retire_after"]
        assert ({"key_type": "load_auth", "version": 1} in by_city["guangzhou"]) == in_grace, day
