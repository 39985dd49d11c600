# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Revocation and suspension (docs/revocation.md).

粤交〔2019〕11号 第十七条: a holder that uses keys against the rules, or passes them to an unauthorised party, has its
keys taken back and its management and use revoked. This module is the OpenBao and HSM side of that duty:

* status model: ``active`` / ``suspended`` (access cut, material kept: reversible) / ``revoked`` (access cut,
  material destroyed, with a reason and a date), for city operators, holders, single SAMs and key versions;
* request checks: an unknown holder, or the province's own identity, is refused before anything changes;
* OpenBao: cut a city's access (policy first - the quickest denial -, then every secret_id, the AppRole, and every
  token found through its accessor), destroy its key blocks and records (every version and the metadata), and
  mark its KEK's status entry revoked under ``province/kek-status/<city>``;
* HSM: destroy every object a city holds (granted keys, KEKs, its RSA transport pair), on the city node or the
  province's copies, and say what was destroyed (labels and KCVs, never values).

Distribution's layout (plugins/module_utils/distribution.py) is used as is: ``cities/<city>/...`` on the
``tunion-kb`` mount, policy and AppRole ``city-<city>``.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils import distribution as dist
from ansible_collections.tunion.keymgmt.plugins.module_utils.hsm import HsmError, HsmToken, KeyName, parse_key_label
from ansible_collections.tunion.keymgmt.plugins.module_utils.openbao import OpenBao, OpenBaoError, translated

STATUSES = ("active", "suspended", "revoked")
KINDS = ("cities", "holders", "sams", "key_versions")
# Names that are the province itself: never revocable through these modules (it would lock the province out of
# its own key management; 第六条 makes the province the keeper of the keys).
PROVINCE_NAMES = frozenset({"province", "tunion-province", "province-admin", "root", "default"})
STATUS_PATH = "province/status"
KEK_STATUS_PATH = "province/kek-status"
_SERIAL_RE = re.compile(r"^[0-9A-Fa-f]{20}$")
_KEY_VERSION_RE = re.compile(r"^[a-z][a-z0-9_]*\.v[0-9a-f]{2}$")


class RevocationError(Exception):
    """A revocation request cannot be carried out as asked; nothing was changed. Never carries a secret."""


def now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------------------------------
# status model


@dataclass(frozen=True)
class Status:
    status: str = "active"
    reason: str = ""
    date: str = ""
    source: str = "inventory"

    def as_dict(self) -> dict[str, str]:
        return {"status": self.status, "reason": self.reason, "date": self.date, "source": self.source}


def parse_status(kind: str, name: str, raw: Any, source: str = "inventory") -> Status:
    """One entry of ``tunion_status.<kind>.<name>``: a status word, or {status, reason, date}."""
    where = f"tunion_status.{kind}.{name}"
    if isinstance(raw, str):
        raw = {"status": raw}
    if not isinstance(raw, dict):
        raise RevocationError(f"{where}: expected {{status, reason, date}}, got {type(raw).__name__}")
    status = str(raw.get("status", "")).strip()
    if status not in STATUSES:
        raise RevocationError(f"{where}: status {status!r} is not one of {', '.join(STATUSES)}")
    reason = str(raw.get("reason") or "").strip()
    date = str(raw.get("date") or "").strip()
    if status != "active" and not reason:
        raise RevocationError(f"{where}: a {status} entry needs a reason (粤交〔2019〕11号 第十七条)")
    if status == "revoked" and not date:
        raise RevocationError(f"{where}: a revoked entry needs a date (YYYY-MM-DD)")
    if date:
        try:
            _dt.date.fromisoformat(date[:10])
        except ValueError:
            raise RevocationError(f"{where}: date {date!r} is not YYYY-MM-DD") from None
    return Status(status, reason, date, str(raw.get("source") or source))


@dataclass
class Universe:
    """Everything a status may name: the inventory's cities (name -> code), the registry's holders and SAMs."""

    cities: dict[str, str]
    holders: set[str] = field(default_factory=set)
    sams: set[str] = field(default_factory=set)
    key_versions: set[str] = field(default_factory=set)

    def kind_of(self, name: str) -> str | None:
        if name in self.cities:
            return "cities"
        if name in self.holders:
            return "holders"
        if name.upper() in self.sams:
            return "sams"
        if name in self.key_versions:
            return "key_versions"
        return None


def refuse_province(name: str) -> None:
    if name in PROVINCE_NAMES or name.startswith("province-"):
        raise RevocationError(
            f"{name!r} is the province's own identity: the province cannot revoke or suspend itself through "
            "these playbooks (it keeps the keys, 粤交〔2019〕11号 第六条). Nothing was changed."
        )


def check_name(kind: str, name: str, universe: Universe) -> None:
    refuse_province(name)
    known = {
        "cities": set(universe.cities),
        "holders": universe.holders,
        "sams": universe.sams,
        "key_versions": universe.key_versions,
    }[kind]
    candidate = name.upper() if kind == "sams" else name
    if candidate not in known:
        hint = {
            "cities": f"cities are the inventory hosts of group cities ({', '.join(sorted(universe.cities)[:5])}, ...)",
            "holders": "holders are the transport companies and agents of the SAM registry",
            "sams": "SAMs are the serials of the SAM registry",
            "key_versions": "key versions are <type>.v<VV> of the key catalogue, e.g. purchase.v01",
        }[kind]
        singular = {"cities": "city", "holders": "holder", "sams": "SAM", "key_versions": "key version"}[kind]
        raise RevocationError(f"unknown {singular} {name!r}: {hint}. Nothing was changed.")


def desired_statuses(
    raw: dict[str, Any] | None, universe: Universe, recorded: dict[str, dict[str, Any]] | None = None
) -> dict[str, dict[str, Status]]:
    """kind -> name -> Status. Inventory entries win; a status recorded in OpenBao (e.g. by the emergency form,
    playbooks/revoke.yml) stays in force while the inventory says nothing about that name: lifting a revocation
    or suspension takes an explicit ``active`` entry. Every error is reported at once."""
    raw = raw or {}
    errors: list[str] = []
    out: dict[str, dict[str, Status]] = {kind: {} for kind in KINDS}
    for kind in raw:
        if kind not in KINDS:
            errors.append(f"tunion_status.{kind}: unknown section; expected {', '.join(KINDS)}")
    for kind in KINDS:
        for name, entry in (raw.get(kind) or {}).items():
            try:
                check_name(kind, str(name), universe)
                out[kind][str(name).upper() if kind == "sams" else str(name)] = parse_status(kind, str(name), entry)
            except RevocationError as exc:
                errors.append(str(exc).replace(" Nothing was changed.", ""))
    if errors:
        raise RevocationError("status refused: " + "; ".join(errors) + ". Nothing was changed.")
    for key, record in (recorded or {}).items():
        kind, _colon, name = key.partition(":")
        if kind not in KINDS or record.get("status") not in ("suspended", "revoked"):
            continue
        kept = Status(
            record["status"], record.get("reason", ""), record.get("date", ""), record.get("source", "recorded")
        )
        current = out[kind].get(name)
        if current is None or (
            record.get("source") == "emergency" and current.status == "active" and current.date < kept.date
        ):
            # an emergency revocation is lifted only by an inventory entry dated on or after it
            out[kind][name] = kept
    return out


def resolve_request(name: str, universe: Universe, kind: str | None = None) -> str:
    """Which kind of holder ``name`` is (the emergency form names one holder). Refuses the province and unknowns."""
    name = str(name or "").strip()
    if not name:
        raise RevocationError("name the holder to revoke (-e revoke_holder=<city, holder or SAM serial>)")
    refuse_province(name)
    found = kind or universe.kind_of(name)
    if found is None or found not in KINDS:
        raise RevocationError(
            f"unknown holder {name!r}: not a city of the inventory, a holder or SAM of the SAM registry, "
            "nor a key version of the catalogue. Nothing was changed."
        )
    check_name(found, name, universe)
    return found


def city_status(desired: dict[str, dict[str, Status]], city: str) -> Status:
    return desired["cities"].get(city, Status())


# ------------------------------------------------------------------------------------------------------------------
# OpenBao: status records


def read_recorded(bao: OpenBao, mount: str = dist.MOUNT) -> dict[str, dict[str, Any]]:
    """'<kind>:<name>' -> last recorded status (province/status/<kind>/<name>)."""
    recorded: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        for name in bao.kv_list(mount, f"{STATUS_PATH}/{kind}"):
            record = bao.kv_read(mount, f"{STATUS_PATH}/{kind}/{name}")
            if record:
                recorded[f"{kind}:{name}"] = record["data"]
    return recorded


def status_differs(recorded: dict[str, Any] | None, status: Status) -> bool:
    """True when the recorded status (None: never recorded, i.e. active) is not ``status``."""
    if recorded is None:
        return status.status != "active"
    if status == Status():  # not listed in the inventory: an active record (with its reason) stays as it is
        return recorded.get("status", "active") != "active"
    return any(recorded.get(k) != v for k, v in status.as_dict().items() if k != "source")


def record_status(bao: OpenBao, kind: str, name: str, status: Status, mount: str = dist.MOUNT) -> bool:
    """Write the status record if it differs (every version kept: the history of a holder's status)."""
    path = f"{STATUS_PATH}/{kind}/{name}"
    current = bao.kv_read(mount, path)
    wanted = status.as_dict()
    if current and {k: current["data"].get(k) for k in wanted} == wanted:
        return False
    bao.kv_write(mount, path, dict(wanted, recorded_at=now()))
    return True


# ------------------------------------------------------------------------------------------------------------------
# OpenBao: cutting and restoring a city's access


def _exists(bao: OpenBao, action: str, func: Any, *args: Any, **kwargs: Any) -> Any | None:
    """Call ``func``; None on 404 (absent), OpenBaoError on anything else."""
    try:
        with translated(action, bao.url):
            return func(*args, **kwargs)
    except OpenBaoError as exc:
        if "(404)" in str(exc):
            return None
        raise


def _token_accessors(bao: OpenBao) -> list[str]:
    answer = _exists(bao, "listing token accessors", bao.client.list, "auth/token/accessors")
    return list(((answer or {}).get("data") or {}).get("keys") or [])


def _lookup_accessor(bao: OpenBao, accessor: str) -> dict[str, Any] | None:
    try:
        answer = bao.client.auth.token.lookup_accessor(accessor)
    except Exception:  # noqa: BLE001 - a token that expired between list and lookup is simply gone
        return None
    return (answer or {}).get("data")


def city_token_accessors(bao: OpenBao, city: str, workers: int = 8) -> list[str]:
    """Accessors of every live token of the city: issued by its AppRole, or carrying its policy."""
    role = dist.role_name(city)
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
    name = dist.role_name(city)
    done: list[str] = []
    policy = _exists(bao, f"reading policy {name}", bao.client.sys.read_acl_policy, name)
    if policy is not None:
        done.append(f"policy {name} removed")
        if not check_mode:
            bao.call(f"removing policy {name}", bao.client.sys.delete_acl_policy, name)
    role = _exists(bao, f"reading AppRole {name}", bao.client.auth.approle.read_role, name, mount_point=approle_mount)
    if role is not None:
        listed = _exists(
            bao,
            f"listing the secret_ids of {name}",
            bao.client.auth.approle.list_secret_id_accessors,
            name,
            mount_point=approle_mount,
        )
        secret_accessors = list(((listed or {}).get("data") or {}).get("keys") or [])
        for accessor in secret_accessors:
            if not check_mode:
                _exists(
                    bao,
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
            _exists(bao, f"revoking a token of {name}", bao.client.auth.token.revoke_accessor, accessor)
    if tokens:
        done.append(f"{len(tokens)} token(s) of {name} revoked by accessor")
    return done


def restore_city_access(bao: OpenBao, city: str, settings: dist.AccessSettings, check_mode: bool) -> list[str]:
    """Policy and AppRole back, as distribution makes them (the key material was kept: nothing is reissued)."""
    return dist.ensure_city_access(bao, city, settings, check_mode)


def _kv_tree(bao: OpenBao, mount: str, prefix: str) -> list[str]:
    """Every secret path under ``prefix`` (depth first)."""
    paths: list[str] = []
    for entry in bao.kv_list(mount, prefix):
        child = f"{prefix}/{entry.rstrip('/')}"
        if entry.endswith("/"):
            paths += _kv_tree(bao, mount, child)
        else:
            paths.append(child)
    return paths


def destroy_city_material(bao: OpenBao, city: str, *, mount: str, check_mode: bool) -> tuple[list[str], dict | None]:
    """Destroy every version and the metadata of everything under ``cities/<city>/``. Returns (paths, KEK info
    read from the envelope before it went: version and KCV, for the KEK status entry)."""
    prefix = f"cities/{city}"
    paths = _kv_tree(bao, mount, prefix)
    kek = None
    envelope = bao.kv_read(mount, f"{prefix}/kek") if f"{prefix}/kek" in paths else None
    if envelope:
        kek = {"version": envelope["data"].get("kek_version"), "kcv": envelope["data"].get("kek_kcv")}
    for path in paths:
        if not check_mode:
            bao.call(
                f"destroying {mount}/{path}",
                bao.client.secrets.kv.v2.delete_metadata_and_all_versions,
                path,
                mount_point=mount,
            )
    return paths, kek


def mark_kek(bao: OpenBao, city: str, status: Status, kek: dict | None, *, mount: str, check_mode: bool) -> bool:
    """The KEK's status entry (province/kek-status/<city>): revoked/suspended/active, with reason and date."""
    path = f"{KEK_STATUS_PATH}/{city}"
    current = bao.kv_read(mount, path)
    data = dict(current["data"]) if current else {}
    if kek:
        data.update(kek_version=kek.get("version"), kek_kcv=kek.get("kcv"))
    wanted = dict(data, status=status.status, reason=status.reason, date=status.date)
    if current and all(current["data"].get(k) == v for k, v in wanted.items()):
        return False
    if not current and status.status == "active":
        return False  # nothing to record for a city that was never cut off
    if not check_mode:
        bao.kv_write(mount, path, dict(wanted, changed_at=now()))
    return True


def converge_city(
    bao: OpenBao,
    city: str,
    status: Status,
    *,
    settings: dist.AccessSettings,
    recorded: dict[str, Any] | None,
    check_mode: bool,
) -> dict[str, Any]:
    """Bring one city's OpenBao side to ``status``. Returns {changed, actions, status}."""
    actions: list[str] = []
    if status.status in ("suspended", "revoked"):
        actions += cut_city_access(bao, city, approle_mount=settings.approle_mount, check_mode=check_mode)
        kek = None
        if status.status == "revoked":
            paths, kek = destroy_city_material(bao, city, mount=settings.mount, check_mode=check_mode)
            if paths:
                actions.append(f"{len(paths)} entr{'y' if len(paths) == 1 else 'ies'} under cities/{city}/ destroyed")
        elif recorded is None or recorded.get("status") != "suspended":
            envelope = bao.kv_read(settings.mount, f"cities/{city}/kek")
            if envelope:
                kek = {"version": envelope["data"].get("kek_version"), "kcv": envelope["data"].get("kek_kcv")}
        if mark_kek(bao, city, status, kek, mount=settings.mount, check_mode=check_mode):
            actions.append(f"KEK status entry marked {status.status}")
    elif recorded is not None and recorded.get("status") in ("suspended", "revoked"):
        actions += restore_city_access(bao, city, settings, check_mode)
        if mark_kek(bao, city, status, None, mount=settings.mount, check_mode=check_mode):
            actions.append("KEK status entry marked active")
    if status_differs(recorded, status):
        actions.append(f"status recorded: {status.status}")
        if not check_mode:
            record_status(bao, "cities", city, status, mount=settings.mount)
    return {"changed": bool(actions), "actions": actions, "status": status.status}


def city_denied(bao: OpenBao, city: str) -> bool:
    """True when the city has neither a policy nor an AppRole (what 'locked out' means in OpenBao)."""
    name = dist.role_name(city)
    policy = _exists(bao, f"reading policy {name}", bao.client.sys.read_acl_policy, name)
    role = _exists(bao, f"reading AppRole {name}", bao.client.auth.approle.read_role, name)
    return policy is None and role is None


# ------------------------------------------------------------------------------------------------------------------
# HSM: destroying what a holder holds


def object_label(obj: Any) -> str:
    """An object's label, or '' for objects without one (not ours)."""
    try:
        return str(obj.label or "")
    except Exception:  # noqa: BLE001 - python-pkcs11 raises several kinds for a missing label
        return ""


def holder_objects(
    hsm: HsmToken,
    holder: str,
    key_types: Iterable[str] | None = None,
    *,
    select: Callable[[KeyName], bool] | None = None,
) -> list[Any]:
    """Objects whose label names ``holder``: optionally only these key types, or those ``select`` accepts."""
    types = set(key_types or [])
    found = []
    for obj in hsm.list_keys():
        name = parse_key_label(object_label(obj))
        if name and name.holder == holder and (not types or name.key_type in types) and (not select or select(name)):
            found.append(obj)
    return found


def is_key_version(name: str) -> bool:
    return bool(_KEY_VERSION_RE.match(str(name)))


def version_selector(key_versions: Iterable[str]) -> Callable[[KeyName], bool]:
    """Accepts the objects of these key versions ('<type>.v<VV>', as in statuses and block names)."""
    wanted = set(key_versions)
    return lambda name: f"{name.key_type}.v{name.version:02x}" in wanted


def destroy_holder_objects(
    hsm: HsmToken,
    holder: str,
    *,
    key_types: Iterable[str] | None = None,
    select: Callable[[KeyName], bool] | None = None,
    check_mode: bool,
) -> list[dict[str, str]]:
    """Destroy every object whose label names ``holder`` (optionally only these key types, or those ``select``
    accepts). Returns what went: label, object class and, for secret keys, the KCV (computed in the HSM before
    destruction; never a value)."""
    destroyed: list[dict[str, str]] = []
    chosen = holder_objects(hsm, holder, key_types, select=select)
    for obj in sorted(chosen, key=lambda o: (o.label, int(o.object_class))):
        entry = {"label": obj.label, "object_class": obj.object_class.name.lower()}
        if obj.object_class.name == "SECRET_KEY":
            try:
                entry["kcv"] = dist.kcv_hex(hsm, obj)
            except HsmError:
                entry["kcv"] = ""
        if not check_mode:
            hsm.destroy(obj)
        destroyed.append(entry)
    return destroyed
