# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The SAM blacklist without the lab: who is listed, versioning, MACs in SoftHSM, refusals."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ansible_collections.tunion.keymgmt.plugins.module_utils import blacklist as bl
from ansible_collections.tunion.keymgmt.plugins.module_utils.distribution import kek_policy
from ansible_collections.tunion.keymgmt.plugins.module_utils.hsm import hsm_session, key_label
from hsm_helpers import SOFTHSM, USER_PIN, temp_token
from revocation_unit import isolated

CITIES = {"guangzhou": "440100", "shantou": "440500"}
ROWS = [
    {"serial": "44050000000000000001", "city_code": "440500", "holder": "st-bus", "status": "active"},
    {"serial": "44010000000000000001", "city_code": "440100", "holder": "gz-metro", "status": "active"},
    {"serial": "44010000000000000002", "city_code": "440100", "holder": "gz-agent", "status": "active"},
    {"serial": "44010000000000000003", "city_code": "440100", "holder": "gz-metro", "status": "revoked"},
]


def statuses(**kinds: dict) -> dict:
    base = {"cities": {c: {"status": "active"} for c in CITIES}, "holders": {}, "sams": {}}
    for kind, names in kinds.items():
        base[kind].update(names)
    return base


def test_sams_listed_through_city_holder_and_their_own_status() -> None:
    entries = bl.entries_for(
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
    assert bl.sam_groups(entries) == {
        "440500/st-bus": ["44050000000000000001"],
        "440100/gz-agent": ["44010000000000000002"],
        "440100/gz-metro": ["44010000000000000003"],
    }


def test_version_rises_only_when_the_list_changes() -> None:
    first = bl.next_document(None, [], "GD")
    assert first["version"] == 1
    assert bl.next_document(dict(first, mac={}), [], "GD") == first
    entries = bl.entries_for(ROWS, statuses(), CITIES)
    assert bl.next_document(first, entries, "GD")["version"] == 2


def _macs_computed_and_checked_in_the_hsm_body(tmp_path: Path) -> None:
    with temp_token("bl"), hsm_session(SOFTHSM, "bl", USER_PIN) as hsm:
        hsm.generate_secret("AES-256", key_label("internal", "kek", 1, "city-440100"), None, kek_policy(province=False))
        doc = bl.sign(
            hsm, bl.next_document(None, bl.entries_for(ROWS, statuses(), CITIES), "GD"), ["440100"], create_key=True
        )
        assert set(doc["mac"]["cities"]) == {"440100"}
        bl.verify(hsm, doc, city_code="440100")
        bl.verify(hsm, doc, city_code=None)
        tampered = copy.deepcopy(doc)
        tampered["entries"] = []
        with pytest.raises(bl.BlacklistError, match="digest"):
            bl.verify(hsm, tampered, city_code="440100")
        forged = copy.deepcopy(doc)
        forged["mac"]["cities"]["440100"]["cmac"] = "00" * 16
        with pytest.raises(bl.BlacklistError, match="MAC check failed"):
            bl.verify(hsm, forged, city_code="440100")
        with pytest.raises(bl.BlacklistError, match="no MAC for city 440500"):
            bl.verify(hsm, doc, city_code="440500")
        path = str(tmp_path / "bl.json")
        assert bl.install(path, doc, check_mode=False) is True
        assert bl.install(path, doc, check_mode=False) is False
        older = dict(doc, version=0)
        with pytest.raises(bl.BlacklistError, match="refusing to go back"):
            bl.install(path, older, check_mode=False)


def test_macs_computed_and_checked_in_the_hsm(tmp_path: Path) -> None:
    isolated(_macs_computed_and_checked_in_the_hsm_body, tmp_path)
