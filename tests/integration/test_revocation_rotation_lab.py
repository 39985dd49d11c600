# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rotation in the lab (issue 6, Must show 1 and 2): a revoked city stays locked out through whole site.yml runs
(distribution skips it), the shared key it held (load_auth) rotates to v2 for the 20 others with the province's KCV,
v1 is retired after the grace period (status_now injected), and a revoked key version is destroyed everywhere.
Every test puts the lab back as it found it: rotation records removed, city reinstated, redistributed."""

from __future__ import annotations

import datetime as _dt
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import hvac
import hvac.exceptions
import pytest

from tests.support.revocation import assert_locked_out, entry, node_blacklist, spare_secret_id
from tunion_lab.lab_state import city_token_objects, clear_rotations, lab_cities, token_objects
from tunion_lab.openbao_access import MOUNT, city_login, province_client
from tunion_lab.playbooks import AnsibleRun, run_playbook
from tunion_lab.workspace import RevocationWorkspace, today

pytestmark = [pytest.mark.lab, pytest.mark.slow]

REVOKED = "jieyang"
SHARED = "load_auth"


def labels(city: str) -> dict[str, str]:
    return dict(city_token_objects(city))


def all_city_tokens(cities: list[str]) -> dict[str, dict[str, str]]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(cities, pool.map(labels, cities), strict=True))


def province_kcv(version: int) -> str:
    return dict(token_objects("tunion-province", "tunion-province"))[f"recharge.{SHARED}.v{version:02x}.province"]


def block_names(city: str) -> list[str]:
    try:
        return province_client().secrets.kv.v2.list_secrets(f"cities/{city}/blocks", mount_point=MOUNT)["data"]["keys"]
    except hvac.exceptions.InvalidPath:
        return []


def ok(run: AnsibleRun) -> AnsibleRun:
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "Traceback" not in run.stdout + run.stderr
    return run


def back_to_normal(ws: RevocationWorkspace, status: str, registry: Path | None = None) -> None:
    """Rotations forgotten, statuses active again, everything redistributed: v1 only, everywhere."""
    clear_rotations()
    # OpenBao access back; a re-enrolled city's own blacklist waits for its new KEK, so this run may end incomplete
    run_playbook("enforce_status.yml", "-e", status, *ws.common_args(registry))
    ok(run_playbook("distribute.yml", "-e", status, *ws.common_args(registry)))
    ok(run_playbook("enforce_status.yml", "-e", status, *ws.common_args(registry)))
    codes = lab_cities()
    tokens = all_city_tokens(list(codes))
    for city, code in codes.items():
        assert f"recharge.{SHARED}.v01.city-{code}" in tokens[city], city
        assert f"recharge.{SHARED}.v02.city-{code}" not in tokens[city], city


def test_revoked_city_stays_locked_out_and_the_shared_key_rotates_for_the_others(ws: RevocationWorkspace) -> None:
    codes = lab_cities()
    code = codes[REVOKED]
    others = [c for c in codes if c != REVOKED]
    registry = ws.registry({code: [("44520000000000000001", "jieyang-bus"), ("44520000000000000002", "jieyang-bus")]})
    old, _, _ = city_login(province_client(), REVOKED)
    role_id, secret_id = spare_secret_id(REVOKED)
    revoked = ws.status_vars({REVOKED: {"status": "revoked", "reason": "test: keys passed on", "date": today()}})
    try:
        # 1. the whole province converges: distribution (which skips the city and grants v2) then enforcement
        first = ok(run_playbook("site.yml", "-e", revoked, *ws.common_args(registry)))
        assert f"distribution skips {REVOKED}: its status is revoked" in first.stdout + first.stderr
        assert_locked_out(old, role_id, secret_id, REVOKED)
        province = province_client()
        assert f"city-{REVOKED}" not in province.sys.list_acl_policies()["data"]["keys"]
        assert f"city-{REVOKED}" not in province.list("auth/approle/role")["data"]["keys"]
        assert block_names(REVOKED) == []
        report = ws.latest_report()
        assert report["complete"] is True
        (progress,) = report["rotation"]["progress"]
        assert (progress["key_type"], progress["old_version"], progress["new_version"]) == (SHARED, 1, 2)
        assert progress["because"] == [REVOKED] and sorted(progress["new_held_by"]) == sorted(others)
        v1, v2 = province_kcv(1), province_kcv(2)
        assert progress["new_kcv"] == [v2] and v1 != v2
        assert report["rotation"]["reload_sams"] == []  # a recharge key is never in a SAM (第二条(四))
        text = (ws.reports / "latest.txt").read_text()
        assert f"rotation: {SHARED} v01 -> v02 (because {REVOKED})" in text
        assert f"held with the province's KCV {v2} by 20 of 20" in text
        # the other 20 hold v2 with the province's KCV (and v1 until the grace period ends), and the blacklist
        tokens = all_city_tokens(others)
        version = report["blacklist"]["version"]
        for city in others:
            assert tokens[city][f"recharge.{SHARED}.v02.city-{codes[city]}"] == v2, city
            assert tokens[city][f"recharge.{SHARED}.v01.city-{codes[city]}"] == v1, city
            held = node_blacklist(city)
            assert held["version"] == version, city
            assert {"44520000000000000001", "44520000000000000002"} <= {e["serial"] for e in held["entries"]}
        assert not [label for label in labels(REVOKED) if label.endswith(f"city-{code}")]

        # 2. the next full run changes nothing, and the revoked city is still locked out (the security bug)
        again = ok(run_playbook("site.yml", "-e", revoked, *ws.common_args(registry)))
        assert again.changed == 0, again.recap
        assert REVOKED not in again.recap or again.recap[REVOKED]["changed"] == 0
        assert_locked_out(old, role_id, secret_id, REVOKED)
        assert f"city-{REVOKED}" not in province_client().sys.list_acl_policies()["data"]["keys"]

        # 3. after the grace period (status_grace_days=30), v1 is retired everywhere
        later = (_dt.date.fromisoformat(today()) + _dt.timedelta(days=31)).isoformat()
        day = ["-e", f"status_now={later}"]
        ok(run_playbook("distribute.yml", "-e", revoked, *day, *ws.common_args(registry)))
        ok(run_playbook("enforce_status.yml", "-e", revoked, *day, *ws.common_args(registry)))
        tokens = all_city_tokens(others)
        for city in others:
            assert f"recharge.{SHARED}.v01.city-{codes[city]}" not in tokens[city], city
            assert tokens[city][f"recharge.{SHARED}.v02.city-{codes[city]}"] == v2, city
            assert f"{SHARED}.v01" not in block_names(city) and f"{SHARED}.v02" in block_names(city)
        (progress,) = ws.latest_report()["rotation"]["progress"]
        assert progress["old_retired"] is True and progress["old_still_reported_by"] == []
        assert f"{SHARED} v01 -> v02" in (ws.reports / "latest.txt").read_text()
    finally:
        back_to_normal(ws, ws.status_vars({REVOKED: {"status": "active", "reason": "test restore", "date": today()}}))
    relogged, _, _ = city_login(province_client(), REVOKED)
    assert relogged.secrets.kv.v2.list_secrets(f"cities/{REVOKED}/blocks", mount_point=MOUNT)["data"]["keys"]


def test_revoked_key_version_is_destroyed_in_every_city_and_reported(ws: RevocationWorkspace) -> None:
    codes = lab_cities()
    name = f"{SHARED}.v01"
    try:
        # the emergency form, naming a key version: its blocks go and every city's HSM destroys it at once
        reason = "revoke_reason=test: compromised"
        ok(run_playbook("revoke.yml", "-e", f"revoke_holder={name}", "-e", reason, *ws.common_args()))
        report = ws.latest_report()
        assert report["rotation"]["revoked_versions"] == [name]
        tokens = all_city_tokens(list(codes))
        for city, code in codes.items():
            assert f"recharge.{SHARED}.v01.city-{code}" not in tokens[city], city
            node = entry(report, f"node:{city}")
            assert node["state"] == "enforced", city
            assert [d["label"] for d in node["destroyed"]] == [f"recharge.{SHARED}.v01.city-{code}"], city
            assert name not in block_names(city)
        (progress,) = report["rotation"]["progress"]
        assert progress["new_version"] == 2 and sorted(progress["new_pending"]) == sorted(codes)
        # distribution then brings v2 to every city (the rotation a revoked shared version calls for)
        ok(run_playbook("distribute.yml", *ws.common_args()))
        v2 = province_kcv(2)
        tokens = all_city_tokens(list(codes))
        assert all(tokens[c][f"recharge.{SHARED}.v02.city-{codes[c]}"] == v2 for c in codes)
    finally:
        back_to_normal(
            ws, ws.status_vars(key_versions={name: {"status": "active", "reason": "test restore", "date": today()}})
        )
