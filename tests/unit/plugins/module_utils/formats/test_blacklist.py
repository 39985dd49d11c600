# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The SAM blacklist document: who is listed, versioning, expiry."""

from __future__ import annotations

import datetime as _dt

import pytest
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import BlacklistError
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.blacklist import (
    body_bytes,
    check_fresh,
    entries_for,
    next_document,
    sam_groups,
)

from tests.support.blacklist_rows import CITIES, ROWS, statuses


def test_sams_listed_through_city_holder_and_their_own_status() -> None:
    entries = entries_for(
        ROWS,
        statuses(
            cities={"shantou": {"status": "revoked", "reason": "r", "date": "2026-11-24"}},
            holders={"gz-agent": {"status": "suspended", "reason": "audit", "date": "2026-11-20"}},
        ),
        CITIES,
    )
    by = {e["serial"]: (e["status"], e["cause"]) for e in entries}
    assert by == {
        "44050000000000000001": ("revoked", "city shantou"),
        "44010000000000000002": ("suspended", "holder gz-agent"),
        "44010000000000000003": ("revoked", "sam"),
    }
    assert sam_groups(entries) == {
        "440500/st-bus": ["44050000000000000001"],
        "440100/gz-agent": ["44010000000000000002"],
        "440100/gz-metro": ["44010000000000000003"],
    }


DAY = _dt.date(2026, 12, 2)


def test_version_rises_only_when_the_list_changes() -> None:
    first = next_document(None, [], "GD", today=DAY, validity_days=7)
    assert first["version"] == 1 and first["expires"] == "2026-12-09"
    assert next_document(dict(first, mac={}), [], "GD", today=DAY, validity_days=7) == first
    entries = entries_for(ROWS, statuses(), CITIES)
    assert next_document(first, entries, "GD", today=DAY, validity_days=7)["version"] == 2


@pytest.mark.parametrize(
    ("today", "validity"), [(DAY + _dt.timedelta(days=1), 7), (DAY, 3), (DAY - _dt.timedelta(days=1), 7)]
)
def test_a_new_day_or_period_renews_the_expiry_as_a_new_version(today: _dt.date, validity: int) -> None:
    first = next_document(None, [], "GD", today=DAY, validity_days=7)
    renewed = next_document(first, [], "GD", today=today, validity_days=validity)
    assert renewed["version"] == 2
    assert renewed["expires"] == (today + _dt.timedelta(days=validity)).isoformat()


def test_a_list_published_before_expiries_existed_is_reissued_with_one() -> None:
    legacy = {k: v for k, v in next_document(None, [], "GD", today=DAY, validity_days=7).items() if k != "expires"}
    assert next_document(legacy, [], "GD", today=DAY, validity_days=7)["version"] == 2


@pytest.mark.parametrize("validity", [0, -1, True, "7", 1.5])
def test_validity_must_be_whole_days(validity: object) -> None:
    with pytest.raises(BlacklistError, match="validity_days"):
        next_document(None, [], "GD", today=DAY, validity_days=validity)  # type: ignore[arg-type]


def test_expiry_is_under_the_body() -> None:
    doc = next_document(None, [], "GD", today=DAY, validity_days=7)
    assert b'"expires":"2026-12-09"' in body_bytes(doc)
    assert body_bytes(doc) != body_bytes(dict(doc, expires="2099-12-31"))


@pytest.mark.parametrize("offset", [0, 1, 30])
def test_expired_on_and_after_its_day(offset: int) -> None:
    doc = next_document(None, [], "GD", today=DAY, validity_days=7)
    assert check_fresh(doc, DAY + _dt.timedelta(days=6)) == _dt.date(2026, 12, 9)
    with pytest.raises(BlacklistError, match="OUT OF DATE"):
        check_fresh(doc, DAY + _dt.timedelta(days=7 + offset))


@pytest.mark.parametrize("expires", [None, "", "2026-12-9", "2026-12-09T00:00", "2026-13-01", 20261209, "never"])
def test_a_list_without_a_proper_expiry_is_never_fresh(expires: object) -> None:
    doc = next_document(None, [], "GD", today=DAY, validity_days=7)
    doc["expires"] = expires
    with pytest.raises(BlacklistError, match="no valid expiry"):
        check_fresh(doc, DAY)


def test_nodes_without_a_current_list_are_reported_out_of_date() -> None:
    from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.report import (
        build_report,
        collect,
        out_of_date,
        summary_text,
    )

    expired = "blacklist v5 expired on 2026-12-01 (today is 2026-12-02): OUT OF DATE - ...\n\x1b[2Jforged line"
    entries = collect(
        openbao_result={"statuses": {}},
        province_result={},
        blacklist_result={"version": 5, "expires": "2026-12-01", "entries": 0, "groups": {}},
        nodes={
            "guangzhou": {"revoke": {"skipped": True}, "blacklist": {"version": 5, "changed": True}},
            "shenzhen": {"revoke": {"skipped": True}, "blacklist": {"failed": True, "msg": expired}},
            "zhuhai": {"revoke": {"skipped": True}, "blacklist": {"version": 4}},
            "shantou": {"revoke": None, "blacklist": None},
        },
        stations={"sam-station-01": {"failed": True, "msg": expired}},
        city_statuses={},
    )
    stale = out_of_date(entries, 5)
    assert set(stale) == {"shenzhen", "zhuhai", "shantou", "sam-station-01"}
    assert "OUT OF DATE" in stale["shenzhen"] and stale["zhuhai"] == "holds v4, not v5"
    assert stale["shantou"].startswith("unreachable")
    report = build_report(
        entries,
        started_at="2026-12-02T00:00:00Z",
        finished_at="2026-12-02T00:01:00Z",
        statuses={},
        trigger="test",
        blacklist={"version": 5, "expires": "2026-12-01", "entries": 0, "out_of_date": stale},
    )
    text = summary_text(report)
    assert "SAM blacklist: version 5, expires 2026-12-01, 0 SAM(s)" in text
    assert "out of date (no valid, current SAM blacklist confirmed):" in text
    assert "\x1b" not in text and "\nforged line" not in text  # free text from a node cannot forge a line
