"""Reading and undoing the lab's state for cold runs (tests and bench), as root, the lab operator.

Tokens are opened as their node's own unix user (their files must stay theirs), the PIN on stdin.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import hvac.exceptions
import yaml

from tunion_lab.lab import CHILD_PYTHONPATH, INVENTORY, LAB_DIR, REPO, SOFTHSM_LIBRARY
from tunion_lab.openbao_access import MOUNT, province_client

PIN_DIR = LAB_DIR / "secrets" / "hsm-pins"
PYTHON = REPO / ".venv" / "bin" / "python"

# Destroys the distribution objects named in argv (token label, who logs in, holders, key types).
_DESTROY = r"""
import sys
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.names import parse_key_label
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import hsm_session
library, label, who = sys.argv[1:4]
holders, types = sys.argv[4].split(","), sys.argv[5].split(",")
pin = sys.stdin.read().strip()
kwargs = {"so_pin": pin} if who == "so" else {}
with hsm_session(library, label, None if who == "so" else pin, **kwargs) as hsm:
    gone = 0
    for obj in hsm.list_keys():
        name = parse_key_label(getattr(obj, "label", "") or "")
        if name and name.holder in holders and (types == ["*"] or name.key_type in types):
            obj.destroy()
            gone += 1
print(gone)
"""

# Prints label and KCV (or nothing) of every key object in the token labelled argv[2].
_LIST = r"""
import sys
from pkcs11 import ObjectClass
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import hsm_session
with hsm_session(sys.argv[1], sys.argv[2], sys.stdin.read().strip(), rw=False) as hsm:
    for obj in hsm.list_keys():
        kcv = hsm.kcv(obj).hex().upper() if obj.object_class == ObjectClass.SECRET_KEY else ""
        print(f"{obj.label}\t{kcv}")
"""


def lab_cities() -> dict[str, str]:
    """city name -> city code, from the lab inventory."""
    hosts = yaml.safe_load((INVENTORY / "hosts.yml").read_text())["all"]["children"]["cities"]["hosts"]
    return {name: str(entry["city_code"]) for name, entry in hosts.items()}


def json_as_node(user: str, code: str, token_label: str, what: str) -> Any:
    """Run Python `code` as the node's unix user with the token's user PIN on stdin; its stdout as JSON.

    `code` gets the SoftHSM library and `token_label` as argv[1:3]. A failure names `what` and the node's stderr.
    """
    proc = subprocess.run(
        _as_node(user, code, token_label),
        input=_pin(token_label, "user"),
        capture_output=True,
        text=True,
        cwd="/",
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"{what} as {user} failed: {proc.stderr.strip()[-800:]}")
    return json.loads(proc.stdout)


def _as_node(user: str, code: str, *args: str) -> list[str]:
    """argv that runs Python `code` as the node's unix user, with the node's SoftHSM configuration."""
    home = LAB_DIR / "nodes" / user
    return [
        "/usr/sbin/runuser",
        "-u",
        user,
        "--",
        "env",
        "-i",
        f"HOME={home}",
        f"SOFTHSM2_CONF={home / '.config' / 'softhsm2' / 'softhsm2.conf'}",
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        f"PYTHONPATH={CHILD_PYTHONPATH}",
        str(PYTHON),
        "-c",
        code,
        SOFTHSM_LIBRARY,
        *args,
    ]


def _pin(token_label: str, who: str) -> str:
    return (PIN_DIR / f"{token_label}.{'so' if who == 'so' else 'user'}").read_text().strip()


def _destroy(user: str, token_label: str, who: str, holders: list[str], types: list[str]) -> subprocess.Popen:
    argv = _as_node(user, _DESTROY, token_label, who, ",".join(holders), ",".join(types))
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/"
    )
    assert proc.stdin is not None
    proc.stdin.write(_pin(token_label, who))
    proc.stdin.close()
    return proc


def reset_distribution(cities: list[str] | None = None) -> None:
    """Undo distribution for these cities (default: all): their OpenBao entries, the distribution objects in their
    tokens, and the province's KEK and copy of their public key. Grants, catalogue keys and AppRoles stay."""
    all_cities = lab_cities()
    chosen = {c: all_cities[c] for c in (cities or list(all_cities))}
    province = province_client()
    kv = province.secrets.kv.v2
    for city in chosen:
        for leaf in ("enrolment", "kek", "status"):
            kv.delete_metadata_and_all_versions(f"cities/{city}/{leaf}", mount_point=MOUNT)
        try:
            names = kv.list_secrets(f"cities/{city}/blocks", mount_point=MOUNT)["data"]["keys"]
        except hvac.exceptions.InvalidPath:
            names = []
        for name in names:
            kv.delete_metadata_and_all_versions(f"cities/{city}/blocks/{name}", mount_point=MOUNT)
    procs = [_destroy(f"city-{c}", f"tunion-{c}", "user", [f"city-{code}"], ["*"]) for c, code in chosen.items()]
    procs.append(
        _destroy(
            "tunion-province",
            "tunion-province",
            "so",
            [f"city-{code}" for code in chosen.values()],
            ["kek", "transport_rsa"],
        )
    )
    for proc in procs:
        assert proc.stdout is not None and proc.stderr is not None
        err = proc.stderr.read()
        proc.stdout.read()
        if proc.wait(timeout=120):
            raise RuntimeError(f"reset failed: {err.strip()[-300:]}")


def clear_rotations() -> None:
    """Test and bench clean-up only: forget every recorded rotation (a real rotation is never undone), so that the
    next distribution grants the inventory's versions again and retires the rotated ones."""
    kv = province_client().secrets.kv.v2
    try:
        names = kv.list_secrets("province/rotation", mount_point=MOUNT)["data"]["keys"]
    except hvac.exceptions.InvalidPath:
        names = []
    for name in names:
        kv.delete_metadata_and_all_versions(f"province/rotation/{name}", mount_point=MOUNT)


def token_objects(user: str, label: str) -> list[tuple[str, str]]:
    """(label, KCV or '') of every key object in a token, read as its unix user."""
    out = subprocess.run(
        _as_node(user, _LIST, label), input=_pin(label, "user"), capture_output=True, text=True, cwd="/", check=True
    ).stdout
    return sorted(tuple(line.split("\t")) for line in out.splitlines() if line)


def city_token_objects(city: str) -> list[tuple[str, str]]:
    """(label, KCV or '') of every key object in a city's token, read as the city user (for before/after checks)."""
    return token_objects(f"city-{city}", f"tunion-{city}")
