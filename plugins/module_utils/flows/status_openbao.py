# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Statuses in OpenBao (docs/revocation.md): the recorded statuses, and what each status means for a city there.

Cut a city's access (policy first - the quickest denial -, then every secret_id, the AppRole, and every token found
through its accessor), destroy its key blocks and records (every version and the metadata), and mark its KEK's
status entry under ``province/kek-status/<city>`` (粤交〔2019〕11号 第十七条).
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.clock import now
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.distribution.access import (
    AccessSettings,
    ensure_city_access,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.status import (
    KINDS,
    Status,
    Universe,
    desired_statuses,
    status_differs,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.openbao.client import OpenBao
from ansible_collections.tunion.keymgmt.plugins.module_utils.openbao.layout import OpenBaoLayout


def read_recorded(bao: OpenBao) -> dict[str, dict[str, Any]]:
    """'<kind>:<name>' -> last recorded status (province/status/<kind>/<name>)."""
    recorded: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        for name in bao.kv_list(bao.layout.mount, f"{bao.layout.status}/{kind}"):
            record = bao.kv_read(bao.layout.mount, f"{bao.layout.status}/{kind}/{name}")
            if record:
                recorded[f"{kind}:{name}"] = record["data"]
    return recorded


def record_status(bao: OpenBao, kind: str, name: str, status: Status) -> bool:
    """Write the status record if it differs (every version kept: the history of a holder's status)."""
    path = f"{bao.layout.status}/{kind}/{name}"
    current = bao.kv_read(bao.layout.mount, path)
    wanted = status.as_dict()
    if current and {k: current["data"].get(k) for k in wanted} == wanted:
        return False
    bao.kv_write(bao.layout.mount, path, dict(wanted, recorded_at=now()))
    return True


def _token_accessors(bao: OpenBao) -> list[str]:
    answer = bao.call_or_none("listing token accessors", bao.client.list, "auth/token/accessors")
    return list(((answer or {}).get("data") or {}).get("keys") or [])


def _lookup_accessor(bao: OpenBao, accessor: str) -> dict[str, Any] | None:
    try:
        answer = bao.client.auth.token.lookup_accessor(accessor)
    except Exception:  # noqa: BLE001 - a token that expired between list and lookup is simply gone
        return None
    return (answer or {}).get("data")


def city_token_accessors(bao: OpenBao, city: str, workers: int = 8) -> list[str]:
    """Accessors of every live token of the city: issued by its AppRole, or carrying its policy."""
    role = OpenBaoLayout.role_name(city)
    accessors = _token_accessors(bao)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        infos = list(pool.map(lambda a: (a, _lookup_accessor(bao, a)), accessors))
    found = []
    for accessor, info in infos:
        if not info:
            continue
        meta = info.get("meta") or {}
        if meta.get("role_name") == role or role in (info.get("policies") or []):
            found.append(accessor)
    return found


def cut_city_access(bao: OpenBao, city: str, *, approle_mount: str, check_mode: bool) -> list[str]:
    """Policy removed (existing tokens are denied at once), every secret_id destroyed, AppRole deleted, every token
    revoked through its accessor. Idempotent: returns what was (or would be) done; empty when already cut."""
    name = OpenBaoLayout.role_name(city)
    done: list[str] = []
    policy = bao.call_or_none(f"reading policy {name}", bao.client.sys.read_acl_policy, name)
    if policy is not None:
        done.append(f"policy {name} removed")
        if not check_mode:
            bao.call(f"removing policy {name}", bao.client.sys.delete_acl_policy, name)
    role = bao.call_or_none(
        f"reading AppRole {name}", bao.client.auth.approle.read_role, name, mount_point=approle_mount
    )
    if role is not None:
        listed = bao.call_or_none(
            f"listing the secret_ids of {name}",
            bao.client.auth.approle.list_secret_id_accessors,
            name,
            mount_point=approle_mount,
        )
        secret_accessors = list(((listed or {}).get("data") or {}).get("keys") or [])
        for accessor in secret_accessors:
            if not check_mode:
                bao.call_or_none(
                    f"destroying a secret_id of {name}",
                    bao.client.auth.approle.destroy_secret_id_accessor,
                    name,
                    accessor,
                    mount_point=approle_mount,
                )
        done.append(f"{len(secret_accessors)} secret_id(s) of {name} destroyed")
        done.append(f"AppRole {name} deleted")
        if not check_mode:
            bao.call(f"deleting AppRole {name}", bao.client.auth.approle.delete_role, name, mount_point=approle_mount)
    tokens = city_token_accessors(bao, city)
    for accessor in tokens:
        if not check_mode:
            bao.call_or_none(f"revoking a token of {name}", bao.client.auth.token.revoke_accessor, accessor)
    if tokens:
        done.append(f"{len(tokens)} token(s) of {name} revoked by accessor")
    return done


def restore_city_access(bao: OpenBao, city: str, settings: AccessSettings, check_mode: bool) -> list[str]:
    """Policy and AppRole back, as distribution makes them (the key material was kept: nothing is reissued)."""
    return ensure_city_access(bao, city, settings, check_mode)


def _kv_tree(bao: OpenBao, prefix: str) -> list[str]:
    """Every secret path under ``prefix`` (depth first)."""
    paths: list[str] = []
    for entry in bao.kv_list(bao.layout.mount, prefix):
        child = f"{prefix}/{entry.rstrip('/')}"
        if entry.endswith("/"):
            paths += _kv_tree(bao, child)
        else:
            paths.append(child)
    return paths


def destroy_city_material(bao: OpenBao, city: str, *, check_mode: bool) -> tuple[list[str], dict | None]:
    """Destroy every version and the metadata of everything under ``cities/<city>/``. Returns (paths, KEK info
    read from the envelope before it went: version and KCV, for the KEK status entry)."""
    prefix = bao.layout.city(city)
    paths = _kv_tree(bao, prefix)
    kek = None
    envelope = bao.kv_read(bao.layout.mount, f"{prefix}/kek") if f"{prefix}/kek" in paths else None
    if envelope:
        kek = {"version": envelope["data"].get("kek_version"), "kcv": envelope["data"].get("kek_kcv")}
    for path in paths:
        if not check_mode:
            bao.call(
                f"destroying {bao.layout.mount}/{path}",
                bao.client.secrets.kv.v2.delete_metadata_and_all_versions,
                path,
                mount_point=bao.layout.mount,
            )
    return paths, kek


def mark_kek(bao: OpenBao, city: str, status: Status, kek: dict | None, *, check_mode: bool) -> bool:
    """The KEK's status entry (province/kek-status/<city>): revoked/suspended/active, with reason and date."""
    path = f"{bao.layout.kek_status}/{city}"
    current = bao.kv_read(bao.layout.mount, path)
    data = dict(current["data"]) if current else {}
    if kek:
        data.update(kek_version=kek.get("version"), kek_kcv=kek.get("kcv"))
    wanted = dict(data, status=status.status, reason=status.reason, date=status.date)
    if current and all(current["data"].get(k) == v for k, v in wanted.items()):
        return False
    if not current and status.status == "active":
        return False  # nothing to record for a city that was never cut off
    if not check_mode:
        bao.kv_write(bao.layout.mount, path, dict(wanted, changed_at=now()))
    return True


def converge_city(
    bao: OpenBao,
    city: str,
    status: Status,
    *,
    settings: AccessSettings,
    recorded: dict[str, Any] | None,
    check_mode: bool,
) -> dict[str, Any]:
    """Bring one city's OpenBao side to ``status``. Returns {changed, actions, status}."""
    actions: list[str] = []
    if status.status in ("suspended", "revoked"):
        actions += cut_city_access(bao, city, approle_mount=settings.approle_mount, check_mode=check_mode)
        kek = None
        if status.status == "revoked":
            paths, kek = destroy_city_material(bao, city, check_mode=check_mode)
            if paths:
                actions.append(f"{len(paths)} entr{'y' if len(paths) == 1 else 'ies'} under cities/{city}/ destroyed")
        elif recorded is None or recorded.get("status") != "suspended":
            envelope = bao.kv_read(bao.layout.mount, bao.layout.city(city, "kek"))
            if envelope:
                kek = {"version": envelope["data"].get("kek_version"), "kcv": envelope["data"].get("kek_kcv")}
        if mark_kek(bao, city, status, kek, check_mode=check_mode):
            actions.append(f"KEK status entry marked {status.status}")
    elif recorded is not None and recorded.get("status") in ("suspended", "revoked"):
        actions += restore_city_access(bao, city, settings, check_mode)
        if mark_kek(bao, city, status, None, check_mode=check_mode):
            actions.append("KEK status entry marked active")
    if status_differs(recorded, status):
        actions.append(f"status recorded: {status.status}")
        if not check_mode:
            record_status(bao, "cities", city, status)
    return {"changed": bool(actions), "actions": actions, "status": status.status}


def statuses_in_force(
    bao: OpenBao, params: Mapping[str, Any], world: Universe
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Status]]]:
    """(recorded, desired): the statuses recorded in OpenBao, and the inventory's merged with them (an emergency
    revocation recorded there stays in force until the inventory lifts it, docs/revocation.md)."""
    recorded = read_recorded(bao)
    return recorded, desired_statuses(params["status"], world, recorded)
