# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Statuses without the lab: the status model and request checks."""

from __future__ import annotations

import pytest
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import RevocationError
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.status import (
    Status,
    Universe,
    city_status,
    desired_statuses,
    resolve_request,
    status_differs,
)

WORLD = Universe(
    cities={"guangzhou": "440100", "shantou": "440500"},
    holders={"gz-metro"},
    sams={"44010000000000000001"},
    key_versions={"purchase.v01"},
)


def test_statuses_parse_and_default_to_active() -> None:
    desired = desired_statuses(
        {"cities": {"shantou": {"status": "revoked", "reason": "keys passed on", "date": "2026-11-24"}}}, WORLD
    )
    assert desired["cities"]["shantou"].status == "revoked"
    assert city_status(desired, "guangzhou").status == "active"


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
    with pytest.raises(RevocationError, match=message) as info:
        desired_statuses(raw, WORLD)
    assert "Nothing was changed" in str(info.value)


def test_recorded_status_stays_until_the_inventory_lifts_it() -> None:
    recorded = {"cities:shantou": {"status": "revoked", "reason": "r", "date": "2026-11-24", "source": "emergency"}}
    assert desired_statuses({}, WORLD, recorded)["cities"]["shantou"].status == "revoked"
    older = {"cities": {"shantou": {"status": "active", "date": "2026-11-01"}}}
    assert desired_statuses(older, WORLD, recorded)["cities"]["shantou"].status == "revoked"
    newer = {"cities": {"shantou": {"status": "active", "date": "2026-11-25"}}}
    assert desired_statuses(newer, WORLD, recorded)["cities"]["shantou"].status == "active"


@pytest.mark.parametrize("name", ["province", "tunion-province", "province-admin", "province-hsm"])
def test_request_for_the_province_is_refused(name: str) -> None:
    with pytest.raises(RevocationError, match="province's own identity"):
        resolve_request(name, WORLD)


def test_request_resolves_kind_and_refuses_unknown() -> None:
    assert resolve_request("shantou", WORLD) == "cities"
    assert resolve_request("gz-metro", WORLD) == "holders"
    assert resolve_request("44010000000000000001", WORLD) == "sams"
    with pytest.raises(RevocationError, match="unknown holder 'atlantis'"):
        resolve_request("atlantis", WORLD)


def test_status_differs() -> None:
    assert not status_differs(None, Status())
    assert status_differs(None, Status("revoked", "r", "2026-01-01"))
    recorded = {"status": "revoked", "reason": "r", "date": "2026-01-01", "source": "emergency"}
    assert not status_differs(recorded, Status("revoked", "r", "2026-01-01", "inventory"))
    reinstated = {"status": "active", "reason": "audit closed", "date": "2026-02-01", "source": "inventory"}
    assert not status_differs(reinstated, Status())  # the entry left the inventory: nothing to record
