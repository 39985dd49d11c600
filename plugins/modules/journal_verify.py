#!/usr/bin/python
# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: journal_verify
short_description: Verify a node's journal of key operations (hash chain and anchors) and name the first bad event
description:
  - Reads the node's journal (SQLite, docs/journal.md) in stored order and checks each event's position, its link to
    the event before (the digest it holds) and its own digest; the first event that fails is named by its position.
  - With O(anchors), also checks that each anchored head (position and digest) is still in the chain, so a journal
    truncated after an anchor is detected (粤交〔2019〕11号 第十五条, 第十六条).
  - Changes nothing. Fails when the chain does not verify, unless O(fail_on_bad=false).
extends_documentation_fragment:
  - tunion.keymgmt.attributes
  - tunion.keymgmt.attributes.no_diff
options:
  path:
    description: The journal; default C(~/.tunion/journal.sqlite) of the unix user running the module.
    type: path
  anchors:
    description: Anchored heads, each a dict with C(seq) and C(digest).
    type: list
    elements: dict
    default: []
  fail_on_bad:
    description: Fail when the chain does not verify (the result still names the first bad event).
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Verify this node's journal
  tunion.keymgmt.journal_verify:
  register: journal
"""

RETURN = r"""
ok:
  description: Whether the chain and every anchor verify.
  returned: always
  type: bool
events:
  description: Number of events read that verified.
  returned: always
  type: int
head_seq:
  description: Position of the last good event (0 - none).
  returned: always
  type: int
head_digest:
  description: SHA-256 digest (hex) of the last good event.
  returned: always
  type: str
first_bad:
  description: Position of the first bad event, null when the chain verifies.
  returned: always
  type: int
reason:
  description: What is wrong with the first bad event.
  returned: always
  type: str
"""

from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils.base import Spec, TunionModule
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.journal import verify_journal

OPTIONS: Spec = {
    "path": {"type": "path"},
    "anchors": {"type": "list", "elements": "dict", "default": []},
    "fail_on_bad": {"type": "bool", "default": True},
}


def run(module: TunionModule) -> dict[str, Any]:
    verdict = verify_journal(module.params["path"], module.params["anchors"])
    result = dict(verdict.as_dict(), changed=False)
    if not verdict.ok and module.params["fail_on_bad"]:
        module.fail_json(msg=f"journal does not verify: {verdict.reason}", **result)
    return result


def main() -> None:
    TunionModule(OPTIONS).run(run)


if __name__ == "__main__":
    main()
