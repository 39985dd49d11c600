"""Issue 9, Must show 7: the collection as a release ships it.

`ansible-galaxy collection build` makes the tarball; it holds the collection (plugins, meta, roles, docs, LICENSE,
README, changelog) and none of the lab, tests, benchmarks or playbook project. `ansible-galaxy collection install`
puts it into a temporary path, and everything after that runs from that copy only: a working directory outside the
checkout, an empty ansible.cfg, ANSIBLE_COLLECTIONS_PATH the temporary path and ANSIBLE_HOME a temporary one, so
neither the checkout's collections/ link nor ~/.ansible can supply tunion.keymgmt. From the installed copy every
module's documentation renders, key_catalogue_validate runs against the lab catalogue, and the openbao_kv lookup
reads a secret from the lab's OpenBao.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tunion_lab.lab import LAB_DIR, REPO
from tunion_lab.playbooks import VENV_BIN

pytestmark = pytest.mark.slow

GALAXY = yaml.safe_load((REPO / "galaxy.yml").read_text(encoding="utf-8"))
TARBALL_NAME = f"{GALAXY['namespace']}-{GALAXY['name']}-{GALAXY['version']}.tar.gz"
MODULES = sorted(p.stem for p in (REPO / "plugins" / "modules").glob("*.py") if p.stem != "__init__")
LAB_CATALOGUE = REPO / "inventories" / "lab" / "group_vars" / "all" / "key_catalogue.yml"
OPENBAO_URL = "https://127.0.0.1:8200"
LAB_CA = LAB_DIR / "ca" / "ca.crt"

# What the tarball must carry, and what must stay out of it (top-level paths of the checkout).
SHIPPED = [
    "MANIFEST.json",
    "FILES.json",
    "LICENSE",
    "README.md",
    "CHANGELOG.rst",
    "meta/runtime.yml",
    "plugins/lookup/openbao_kv.py",
    *(f"plugins/modules/{name}.py" for name in MODULES),
]
KEPT_OUT = [
    ".lab",
    ".venv",
    ".git",
    ".ci",
    "bin",
    "tunion_lab",
    "collections",
    "tests",
    "bench",
    "extensions",
    "playbooks",
    "inventories",
    "ansible.cfg",
    "pyproject.toml",
    "requirements.txt",
    ".pre-commit-config.yaml",
    "changelogs/fragments",
]
CLASS_BYTE = {"consumption": 0x01, "recharge": 0x02, "internal": 0x03}  # docs/hsm.md, Label and ID scheme


@dataclass
class Installed:
    """The collection installed from its tarball, and how to run Ansible against that copy only."""

    root: Path  # .../ansible_collections/tunion/keymgmt
    workdir: Path
    env: dict[str, str]

    def run(self, tool: str, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(VENV_BIN / tool), *args],
            cwd=self.workdir,
            env={**self.env, **(extra_env or {})},
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )


def isolated_env(workdir: Path, collections: Path) -> dict[str, str]:
    """The caller's environment without any Ansible or Python path setting, pointed at the installed copy."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PYTHON", "BAO_", "VAULT_"))}
    cfg = workdir / "ansible.cfg"
    cfg.write_text("[defaults]\n", encoding="utf-8")
    env.update(
        PATH=f"{VENV_BIN}:{env.get('PATH', '')}",
        ANSIBLE_CONFIG=str(cfg),
        ANSIBLE_COLLECTIONS_PATH=str(collections),
        ANSIBLE_HOME=str(workdir / "ansible-home"),
        ANSIBLE_LOCAL_TEMP=str(workdir / "ansible-tmp"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_DEPRECATION_WARNINGS="0",
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default",
        # localhost runs the modules with the project's interpreter (hvac, pkcs11 ...), as the lab nodes do
        ANSIBLE_PYTHON_INTERPRETER=str(VENV_BIN / "python"),
    )
    return env


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """Where the collection is built and installed, and Ansible run against that copy (installed by `installed`)."""
    workdir = tmp_path_factory.mktemp("installed")
    collections = workdir / "collections"
    root = collections / "ansible_collections" / GALAXY["namespace"] / GALAXY["name"]
    return Installed(root, workdir, isolated_env(workdir, collections))


@pytest.fixture(scope="module")
def tarball(sandbox: Installed) -> Path:
    out = sandbox.workdir / "build"
    proc = sandbox.run("ansible-galaxy", "collection", "build", "--output-path", str(out), str(REPO))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    built = out / TARBALL_NAME
    assert built.is_file(), f"ansible-galaxy built {sorted(p.name for p in out.iterdir())}, not {TARBALL_NAME}"
    return built


@pytest.fixture(scope="module")
def installed(sandbox: Installed, tarball: Path) -> Installed:
    collections = sandbox.root.parent.parent.parent
    proc = sandbox.run("ansible-galaxy", "collection", "install", "--no-deps", "-p", str(collections), str(tarball))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (sandbox.root / "MANIFEST.json").is_file(), proc.stdout
    assert not sandbox.root.is_symlink()
    return sandbox


def test_tarball_holds_the_collection_and_nothing_else(tarball: Path) -> None:
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("MANIFEST.json"))  # type: ignore[arg-type]
    present = set(names)
    missing = [path for path in SHIPPED if path not in present]
    assert not missing, f"the tarball lacks {missing}"
    # every role the checkout has ships, with its argument specs
    for role in sorted(p.name for p in (REPO / "roles").iterdir() if p.is_dir()):
        assert f"roles/{role}/meta/argument_specs.yml" in present, role
    leaked = sorted(n for n in names if any(n == top or n.startswith(f"{top}/") for top in KEPT_OUT))
    assert not leaked, f"the tarball carries lab, test or playbook-project files: {leaked[:20]}"
    caches = sorted(n for n in names if "__pycache__" in n or n.endswith(".pyc") or "_cache" in n)
    assert not caches, caches
    # every tracked source file of plugins/ is in it
    tracked = subprocess.run(
        ["git", "ls-files", "plugins"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    assert not sorted(set(tracked) - present), "tracked plugin files missing from the tarball"
    info = manifest["collection_info"]
    assert (info["namespace"], info["name"], info["version"]) == (
        GALAXY["namespace"],
        GALAXY["name"],
        GALAXY["version"],
    )
    assert info["license"] == ["GPL-3.0-or-later"]
    assert info["dependencies"] == {}


def test_changelog_documents_the_version_the_tarball_carries() -> None:
    changes = yaml.safe_load((REPO / "changelogs" / "changelog.yaml").read_text(encoding="utf-8"))
    assert GALAXY["version"] in changes["releases"]
    assert f"v{GALAXY['version']}\n" in (REPO / "CHANGELOG.rst").read_text(encoding="utf-8")


def test_installed_copy_is_the_one_ansible_uses(installed: Installed) -> None:
    proc = installed.run("ansible-galaxy", "collection", "list", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout)
    name = f"{GALAXY['namespace']}.{GALAXY['name']}"
    paths = [path for path, found in listed.items() if name in found]
    assert paths == [str(installed.root.parent.parent)], listed


def test_every_installed_module_and_the_lookup_render_in_ansible_doc(installed: Installed) -> None:
    fqcns = [f"tunion.keymgmt.{name}" for name in MODULES]
    proc = installed.run("ansible-doc", "--json", *fqcns)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "ERROR" not in proc.stderr, proc.stderr
    docs = json.loads(proc.stdout)
    assert sorted(docs) == sorted(fqcns)
    for fqcn, entry in docs.items():
        doc = entry["doc"]
        assert doc["short_description"], fqcn
        assert Path(doc["filename"]).is_relative_to(installed.root), f"{fqcn} came from {doc['filename']}"
        assert entry["examples"] and entry["return"] is not None, f"{fqcn}: EXAMPLES or RETURN missing"
    # the listing of the installed collection names every module, no more, no less
    listing = installed.run("ansible-doc", "--list", "--json", "tunion.keymgmt")
    assert listing.returncode == 0, listing.stderr
    assert sorted(json.loads(listing.stdout)) == sorted(fqcns)
    # as a person reads it
    text = installed.run("ansible-doc", "tunion.keymgmt.key_catalogue_validate")
    assert text.returncode == 0, text.stderr
    assert str(installed.root / "plugins" / "modules" / "key_catalogue_validate.py") in text.stdout
    assert "catalogue" in text.stdout and "EXAMPLES" in text.stdout
    lookup = installed.run("ansible-doc", "-t", "lookup", "tunion.keymgmt.openbao_kv")
    assert lookup.returncode == 0, lookup.stderr
    assert str(installed.root / "plugins" / "lookup" / "openbao_kv.py") in lookup.stdout


def test_installed_roles_render_their_argument_specs(installed: Installed) -> None:
    roles = sorted(f"tunion.keymgmt.{p.parent.parent.name}" for p in (REPO / "roles").glob("*/meta/argument_specs.yml"))
    listing = installed.run("ansible-doc", "-t", "role", "--list", "--json", "tunion.keymgmt")
    assert listing.returncode == 0, listing.stderr
    listed = json.loads(listing.stdout)
    assert sorted(listed) == roles
    for role, entry in listed.items():
        assert entry["entry_points"], f"{role} documents no entry point"


VALIDATE_PLAY = """\
- name: Validate a key catalogue with the installed collection
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Load the catalogue
      ansible.builtin.include_vars:
        file: {catalogue}
    - name: Validate it
      tunion.keymgmt.key_catalogue_validate:
        catalogue: "{{{{ key_catalogue }}}}"
      register: validated
    - name: Keep the result for the test
      ansible.builtin.copy:
        content: "{{{{ validated | to_json }}}}"
        dest: {result}
        mode: "0600"
"""


def run_validate(installed: Installed, catalogue: Path, name: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    result = installed.workdir / f"{name}.json"
    play = installed.workdir / f"{name}.yml"
    play.write_text(VALIDATE_PLAY.format(catalogue=catalogue, result=result), encoding="utf-8")
    return installed.run("ansible-playbook", "-i", "localhost,", str(play)), result


def test_installed_key_catalogue_validate_runs_against_the_lab_catalogue(installed: Installed) -> None:
    proc, result = run_validate(installed, LAB_CATALOGUE, "lab-catalogue")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    validated = json.loads(result.read_text(encoding="utf-8"))
    assert validated["failed"] is False and validated["changed"] is False
    # the summary, checked against the YAML and the documented label and ID scheme (docs/hsm.md), not the code
    entries = yaml.safe_load(LAB_CATALOGUE.read_text(encoding="utf-8"))["key_catalogue"]
    assert [e["name"] for e in validated["catalogue"]] == [e["name"] for e in entries]
    for entry, summary in zip(entries, validated["catalogue"], strict=True):
        expected = [
            (
                f"{entry['class']}.{entry['name']}.v{v['version']:02X}.province",
                f"{CLASS_BYTE[entry['class']]:02x}{entry['code']:02x}{v['version']:02x}00",
            )
            for v in entry["versions"]
        ]
        assert [(v["label"], v["id"]) for v in summary["versions"]] == expected, entry["name"]
    sam_types = [e["name"] for e in entries if e["class"] == "consumption" and "sam" in e["holders"]]
    assert validated["sam_key_types"] == sam_types


def test_installed_key_catalogue_validate_refuses_a_recharge_key_for_sams(installed: Installed) -> None:
    entries: list[dict[str, Any]] = yaml.safe_load(LAB_CATALOGUE.read_text(encoding="utf-8"))["key_catalogue"]
    recharge = next(e for e in entries if e["class"] == "recharge")
    recharge["holders"] = [*recharge["holders"], "sam"]
    bad = installed.workdir / "recharge-for-sams-vars.yml"
    bad.write_text(yaml.safe_dump({"key_catalogue": entries}, allow_unicode=True), encoding="utf-8")
    proc, result = run_validate(installed, bad, "bad-catalogue")
    assert proc.returncode != 0
    assert not result.exists()
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output
    assert recharge["name"] in output and "第二条(四)" in output, output[-3000:]


@dataclass
class ScratchSecret:
    mount: str
    path: str
    field: str
    value: str
    token: str


@pytest.fixture
def scratch_secret(openbao_root: Any) -> Iterator[ScratchSecret]:
    """A KV v2 mount of the test's own with one secret, and a token that may read only that mount (and look itself
    up, as the default policy allows); all removed."""
    suffix = secrets.token_hex(4)
    mount, policy = f"tunion-test-lookup-{suffix}", f"tunion-test-lookup-{suffix}"
    value = secrets.token_hex(8)
    openbao_root.sys.enable_secrets_engine("kv", path=mount, options={"version": "2"})
    token = None
    try:
        openbao_root.secrets.kv.v2.create_or_update_secret(
            path="hsm/tunion-test", mount_point=mount, secret={"user_pin": value, "so_pin": "not-this-one"}
        )
        openbao_root.sys.create_or_update_policy(policy, f'path "{mount}/data/*" {{ capabilities = ["read"] }}')
        token = openbao_root.auth.token.create(policies=[policy], ttl="10m")["auth"]["client_token"]
        yield ScratchSecret(mount, "hsm/tunion-test", "user_pin", value, token)
    finally:
        if token:
            openbao_root.auth.token.revoke(token)
        openbao_root.sys.delete_policy(policy)
        openbao_root.sys.disable_secrets_engine(mount)


def lookup_debug(
    installed: Installed, terms: str, env: dict[str, str], variables: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The lookup in an ad-hoc debug task on localhost, with this environment and these extra variables."""
    return installed.run(
        "ansible",
        "localhost",
        "-i",
        "localhost,",
        "-c",
        "local",
        *(["-e", json.dumps(variables)] if variables else []),
        "-m",
        "ansible.builtin.debug",
        "-a",
        f"msg={{{{ lookup('tunion.keymgmt.openbao_kv', {terms}) }}}}",
        extra_env=env,
    )


@pytest.mark.lab
def test_installed_openbao_kv_lookup_reads_one_field_and_names_what_is_missing(
    installed: Installed, scratch_secret: ScratchSecret
) -> None:
    s = scratch_secret
    env = {"BAO_ADDR": OPENBAO_URL, "BAO_CACERT": str(LAB_CA), "BAO_TOKEN": s.token}
    ok = lookup_debug(installed, f"'{s.path}', field='{s.field}', mount='{s.mount}'", env)
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
    assert f'"msg": "{s.value}"' in ok.stdout
    # the inventory's openbao_addr and openbao_ca_cert serve as well, with no BAO_ADDR or BAO_CACERT
    inventory = lookup_debug(
        installed,
        f"'{s.path}', field='{s.field}', mount='{s.mount}'",
        {"BAO_TOKEN": s.token},
        {"openbao_addr": OPENBAO_URL, "openbao_ca_cert": str(LAB_CA)},
    )
    assert inventory.returncode == 0, inventory.stdout[-2000:] + inventory.stderr[-2000:]
    assert f'"msg": "{s.value}"' in inventory.stdout

    no_path = lookup_debug(installed, f"'hsm/absent', field='{s.field}', mount='{s.mount}'", env)
    no_field = lookup_debug(installed, f"'{s.path}', field='usr_pin', mount='{s.mount}'", env)
    for proc, named in ((no_path, f"{s.mount}/hsm/absent"), (no_field, "'usr_pin'")):
        output = proc.stdout + proc.stderr
        assert proc.returncode != 0
        assert named in output, output[-2000:]
        assert s.value not in output and "not-this-one" not in output
        assert s.token not in output
        assert "Traceback" not in output


def test_installed_openbao_kv_lookup_without_address_or_token_says_what_to_set(installed: Installed) -> None:
    def debug(terms: str, **env: str) -> str:
        proc = lookup_debug(installed, terms, env)
        assert proc.returncode != 0
        output = proc.stdout + proc.stderr
        assert "Traceback" not in output
        return output

    no_address = debug("'hsm/tunion-province', field='user_pin'")
    assert "no OpenBao address" in no_address and "openbao_addr" in no_address, no_address[-2000:]
    no_token = debug("'hsm/tunion-province', field='user_pin', token_path='/nonexistent/token'", BAO_ADDR=OPENBAO_URL)
    assert "no OpenBao token" in no_token and "/nonexistent/token" in no_token, no_token[-2000:]
