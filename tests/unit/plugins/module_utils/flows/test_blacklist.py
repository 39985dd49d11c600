# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The SAM blacklist in the HSM: MACs computed and checked in SoftHSM, refusals, install."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from ansible_collections.tunion.keymgmt.plugins.module_utils import blacklist as bl
from ansible_collections.tunion.keymgmt.plugins.module_utils.distribution import kek_policy
from ansible_collections.tunion.keymgmt.plugins.module_utils.hsm import hsm_session, key_label

from tests.support.blacklist_rows import CITIES, ROWS, statuses
from tests.support.isolated import isolated
from tunion_lab.scratch_token import SOFTHSM, USER_PIN, temp_token


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
