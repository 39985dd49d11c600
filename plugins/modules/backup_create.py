#!/usr/bin/python
# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: backup_create
short_description: Write one backup set of the province (keys wrapped in the HSM, OpenBao snapshot, state)
description:
  - Makes one backup set (粤交〔2019〕11号 第十四条; format in docs/backup.md) at O(dest_dir)/O(set_id) - every key
    object of the token wrapped inside the HSM under the backup KEK, with label, ID, class, attributes, validity and
    its KCV (computed before wrapping); the OpenBao raft snapshot encrypted in the HSM under a per-set data key that
    is itself wrapped under the backup KEK; the state files O(state_files); a manifest with each entry's size and
    SHA-256, MAC'd in the HSM (AES-CMAC) under a per-set key wrapped under the backup KEK.
  - The set is written into a private temporary directory and renamed into place (mode 0700, files 0600).
  - Keys the token marks not extractable stay in the token; the manifest and the result list them (not_backed_up).
  - Writes a report, JSON and text, beside the set (O(dest_dir)/O(set_id).report.json and .txt).
extends_documentation_fragment:
  - tunion.keymgmt.attributes
  - tunion.keymgmt.attributes.no_diff
  - tunion.keymgmt.pkcs11
  - tunion.keymgmt.openbao
options:
  user_pin:
    required: true
  kek_label:
    description: Label of the backup KEK in the token.
    type: str
    required: true
  kek_version:
    description: Version of the backup KEK, for the manifest.
    type: int
    required: true
  dest_dir:
    description: Directory of the backup sets.
    type: path
    required: true
  set_id:
    description: Name of the set (a new directory under O(dest_dir)); defaults to the UTC time.
    type: str
  operator:
    description: Who makes the backup, for the manifest.
    type: str
    required: true
  software_version:
    description: The collection's version, for the manifest.
    type: str
    required: true
  state_files:
    description: Name to path of each durable state file kept outside OpenBao (the province role declares them).
    type: dict
    default: {}
  snapshot:
    description: Take OpenBao's raft snapshot (needs a token allowed to read C(sys/storage/raft/snapshot)).
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Back up the province
  tunion.keymgmt.backup_create:
    user_pin: "{{ hsm_user_pin }}"
    kek_label: internal.backup_kek.v02.province
    kek_version: 2
    dest_dir: /var/lib/tunion/backup/sets
    operator: officer-1
    software_version: 0.1.0
"""

RETURN = r"""
path:
  description: The set's directory.
  returned: changed
  type: str
set:
  description: What the set holds - set_id, keys (label, ID, KCV), not_backed_up, entries (name, size, sha256).
  returned: success
  type: dict
"""

import os
import time
from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils import argspec
from ansible_collections.tunion.keymgmt.plugins.module_utils.base import Spec, TunionModule
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.clock import now
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.files import atomic_write
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows import backup
from ansible_collections.tunion.keymgmt.plugins.module_utils.openbao.client import HVAC_REQUIREMENT, connect
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.session import PKCS11_REQUIREMENT
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import session_from_params

OPTIONS: Spec = {
    "user_pin": {"type": "str", "no_log": True, "required": True},
    "kek_label": {"type": "str", "required": True},
    "kek_version": {"type": "int", "required": True},
    "dest_dir": {"type": "path", "required": True},
    "set_id": {"type": "str"},
    "operator": {"type": "str", "required": True},
    "software_version": {"type": "str", "required": True},
    "state_files": {"type": "dict", "default": {}},
    "snapshot": {"type": "bool", "default": True},
}


def report_text(summary: dict[str, Any], seconds: float) -> str:
    lines = [
        f"backup set {summary['set_id']} ({summary['created']}, operator {summary['operator']})",
        f"backup KEK {summary['backup_kek']['label']} KCV {summary['backup_kek']['kcv']}",
        f"{len(summary['keys'])} keys saved, {len(summary['not_backed_up'])} kept in the token, {seconds:.1f} s",
    ]
    lines += [f"  saved {k['label']} KCV {k.get('kcv') or '-'}" for k in summary["keys"]]
    lines += [f"  kept  {k['label']}: {k['reason']}" for k in summary["not_backed_up"]]
    lines += [f"  entry {e['name']} {e['size']} bytes sha256 {e['sha256']}" for e in summary["entries"]]
    return "\n".join(lines) + "\n"


def run(module: TunionModule) -> dict[str, Any]:
    p = module.params
    created = now()
    set_id = p["set_id"] or created.replace(":", "")
    if module.check_mode:
        return {"changed": True, "set": {"set_id": set_id}}
    started = time.monotonic()
    snapshot = module.opened(connect(p)).raft_snapshot() if p["snapshot"] else None
    with session_from_params(p, rw=True) as tok:
        manifest = backup.make_set(
            tok,
            kek_label=p["kek_label"],
            kek_version=p["kek_version"],
            dest_dir=p["dest_dir"],
            set_id=set_id,
            operator=p["operator"],
            software_version=p["software_version"],
            snapshot=snapshot,
            state_files=p["state_files"],
            created=created,
        )
    summary = backup.summary(manifest)
    seconds = time.monotonic() - started
    base = os.path.join(p["dest_dir"], set_id)
    atomic_write(base + ".report.json", backup.to_json(summary | {"seconds": round(seconds, 3)}), 0o600)
    atomic_write(base + ".report.txt", report_text(summary, seconds), 0o600)
    return {"changed": True, "path": base, "set": summary}


def main() -> None:
    groups = (argspec.OPENBAO, argspec.PKCS11)
    TunionModule(OPTIONS, *groups, requires=[HVAC_REQUIREMENT, PKCS11_REQUIREMENT]).run(run)


if __name__ == "__main__":
    main()
