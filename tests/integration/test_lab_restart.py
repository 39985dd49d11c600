"""Issue 2 'Must show' 2: stopping and starting the lab loses nothing."""

from __future__ import annotations

import secrets
import subprocess

import hvac
import pytest

from tunion_lab.lab import LAB_DIR, REPO

pytestmark = [pytest.mark.lab, pytest.mark.lab_restart]

SELFTEST_MOUNT = "lab-selftest"


def lab(command: str) -> str:
    proc = subprocess.run([str(REPO / "bin" / "lab"), command], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_a_value_written_before_a_stop_reads_back_after_the_start(openbao_root: hvac.Client) -> None:
    if SELFTEST_MOUNT + "/" not in openbao_root.sys.list_mounted_secrets_engines()["data"]:
        openbao_root.sys.enable_secrets_engine("kv", path=SELFTEST_MOUNT, options={"version": "2"})
    marker = secrets.token_hex(8)
    openbao_root.secrets.kv.v2.create_or_update_secret("restart", {"marker": marker}, mount_point=SELFTEST_MOUNT)

    stopped = lab("stop")
    assert "openbao: stopped" in stopped
    started = lab("up")
    assert "unsealed" in started, "the lab command unseals OpenBao again by itself"

    client = hvac.Client(url=openbao_root.url, token=openbao_root.token, verify=str(LAB_DIR / "ca" / "ca.crt"))
    read = client.secrets.kv.v2.read_secret_version(
        "restart", mount_point=SELFTEST_MOUNT, raise_on_deleted_version=True
    )
    assert read["data"]["data"]["marker"] == marker
