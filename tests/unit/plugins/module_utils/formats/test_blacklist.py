# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The SAM blacklist document: who is listed, versioning."""

from __future__ import annotations

from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.blacklist import (
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


def test_version_rises_only_when_the_list_changes() -> None:
    first = next_document(None, [], "GD")
    assert first["version"] == 1
    assert next_document(dict(first, mac={}), [], "GD") == first
    entries = entries_for(ROWS, statuses(), CITIES)
    assert next_document(first, entries, "GD")["version"] == 2
