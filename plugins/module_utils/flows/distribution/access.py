# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The province's OpenBao setup for distribution: engines, each city's policy and AppRole, wrapped secret_ids."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import DistributionError
from ansible_collections.tunion.keymgmt.plugins.module_utils.openbao.client import OpenBao, translated
from ansible_collections.tunion.keymgmt.plugins.module_utils.openbao.layout import (
    OpenBaoLayout,
)

APPROLE_MOUNT = "approle"


@dataclass(frozen=True)
class AccessSettings:
    approle_mount: str = APPROLE_MOUNT
    secret_id_ttl: str = "10m"  # noqa: S105 - a duration
    token_ttl: str = "10m"  # noqa: S105 - a duration
    token_max_ttl: str = "15m"  # noqa: S105 - a duration
    max_versions: int = 0  # 0: keep every version (OpenBao's default cap is 10)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> AccessSettings:
        """The settings a module was given; a module without one of the options keeps its default."""
        given = {f.name: params[f.name] for f in fields(cls) if params.get(f.name) is not None}
        return cls(**given)


def _ttl_seconds(text: str | int) -> int:
    if isinstance(text, int) or str(text).isdigit():
        return int(text)
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    value, unit = str(text)[:-1], str(text)[-1]
    if unit not in units or not value.isdigit():
        raise DistributionError(f"duration {text!r}: use a number of seconds or <n>s/m/h/d")
    return int(value) * units[unit]


def ensure_engines(bao: OpenBao, settings: AccessSettings, check_mode: bool) -> list[str]:
    """KV v2 mount keeping versions, and the AppRole auth method. Returns what changed."""
    changes = []
    mounts = bao.call("listing secrets engines", bao.client.sys.list_mounted_secrets_engines)
    mounts = mounts.get("data", mounts)
    current = mounts.get(f"{bao.layout.mount}/")
    if current is None:
        changes.append(f"enable KV v2 at {bao.layout.mount}/")
        if not check_mode:
            bao.call(
                f"enabling KV v2 at {bao.layout.mount}",
                bao.client.sys.enable_secrets_engine,
                backend_type="kv",
                path=bao.layout.mount,
                options={"version": "2"},
                description="tunion-keyops key blocks, KEK envelopes and city status (versions kept)",
            )
    elif current.get("type") != "kv" or (current.get("options") or {}).get("version") != "2":
        raise DistributionError(f"{bao.layout.mount}/ is mounted but is not KV version 2; move it away first")
    if current is None and not check_mode:
        _wait_for_kv(bao, bao.layout.mount)
    if current is None or not check_mode:
        config = {}
        if current is not None:
            config = bao.call(
                "reading the KV configuration",
                bao.client.secrets.kv.v2.read_configuration,
                mount_point=bao.layout.mount,
            )["data"]
        if current is None or int(config.get("max_versions", -1)) != settings.max_versions:
            if current is not None:
                changes.append(f"set max_versions={settings.max_versions} on {bao.layout.mount}/")
            if not check_mode:
                bao.call(
                    "configuring the KV mount",
                    bao.client.secrets.kv.v2.configure,
                    max_versions=settings.max_versions,
                    mount_point=bao.layout.mount,
                )
    auths = bao.call("listing auth methods", bao.client.sys.list_auth_methods)
    auths = auths.get("data", auths)
    if f"{settings.approle_mount}/" not in auths:
        changes.append(f"enable AppRole at auth/{settings.approle_mount}/")
        if not check_mode:
            bao.call(
                "enabling AppRole",
                bao.client.sys.enable_auth_method,
                method_type="approle",
                path=settings.approle_mount,
            )
    return changes


def _wait_for_kv(bao: OpenBao, mount: str, timeout: float = 15.0) -> None:
    """A new KV v2 mount answers 'upgrading' for a moment; wait until it serves requests."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            bao.client.secrets.kv.v2.read_configuration(mount_point=mount)
            return
        except Exception:
            if time.monotonic() > deadline:
                with translated(f"waiting for {mount}/ to finish its KV v2 upgrade", bao.url):
                    raise
            time.sleep(0.2)


def _role_wanted(city: str, settings: AccessSettings) -> dict[str, Any]:
    return {
        "bind_secret_id": True,
        "secret_id_num_uses": 1,
        "secret_id_ttl": _ttl_seconds(settings.secret_id_ttl),
        "token_ttl": _ttl_seconds(settings.token_ttl),
        "token_max_ttl": _ttl_seconds(settings.token_max_ttl),
        "token_policies": [OpenBaoLayout.role_name(city)],
        "token_no_default_policy": True,
        "token_type": "service",
    }


def ensure_city_access(bao: OpenBao, city: str, settings: AccessSettings, check_mode: bool) -> list[str]:
    """Policy and AppRole of one city. Returns what changed."""
    changes: list[str] = []
    name = OpenBaoLayout.role_name(city)
    wanted_policy = bao.layout.city_policy_hcl(city)
    answer = bao.call_or_none(f"reading policy {name}", bao.client.sys.read_acl_policy, name)
    current_policy = answer["data"]["policy"] if answer else None
    if current_policy != wanted_policy:
        changes.append(f"policy {name}")
        if not check_mode:
            bao.call(f"writing policy {name}", bao.client.sys.create_or_update_acl_policy, name, wanted_policy)
    wanted_role = _role_wanted(city, settings)
    answer = bao.call_or_none(
        f"reading AppRole {name}", bao.client.auth.approle.read_role, name, mount_point=settings.approle_mount
    )
    current_role = answer["data"] if answer else None
    if current_role is None or any(current_role.get(k) != v for k, v in wanted_role.items()):
        changes.append(f"AppRole {name}")
        if not check_mode:
            bao.call(
                f"writing AppRole {name}",
                bao.client.auth.approle.create_or_update_approle,
                name,
                mount_point=settings.approle_mount,
                **{k: v for k, v in wanted_role.items() if k != "token_no_default_policy"},
                token_no_default_policy=True,
            )
    return changes


def issue_wrapped_secret_id(bao: OpenBao, city: str, settings: AccessSettings, wrap_ttl: str) -> dict[str, str]:
    """role_id and a response-wrapped, single-use secret_id for one city (a login credential, not state)."""
    name = OpenBaoLayout.role_name(city)
    role_id = bao.call(
        f"reading the role_id of {name}",
        bao.client.auth.approle.read_role_id,
        name,
        mount_point=settings.approle_mount,
    )["data"]["role_id"]
    wrapped = bao.call(
        f"issuing a wrapped secret_id for {name}",
        bao.client.auth.approle.generate_secret_id,
        name,
        mount_point=settings.approle_mount,
        wrap_ttl=wrap_ttl,
        metadata={"issued_by": "province", "city": city},
    )
    return {"role_id": role_id, "wrapped_secret_id": wrapped["wrap_info"]["token"], "role_name": name}
