# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Province side: the KCVs each city should hold, and every difference from what it reported."""

from __future__ import annotations

from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.names import city_holder, version_name
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.distribution.keys import kcv_hex, province_key_index
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.grants import CityTarget
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import HsmToken


def expected_kcvs(hsm: HsmToken, targets: list[CityTarget]) -> dict[str, dict[str, dict[str, Any]]]:
    """city -> block name -> {kcv, key_type, version} from the province's own token."""
    index = province_key_index(hsm)
    expected: dict[str, dict[str, dict[str, Any]]] = {}
    for target in targets:
        expected[target.city] = {}
        for grant in target.grants:
            found = index.get((grant.key_type, grant.version, city_holder(target.city_code))) or index.get(
                (grant.key_type, grant.version, "province")
            )
            kcv = kcv_hex(hsm, found[0]) if found else "(not in the province token)"
            expected[target.city][version_name(grant.key_type, grant.version)] = {
                "kcv": kcv,
                "key_type": grant.key_type,
                "version": grant.version,
            }
    return expected


def compare_status(
    expected: dict[str, dict[str, dict[str, Any]]], reported: dict[str, dict[str, Any] | None]
) -> list[dict[str, Any]]:
    """expected: city -> name -> {kcv, ...}; reported: city -> status record (or None). Lists every difference."""
    diffs = []
    for city in sorted(expected):
        status = reported.get(city)
        keys = (status or {}).get("keys") or {}
        for name, want in sorted(expected[city].items()):
            got = keys.get(name)
            if got is None:
                diffs.append(
                    {
                        "city": city,
                        "key": name,
                        "province_kcv": want["kcv"],
                        "city_kcv": None,
                        "problem": "not reported installed" if status else "city never reported",
                    }
                )
            elif str(got.get("kcv")).upper() != want["kcv"]:
                diffs.append(
                    {
                        "city": city,
                        "key": name,
                        "province_kcv": want["kcv"],
                        "city_kcv": got.get("kcv"),
                        "problem": "KCV differs",
                    }
                )
        for name in sorted(set(keys) - set(expected[city])):
            diffs.append(
                {
                    "city": city,
                    "key": name,
                    "province_kcv": None,
                    "city_kcv": keys[name].get("kcv"),
                    "problem": "installed but not granted",
                }
            )
    return diffs
