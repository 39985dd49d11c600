"""Issue 9, Must show 3: the playbooks accept inventories/production.example, which holds only site-specific
values; every other setting is a role default. Checked by ansible-playbook itself: a syntax check, then the roles'
argument-spec validation (the validate_argument_spec tasks, tagged always, run alone under a tag nothing has)
against a copy of the example with the lab's hosts swapped in, PINs given with -e. A required variable left out
fails with its own name. Also: every option a playbook sets for an action group is accepted by every member.

No connection is made (validation runs on the controller), so this needs no lab."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tunion_lab.lab import REPO
from tunion_lab.playbooks import VENV_BIN, ansible_env

pytestmark = pytest.mark.slow

PRODUCTION = REPO / "inventories" / "production.example"
LAB_HOSTS = REPO / "inventories" / "lab" / "hosts.yml"
PLAYBOOKS = sorted(p.name for p in (REPO / "playbooks").glob("*.yml"))
ROLES = sorted(p.parent.parent.name for p in (REPO / "roles").glob("*/meta/argument_specs.yml"))
# A tag no task has: only the always-tagged argument validation runs.
NO_TASK = "--tags=tunion-argument-validation-only"
# PINs come from a lookup at run time; here they are given as extra vars (a variable of their own, so each can be
# left out). Dummy values: validation checks presence and type, nothing is presented to a token.
PINS = {"hsm_user_pin": "123456", "hsm_so_pin": "12345678"}
# revoke.yml names the holder and reason on the command line.
REVOKE = {"revoke_holder": "shantou", "revoke_reason": "argument validation test"}
# restore.yml names the backup set and the custodians present on the command line.
RESTORE = {"backup_restore_set": "/srv/backup/sets/example", "backup_restore_quorum": ["alice", "bob"]}
# Where each role's entry points run (the inventory group).
ROLE_HOSTS = {"province": "province", "openbao_setup": "province", "city_node": "cities", "sam_station": "sam_stations"}


def ansible(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / args[0]), *args[1:]],
        cwd=cwd,
        env=ansible_env(ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default"),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def argument_specs(role: str) -> dict[str, Any]:
    data = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text(encoding="utf-8"))
    return data["argument_specs"]


def inventory_copy(tmp: Path, leave_out: str | None = None) -> Path:
    """The production example with the lab's host addresses and users, the PINs taken out (they come with -e),
    and the variable leave_out removed wherever the example sets it."""
    inv = tmp / "production"
    shutil.copytree(PRODUCTION, inv)
    lab = yaml.safe_load(LAB_HOSTS.read_text(encoding="utf-8"))["all"]["children"]
    hosts_file = inv / "hosts.yml"
    hosts = yaml.safe_load(hosts_file.read_text(encoding="utf-8"))
    for group, body in hosts["all"]["children"].items():
        for name, host in body["hosts"].items():
            lab_host = lab[group]["hosts"][name]
            host["ansible_host"] = lab_host["ansible_host"]
            host["ansible_user"] = lab_host["ansible_user"]
            host.pop(leave_out, None)
    hosts_file.write_text(yaml.safe_dump(hosts, allow_unicode=True, sort_keys=False), encoding="utf-8")
    for path in (inv / "group_vars").rglob("*.yml"):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        drop = {*PINS, leave_out} & data.keys()
        if drop:
            path.write_text(
                yaml.safe_dump({k: v for k, v in data.items() if k not in drop}, allow_unicode=True), encoding="utf-8"
            )
    return inv


def extra_vars(leave_out: str | None = None) -> list[str]:
    given = {k: v for k, v in {**PINS, **REVOKE, **RESTORE}.items() if k != leave_out}
    return ["-e", json.dumps(given)]


def entry_point_playbook(tmp: Path, entries: list[tuple[str, str]]) -> Path:
    """One play per role entry point, on the hosts it runs on: also reaches the entry points whose playbook plays
    target groups made at run time (distribute.yml's enrolling and installing cities)."""
    plays = [
        {
            "name": f"{role} {entry}",
            "hosts": ROLE_HOSTS[role],
            "gather_facts": False,
            "tasks": [{"ansible.builtin.import_role": {"name": role, "tasks_from": entry}}],
        }
        for role, entry in entries
    ]
    path = tmp / "entry_points.yml"
    path.write_text(yaml.safe_dump(plays), encoding="utf-8")
    return path


def assert_fails_naming(run: subprocess.CompletedProcess[str], variable: str, what: str) -> None:
    """The run failed, and every host that failed was told the variable's name."""
    assert run.returncode != 0, f"{variable} left out, yet {what} passed validation"
    failures = [line for line in run.stdout.splitlines() if line.startswith("fatal:")]
    assert failures, run.stdout[-3000:]
    assert all(variable in line for line in failures), failures


def all_entry_points() -> list[tuple[str, str]]:
    return [(role, entry) for role in ROLES for entry in argument_specs(role)]


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_syntax_check_against_production_example(playbook: str) -> None:
    run = ansible("ansible-playbook", "--syntax-check", "-i", str(PRODUCTION), f"playbooks/{playbook}")
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_argument_specs_accept_production_example(playbook: str, tmp_path: Path) -> None:
    inv = inventory_copy(tmp_path)
    run = ansible("ansible-playbook", "-i", str(inv), f"playbooks/{playbook}", NO_TASK, *extra_vars())
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "Validating arguments against arg spec" in run.stdout, "no role argument validation ran"
    assert "failed=0" in run.stdout and "failed=1" not in run.stdout


def test_every_role_entry_point_accepts_production_example(tmp_path: Path) -> None:
    entries = all_entry_points()
    inv = inventory_copy(tmp_path)
    playbook = entry_point_playbook(tmp_path, entries)
    run = ansible("ansible-playbook", "-i", str(inv), str(playbook), NO_TASK, *extra_vars())
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    for role, entry in entries:
        assert f"Validating arguments against arg spec '{entry}'" in run.stdout, (role, entry)


def required_variables() -> list[tuple[str, str, str]]:
    """Each required variable once, in the first entry point that requires it, and at least one per role."""
    seen: set[str] = set()
    roles_covered: set[str] = set()
    cases = []
    for role, entry in all_entry_points():
        for name, spec in argument_specs(role)[entry]["options"].items():
            if spec.get("required") and (name not in seen or role not in roles_covered):
                seen.add(name)
                roles_covered.add(role)
                cases.append((role, entry, name))
    return cases


@pytest.mark.parametrize(("role", "entry", "variable"), required_variables())
def test_a_required_variable_left_out_fails_with_its_name(role: str, entry: str, variable: str, tmp_path: Path) -> None:
    inv = inventory_copy(tmp_path, leave_out=variable)
    playbook = entry_point_playbook(tmp_path, [(role, entry)])
    run = ansible("ansible-playbook", "-i", str(inv), str(playbook), NO_TASK, *extra_vars(leave_out=variable))
    assert_fails_naming(run, variable, f"{role}/{entry}")


def playbook_entry_points(playbook: str) -> list[tuple[str, str]]:
    """The role entry points a playbook validates under NO_TASK: plays on the inventory's groups (not on groups
    made at run time), following import_playbook."""
    found: list[tuple[str, str]] = []
    for play in yaml.safe_load((REPO / "playbooks" / playbook).read_text(encoding="utf-8")):
        if "ansible.builtin.import_playbook" in play:
            found += playbook_entry_points(play["ansible.builtin.import_playbook"])
            continue
        if not set(play["hosts"].split(":")) <= {*ROLE_HOSTS.values(), "openbao"}:
            continue
        found += [(r if isinstance(r, str) else r["role"], "main") for r in play.get("roles", [])]
        for task in play.get("tasks", []):
            if "ansible.builtin.import_role" in task:
                role = task["ansible.builtin.import_role"]
                found.append((role["name"], role.get("tasks_from", "main")))
    return found


def playbook_required_variables() -> list[tuple[str, str]]:
    cases = []
    for playbook in PLAYBOOKS:
        names = {
            name
            for role, entry in playbook_entry_points(playbook)
            for name, spec in argument_specs(role)[entry]["options"].items()
            if spec.get("required")
        }
        cases += [(playbook, name) for name in sorted(names)]
    return cases


@pytest.mark.parametrize(("playbook", "variable"), playbook_required_variables())
def test_a_playbook_without_a_required_variable_fails_with_its_name(
    playbook: str, variable: str, tmp_path: Path
) -> None:
    inv = inventory_copy(tmp_path, leave_out=variable)
    run = ansible("ansible-playbook", "-i", str(inv), f"playbooks/{playbook}", NO_TASK, *extra_vars(variable))
    assert_fails_naming(run, variable, playbook)


# What differs from site to site, so no role can default it: a site's inventory must set each of these.
SITE_SPECIFIC = {
    "key_catalogue",  # the Ministry's KCVs and the validity periods from the key letters
    "pkcs11_library",  # the HSM vendor's module
    "hsm_user_pin",  # where the PINs come from
    "hsm_so_pin",
    "hsm_custodian_dir",  # where the custodians' media are mounted
    "backup_custodians",  # the backup KEK's custodians (第十四条) and where each one's share is mounted
    "openbao_addr",
    "openbao_ca_cert",
    "distribution_grants",
    "sam_registry_csv",
    "sam_readers",  # the personalisation machine's readers
    "city_code",  # each city's code (hosts.yml)
    "revoke_holder",  # revoke.yml's command line
    "revoke_reason",
    "backup_restore_set",  # restore.yml's command line
    "backup_restore_quorum",
}


def test_the_roles_require_exactly_the_site_specific_variables() -> None:
    required = {
        name
        for role, entry in all_entry_points()
        for name, spec in argument_specs(role)[entry]["options"].items()
        if spec.get("required")
    }
    assert required == SITE_SPECIFIC


def test_the_sweep_leaves_each_variable_out_of_the_example() -> None:
    """The sweep means something only if the example (or the command line) really sets each required variable."""
    given = (
        {*PINS, *REVOKE, *RESTORE}
        | {k for p in (PRODUCTION / "group_vars").rglob("*.yml") for k in yaml.safe_load(p.read_text()) or {}}
        | {"city_code"}
    )
    missing = {name for _, _, name in required_variables()} - given
    assert not missing, f"required, but set nowhere in the production example: {sorted(missing)}"
    hosts = yaml.safe_load((PRODUCTION / "hosts.yml").read_text(encoding="utf-8"))["all"]["children"]
    assert all("city_code" in h for h in hosts["cities"]["hosts"].values())


def module_docs() -> dict[str, set[str]]:
    names = sorted(p.stem for p in (REPO / "plugins" / "modules").glob("*.py") if not p.stem.startswith("_"))
    run = ansible("ansible-doc", "--json", *(f"tunion.keymgmt.{n}" for n in names))
    assert run.returncode == 0, run.stderr
    docs = json.loads(run.stdout)
    return {fqcn.rsplit(".", 1)[1]: set(doc["doc"]["options"]) for fqcn, doc in docs.items()}


def module_defaults_by_group() -> dict[str, set[str]]:
    """Every option the playbooks set for each action group with module_defaults."""
    groups: dict[str, set[str]] = {}
    for playbook in PLAYBOOKS:
        for play in yaml.safe_load((REPO / "playbooks" / playbook).read_text(encoding="utf-8")):
            for key, options in (play.get("module_defaults") or {}).items():
                if key.startswith("group/"):
                    groups.setdefault(key.removeprefix("group/tunion.keymgmt."), set()).update(options)
    return groups


def test_every_group_member_accepts_the_options_set_for_its_group() -> None:
    runtime = yaml.safe_load((REPO / "meta" / "runtime.yml").read_text(encoding="utf-8"))
    groups: dict[str, list[str]] = runtime["action_groups"]
    docs = module_docs()
    used = module_defaults_by_group()
    assert used.keys() <= groups.keys(), "module_defaults name a group meta/runtime.yml does not declare"
    for group, options in used.items():
        for module in groups[group]:
            assert options <= docs[module], f"{module} (group {group}) lacks {sorted(options - docs[module])}"
    # and every module that takes a group's options is in the group
    marker = {"openbao": "url", "pkcs11": "pkcs11_library", "sam": "registry"}
    for group, option in marker.items():
        assert set(groups[group]) == {m for m, opts in docs.items() if option in opts}, group


def test_pins_come_from_a_lookup_the_collection_ships() -> None:
    """The example's PIN lookups name a lookup plugin that exists, with options it documents."""
    text = (PRODUCTION / "group_vars" / "all" / "hsm.yml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    calls = [re.search(r"lookup\('([\w.]+)'(.*)\)\s*}}$", data[pin]) for pin in PINS]
    assert all(calls), f"the PINs are not lookups: {[data[pin] for pin in PINS]}"
    for call in calls:
        assert call is not None
        name, rest = call.group(1), call.group(2)
        run = ansible("ansible-doc", "-t", "lookup", "--json", name)
        assert run.returncode == 0 and json.loads(run.stdout), f"lookup {name} not found: {run.stderr}"
        options = set(json.loads(run.stdout)[name]["doc"]["options"])
        assert set(re.findall(r"(\w+)=", rest)) <= options, (name, rest, sorted(options))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"revoke_reason": "r"}, "missing required arguments: revoke_holder"),
        ({"revoke_holder": "shantou"}, "missing required arguments: revoke_reason"),
        ({**REVOKE, "revoke_status": "deleted"}, "value of revoke_status must be one of: revoked, suspended"),
    ],
)
def test_a_bad_revocation_request_is_named(extra: dict[str, str], message: str, tmp_path: Path) -> None:
    inv = inventory_copy(tmp_path)
    run = ansible("ansible-playbook", "-i", str(inv), "playbooks/revoke.yml", NO_TASK, "-e", json.dumps(PINS | extra))
    assert run.returncode != 0
    assert message in run.stdout, run.stdout[-3000:]
