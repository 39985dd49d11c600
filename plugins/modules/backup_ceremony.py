#!/usr/bin/python
# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: backup_ceremony
short_description: Make the province's backup KEK and hand out its M-of-N custodian components
description:
  - The key ceremony of the backup KEK (粤交〔2019〕11号 第十四条; docs/backup.md). One XOR component set is made per
    quorum of O(threshold) custodians out of O(custodians); every set is combined in the HSM and must give the same
    KCV; the first set then forms the backup KEK in the token, as a trusted, never extractable key (SO session).
  - Each custodian's components go to that custodian's own directory (O(custodians)), one file per set, mode 0600,
    each with its own KCV; never to the output. A record of the ceremony (who, when, sets and KCVs; no values) is
    written to O(record_path).
  - A backup KEK already in the token is left alone (C(changed=false)); a KEK is made once, by one ceremony.
  - The components exist in this module's process while the ceremony runs (they are what the custodians receive).
extends_documentation_fragment:
  - tunion.keymgmt.attributes
  - tunion.keymgmt.attributes.no_diff
  - tunion.keymgmt.pkcs11
options:
  user_pin:
    required: true
  so_pin:
    required: true
  kek_label:
    description: Label of the backup KEK, for example V(internal.backup_kek.v02.province).
    type: str
    required: true
  kek_id:
    description: CKA_ID of the backup KEK in hex (type code and version).
    type: str
    required: true
  custodians:
    description:
      - The custodians, each with the directory that receives their components (each custodian's own medium).
      - The playbooks build it from the inventory's C(backup_custodians) (name to directory) with C(dict2items).
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: The custodian's name.
        type: str
        required: true
      directory:
        description: The directory that receives this custodian's components (created 0700).
        type: path
        required: true
  threshold:
    description: How many custodians (M) bring the KEK back; 2 or 3.
    type: int
    required: true
  record_path:
    description: Where the ceremony record (JSON, no key material) is written.
    type: path
    required: true
  operator:
    description: Who ran the ceremony, for the record.
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Backup KEK ceremony, 2 of 3
  tunion.keymgmt.backup_ceremony:
    user_pin: "{{ hsm_user_pin }}"
    so_pin: "{{ hsm_so_pin }}"
    kek_label: internal.backup_kek.v02.province
    kek_id: "3202"
    custodians:
      - {name: alice, directory: /media/alice}
      - {name: bob, directory: /media/bob}
      - {name: carol, directory: /media/carol}
    threshold: 2
    record_path: /var/lib/tunion/backup/ceremony-v02.json
    operator: officer-1
"""

RETURN = r"""
kek_kcv:
  description: KCV (AES-CMAC) of the backup KEK.
  returned: success
  type: str
sets:
  description: One entry per quorum, its members and the KCV of each member's component.
  returned: success
  type: list
  elements: dict
files:
  description: The component files written (paths only).
  returned: changed
  type: list
  elements: str
"""

import json
import os
from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils import argspec
from ansible_collections.tunion.keymgmt.plugins.module_utils.base import Spec, TunionModule
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.clock import now
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import BackupError
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.files import atomic_write
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows import backup
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.shares import (
    Scheme,
    quorum_id,
    share_file_name,
    share_text,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.session import PKCS11_REQUIREMENT
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import session_from_params

OPTIONS: Spec = {
    "user_pin": {"type": "str", "no_log": True, "required": True},
    "so_pin": {"type": "str", "no_log": True, "required": True},
    "kek_label": {"type": "str", "required": True},
    "kek_id": {"type": "str", "required": True},
    "custodians": {
        "type": "list",
        "elements": "dict",
        "required": True,
        "options": {"name": {"type": "str", "required": True}, "directory": {"type": "path", "required": True}},
    },
    "threshold": {"type": "int", "required": True},
    "record_path": {"type": "path", "required": True},
    "operator": {"type": "str", "required": True},
}


def run(module: TunionModule) -> dict[str, Any]:
    p = module.params
    directories = {c["name"]: c["directory"] for c in p["custodians"]}
    if len(directories) != len(p["custodians"]):
        raise BackupError("a custodian is named twice in custodians: each custodian holds their own shares")
    scheme = Scheme(tuple(directories), p["threshold"])
    version = int(p["kek_label"].split(".")[2][1:], 16)
    with session_from_params(p, rw=False) as tok:
        existing = tok.find_key(label=p["kek_label"])
        if existing is not None:
            return {"changed": False, "kek_kcv": tok.kcv(existing, backup.KEK_KCV_METHOD).hex().upper(), "sets": []}
        if module.check_mode:
            planned = [{"set": quorum_id(q), "members": list(q)} for q in scheme.quorums]
            return {"changed": True, "kek_kcv": None, "sets": planned}
        parts, kek_kcv = backup.ceremony_components(tok, scheme, lambda n: tok.session.generate_random(n * 8))
    first = [(p_, k) for c, q, p_, k in parts if q == scheme.quorums[0]]
    with session_from_params(p, so=True) as so:
        backup.store_kek(
            so,
            [v for v, _kcv in first],
            [k for _value, k in first],
            label=p["kek_label"],
            key_id=bytes.fromhex(p["kek_id"]),
            kcv=kek_kcv,
        )
    files = []
    sets: dict[str, dict[str, Any]] = {}
    for custodian, quorum, value, kcv in parts:
        directory = directories[custodian]
        os.makedirs(directory, mode=0o700, exist_ok=True)
        path = os.path.join(directory, share_file_name("backup_kek", version, quorum))
        atomic_write(path, share_text(value.hex(), kcv.hex().upper(), custodian=custodian, quorum=quorum), 0o600)
        for i in range(len(value)):
            value[i] = 0
        files.append(path)
        entry = sets.setdefault(quorum_id(quorum), {"set": quorum_id(quorum), "members": list(quorum), "kcvs": {}})
        entry["kcvs"][custodian] = kcv.hex().upper()
    record = {
        "ceremony": "backup KEK (粤交〔2019〕11号 第十四条)",
        "kek_label": p["kek_label"],
        "kek_kcv": kek_kcv,
        "kcv_method": backup.KEK_KCV_METHOD,
        "custodians": list(scheme.custodians),
        "threshold": scheme.threshold,
        "sets": list(sets.values()),
        "operator": p["operator"],
        "time": now(),
    }
    os.makedirs(os.path.dirname(p["record_path"]) or ".", mode=0o700, exist_ok=True)
    atomic_write(p["record_path"], json.dumps(record, indent=2, ensure_ascii=False) + "\n", 0o600)
    return {"changed": True, "kek_kcv": kek_kcv, "sets": list(sets.values()), "files": files}


def main() -> None:
    TunionModule(OPTIONS, argspec.PKCS11, requires=[PKCS11_REQUIREMENT]).run(run)


if __name__ == "__main__":
    main()
