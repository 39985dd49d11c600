"""Helpers for the distribution tests: the province's OpenBao identity, city logins, and lab paths."""

from __future__ import annotations

import subprocess

import hvac
import hvac.exceptions

from tunion_lab.lab import CHILD_PYTHONPATH, INVENTORY, LAB_DIR, REPO

OPENBAO_URL = "https://127.0.0.1:8200"
CA_CERT = str(LAB_DIR / "ca" / "ca.crt")
PROVINCE_TOKEN_FILE = LAB_DIR / "nodes" / "tunion-province" / ".openbao" / "token"
MOUNT = "tunion-kb"


def province_client() -> hvac.Client:
    """The province's own token (province-admin policy), as the provincial tasks use it: not the root token."""
    return hvac.Client(url=OPENBAO_URL, token=PROVINCE_TOKEN_FILE.read_text().strip(), verify=CA_CERT)


def wrapped_secret_id(province: hvac.Client, city: str) -> tuple[str, str]:
    """(role_id, wrapping token) for city's AppRole, as openbao_secret_id issues them."""
    role = f"city-{city}"
    role_id = province.auth.approle.read_role_id(role)["data"]["role_id"]
    wrapped = province.auth.approle.generate_secret_id(role, wrap_ttl="2m")["wrap_info"]["token"]
    return role_id, wrapped


def city_login(province: hvac.Client, city: str) -> tuple[hvac.Client, str, str]:
    """A city client logged in through the response-wrapped secret_id; also returns role_id and secret_id."""
    role_id, wrapped = wrapped_secret_id(province, city)
    secret_id = unwrap(wrapped)
    client = hvac.Client(url=OPENBAO_URL, verify=CA_CERT)
    client.auth.approle.login(role_id=role_id, secret_id=secret_id)
    return client, role_id, secret_id


def unwrap(wrapped: str) -> str:
    """Unwrap a response-wrapped secret_id: the wrapping token is the credential for its own unwrap."""
    return hvac.Client(url=OPENBAO_URL, token=wrapped, verify=CA_CERT).sys.unwrap()["data"]["secret_id"]


# ----------------------------------------------------------------------------------------------------------------
# Resetting distribution, for cold runs (tests and bench/bench_rollout.py). Runs as root, the lab operator.

PIN_DIR = LAB_DIR / "secrets" / "hsm-pins"
PYTHON = REPO / ".venv" / "bin" / "python"

# Runs as the token's own unix user: destroys the distribution objects named in argv (holder, types).
_DESTROY = r"""
import sys
from ansible_collections.tunion.keymgmt.plugins.module_utils.hsm import hsm_session, parse_key_label
label, who, holders, types = sys.argv[1], sys.argv[2], sys.argv[3].split(","), sys.argv[4].split(",")
pin = sys.stdin.read().strip()
kwargs = {"so_pin": pin} if who == "so" else {}
with hsm_session("/usr/lib/softhsm/libsofthsm2.so", label, None if who == "so" else pin, **kwargs) as hsm:
    gone = 0
    for obj in hsm.list_keys():
        name = parse_key_label(getattr(obj, "label", "") or "")
        if name and name.holder in holders and (types == ["*"] or name.key_type in types):
            obj.destroy()
            gone += 1
print(gone)
"""


def lab_cities() -> dict[str, str]:
    """city name -> city code, from the lab inventory."""
    import yaml

    hosts = yaml.safe_load((INVENTORY / "hosts.yml").read_text())["all"]["children"]["cities"]["hosts"]
    return {name: str(entry["city_code"]) for name, entry in hosts.items()}


def _destroy(user: str, token_label: str, who: str, holders: list[str], types: list[str]) -> subprocess.Popen:
    pin = (PIN_DIR / f"{token_label}.{'so' if who == 'so' else 'user'}").read_text().strip()
    home = LAB_DIR / "nodes" / user
    env = {
        "HOME": str(home),
        "SOFTHSM2_CONF": str(home / ".config" / "softhsm2" / "softhsm2.conf"),
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "PYTHONPATH": CHILD_PYTHONPATH,
    }
    proc = subprocess.Popen(
        [
            "runuser",
            "-u",
            user,
            "--",
            str(PYTHON),
            "-c",
            _DESTROY,
            token_label,
            who,
            ",".join(holders),
            ",".join(types),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd="/",
    )
    proc.stdin.write(pin)
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
        err = proc.stderr.read()
        proc.stdout.read()
        if proc.wait(timeout=120):
            raise RuntimeError(f"reset failed: {err.strip()[-300:]}")


def city_token_objects(city: str) -> list[tuple[str, str]]:
    """(label, KCV or '') of every key object in a city's token, read as the city user (for before/after checks)."""
    return token_objects(f"city-{city}", f"tunion-{city}")


def token_objects(user: str, label: str) -> list[tuple[str, str]]:
    """(label, KCV or '') of every key object in a token, read as its unix user."""
    code = r"""
import sys
from pkcs11 import ObjectClass
from ansible_collections.tunion.keymgmt.plugins.module_utils.hsm import hsm_session
with hsm_session("/usr/lib/softhsm/libsofthsm2.so", sys.argv[1], sys.stdin.read().strip(), rw=False) as hsm:
    for obj in hsm.list_keys():
        kcv = hsm.kcv(obj).hex().upper() if obj.object_class == ObjectClass.SECRET_KEY else ""
        print(f"{obj.label}\t{kcv}")
"""
    home = LAB_DIR / "nodes" / user
    env = {
        "HOME": str(home),
        "SOFTHSM2_CONF": str(home / ".config" / "softhsm2" / "softhsm2.conf"),
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "PYTHONPATH": CHILD_PYTHONPATH,
    }
    pin = (PIN_DIR / f"{label}.user").read_text().strip()
    out = subprocess.run(
        ["/usr/sbin/runuser", "-u", user, "--", str(PYTHON), "-c", code, label],
        input=pin,
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
        check=True,
    ).stdout
    return sorted(tuple(line.split("\t")) for line in out.splitlines() if line)
