# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Revocation in the lab (issue 6): lockout, an offline city enforced on the next run, the other cities carrying the
blacklist, reversible suspension, refused bad requests. Every test restores the city it touched."""

from __future__ import annotations

from pathlib import Path

import hvac
import hvac.exceptions
import pytest

from tests.support.revocation import assert_locked_out, entry, kv_versions, node_blacklist, spare_secret_id
from tunion_lab.lab_state import city_token_objects, clear_rotations, lab_cities
from tunion_lab.openbao_access import MOUNT, city_login, province_client
from tunion_lab.playbooks import run_playbook
from tunion_lab.workspace import RevocationWorkspace, today

pytestmark = pytest.mark.lab

REVOKED = "shantou"
SUSPENDED = "zhuhai"


def restore(ws: RevocationWorkspace, city: str, registry: Path | None = None) -> None:
    """Forget the rotation the revocation called for, reinstate the city (explicit active entry), re-enrol and
    redistribute it, then enforce again."""
    clear_rotations()
    status = ws.status_vars({city: {"status": "active", "reason": "test restore", "date": today()}})
    # OpenBao access back; the city's own blacklist waits for its new KEK, so this run may end incomplete
    run_playbook("enforce_status.yml", "-e", status, *ws.common_args(registry))
    dist = run_playbook("distribute.yml")
    assert dist.returncode == 0, dist.stdout[-3000:]
    again = run_playbook("enforce_status.yml", "-e", status, *ws.common_args(registry))
    assert again.returncode == 0, again.stdout[-3000:]


def test_revoked_city_offline_locked_out_then_enforced_others_carry_blacklist(ws: RevocationWorkspace) -> None:
    codes = lab_cities()
    code = codes[REVOKED]
    registry = ws.registry(
        {
            code: [("44050000000000000001", "shantou-bus"), ("44050000000000000002", "shantou-bus")],
            codes["guangzhou"]: [("44010000000000000001", "gz-metro")],
        }
    )
    old, _, _ = city_login(province_client(), REVOKED)
    role_id, secret_id = spare_secret_id(REVOKED)
    assert any(label.endswith(f"city-{code}") for label, _ in city_token_objects(REVOKED))
    status = ws.status_vars({REVOKED: {"status": "revoked", "reason": "test: keys passed on", "date": today()}})
    try:
        # 1. the city is offline: OpenBao is enforced at once, the node is reported unreachable
        offline = run_playbook(
            "enforce_status.yml",
            "-i",
            str(ws.offline_inventory(REVOKED)),
            "-e",
            status,
            *ws.common_args(registry),
        )
        assert offline.returncode != 0, "an incomplete enforcement must end in failure"
        report = ws.latest_report()
        assert report["complete"] is False
        assert entry(report, f"node:{REVOKED}")["state"] == "unreachable"
        assert entry(report, "openbao:openbao")["state"] == "enforced"
        assert_locked_out(old, role_id, secret_id, REVOKED)
        province = province_client()
        with pytest.raises(hvac.exceptions.InvalidPath):
            province.secrets.kv.v2.list_secrets(f"cities/{REVOKED}", mount_point=MOUNT)
        with pytest.raises(hvac.exceptions.InvalidPath):  # metadata (every version) gone, not just the latest
            province.secrets.kv.v2.read_secret_metadata(f"cities/{REVOKED}/blocks/purchase.v01", mount_point=MOUNT)
        kek_status = province.secrets.kv.v2.read_secret_version(
            f"province/kek-status/{REVOKED}", mount_point=MOUNT, raise_on_deleted_version=True
        )["data"]["data"]
        assert kek_status["status"] == "revoked"
        # the 20 others hold the blacklist version that lists the revoked city's SAMs
        version = report["blacklist"]["version"]
        for city in codes:
            if city == REVOKED:
                continue
            held = node_blacklist(city)
            assert held and held["version"] == version, city
            assert {e["serial"] for e in held["entries"]} >= {"44050000000000000001", "44050000000000000002"}
            assert "44010000000000000001" not in {e["serial"] for e in held["entries"]}
            assert entry(report, f"node:{city}")["state"] == "enforced"
        assert entry(report, f"sam_group:{code}/shantou-bus")["state"] == "enforced"
        # 2. the node is back: the next run destroys its keys and says it was unreachable before
        back = run_playbook("enforce_status.yml", "-e", status, *ws.common_args(registry))
        assert back.returncode == 0, back.stdout[-3000:]
        report = ws.latest_report()
        node = entry(report, f"node:{REVOKED}")
        assert node["state"] == "enforced" and node["after"].startswith("unreachable since")
        assert {d["label"] for d in node["destroyed"]} >= {f"consumption.purchase.v01.city-{code}"}
        assert not [label for label, _ in city_token_objects(REVOKED) if label.endswith(f"city-{code}")]
        assert "UNREACHABLE" not in (ws.reports / "latest.txt").read_text()
    finally:
        restore(ws, REVOKED, registry)
    relogged, _, _ = city_login(province_client(), REVOKED)
    assert relogged.secrets.kv.v2.list_secrets(f"cities/{REVOKED}/blocks", mount_point=MOUNT)["data"]["keys"]


def test_suspension_is_reversible_without_reissuing_keys(ws: RevocationWorkspace) -> None:
    keys_before = city_token_objects(SUSPENDED)
    versions_before = kv_versions(SUSPENDED)
    old, _, _ = city_login(province_client(), SUSPENDED)
    role_id, secret_id = spare_secret_id(SUSPENDED)
    try:
        # the emergency form, suspending one holder
        run = run_playbook(
            "revoke.yml",
            "-e",
            f"revoke_holder={SUSPENDED}",
            "-e",
            "revoke_status=suspended",
            "-e",
            "revoke_reason=test: audit",
            *ws.common_args(),
        )
        assert run.returncode == 0, run.stdout[-3000:]
        report = ws.latest_report()
        assert report["statuses"]["cities"][SUSPENDED]["status"] == "suspended"
        assert report["statuses"]["cities"][SUSPENDED]["source"] == "emergency"
        assert_locked_out(old, role_id, secret_id, SUSPENDED)
        assert kv_versions(SUSPENDED) == versions_before  # material kept
        assert city_token_objects(SUSPENDED) == keys_before
        # the emergency record stays in force on a plain run (the inventory says nothing)
        plain = run_playbook("enforce_status.yml", *ws.common_args())
        assert plain.returncode == 0
        assert ws.latest_report()["statuses"]["cities"][SUSPENDED]["status"] == "suspended"
    finally:
        status = ws.status_vars({SUSPENDED: {"status": "active", "reason": "test: audit closed", "date": today()}})
        back = run_playbook("enforce_status.yml", "-e", status, *ws.common_args())
        assert back.returncode == 0, back.stdout[-3000:]
    client, _, _ = city_login(province_client(), SUSPENDED)
    assert client.secrets.kv.v2.list_secrets(f"cities/{SUSPENDED}/blocks", mount_point=MOUNT)["data"]["keys"]
    assert kv_versions(SUSPENDED) == versions_before  # no key was reissued
    assert city_token_objects(SUSPENDED) == keys_before
    assert run_playbook("enforce_status.yml", *ws.common_args()).returncode == 0


@pytest.mark.parametrize(
    ("holder", "message"),
    [
        ("atlantis", "unknown holder 'atlantis'"),
        ("province", "the province's own identity"),
        ("tunion-province", "the province's own identity"),
    ],
)
def test_bad_request_is_refused_and_changes_nothing(holder: str, message: str, ws: RevocationWorkspace) -> None:
    province = province_client()
    policies = sorted(province.sys.list_acl_policies()["data"]["keys"])
    roles = sorted(province.list("auth/approle/role")["data"]["keys"])
    before = sorted((ws.reports).iterdir())
    run = run_playbook("revoke.yml", "-e", f"revoke_holder={holder}", "-e", "revoke_reason=test", *ws.common_args())
    assert run.returncode != 0
    assert message in run.stdout
    assert "Traceback" not in run.stdout + run.stderr
    assert sorted(province.sys.list_acl_policies()["data"]["keys"]) == policies
    assert sorted(province.list("auth/approle/role")["data"]["keys"]) == roles
    assert sorted(ws.reports.iterdir()) == before
