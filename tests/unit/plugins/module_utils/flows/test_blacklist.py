# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The SAM blacklist in the HSM: MACs computed and checked in SoftHSM, refusals, install."""

from __future__ import annotations

import copy
import datetime as _dt
import json
import os
from pathlib import Path

import pytest
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import BlacklistError
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.names import key_label
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.blacklist import (
    RECORD_LABEL,
    highest_accepted,
    install,
    sign,
    station_list,
    verify,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.distribution.keys import kek_policy
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.blacklist import entries_for, next_document
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.data_object import write_data
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import hsm_session

from tests.support.blacklist_rows import CITIES, ROWS, statuses
from tests.support.isolated import isolated
from tunion_lab.scratch_token import SOFTHSM, USER_PIN, temp_token

DAY = _dt.date(2026, 12, 2)


def _doc(previous: dict | None = None, *, day: _dt.date = DAY) -> dict:
    return next_document(previous, entries_for(ROWS, statuses(), CITIES), "GD", today=day, validity_days=7)


def _macs_computed_and_checked_in_the_hsm_body(tmp_path: Path) -> None:
    with temp_token("bl"), hsm_session(SOFTHSM, "bl", USER_PIN) as hsm:
        hsm.generate_secret("AES-256", key_label("internal", "kek", 1, "city-440100"), None, kek_policy(province=False))
        doc = sign(hsm, _doc(), ["440100"], create_key=True)
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
        assert install(hsm, path, doc, today=DAY, check_mode=False) == (True, 0)
        assert install(hsm, path, doc, today=DAY, check_mode=False) == (False, 1)
        older = dict(doc, version=0)
        with pytest.raises(BlacklistError, match="older than v1"):
            install(hsm, path, older, today=DAY, check_mode=False)


def test_macs_computed_and_checked_in_the_hsm(tmp_path: Path) -> None:
    isolated(_macs_computed_and_checked_in_the_hsm_body, tmp_path)


def _rollback_refused_after_the_file_is_deleted_body(tmp_path: Path) -> None:
    with temp_token("bl"), hsm_session(SOFTHSM, "bl", USER_PIN) as hsm:
        hsm.generate_secret("AES-256", key_label("internal", "kek", 1, "city-440100"), None, kek_policy(province=False))
        v1 = sign(hsm, _doc(), ["440100"], create_key=True)
        v2 = sign(hsm, _doc(v1, day=DAY + _dt.timedelta(days=1)), ["440100"], create_key=True)
        assert v2["version"] == 2
        path = tmp_path / "current.json"
        # check mode writes neither the file nor the record
        assert install(hsm, str(path), v1, today=DAY, check_mode=True) == (True, 0)
        assert not path.exists() and highest_accepted(hsm) == 0
        install(hsm, str(path), v1, today=DAY, check_mode=False)
        install(hsm, str(path), v2, today=DAY, check_mode=False)
        assert highest_accepted(hsm) == 2
        os.remove(path)  # the file deleted: the token still remembers v2
        with pytest.raises(BlacklistError, match="older than v2"):
            install(hsm, str(path), v1, today=DAY, check_mode=False)
        assert not path.exists()
        path.write_text(json.dumps(v1))  # ... and with the genuine older file put back in its place
        with pytest.raises(BlacklistError, match="older than v2"):
            install(hsm, str(path), v1, today=DAY, check_mode=False)
        # the same version again restores the deleted file
        assert install(hsm, str(path), v2, today=DAY, check_mode=False) == (True, 2)
        assert path.exists()
        # an expired list is never installed, even the newest
        with pytest.raises(BlacklistError, match="OUT OF DATE"):
            install(hsm, str(tmp_path / "other.json"), v2, today=DAY + _dt.timedelta(days=8), check_mode=False)
        # a damaged record fails closed
        write_data(hsm, RECORD_LABEL, b"not json")
        with pytest.raises(BlacklistError, match="damaged"):
            install(hsm, str(path), v2, today=DAY, check_mode=False)


def test_rollback_refused_after_the_file_is_deleted(tmp_path: Path) -> None:
    isolated(_rollback_refused_after_the_file_is_deleted_body, tmp_path)


def _station_list_fails_closed_body(tmp_path: Path) -> None:
    with temp_token("bl"), hsm_session(SOFTHSM, "bl", USER_PIN) as hsm:
        v1 = sign(hsm, _doc(), [], create_key=True)
        v2 = sign(hsm, _doc(v1, day=DAY + _dt.timedelta(days=1)), [], create_key=True)
        path = tmp_path / "current.json"
        with pytest.raises(BlacklistError, match="no SAM blacklist at"):
            station_list(hsm, str(path), today=DAY)
        install(hsm, str(path), v2, today=DAY, check_mode=False)
        assert station_list(hsm, str(path), today=DAY)["version"] == 2
        with pytest.raises(BlacklistError, match="OUT OF DATE"):
            station_list(hsm, str(path), today=DAY + _dt.timedelta(days=8))
        # a genuine older list put in place of the current one (file copied by hand, not installed)
        path.write_text(json.dumps(v1))
        with pytest.raises(BlacklistError, match="older than v2"):
            station_list(hsm, str(path), today=DAY)
        path.write_text("{")
        with pytest.raises(BlacklistError, match="cannot be read"):
            station_list(hsm, str(path), today=DAY)


def test_station_list_fails_closed(tmp_path: Path) -> None:
    isolated(_station_list_fails_closed_body, tmp_path)
