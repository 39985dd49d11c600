"""HSM provisioning and key issuing against the running lab (bin/lab up): idempotence, split knowledge, bad input."""

from __future__ import annotations

import copy
import json
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

from tests.support.leaks import find_in_lab_files, secret_forms
from tests.support.reference import kcv_des3, xor
from tunion_lab.lab import LAB_DIR, REPO
from tunion_lab.ministry_test_keys import TEST_COMPONENTS, write_custodian_file, write_custodian_files
from tunion_lab.playbooks import run_ansible, run_playbook

pytestmark = pytest.mark.lab

CATALOGUE = yaml.safe_load((REPO / "inventories/lab/group_vars/all/key_catalogue.yml").read_text())["key_catalogue"]
# A tests-only key imported only by the split-knowledge test, then removed again.
LEAK_COMPONENTS = [
    "3C1D5E7F90A2B4C6D8E0F1A3B5C7D9E1",
    "0F2E4D6C8B0A1928374655647382910A",
    "A1B2C3D4E5F60718293A4B5C6D7E8F90",
]
LEAK_KEY = xor(*(bytes.fromhex(c) for c in LEAK_COMPONENTS))
LEAK_ENTRY = {
    "name": "leaktest",
    "class": "consumption",
    "origin": "ministry",
    "algorithm": "3DES-2KEY",
    "code": 0x1F,
    "usage": "derive",
    "scope": "city",
    "holders": ["hsm"],
    "source": "components",
    "tests_only": True,
    "versions": [
        {"version": 1, "not_before": "2025-01-01", "not_after": "2030-12-31", "kcv": kcv_des3(LEAK_KEY).hex().upper()}
    ],
}


def _province_keys() -> list[dict]:
    args = {
        "token_label": "{{ hsm_token_label }}",
        "user_pin": "{{ hsm_user_pin }}",
        "catalogue": "{{ key_catalogue }}",
    }
    run = run_ansible("ansible", "province", "-m", "tunion.keymgmt.hsm_key_info", "-a", json.dumps(args), "-o")
    assert run.returncode == 0, run.stdout
    return json.loads(run.stdout.split("=>", 1)[1])["keys"]


def _extra_vars(tmp: Path, **vars_) -> str:
    f = tmp / "extra.yml"
    f.write_text(yaml.safe_dump(vars_, allow_unicode=True))
    return f"@{f}"


@pytest.fixture(scope="module")
def issued():
    """Provision and issue once (custodian files present only for the import, as custodians hand them in)."""
    custodians = LAB_DIR / "custodians"
    write_custodian_files(custodians)
    try:
        for pb in ("provision_hsm.yml", "issue_keys.yml"):
            run = run_playbook(pb)
            assert run.returncode == 0, run.stdout[-4000:]
    finally:
        shutil.rmtree(custodians, ignore_errors=True)


def test_second_run_changes_nothing(issued):
    for pb in ("provision_hsm.yml", "issue_keys.yml"):
        run = run_playbook(pb)
        assert run.returncode == 0, run.stdout[-4000:]
        assert run.changed == 0, run.stdout[-4000:]


def test_province_holds_every_catalogue_key_with_expected_kcvs(issued):
    keys = {k["label"]: k for k in _province_keys()}
    assert keys["consumption.purchase.v01.province"]["kcv"] == "E1C5AD"
    assert keys["consumption.tac.v01.province"]["kcv"] == "5DE567"
    for name in ("load", "maintenance", "pin_unlock", "pin_reload"):
        for code in ("440100", "440300", "445300"):
            k = keys[f"recharge.{name}.v01.city-{code}"]
            assert k["attributes"]["sensitive"] and not k["attributes"]["encrypt"]
    assert keys["internal.backup_kek.v01.province"]["kcv_method"] == "cmac"


def test_split_knowledge_no_trace_anywhere(issued):
    """Import a tests-only key from three custodian files at -vvv; its clear value and components appear nowhere."""
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        custodians = tmp / "custodians"
        for i, comp in enumerate(LEAK_COMPONENTS, 1):
            kcv = kcv_des3(bytes.fromhex(comp)).hex().upper()
            write_custodian_file(custodians / f"custodian-{i}" / "leaktest-v01.yml", comp, kcv)
        cat = [*copy.deepcopy(CATALOGUE), LEAK_ENTRY]
        extra = _extra_vars(tmp, key_catalogue=cat, hsm_custodian_dir=str(custodians))
        try:
            run = run_playbook("issue_keys.yml", "-vvv", "--diff", "-e", extra)
            assert run.returncode == 0, run.stdout[-4000:]
            assert LEAK_ENTRY["versions"][0]["kcv"] in run.stdout
            secrets = [LEAK_KEY] + [bytes.fromhex(c) for c in LEAK_COMPONENTS]
            output = (run.stdout + run.stderr).encode()
            for s in secrets:
                for form in secret_forms(s):
                    assert form not in output
                    assert form.lower() not in output
            shutil.rmtree(custodians)  # the custodians take their forms away
            assert find_in_lab_files([f for s in secrets for f in secret_forms(s)]) == []
        finally:
            run_ansible(
                "ansible",
                "province",
                "-m",
                "tunion.keymgmt.hsm_key",
                "-e",
                extra,
                "-a",
                json.dumps(
                    {
                        "token_label": "{{ hsm_token_label }}",
                        "user_pin": "{{ hsm_user_pin }}",
                        "catalogue": "{{ key_catalogue }}",
                        "key": "leaktest",
                        "version": 1,
                        "state": "absent",
                        "diversify_for": "{{ groups['cities'] | map('extract', hostvars, 'city_code') | list }}",
                    }
                ),
            )


def test_recharge_key_on_sam_refused_and_token_unchanged(issued):
    before = _province_keys()
    cat = copy.deepcopy(CATALOGUE)
    for e in cat:
        if e["name"] == "load":
            e["holders"] = ["hsm", "sam"]
            e["versions"].append({"version": 2, "not_before": "2025-01-01", "not_after": "2030-12-31"})
    with tempfile.TemporaryDirectory() as tmp:
        run = run_playbook("issue_keys.yml", "-e", _extra_vars(Path(tmp), key_catalogue=cat))
    assert run.returncode != 0
    assert "第二条(四)" in run.stdout and "'load' is recharge-class" in run.stdout
    assert _province_keys() == before


def test_wrong_component_kcv_refused_and_token_unchanged(issued):
    before = _province_keys()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for i, comp in enumerate(TEST_COMPONENTS["tac"], 1):
            kcv = "123456" if i == 2 else kcv_des3(bytes.fromhex(comp)).hex().upper()
            write_custodian_file(tmp / f"custodian-{i}" / "leaktest-v01.yml", comp, kcv)
        cat = [*copy.deepcopy(CATALOGUE), LEAK_ENTRY]
        run = run_playbook("issue_keys.yml", "-e", _extra_vars(tmp, key_catalogue=cat, hsm_custodian_dir=str(tmp)))
    assert run.returncode != 0
    assert "component 2 of 3 does not match its KCV" in run.stdout
    assert _province_keys() == before


def test_wrong_pin_is_a_clear_error_not_retried(issued):
    # a fresh wrong PIN per run: the node remembers every PIN its token refused and never presents it again
    wrong = f"9{secrets.randbelow(10**10):010d}"

    def attempt():
        return run_ansible(
            "ansible",
            "guangzhou",
            "-m",
            "tunion.keymgmt.hsm_key_info",
            "-a",
            f"token_label={{{{ hsm_token_label }}}} user_pin={wrong}",
        )

    run = attempt()
    assert run.returncode != 0
    assert "user PIN was rejected by token 'tunion-guangzhou'; not retrying" in run.stdout
    again = attempt()
    assert again.returncode != 0 and "not presented again" in again.stdout
    assert "rejected by token" not in again.stdout
