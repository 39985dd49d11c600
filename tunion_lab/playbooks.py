"""Running the project's Ansible command lines against the lab inventory, the way a key officer does (tests, bench)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from typing import Any

from tunion_lab.lab import INVENTORY, REPO

VENV_BIN = REPO / ".venv" / "bin"

RECAP_LINE = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)


@dataclass
class AnsibleRun:
    returncode: int
    stdout: str
    stderr: str

    @property
    def recap(self) -> dict[str, dict[str, int]]:
        """Per-host PLAY RECAP counts, summed over every play of the run."""
        totals: dict[str, dict[str, int]] = {}
        for match in RECAP_LINE.finditer(self.stdout):
            counts = totals.setdefault(match["host"], dict.fromkeys(("ok", "changed", "unreachable", "failed"), 0))
            for key in counts:
                counts[key] += int(match[key])
        return totals

    @property
    def changed(self) -> int:
        return sum(host["changed"] for host in self.recap.values())


def ansible_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PATH=f"{VENV_BIN}:{env.get('PATH', '')}",
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_DEPRECATION_WARNINGS="0",
    )
    env.update(extra)
    return env


def run_ansible(tool: str, *args: str, timeout: float = 900, env: dict[str, str] | None = None) -> AnsibleRun:
    """Run an Ansible command line from the repo root against the lab inventory."""
    proc = subprocess.run(
        [str(VENV_BIN / tool), "-i", str(INVENTORY), *args],
        cwd=REPO,
        env=env or ansible_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return AnsibleRun(proc.returncode, proc.stdout, proc.stderr)


def run_playbook(playbook: str, *args: str, timeout: float = 900, env: dict[str, str] | None = None) -> AnsibleRun:
    return run_ansible("ansible-playbook", str(REPO / "playbooks" / playbook), *args, timeout=timeout, env=env)


def inject_result(stdout: str) -> dict[str, Any]:
    """The sam_inject task result from ansible-playbook -v/-vvv output (the JSON object after '=> ')."""
    dec = json.JSONDecoder()
    pos = stdout.find("=> {")
    while pos >= 0:
        try:
            obj, _ = dec.raw_decode(stdout, pos + 3)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and "summary" in obj and "sams" in obj:
            return obj
        pos = stdout.find("=> {", pos + 1)
    raise AssertionError(f"no sam_inject result in:\n{stdout[-3000:]}")
