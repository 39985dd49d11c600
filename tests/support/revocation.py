# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers for the revocation tests and bench: statuses as extra vars, a SAM registry, an offline city, reports."""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import hvac.exceptions
import yaml

from tests.support.distribution import (
    CA_CERT,
    LAB_DIR,
    MOUNT,
    OPENBAO_URL,
    city_login,
    city_token_objects,
    lab_cities,
    province_client,
    unwrap,
)

__all__ = [
    "CA_CERT",
    "MOUNT",
    "OPENBAO_URL",
    "RevocationWorkspace",
    "city_login",
    "city_token_objects",
    "clear_rotations",
    "lab_cities",
    "province_client",
    "unwrap",
]


def today() -> str:
    return _dt.datetime.now(_dt.UTC).date().isoformat()


class RevocationWorkspace:
    """A world-readable temp directory for the files a test hands to the playbooks (run as tunion-province)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="tunion-revocation-"))
        os.chmod(self.dir, 0o755)
        self.reports = self.dir / "reports"
        self.reports.mkdir()
        os.chmod(self.reports, 0o1777)  # the province user writes reports here
        self._n = 0

    def file(self, name: str, text: str) -> Path:
        path = self.dir / name
        path.write_text(text, encoding="utf-8")
        os.chmod(path, 0o644)
        return path

    def status_vars(self, cities: dict[str, Any] | None = None, **sections: dict[str, Any]) -> str:
        """A file of extra vars setting tunion_status (use as -e @file)."""
        self._n += 1
        status = {"cities": cities or {}, "holders": {}, "sams": {}, "key_versions": {}}
        status.update(sections)
        return "@" + str(self.file(f"status-{self._n}.yml", yaml.safe_dump({"tunion_status": status})))

    def registry(self, assignments: dict[str, list[tuple[str, str]]]) -> Path:
        """A SAM registry CSV: city code -> [(serial, holder)]."""
        lines = ["serial,city_code,holder,status,station,note"]
        for code, sams in assignments.items():
            lines += [f"{serial},{code},{holder},active,," for serial, holder in sams]
        return self.file("sam_registry.csv", "\n".join(lines) + "\n")

    def offline_inventory(self, city: str) -> Path:
        """An extra inventory that points one city at a closed port: the node is unreachable."""
        data = {"all": {"children": {"cities": {"hosts": {city: {"ansible_port": 9, "ansible_ssh_timeout": 3}}}}}}
        return self.file(f"offline-{city}.yml", yaml.safe_dump(data))

    def common_args(self, registry: Path | None = None) -> list[str]:
        args = ["-e", f"status_report_dir={self.reports}"]
        if registry is not None:
            args += ["-e", f"status_sam_registry={registry}"]
        return args

    def latest_report(self) -> dict[str, Any]:
        return json.loads((self.reports / "latest.json").read_text(encoding="utf-8"))


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


def clear_rotations() -> None:
    """Test and bench clean-up only: forget every recorded rotation (a real rotation is never undone), so that the
    next distribution grants the inventory's versions again and retires the rotated ones."""
    kv = province_client().secrets.kv.v2
    try:
        names = kv.list_secrets("province/rotation", mount_point=MOUNT)["data"]["keys"]
    except hvac.exceptions.InvalidPath:
        names = []
    for name in names:
        kv.delete_metadata_and_all_versions(f"province/rotation/{name}", mount_point=MOUNT)
