"""Shared test fixtures: paths, the lab, and running Ansible the way a key officer does."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAB_DIR = Path(os.environ.get("TUNION_LAB_DIR", REPO / ".lab"))
VENV_BIN = REPO / ".venv" / "bin"
INVENTORY = REPO / "inventories" / "lab"

# The repo root is the collection: make `ansible_collections.tunion.keymgmt` importable in tests.
sys.path.insert(0, str(REPO / "collections"))
sys.path.insert(0, str(REPO))

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


def run_playbook(playbook: str, *args: str, **kwargs) -> AnsibleRun:
    return run_ansible("ansible-playbook", str(REPO / "playbooks" / playbook), *args, **kwargs)


def lab_file_paths() -> Iterator[Path]:
    """Every regular file under the lab directory (tokens, raft data, audit log, logs, homes)."""
    for path in LAB_DIR.rglob("*"):
        if path.is_file() and not path.is_symlink():
            yield path


def find_in_lab_files(needles: list[bytes]) -> list[str]:
    """Where any of the byte strings occurs in a lab file; empty when none does."""
    hits = []
    for path in lab_file_paths():
        try:
            data = path.read_bytes()
        except OSError:
            continue
        hits.extend(f"{path}: {needle[:4].hex()}…" for needle in needles if needle in data)
    return hits


def secret_forms(secret: bytes) -> list[bytes]:
    """The forms a clear key could leak in: raw bytes, hex in both cases, base64."""
    import base64

    return [secret, secret.hex().encode(), secret.hex().upper().encode(), base64.b64encode(secret)]


@pytest.fixture(scope="session")
def lab_root_token() -> str:
    init = LAB_DIR / "openbao" / "init.json"
    if not init.exists():
        pytest.fail(f"the lab is not up ({init} is missing): run bin/lab up")
    return json.loads(init.read_text())["root_token"]


@pytest.fixture(scope="session")
def openbao_root(lab_root_token: str):
    """An hvac client with the lab's root token: for tests that inspect OpenBao, never for playbooks."""
    import hvac

    return hvac.Client(url="https://127.0.0.1:8200", token=lab_root_token, verify=str(LAB_DIR / "ca" / "ca.crt"))


@pytest.fixture(scope="session", autouse=True)
def lab_lock(request: pytest.FixtureRequest) -> Iterator[None]:
    """One pytest session at a time on the lab: lab tests revoke, tamper with and restart shared state."""
    import fcntl

    if not any(item.get_closest_marker("lab") for item in request.session.items) or not LAB_DIR.exists():
        yield
        return
    with open(LAB_DIR / ".test-lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("\nwaiting for another test session to finish with the lab …", file=sys.stderr)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="session", autouse=True)
def converged_lab(request: pytest.FixtureRequest, lab_lock: None) -> None:
    """Lab tests start from the rolled-out province, whatever state the lab was in: a fresh lab (as in CI)
    is rolled out here by the README's first command, a converged one is left as it is (changed=0)."""
    if not any(item.get_closest_marker("lab") for item in request.session.items):
        return
    proc = subprocess.run([str(REPO / "bin" / "rollout")], cwd=REPO, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.fail(f"bin/rollout failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests that stop and restart the lab go last, so they never pull the lab from under another test.
    items.sort(key=lambda item: item.get_closest_marker("lab_restart") is not None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab_restart: stops and starts the lab; runs after every other test")
