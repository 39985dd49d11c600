"""The HSM modules as Ansible runs them (localhost, a throw-away SoftHSM token): changed, check mode, no leaks."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.leaks import secret_forms
from tests.support.reference import kcv_des3
from tunion_lab.lab import REPO
from tunion_lab.ministry_test_keys import TEST_COMPONENTS, clear_test_key
from tunion_lab.scratch_token import SO_PIN, USER_PIN, temp_token

pytestmark = pytest.mark.slow


PY = REPO / ".venv" / "bin" / "python"
CATALOGUE = yaml.safe_load((REPO / "inventories/lab/group_vars/all/key_catalogue.yml").read_text())["key_catalogue"]


def _play(tmp: Path, tasks: list[dict], *args: str, catalogue=None) -> subprocess.CompletedProcess:
    play = [
        {"hosts": "localhost", "gather_facts": False, "vars": {"key_catalogue": catalogue or CATALOGUE}, "tasks": tasks}
    ]
    # the play may carry the published test components: readable by this user only, and gone after the run
    pb = tmp / "play.yml"
    pb.touch(mode=0o600)
    pb.write_text(yaml.safe_dump(play, allow_unicode=True))
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default",
    )
    try:
        return subprocess.run(
            [
                str(REPO / ".venv/bin/ansible-playbook"),
                "-i",
                "localhost,",
                "-c",
                "local",
                "-e",
                f"ansible_python_interpreter={PY}",
                str(pb),
                *args,
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
    finally:
        pb.unlink()


def _changed(proc) -> int:
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("localhost"))
    return int(line.split("changed=")[1].split()[0])


PIN = {"token_label": "mod", "user_pin": USER_PIN}


@pytest.fixture(scope="module")
def token():
    with temp_token(init=False) as d:
        yield d


def test_token_then_keys_idempotent_with_check_mode_and_diff(token, tmp_path):
    tasks = [
        {"tunion.keymgmt.hsm_token": {**PIN, "so_pin": SO_PIN}},
        {
            "tunion.keymgmt.hsm_key": {
                **PIN,
                "catalogue": "{{ key_catalogue }}",
                "key": "load",
                "version": 1,
                "diversify_for": ["440100", "440300"],
            }
        },
    ]
    first = _play(tmp_path, tasks, "--diff")
    assert first.returncode == 0, first.stdout + first.stderr
    assert _changed(first) == 2
    assert "recharge.load.v01.city-440300" in first.stdout
    second = _play(tmp_path, tasks, "--check", "--diff")
    assert second.returncode == 0 and _changed(second) == 0
    third = _play(tmp_path, tasks)
    assert third.returncode == 0 and _changed(third) == 0


def test_wrong_pin_is_a_clear_error(token, tmp_path):
    tasks = [{"tunion.keymgmt.hsm_token": {"token_label": "mod", "so_pin": SO_PIN, "user_pin": "999999"}}]
    proc = _play(tmp_path, tasks)
    assert proc.returncode != 0
    assert "user PIN was rejected by token 'mod'; not retrying" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "999999" not in proc.stdout + proc.stderr


def test_wrong_pin_in_a_loop_is_presented_once(token, tmp_path, monkeypatch):
    """One run, one task looping over 6 items with a wrong user PIN: the token sees the PIN once (issue 10 item 13);
    the 5 later module calls refuse it without presenting it."""
    monkeypatch.setenv("TUNION_PIN_REFUSAL_DIR", str(tmp_path / "refusals"))
    ok = _play(tmp_path, [{"tunion.keymgmt.hsm_token": {**PIN, "so_pin": SO_PIN}}])
    assert ok.returncode == 0, ok.stdout
    tasks = [
        {
            "tunion.keymgmt.hsm_key_info": {**PIN, "user_pin": "999111"},
            "loop": [1, 2, 3, 4, 5, 6],
            "ignore_errors": True,
        }
    ]

    def items(proc: subprocess.CompletedProcess) -> list[str]:
        return [line for line in proc.stdout.splitlines() if line.startswith("failed: [localhost] (item=")]

    proc = _play(tmp_path, tasks)
    results = items(proc)
    assert len(results) == 6, proc.stdout
    assert sum("user PIN was rejected by token 'mod'" in line for line in results) == 1, proc.stdout
    assert sum("was refused by it at" in line and "not presented again" in line for line in results) == 5
    assert "999111" not in proc.stdout + proc.stderr
    again = items(_play(tmp_path, tasks))  # a later run: still not presented
    assert len(again) == 6 and all("not presented again" in line for line in again)


def _components(name: str, bad: int | None = None) -> list[dict]:
    out = []
    for i, c in enumerate(TEST_COMPONENTS[name], 1):
        kcv = kcv_des3(bytes.fromhex(c)).hex().upper()
        out.append({"value": c, "kcv": "000000" if i == bad else kcv})
    return out


def _info(tmp_path) -> list[dict]:
    out = tmp_path / "info.json"
    proc = _play(
        tmp_path,
        [
            {"tunion.keymgmt.hsm_key_info": {**PIN, "catalogue": "{{ key_catalogue }}"}, "register": "k"},
            {"ansible.builtin.copy": {"content": "{{ k['keys'] | to_json }}", "dest": str(out)}},
        ],
    )
    assert proc.returncode == 0, proc.stdout
    return json.loads(out.read_text())


def test_bad_component_kcv_refused_token_unchanged(token, tmp_path):
    before = _info(tmp_path)
    tasks = [
        {
            "tunion.keymgmt.hsm_key": {
                **PIN,
                "catalogue": "{{ key_catalogue }}",
                "key": "tac",
                "version": 1,
                "components": _components("tac", bad=3),
            }
        }
    ]
    proc = _play(tmp_path, tasks)
    assert proc.returncode != 0
    assert "component 3 of 3 does not match its KCV" in proc.stdout
    assert _info(tmp_path) == before


def test_components_import_leaves_no_trace_at_vvv(token, tmp_path):
    tasks = [
        {
            "tunion.keymgmt.hsm_key": {
                **PIN,
                "catalogue": "{{ key_catalogue }}",
                "key": "purchase",
                "version": 1,
                "components": _components("purchase"),
                "diversify_for": ["440100"],
            }
        }
    ]
    proc = _play(tmp_path, tasks, "-vvv", "--diff")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "E1C5AD" in proc.stdout  # the expected KCV is reported
    output = (proc.stdout + proc.stderr).encode()
    secrets = [clear_test_key("purchase")] + [bytes.fromhex(c) for c in TEST_COMPONENTS["purchase"]]
    for s in secrets:
        for form in secret_forms(s):
            assert form not in output
    for path in token.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for s in secrets:
                assert all(form not in data for form in secret_forms(s)), path


def test_recharge_key_on_sam_refused_before_token(token, tmp_path):
    bad = [dict(e, holders=["hsm", "sam"]) if e["name"] == "maintenance" else e for e in CATALOGUE]
    before = _info(tmp_path)
    tasks = [
        {"tunion.keymgmt.hsm_key": {**PIN, "catalogue": "{{ key_catalogue }}", "key": "maintenance", "version": 1}}
    ]
    proc = _play(tmp_path, tasks, catalogue=bad)
    assert proc.returncode != 0 and "第二条(四)" in proc.stdout
    assert _info(tmp_path) == before
    proc = _play(
        tmp_path, [{"tunion.keymgmt.key_catalogue_validate": {"catalogue": "{{ key_catalogue }}"}}], catalogue=bad
    )
    assert proc.returncode != 0 and "'maintenance' is recharge-class" in proc.stdout


def test_sm4_key_refused_by_token(token, tmp_path):
    cat = [
        *CATALOGUE,
        {
            "name": "card_sm4",
            "class": "consumption",
            "origin": "ministry",
            "algorithm": "SM4",
            "code": 0x19,
            "holders": ["hsm"],
            "source": "components",
            "versions": [{"version": 1, "not_before": "2025-01-01", "not_after": "2030-12-31"}],
        },
    ]
    before = _info(tmp_path)
    proc = _play(
        tmp_path,
        [
            {
                "tunion.keymgmt.hsm_key": {
                    **PIN,
                    "catalogue": "{{ key_catalogue }}",
                    "key": "card_sm4",
                    "version": 1,
                    "components": _components("tac"),
                }
            }
        ],
        catalogue=cat,
    )
    assert proc.returncode != 0 and "offers no SM4 mechanism" in proc.stdout
    assert _info(tmp_path) == before
