# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Destroying a holder's HSM objects on SoftHSM: check mode, by key type, idempotent."""

from __future__ import annotations

from pathlib import Path

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.names import key_label
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.holder_keys import (
    destroy_holder_objects,
    holder_objects,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.policy import KeyPolicy
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import hsm_session

from tests.support.isolated import isolated
from tunion_lab.scratch_token import SOFTHSM, USER_PIN, temp_token


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
        planned = destroy_holder_objects(hsm, "city-440500", check_mode=True)
        assert {d["label"] for d in planned} == {"recharge.load.v01.city-440500", "internal.kek.v01.city-440500"}
        assert all(len(d["kcv"]) == 6 for d in planned)
        assert len(holder_objects(hsm, "city-440500")) == 2  # check mode destroyed nothing
        only_kek = destroy_holder_objects(hsm, "city-440500", key_types=["kek"], check_mode=False)
        assert [d["label"] for d in only_kek] == ["internal.kek.v01.city-440500"]
        destroy_holder_objects(hsm, "city-440500", check_mode=False)
        assert holder_objects(hsm, "city-440500") == []
        assert len(holder_objects(hsm, "city-440100")) == 2
        assert destroy_holder_objects(hsm, "city-440500", check_mode=False) == []  # idempotent


def test_destroy_holder_objects_on_softhsm(tmp_path: Path) -> None:
    isolated(_destroy_holder_objects_on_softhsm_body, tmp_path)
