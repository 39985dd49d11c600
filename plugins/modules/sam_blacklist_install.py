#!/usr/bin/python
# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: sam_blacklist_install
short_description: Verify the SAM blacklist in this node's HSM and put it where terminals pick it up
description:
  - Checks the list's MAC inside this node's HSM - a city node under the key derived from its own KEK, a province
    host (O(city_code) omitted) under the province's blacklist MAC key - then writes it to O(path), atomically.
  - Refuses a list that fails its MAC, carries no MAC for this city, has expired (its C(expires) day has come), or
    is older than the highest version this node has ever accepted. That version is recorded in the node's token (a
    private data object), apart from the list file, so deleting the file does not let a genuine older list back
    in (docs/blacklist.md says what the record rests on).
  - A refusal names the node as holding no valid list when what it holds has expired (OUT OF DATE); the
    enforcement report shows it.
  - Returns the version the node now holds - its confirmation for the enforcement report.
extends_documentation_fragment:
  - tunion.keymgmt.attributes
  - tunion.keymgmt.attributes.full
  - tunion.keymgmt.pkcs11
options:
  blacklist:
    description: The document from M(tunion.keymgmt.sam_blacklist_publish).
    type: dict
    required: true
  city_code:
    description: This city's code; omit on a province host (the SAM station).
    type: str
  path:
    description: Where the verified list is kept for the terminals.
    type: path
    default: ~/sam-blacklist/current.json
  today:
    description: The day to check the expiry against (C(YYYY-MM-DD)); default the network's day (Asia/Shanghai).
    type: str
attributes:
  check_mode:
    details: Verifies the list and its expiry in the HSM; writes neither the file nor the record.
"""

EXAMPLES = r"""
- name: Install the SAM blacklist on a city node
  tunion.keymgmt.sam_blacklist_install:
    token_label: "{{ hsm_token_label }}"
    user_pin: "{{ hsm_user_pin }}"
    city_code: "{{ city_code }}"
    blacklist: "{{ hostvars[groups['province'][0]].status_blacklist.blacklist }}"
"""

RETURN = r"""
version:
  description: The blacklist version this node holds after the run (its confirmation).
  type: int
  returned: always
previous_version:
  description: The version it held before (0 - none).
  type: int
  returned: always
path:
  description: Where the list is.
  type: str
  returned: always
expires:
  description: The day the list held stops being valid (C(YYYY-MM-DD)).
  type: str
  returned: always
"""

from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils import argspec
from ansible_collections.tunion.keymgmt.plugins.module_utils.base import Spec, TunionModule
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.clock import parse_day
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import BlacklistError
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows import journal
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.blacklist import (
    check_document,
    held,
    install,
    verify,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.blacklist import expiry
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.session import PKCS11_REQUIREMENT
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import session_from_params

OPTIONS: Spec = {
    "blacklist": {"type": "dict", "required": True},
    "city_code": {"type": "str"},
    "path": {"type": "path", "default": "~/sam-blacklist/current.json"},
    "today": {"type": "str"},
}


def run(module: TunionModule) -> dict[str, Any]:
    p = module.params
    doc = p["blacklist"]
    try:
        today = parse_day(p["today"])
    except ValueError as exc:
        raise BlacklistError(f"today: {exc}; nothing installed") from None
    check_document(doc, city_code=p["city_code"])  # refused before any HSM session
    before = held(p["path"])
    with session_from_params(p, rw=not module.check_mode) as hsm:
        verify(hsm, doc, city_code=p["city_code"])
        changed, _installed = install(hsm, p["path"], doc, today=today, check_mode=module.check_mode)
    prev = (before or {}).get("version", 0)
    prev = prev if isinstance(prev, int) and not isinstance(prev, bool) else 0
    result: dict[str, Any] = {
        "changed": changed,
        "version": int(doc["version"]),
        "previous_version": prev,
        "path": p["path"],
        "expires": expiry(doc).isoformat(),
    }
    if module._diff and changed:
        result["diff"] = {"before": f"blacklist v{prev}\n", "after": f"blacklist v{doc['version']}\n"}
    return result


def main() -> None:
    TunionModule(
        OPTIONS,
        argspec.PKCS11,
        requires=[PKCS11_REQUIREMENT],
        journal="blacklist_install",
        journal_keys=journal.blacklist_version,
    ).run(run)


if __name__ == "__main__":
    main()
