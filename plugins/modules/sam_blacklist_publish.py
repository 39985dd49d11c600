#!/usr/bin/python
# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: sam_blacklist_publish
short_description: Build the versioned SAM blacklist and authenticate it with MACs computed in the province HSM
description:
  - Lists every SAM that is revoked or suspended - by its own status (SAM registry or O(statuses)), or through its
    city operator or holder (粤交〔2019〕11号 第十七条). The format is in docs/blacklist.md.
  - Each list is valid for O(validity_days) from O(today) (its C(expires) day, under the MACs). Nodes and SAM
    stations refuse it from that day on, so the province republishes on every run (a run on a new day renews the
    expiry). The version goes up whenever the document changes (entries or expiry).
  - The document is stored in OpenBao at C(province/blacklist) (every version kept) and returned, for
    M(tunion.keymgmt.sam_blacklist_install) to put on every active node.
  - MACs are computed inside the province HSM - one under the province's blacklist MAC key (created on first use,
    AES-256, never extractable), one per active city under a key derived from that city's KEK.
extends_documentation_fragment:
  - tunion.keymgmt.attributes
  - tunion.keymgmt.attributes.full
  - tunion.keymgmt.openbao
  - tunion.keymgmt.pkcs11
options:
  cities:
    description: Every city of the inventory, name to city code.
    type: dict
    required: true
  statuses:
    description: Status in force per kind and name (RV(tunion.keymgmt.openbao_city_revoke#module:statuses)).
    type: dict
    required: true
  sam_registry:
    description: Path of the SAM registry CSV on the province host. Missing file - only O(statuses) SAMs are listed.
    type: path
  issuer:
    description: Issuer named in the list.
    type: str
    default: GD-TUNION-PROVINCE
  validity_days:
    description:
      - How many days a list stays valid after the day it is published (C(status_blacklist_validity_days)).
    type: int
    required: true
  today:
    description: The day of the run (C(YYYY-MM-DD)); default the network's day (Asia/Shanghai).
    type: str
attributes:
  check_mode:
    details: Computes the list and its MACs with a transient key when the MAC key does not exist yet; stores nothing.
"""

EXAMPLES = r"""
- name: Publish the SAM blacklist
  tunion.keymgmt.sam_blacklist_publish:
    cities: "{{ status_cities }}"
    statuses: "{{ status_openbao.statuses }}"
    sam_registry: "{{ status_sam_registry }}"
    validity_days: "{{ status_blacklist_validity_days }}"
    today: "{{ status_now }}"
"""

RETURN = r"""
blacklist:
  description: The authenticated document (serials, statuses, MACs; nothing secret).
  type: dict
  returned: always
version:
  description: Version of the list.
  type: int
  returned: always
expires:
  description: The day the list stops being valid (C(YYYY-MM-DD)).
  type: str
  returned: always
entries:
  description: Number of SAMs listed.
  type: int
  returned: always
groups:
  description: SAM groups (C(<city code>/<holder>)) and their listed serials.
  type: dict
  returned: always
"""

from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils import argspec
from ansible_collections.tunion.keymgmt.plugins.module_utils.base import Spec, TunionModule
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.clock import parse_day
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import BlacklistError
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows import journal
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.blacklist import sign
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.blacklist import (
    entries_for,
    next_document,
    sam_groups,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.sam_registry import load_registry
from ansible_collections.tunion.keymgmt.plugins.module_utils.openbao.client import HVAC_REQUIREMENT, connect
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.session import PKCS11_REQUIREMENT
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import session_from_params

OPTIONS: Spec = {
    "cities": {"type": "dict", "required": True},
    "statuses": {"type": "dict", "required": True},
    "sam_registry": {"type": "path"},
    "issuer": {"type": "str", "default": "GD-TUNION-PROVINCE"},
    "validity_days": {"type": "int", "required": True},
    "today": {"type": "str"},
}


def run(module: TunionModule) -> dict[str, Any]:
    p = module.params
    try:
        today = parse_day(p["today"])
    except ValueError as exc:
        raise BlacklistError(f"today: {exc}; nothing published") from None
    registry = load_registry(p["sam_registry"], p["cities"])  # a line for a city the inventory lacks is refused
    rows = [row.as_dict() for row in registry.rows.values()] if registry else []
    entries = entries_for(rows, p["statuses"], p["cities"])
    bao = module.opened(connect(p))
    record = bao.kv_read(bao.layout.mount, bao.layout.blacklist)
    previous = record["data"] if record else None
    doc = next_document(previous, entries, p["issuer"], today=today, validity_days=p["validity_days"])
    active = [
        str(p["cities"][c])
        for c, s in (p["statuses"].get("cities") or {}).items()
        if s.get("status") == "active" and c in p["cities"]
    ]
    with session_from_params(p, rw=not module.check_mode) as hsm:
        signed = sign(hsm, doc, active, create_key=not module.check_mode)
    changed = previous != signed
    if changed and not module.check_mode:
        bao.kv_write(bao.layout.mount, bao.layout.blacklist, signed)
    result: dict[str, Any] = {
        "changed": changed,
        "blacklist": signed,
        "version": signed["version"],
        "expires": signed["expires"],
        "entries": len(entries),
        "groups": sam_groups(entries),
    }
    if module._diff and changed:
        before = "".join(f"{e['serial']} {e['status']}\n" for e in (previous or {}).get("entries", []))
        after = "".join(f"{e['serial']} {e['status']}\n" for e in entries)
        result["diff"] = {"before": before, "after": after}
    return result


def main() -> None:
    groups = (argspec.OPENBAO, argspec.PKCS11)
    TunionModule(
        OPTIONS,
        *groups,
        requires=[HVAC_REQUIREMENT, PKCS11_REQUIREMENT],
        journal="blacklist_publish",
        journal_keys=journal.blacklist_version,
    ).run(run)


if __name__ == "__main__":
    main()
