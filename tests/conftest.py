"""Fixtures and hooks for every test session: the lab lock, the rolled-out lab, OpenBao's root view, test order.

Helpers live in tests/support (imported as `tests.support.<module>`); the lab's own tooling in tunion_lab.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tunion_lab.lab import LAB_DIR, REPO


def _lab_session(request: pytest.FixtureRequest) -> bool:
    return any(item.get_closest_marker("lab") for item in request.session.items)


@pytest.fixture(scope="session", autouse=True)
def private_tempdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """This session's temporary files (tempfile.mkdtemp, TemporaryDirectory) go into one directory of its own, which
    must be empty when the session ends: a test or helper that leaves files behind fails here, by name.

    0711: lab node users may pass through to a directory made theirs (RevocationWorkspace), and list nothing.
    """
    tmp_path_factory.getbasetemp()  # pytest's own tmp_path root stays where it was
    root = Path(tempfile.mkdtemp(prefix="tunion-tests-"))
    root.chmod(0o711)
    previous, tempfile.tempdir = tempfile.tempdir, str(root)
    try:
        yield root
    finally:
        tempfile.tempdir = previous
        left = sorted(p.name for p in root.iterdir())
        shutil.rmtree(root, ignore_errors=True)
    if left:
        pytest.fail(f"temporary files left behind by this session (now removed): {', '.join(left)}")


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

    from tunion_lab.openbao_access import CA_CERT, OPENBAO_URL

    return hvac.Client(url=OPENBAO_URL, token=lab_root_token, verify=CA_CERT)


@pytest.fixture(scope="session", autouse=True)
def lab_lock(request: pytest.FixtureRequest) -> Iterator[None]:
    """One pytest session at a time on the lab: lab tests revoke, tamper with and restart shared state."""
    import fcntl

    if not _lab_session(request) or not LAB_DIR.exists():
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
    if not _lab_session(request):
        return
    proc = subprocess.run([str(REPO / "bin" / "rollout")], cwd=REPO, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.fail(f"bin/rollout failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Unit tests never need the lab: a lab test belongs in tests/integration.
    misplaced = [item.nodeid for item in items if item.get_closest_marker("lab") and "tests/unit/" in item.nodeid]
    if misplaced:
        raise pytest.UsageError(f"lab tests under tests/unit (move them to tests/integration): {misplaced[:5]}")
    # Tests that stop and restart the lab go last, so they never pull the lab from under another test.
    items.sort(key=lambda item: item.get_closest_marker("lab_restart") is not None)
