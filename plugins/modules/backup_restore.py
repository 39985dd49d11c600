#!/usr/bin/python
# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: backup_restore
short_description: Restore the province from a backup set onto a fresh token and a fresh OpenBao
description:
  - The disaster case of 粤交〔2019〕11号 第十四条 (docs/backup.md). Takes a backup set and the component files of
    exactly O(threshold) custodians.
  - Everything is checked before anything is written - each custodian's share against its own KCV (a mistyped
    share is named), the quorum's KEK against the manifest's KEK KCV, the manifest MAC, every entry's size and
    digest, no file the manifest does not list, the set's age against the newest set in O(known_sets_dir).
  - Then each key is unwrapped into the token under a staging label with its original ID, attributes and validity,
    and its KCV checked against the manifest; only when every key has passed are the labels set. A failure destroys
    every staged object. The target token must be empty.
  - Then the OpenBao snapshot is restored with the forced form (a new cluster; afterwards OpenBao unseals with the
    backed-up cluster's unseal keys) and the state files are written back to O(state_files).
  - Writes a report, JSON and text, to O(report_path) when given.
extends_documentation_fragment:
  - tunion.keymgmt.attributes
  - tunion.keymgmt.attributes.no_diff
  - tunion.keymgmt.pkcs11
  - tunion.keymgmt.openbao
options:
  user_pin:
    required: true
  so_pin:
    required: true
  set_path:
    description: The backup set's directory.
    type: path
    required: true
  custodians:
    description: Every custodian's name (the ceremony's N, in the ceremony's order).
    type: list
    elements: str
    required: true
  threshold:
    description: M, as at the ceremony.
    type: int
    required: true
  shares:
    description:
      - Custodian name to the text of that custodian's component file for this quorum (value and kcv lines).
        Read each file on its own (one lookup per custodian), never parse it as YAML.
    type: raw
    required: true
  kek_label:
    description: Label of the backup KEK, re-formed in the token from the shares.
    type: str
    required: true
  kek_id:
    description: CKA_ID of the backup KEK in hex.
    type: str
    required: true
  known_sets_dir:
    description: Directory of the backup sets known; a set older than one of them is refused unless O(force_older).
    type: path
  force_older:
    description: Restore a set older than the newest known (the report says what it lacks).
    type: bool
    default: false
  state_files:
    description: Name to path of each durable state file to put back.
    type: dict
    default: {}
  restore_snapshot:
    description: Restore the OpenBao snapshot (forced form, for a new cluster).
    type: bool
    default: true
  report_path:
    description: Where the JSON report goes (and the text one, with .txt).
    type: path
"""

EXAMPLES = r"""
- name: Restore the province
  tunion.keymgmt.backup_restore:
    user_pin: "{{ hsm_user_pin }}"
    so_pin: "{{ hsm_so_pin }}"
    set_path: /var/lib/tunion/backup/sets/20261202T040000Z
    custodians: [alice, bob, carol]
    threshold: 2
    shares:
      alice: "{{ lookup('ansible.builtin.file', '/media/alice/backup_kek-v02-alice+bob.txt') }}"
      bob: "{{ lookup('ansible.builtin.file', '/media/bob/backup_kek-v02-alice+bob.txt') }}"
    kek_label: internal.backup_kek.v02.province
    kek_id: "3202"
"""

RETURN = r"""
report:
  description: What was restored - the set, the quorum, keys (label, ID, KCV), state, snapshot; never values.
  returned: success
  type: dict
"""

import os
import time
from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils import argspec
from ansible_collections.tunion.keymgmt.plugins.module_utils.base import Spec, TunionModule
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import BackupError
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.files import atomic_write
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows import backup
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.restore import restore_set
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.component import component_of
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.shares import Scheme
from ansible_collections.tunion.keymgmt.plugins.module_utils.openbao.client import HVAC_REQUIREMENT, connect
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.session import PKCS11_REQUIREMENT
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import session_from_params

OPTIONS: Spec = {
    "user_pin": {"type": "str", "no_log": True, "required": True},
    "so_pin": {"type": "str", "no_log": True, "required": True},
    "set_path": {"type": "path", "required": True},
    "custodians": {"type": "list", "elements": "str", "required": True},
    "threshold": {"type": "int", "required": True},
    "shares": {"type": "raw", "required": True, "no_log": True},
    "kek_label": {"type": "str", "required": True},
    "kek_id": {"type": "str", "required": True},
    "known_sets_dir": {"type": "path"},
    "force_older": {"type": "bool", "default": False},
    "state_files": {"type": "dict", "default": {}},
    "restore_snapshot": {"type": "bool", "default": True},
    "report_path": {"type": "path"},
}


def report_text(report: dict[str, Any]) -> str:
    s = report["set"]
    lines = [
        f"restored backup set {s['set_id']} ({s['created']}) with the shares of {', '.join(report['quorum'])}",
        f"{len(report['keys_restored'])} keys, state {', '.join(report['state_restored']) or 'none'}, "
        f"OpenBao snapshot {'restored' if report['snapshot_restored'] else 'not restored'}, {report['seconds']:.1f} s",
    ]
    lines += [f"  key {k['label']} KCV {k.get('kcv') or '-'}" for k in report.get("keys", [])]
    lines += [f"  older than {n['set_id']} ({n['created']}), lacks {n['keys_missing']}" for n in report["older_than"]]
    return "\n".join(lines) + "\n"


def run(module: TunionModule) -> dict[str, Any]:
    p = module.params
    started = time.monotonic()
    scheme = Scheme(tuple(p["custodians"]), p["threshold"])
    if not isinstance(p["shares"], dict):
        raise BackupError("shares must be a mapping of custodian name to the text of that custodian's component file")
    shares = {name: component_of(text, f"the share of custodian {name}") for name, text in p["shares"].items()}
    bao = module.opened(connect(p)) if p["restore_snapshot"] else None
    report = restore_set(
        lambda so: session_from_params(p, so=so),
        set_path=p["set_path"],
        scheme=scheme,
        shares=shares,
        kek_label=p["kek_label"],
        kek_id=bytes.fromhex(p["kek_id"]),
        known_dir=p["known_sets_dir"],
        force_older=p["force_older"],
        state_files=p["state_files"],
        restore_snapshot=(lambda snap: bao.raft_restore(snap, force=True)) if bao is not None else None,
        check_mode=module.check_mode,
    )
    report["seconds"] = round(time.monotonic() - started, 3)
    if p["report_path"] and not module.check_mode:
        os.makedirs(os.path.dirname(p["report_path"]) or ".", mode=0o700, exist_ok=True)
        atomic_write(p["report_path"], backup.to_json(report), 0o600)
        atomic_write(p["report_path"] + ".txt", report_text(report), 0o600)
    return {"changed": not module.check_mode, "report": report}


def main() -> None:
    groups = (argspec.OPENBAO, argspec.PKCS11)
    TunionModule(OPTIONS, *groups, requires=[HVAC_REQUIREMENT, PKCS11_REQUIREMENT]).run(run)


if __name__ == "__main__":
    main()
