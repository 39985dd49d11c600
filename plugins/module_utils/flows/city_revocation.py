# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Statuses brought into force in OpenBao (what module openbao_city_revoke does; docs/revocation.md).

Every city is converged to its status in force (cities that need action first: the quickest denial), the other
kinds' statuses are recorded, the rotations that follow are recorded and retired versions leave OpenBao. An
emergency request (one holder, 粤交〔2019〕11号 第十七条) is checked before anything is touched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.clock import today
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import OpenBaoError
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.distribution.access import AccessSettings
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.rotation import (
    enforce_retirement,
    rotation_plan,
    write_records,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.status_openbao import (
    converge_city,
    record_status,
    statuses_in_force,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.status import (
    STATUSES,
    Status,
    Universe,
    city_status,
    desired_statuses,
    parse_status,
    resolve_request,
    status_dicts,
    status_differs,
    world_of,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.openbao.client import OpenBao

Request = tuple[str, str, Status]


def emergency_request(raw: Mapping[str, Any] | None, world: Universe) -> Request | None:
    """The emergency form's one holder as (kind, name, status); refused before anything is touched."""
    if raw is None:
        return None
    req = dict(raw)
    kind = resolve_request(str(req.get("name", "")), world, req.get("kind"))
    name = str(req["name"]).strip()
    name = name.upper() if kind == "sams" else name
    req.setdefault("date", today().isoformat())
    req.setdefault("status", "revoked")
    return kind, name, parse_status(kind, name, {**req, "source": "emergency"}, "emergency")


def enforce_statuses(
    params: Mapping[str, Any], connect: Callable[[], OpenBao], *, check_mode: bool, diff: bool
) -> dict[str, Any]:
    """The whole pass; ``connect`` is called once the request and the inventory's statuses are found sound."""
    registry, world = world_of(params)
    request = emergency_request(params["request"], world)
    desired_statuses(params["status"], world)  # refuse a bad inventory before touching OpenBao
    settings = AccessSettings.from_params(params)
    bao = connect()
    recorded, desired = statuses_in_force(bao, params, world)
    if request is not None:
        kind, name, status = request
        desired[kind][name] = status
    results: dict[str, Any] = {}
    failures: dict[str, str] = {}
    for city in sorted(world.cities, key=lambda c: city_status(desired, c).status == "active"):
        try:
            outcome = converge_city(
                bao,
                city,
                city_status(desired, city),
                settings=settings,
                recorded=recorded.get(f"cities:{city}"),
                check_mode=check_mode,
            )
        except OpenBaoError as exc:  # one city's failure must not stop the others' denial
            failures[city] = str(exc)
            continue
        if outcome["changed"]:
            results[city] = outcome
    other: list[str] = []
    for kind in ("holders", "sams", "key_versions"):
        names = set(desired[kind]) | {k.split(":", 1)[1] for k in recorded if k.startswith(f"{kind}:")}
        for name in sorted(names):
            status = desired[kind].get(name, Status())
            if status_differs(recorded.get(f"{kind}:{name}"), status):
                other.append(f"{kind[:-1]} {name}: {status.status}")
                if not check_mode:
                    record_status(bao, kind, name, status)
    statuses = status_dicts(desired, world)
    by = {s: [c for c in sorted(world.cities) if statuses["cities"][c]["status"] == s] for s in STATUSES}
    rotation, rotations_recorded = rotation_plan(bao, params, statuses, registry, params["grants"])
    other += write_records(bao, rotation, rotations_recorded, check_mode)
    retirement = enforce_retirement(bao, rotation, by["active"], check_mode)
    other += retirement["changes"]
    result: dict[str, Any] = {
        "changed": bool(results) or bool(other),
        "rotation": rotation,
        "hsm_destroy": retirement["hsm_destroy"],
        "statuses": statuses,
        "cities": results,
        "other_changes": other,
        "revoked": by["revoked"],
        "suspended": by["suspended"],
        "active": by["active"],
        "failures": failures,
    }
    if request is not None:
        result["request"] = {"kind": request[0], "name": request[1], **request[2].as_dict()}
    if diff:
        before = "".join(f"{c}: {recorded.get(f'cities:{c}', {}).get('status', 'active')}\n" for c in sorted(results))
        after = "".join(f"{c}: {r['status']} ({'; '.join(r['actions'])})\n" for c, r in sorted(results.items()))
        result["diff"] = {"before": before, "after": after + "".join(f"{o}\n" for o in other)}
    return result
