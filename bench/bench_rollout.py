"""Benchmark of the 21-city distribution (issue 4, Must show 6). Run as root with the lab up:

    bin/bench rollout

Times, and prints with their ratios:
  1. the cold rollout: every city's distribution undone first (tunion_lab/lab_state.reset_distribution),
     then playbooks/distribute.yml over SSH, each city as its own unix user;
  2. the no-change re-run (cities whose report is in step get no pass), and the re-run that makes every city
     re-verify its token (-e distribution_verify_cities=true);
  3. a plain Python script doing the same HSM and OpenBao operations in one process, through the same
     module_utils functions, cold then again with nothing to change.
Targets (2-core lab): cold < 30 s, re-run < 10 s. The figures go into docs/distribution.md.

The one-process run opens each node's token in turn (SoftHSM serves one token directory per C_Initialize, so the
library is re-initialised with that node's SOFTHSM2_CONF), as root, and gives every token file back to its owner.
A final playbook run must report changed=0: the plain script left exactly the state the playbook makes.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import subprocess
import sys
import time
from pathlib import Path

from tunion_lab.lab import CHILD_PYTHONPATH, LAB_DIR, REPO
from tunion_lab.lab_state import PIN_DIR, lab_cities, reset_distribution
from tunion_lab.openbao_access import CA_CERT, OPENBAO_URL, PROVINCE_TOKEN_FILE
from tunion_lab.playbooks import ansible_env, run_playbook

GRANTS = [{"key_type": t, "version": 1} for t in ("purchase", "tac", "load", "maintenance")]


def timed_playbook(*args: str, env: dict[str, str] | None = None) -> tuple[float, int, int]:
    started = time.perf_counter()
    run = run_playbook("distribute.yml", *args, env=env or ansible_env())
    elapsed = time.perf_counter() - started
    if run.returncode:
        raise SystemExit(f"distribute.yml failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-1000:]}")
    return elapsed, run.changed, len(run.recap)


def token_dirs() -> dict[str, Path]:
    """unix user -> its SoftHSM token directory."""
    users = ["tunion-province"] + [f"city-{c}" for c in lab_cities()]
    return {user: LAB_DIR / "nodes" / user / "tokens" for user in users}


def plain_python(rounds: int = 2) -> list[float]:
    """The playbook's operations in one process: returns the time of each round (cold, then no-change).

    SoftHSM serves one token directory per C_Initialize; the script switches SOFTHSM2_CONF and re-initialises the
    library (C_Finalize + C_Initialize) whenever it moves to another node's token, as root, then gives every token
    file back to its owner.
    """
    code = f"""
import json, os, sys, time
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.distribution.access import (
    AccessSettings, ensure_city_access, ensure_engines, issue_wrapped_secret_id)
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.distribution.compare import (
    compare_status, expected_kcvs)
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.distribution.enrolment import (
    ensure_city_rsa, publish_enrolment)
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.distribution.install import install_for_city
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.distribution.keys import use_catalogue
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.distribution.publish import publish_for_cities
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.grants import parse_targets
from ansible_collections.tunion.keymgmt.plugins.module_utils.openbao.client import OpenBaoSettings, connect
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.session import load_library
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import hsm_session
import yaml
LIB = "/usr/lib/softhsm/libsofthsm2.so"
NODES = {str(LAB_DIR / "nodes")!r}
cities = {lab_cities()!r}
grants = {GRANTS!r}
pins = {{p.name: p.read_text().strip() for p in __import__("pathlib").Path({str(PIN_DIR)!r}).iterdir()}}
catalogue = yaml.safe_load(open({str(REPO / "inventories/lab/group_vars/all/key_catalogue.yml")!r}))["key_catalogue"]
targets = parse_targets([{{"city": c, "city_code": code, "grants": grants}} for c, code in cities.items()])
province = connect(OpenBaoSettings(url={OPENBAO_URL!r}, ca_cert={CA_CERT!r}, token_path={str(PROVINCE_TOKEN_FILE)!r}))
settings = AccessSettings()

def use(user):
    os.environ["SOFTHSM2_CONF"] = NODES + "/" + user + "/.config/softhsm2/softhsm2.conf"
    load_library(LIB).reinitialize()

def so():
    use("tunion-province")
    return hsm_session(LIB, "tunion-province", None, so_pin=pins["tunion-province.so"])

def user():
    use("tunion-province")
    return hsm_session(LIB, "tunion-province", pins["tunion-province.user"], rw=False)

def city_hsm(city):
    use("city-" + city)
    return hsm_session(LIB, "tunion-" + city, pins["tunion-" + city + ".user"])

def city_bao(city):
    cred = issue_wrapped_secret_id(province, city, settings, "5m")
    return connect(OpenBaoSettings(url={OPENBAO_URL!r}, ca_cert={CA_CERT!r}, auth_method="approle", **cred))

def one_round():
    ensure_engines(province, settings, False)
    for city in cities:
        ensure_city_access(province, city, settings, False)
    first = publish_for_cities(province, targets, so_session=so, user_session=user, issuer="GD-TUNION-PROVINCE",
                                    catalogue=catalogue, check_mode=False)
    for city in first["awaiting_enrolment"]:
        bao = city_bao(city)
        with city_hsm(city) as hsm:
            _, der = ensure_city_rsa(hsm, cities[city], False)
        publish_enrolment(bao, city, cities[city], der, False)
        bao.revoke_self()
    if first["awaiting_enrolment"]:
        publish_for_cities(province, [t for t in targets if t.city in first["awaiting_enrolment"]],
                                so_session=so, user_session=user, issuer="GD-TUNION-PROVINCE", catalogue=catalogue,
                                check_mode=False)
    changed = 0
    for city in first["to_install"]:
        bao = city_bao(city)
        with city_hsm(city) as hsm:
            changed += install_for_city(bao, hsm, city, cities[city], check_mode=False)["changed"]
        bao.revoke_self()
    with user() as hsm:
        use_catalogue(hsm, catalogue)
        expected = expected_kcvs(hsm, targets)
    reported = {{}}
    for t in targets:
        record = province.kv_read(province.layout.mount, province.layout.city(t.city, "status"))
        reported[t.city] = record["data"] if record else None
    diffs = compare_status(expected, reported)
    assert not diffs, diffs
    return changed

for _ in range({rounds}):
    started = time.perf_counter()
    changed = one_round()
    print(json.dumps({{"seconds": time.perf_counter() - started, "cities_changed": changed}}), flush=True)
"""
    try:
        out = subprocess.run(
            [str(REPO / ".venv" / "bin" / "python"), "-c", code],
            capture_output=True,
            text=True,
            check=False,
            cwd="/",
            env=dict(os.environ, PYTHONPATH=CHILD_PYTHONPATH),
        )
        if out.returncode:
            raise SystemExit(f"plain Python run failed:\n{out.stderr[-3000:]}")
        return [json.loads(line)["seconds"] for line in out.stdout.splitlines() if line.startswith("{")]
    finally:
        for user, tdir in token_dirs().items():  # give every token file back to its owner
            entry = pwd.getpwnam(user)
            for path in [tdir, *tdir.rglob("*")]:
                os.lchown(path, entry.pw_uid, entry.pw_gid)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", choices=["linear", "mitogen"], default="linear")
    args = parser.parse_args()
    env = ansible_env()
    if args.strategy == "mitogen":
        import ansible_mitogen

        env.update(
            ANSIBLE_STRATEGY_PLUGINS=str(Path(ansible_mitogen.__file__).parent / "plugins" / "strategy"),
            ANSIBLE_STRATEGY="mitogen_linear",
        )
    n = len(lab_cities())
    print(f"bench_rollout: {n} cities, strategy {args.strategy}, {os.cpu_count()} cores")
    reset_distribution()
    cold, cold_changed, _ = timed_playbook(env=env)
    rerun, rerun_changed, _ = timed_playbook(env=env)
    verify, verify_changed, verify_hosts = timed_playbook("-e", "distribution_verify_cities=true", env=env)
    reset_distribution()
    plain_cold, plain_rerun = plain_python()
    final, final_changed, _ = timed_playbook(env=env)
    rows = [
        ("playbook, cold 21-city rollout", cold, f"changed={cold_changed}"),
        ("playbook, no-change re-run", rerun, f"changed={rerun_changed}"),
        ("playbook, re-run, every city re-verifies", verify, f"changed={verify_changed}, {verify_hosts} hosts"),
        ("plain Python, one process, cold", plain_cold, ""),
        ("plain Python, one process, no change", plain_rerun, ""),
        ("playbook after the plain run", final, f"changed={final_changed} (same state)"),
    ]
    for name, seconds, note in rows:
        print(f"  {name:<44} {seconds:7.2f} s  {note}")
    print(f"  ratio cold playbook / plain Python:         {cold / plain_cold:6.1f}x")
    print(f"  ratio re-run playbook / plain Python:       {rerun / plain_rerun:6.1f}x")
    print(f"  ratio verifying re-run / plain Python:      {verify / plain_rerun:6.1f}x")
    print(
        f"  targets: cold < 30 s {'met' if cold < 30 else 'MISSED'}, re-run < 10 s {'met' if rerun < 10 else 'MISSED'}"
    )
    return 0 if final_changed == 0 and rerun_changed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
