# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers for the revocation lab tests: report entries, a node's blacklist, OpenBao versions, lock-out checks."""

from __future__ import annotations

import json
from typing import Any

import hvac
import hvac.exceptions
import pytest

from tunion_lab.lab import LAB_DIR
from tunion_lab.openbao_access import CA_CERT, MOUNT, OPENBAO_URL, province_client, unwrap, wrapped_secret_id


def entry(report: dict[str, Any], target: str) -> dict[str, Any]:
    for item in report["entries"]:
        if item["target"] == target:
            return item
    raise AssertionError(f"{target} is not in the report: {[e['target'] for e in report['entries']]}")


def node_blacklist(city: str) -> dict[str, Any] | None:
    path = LAB_DIR / "nodes" / f"city-{city}" / "sam-blacklist" / "current.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def kv_versions(city: str) -> dict[str, int]:
    """current_version of every entry under cities/<city>/ (to show nothing was reissued)."""
    kv = province_client().secrets.kv.v2
    out = {}
    for leaf in ("kek", "enrolment"):
        out[leaf] = kv.read_secret_metadata(f"cities/{city}/{leaf}", mount_point=MOUNT)["data"]["current_version"]
    for name in kv.list_secrets(f"cities/{city}/blocks", mount_point=MOUNT)["data"]["keys"]:
        meta = kv.read_secret_metadata(f"cities/{city}/blocks/{name}", mount_point=MOUNT)
        out[f"blocks/{name}"] = meta["data"]["current_version"]
    return out


def spare_secret_id(city: str) -> tuple[str, str]:
    """(role_id, secret_id) issued before the revocation and never used: a fresh login attempt afterwards."""
    role_id, wrapped = wrapped_secret_id(province_client(), city, wrap_ttl="5m")
    return role_id, unwrap(wrapped)


def assert_locked_out(old: hvac.Client, role_id: str, secret_id: str, city: str) -> None:
    with pytest.raises(hvac.exceptions.Forbidden):
        old.secrets.kv.v2.read_secret_version(f"cities/{city}/kek", mount_point=MOUNT, raise_on_deleted_version=True)
    fresh = hvac.Client(url=OPENBAO_URL, verify=CA_CERT)
    with pytest.raises((hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden)):
        fresh.auth.approle.login(role_id=role_id, secret_id=secret_id)
