"""Must show 1, 3, 4, 5: the 21-city rollout, re-run changed=0, a new grant, tampering, leaks, a city offline.

One module, run in order: a cold rollout (at -vvv, kept for the leak check), the re-runs, then the scenarios.
"""

from __future__ import annotations

import base64
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor

import hvac
import pytest
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats import keyblock
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.algorithms import diversification_data

from tests.support.leaks import find_in_lab_files
from tests.support.reference import pboc_diversify
from tunion_lab.lab import LAB_DIR
from tunion_lab.lab_state import city_token_objects, lab_cities, reset_distribution, token_objects
from tunion_lab.ministry_test_keys import clear_test_key
from tunion_lab.openbao_access import MOUNT, province_client, wrapped_secret_id
from tunion_lab.playbooks import AnsibleRun, ansible_env, run_ansible, run_playbook

pytestmark = [pytest.mark.lab, pytest.mark.slow]
GRANTED = ["purchase", "tac", "load", "maintenance"]
CLASS = {
    "purchase": "consumption",
    "tac": "consumption",
    "load": "recharge",
    "maintenance": "recharge",
    "pin_unlock": "recharge",
    "pin_reload": "recharge",
}


def extra_grants(grants: dict[str, list[str]]) -> list[str]:
    import json

    value = {city: [{"key_type": t, "version": 1} for t in types] for city, types in grants.items()}
    return ["-e", json.dumps({"distribution_grants_by_city": value})]


@pytest.fixture(scope="module")
def cold_run() -> AnsibleRun:
    reset_distribution()
    run = run_playbook("distribute.yml", "-vvv")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    return run


def province_kcvs() -> dict[str, str]:
    return dict(token_objects("tunion-province", "tunion-province"))


def test_cold_rollout_installs_every_granted_key_with_matching_kcvs(cold_run: AnsibleRun) -> None:
    cities = lab_cities()
    recap = cold_run.recap
    assert all(recap[c]["failed"] == 0 and recap[c]["unreachable"] == 0 and recap[c]["changed"] > 0 for c in cities)
    province = province_kcvs()
    with ThreadPoolExecutor(max_workers=4) as pool:
        tokens = dict(zip(cities, pool.map(lambda c: dict(city_token_objects(c)), cities), strict=True))
    for city, code in cities.items():
        for key_type in GRANTED:
            label = f"{CLASS[key_type]}.{key_type}.v01.city-{code}"
            assert label in tokens[city], f"{city} lacks {label}"
            assert tokens[city][label] == province[label], f"{city}: {label} KCV differs from the province's"
        assert f"internal.kek.v01.city-{code}" in tokens[city]
        assert tokens[city][f"internal.kek.v01.city-{code}"] == province[f"internal.kek.v01.city-{code}"]


def test_second_run_changes_nothing(cold_run: AnsibleRun) -> None:
    again = run_playbook("distribute.yml")
    assert again.returncode == 0, again.stdout[-3000:]
    assert again.changed == 0, again.recap
    verified = run_playbook("distribute.yml", "-e", "distribution_verify_cities=true")
    assert verified.returncode == 0, verified.stdout[-3000:]
    assert verified.changed == 0 and len(verified.recap) == 22, verified.recap


def _leak_needles() -> list[bytes]:
    needles = []
    for name in ("purchase", "tac"):
        master = clear_test_key(name)
        needles.append(master)
        for code in lab_cities().values():
            derived = pboc_diversify(master, diversification_data(code))
            odd = bytes(b & 0xFE | (bin(b & 0xFE).count("1") % 2 == 0) for b in derived)
            needles += [derived, odd]
    forms = []
    for value in needles:
        forms += [value, value.hex().encode(), value.hex().upper().encode(), base64.b64encode(value)]
    return forms


def test_nothing_leaks(cold_run: AnsibleRun) -> None:
    needles = _leak_needles()
    output = (cold_run.stdout + cold_run.stderr).encode()
    assert b"ESTABLISH SSH CONNECTION" in output  # it really is -vvv output
    assert not [n[:4].hex() for n in needles if n in output]
    assert not find_in_lab_files(needles)  # audit log, raft data, tokens, homes: everything under .lab
    assert (LAB_DIR / "openbao" / "audit" / "audit.log").stat().st_size > 0


def _tamper(client: hvac.Client, path: str, index: int) -> str:
    kv = client.secrets.kv.v2
    data = kv.read_secret_version(path, mount_point=MOUNT, raise_on_deleted_version=True)["data"]["data"]
    block = data["block"]
    flipped = "1" if block[index] != "1" else "2"
    kv.create_or_update_secret(path, dict(data, block=block[:index] + flipped + block[index + 1 :]), mount_point=MOUNT)
    return block


def _install(city: str, code: str) -> AnsibleRun:
    role_id, wrapped = wrapped_secret_id(province_client(), city)
    args = (
        f"url={{{{ openbao_addr }}}} ca_cert={{{{ openbao_ca_cert }}}} auth_method=approle role_name=city-{city} "
        f"role_id={role_id} wrapped_secret_id={wrapped} token_label=tunion-{city} "
        f"user_pin={{{{ hsm_user_pin }}}} city={city} city_code={code}"
    )
    return run_ansible("ansible", city, "-m", "tunion.keymgmt.keyblock_install", "-a", args)


def test_new_grant_sends_only_that_key_and_tampered_blocks_are_refused(cold_run: AnsibleRun) -> None:
    cities = lab_cities()
    province = province_client()
    # one new grant for zhuhai: only that block is written, only zhuhai changes
    versions_before = {
        name: province.secrets.kv.v2.read_secret_metadata(f"cities/zhuhai/blocks/{name}", mount_point=MOUNT)["data"][
            "current_version"
        ]
        for name in (f"{t}.v01" for t in GRANTED)
    }
    run = run_playbook("distribute.yml", "--diff", *extra_grants({"zhuhai": ["pin_unlock"]}))
    assert run.returncode == 0, run.stdout[-3000:]
    changed = {host for host, counts in run.recap.items() if counts["changed"]}
    assert changed == {"province-hsm", "zhuhai"}, run.recap
    assert "zhuhai: KEK v1 envelope unchanged; blocks pin_unlock.v01\n" in run.stdout  # the province's diff
    assert f"recharge.pin_unlock.v01.city-{cities['zhuhai']}" in run.stdout  # the city's diff: that key only
    for name, version in versions_before.items():
        meta = province.secrets.kv.v2.read_secret_metadata(f"cities/zhuhai/blocks/{name}", mount_point=MOUNT)
        assert meta["data"]["current_version"] == version
    assert f"recharge.pin_unlock.v01.city-{cities['zhuhai']}" in dict(city_token_objects("zhuhai"))

    # a new grant for shantou, published by the province only; then the block is tampered with in OpenBao
    grant = extra_grants({"zhuhai": ["pin_unlock"], "shantou": ["pin_reload"]})
    run = run_playbook("distribute.yml", *grant, "-l", "province-hsm")
    path = "cities/shantou/blocks/pin_reload.v01"
    before = city_token_objects("shantou")
    original = None
    for where in ("header", "body"):
        parsed_len = len(
            keyblock.parse(
                province.secrets.kv.v2.read_secret_version(path, mount_point=MOUNT, raise_on_deleted_version=True)[
                    "data"
                ]["data"]["block"]
            ).header_text
        )
        index = 60 if where == "header" else parsed_len + 5
        block = _tamper(province, path, index)
        original = original or block
        refused = _install("shantou", cities["shantou"])
        assert refused.returncode != 0
        assert "failed its MAC check" in refused.stdout and "nothing installed" in refused.stdout, refused.stdout
        assert city_token_objects("shantou") == before, f"tampered {where}: the city token changed"
        province.secrets.kv.v2.create_or_update_secret(path, {"block": original}, mount_point=MOUNT)
    # the untouched block goes through; the next run leaves the shantou token in step
    run = run_playbook("distribute.yml", *grant)
    assert run.returncode == 0, run.stdout[-3000:]
    assert f"recharge.pin_reload.v01.city-{cities['shantou']}" in dict(city_token_objects("shantou"))
    # back to the inventory's grants for the next tests
    reset_distribution(["zhuhai", "shantou"])
    assert run_playbook("distribute.yml").returncode == 0


def test_city_offline_others_complete_and_next_run_completes_it(cold_run: AnsibleRun) -> None:
    city, other = "meizhou", "heyuan"
    reset_distribution([city, other])  # both have work to do; only one can be reached
    keys = LAB_DIR / "nodes" / f"city-{city}" / ".ssh" / "authorized_keys"
    hidden = keys.with_name("authorized_keys.offline")
    shutil.move(keys, hidden)
    try:
        # fresh SSH control sockets: a persisted master connection would still reach the city
        with tempfile.TemporaryDirectory() as control_dir:
            offline = run_playbook("distribute.yml", env=ansible_env(ANSIBLE_SSH_CONTROL_PATH_DIR=control_dir))
    finally:
        shutil.move(hidden, keys)
    assert offline.returncode != 0
    assert f"fatal: [{city}]: UNREACHABLE!" in offline.stdout
    assert offline.recap[other]["changed"] == 2 and offline.recap[other]["failed"] == 0, offline.recap
    assert f"KCV difference(s) in 1 city: {city}" in offline.stdout  # the province's comparison names it
    codes = lab_cities()
    assert f"consumption.purchase.v01.city-{codes[other]}" in dict(city_token_objects(other))
    back = run_playbook("distribute.yml")
    assert back.returncode == 0, back.stdout[-3000:]
    assert back.recap[city]["changed"] > 0 and other not in back.recap  # heyuan is in step: not even contacted
    assert f"consumption.purchase.v01.city-{codes[city]}" in dict(city_token_objects(city))
