# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The SAM blacklist in the HSM: MACs computed and checked in SoftHSM, refusals, install."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import BlacklistError
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.names import key_label
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.blacklist import install, sign, verify
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.distribution.keys import kek_policy
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.blacklist import entries_for, next_document
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import hsm_session

from tests.support.blacklist_rows import CITIES, ROWS, statuses
from tests.support.isolated import isolated
from tunion_lab.scratch_token import SOFTHSM, USER_PIN, temp_token


def _macs_computed_and_checked_in_the_hsm_body(tmp_path: Path) -> None:
    with temp_token("bl"), hsm_session(SOFTHSM, "bl", USER_PIN) as hsm:
        hsm.generate_secret("AES-256", key_label("internal", "kek", 1, "city-440100"), None, kek_policy(province=False))
        doc = sign(hsm, next_document(None, entries_for(ROWS, statuses(), CITIES), "GD"), ["440100"], create_key=True)
        assert set(doc["mac"]["cities"]) == {"440100"}
        verify(hsm, doc, city_code="440100")
        verify(hsm, doc, city_code=None)
        tampered = copy.deepcopy(doc)
        tampered["entries"] = []
        with pytest.raises(BlacklistError, match="digest"):
            verify(hsm, tampered, city_code="440100")
        forged = copy.deepcopy(doc)
        forged["mac"]["cities"]["440100"]["cmac"] = "00" * 16
        with pytest.raises(BlacklistError, match="MAC check failed"):
            verify(hsm, forged, city_code="440100")
        with pytest.raises(BlacklistError, match="no MAC for city 440500"):
            verify(hsm, doc, city_code="440500")
        path = str(tmp_path / "bl.json")
        assert install(path, doc, check_mode=False) is True
        assert install(path, doc, check_mode=False) is False
        older = dict(doc, version=0)
        with pytest.raises(BlacklistError, match="refusing to go back"):
            install(path, older, check_mode=False)


def test_macs_computed_and_checked_in_the_hsm(tmp_path: Path) -> None:
    isolated(_macs_computed_and_checked_in_the_hsm_body, tmp_path)
