"""The lab's OpenBao as its users reach it: the province's own token, a city's AppRole login (tests and bench)."""

from __future__ import annotations

import importlib.util
import sys

import hvac

from tunion_lab.lab import LAB_DIR, REPO

OPENBAO_URL = "https://127.0.0.1:8200"
CA_CERT = str(LAB_DIR / "ca" / "ca.crt")
PROVINCE_TOKEN_FILE = LAB_DIR / "nodes" / "tunion-province" / ".openbao" / "token"


def _collection_default_mount() -> str:
    """The collection's default KV mount, from its one owner (openbao/layout.py, standard library only). Loaded
    by path: the lab's own process (bin/lab) does not have ansible_collections on its import path."""
    path = REPO / "plugins" / "module_utils" / "openbao" / "layout.py"
    spec = importlib.util.spec_from_file_location("_tunion_openbao_layout", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return str(module.DEFAULT_MOUNT)


MOUNT = _collection_default_mount()


def province_client() -> hvac.Client:
    """The province's own token (province-admin policy), as the provincial tasks use it: not the root token."""
    return hvac.Client(url=OPENBAO_URL, token=PROVINCE_TOKEN_FILE.read_text().strip(), verify=CA_CERT)


def wrapped_secret_id(province: hvac.Client, city: str, wrap_ttl: str = "2m") -> tuple[str, str]:
    """(role_id, wrapping token) for city's AppRole, as openbao_secret_id issues them."""
    role = f"city-{city}"
    role_id = province.auth.approle.read_role_id(role)["data"]["role_id"]
    wrapped = province.auth.approle.generate_secret_id(role, wrap_ttl=wrap_ttl)["wrap_info"]["token"]
    return role_id, wrapped


def unwrap(wrapped: str) -> str:
    """Unwrap a response-wrapped secret_id: the wrapping token is the credential for its own unwrap."""
    return hvac.Client(url=OPENBAO_URL, token=wrapped, verify=CA_CERT).sys.unwrap()["data"]["secret_id"]


def city_login(province: hvac.Client, city: str) -> tuple[hvac.Client, str, str]:
    """A city client logged in through the response-wrapped secret_id; also returns role_id and secret_id."""
    role_id, wrapped = wrapped_secret_id(province, city)
    secret_id = unwrap(wrapped)
    client = hvac.Client(url=OPENBAO_URL, verify=CA_CERT)
    client.auth.approle.login(role_id=role_id, secret_id=secret_id)
    return client, role_id, secret_id
