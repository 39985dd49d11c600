"""A private scratch directory for the files a run hands to the playbooks: status extra vars, a SAM registry, an
offline inventory, the report directory (tests and bench).

The province's tasks read the registry and write the reports as the province's unix user: the directory is that
user's alone (0700), not world-writable, and it is removed when the run is done.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.clock import today as network_today

PROVINCE_USER = "tunion-province"


def today() -> str:
    """Today as status entries write it: the network's calendar day, as the collection's clock has it."""
    return network_today().isoformat()


class RevocationWorkspace:
    """Use as a context manager (or call close()): the directory and everything in it go at the end."""

    def __init__(self, owner: str = PROVINCE_USER) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="tunion-revocation-"))  # 0700
        try:
            entry = pwd.getpwnam(owner)
            self._ids: tuple[int, int] | None = (entry.pw_uid, entry.pw_gid)
        except KeyError:
            self._ids = None  # no lab users (not the lab machine): the directory stays the caller's
        self._own(self.dir)
        self.reports = self.dir / "reports"
        self.reports.mkdir(mode=0o700)
        self._own(self.reports)
        self._n = 0

    def _own(self, path: Path) -> None:
        if self._ids is not None and os.geteuid() == 0:
            os.chown(path, *self._ids)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RevocationWorkspace:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def file(self, name: str, text: str) -> Path:
        path = self.dir / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        self._own(path)
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
