#!/usr/bin/python
# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: hsm_token
short_description: Make sure a PKCS#11 token exists with a given label and PINs
description:
  - Initialises a free slot with the label, SO PIN and user PIN when no token has that label.
  - When the token exists, proves the user PIN by logging in once. A wrong PIN is a clear error and is never
    retried (each wrong PIN spends one of the token's tries); a PIN is not presented at all when the token reports
    its final try or a locked PIN.
  - Never re-initialises a token that exists unless O(force=true); a forced run reports how many objects it
    destroys (and, in check mode, how many it would destroy).
extends_documentation_fragment:
  - tunion.keymgmt.attributes
  - tunion.keymgmt.attributes.full
  - tunion.keymgmt.pkcs11
options:
  user_pin:
    required: true
  so_pin:
    description:
      - Security officer PIN, used to initialise the token. Required.
    required: true
  force:
    description:
      - Re-initialise the token even though it exists, destroying every object on it.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Province token, PINs from OpenBao (production) or the lab's generated PIN files
  tunion.keymgmt.hsm_token:
    token_label: tunion-province
    so_pin: "{{ hsm_so_pin }}"
    user_pin: "{{ hsm_user_pin }}"

- name: Wipe and re-create a lab token (states how many objects were destroyed)
  tunion.keymgmt.hsm_token:
    token_label: tunion-guangzhou
    so_pin: "{{ hsm_so_pin }}"
    user_pin: "{{ hsm_user_pin }}"
    force: true
"""

RETURN = r"""
token_label:
  description: Label of the token.
  returned: always
  type: str
serial:
  description: Serial number the token reports.
  returned: success
  type: str
objects:
  description: Number of objects on the token (before a forced re-initialisation).
  returned: success
  type: int
destroyed:
  description: Number of objects destroyed (or that would be, in check mode) by a forced re-initialisation.
  returned: always
  type: int
action:
  description: V(initialise) or V(reinitialise) when the token was (or would be) initialised.
  returned: changed
  type: str
"""

from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils import argspec
from ansible_collections.tunion.keymgmt.plugins.module_utils.base import Spec, TunionModule
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.session import PKCS11_REQUIREMENT, ensure_token

OPTIONS: Spec = {
    "user_pin": {"type": "str", "no_log": True, "required": True},
    "so_pin": {"type": "str", "no_log": True, "required": True},
    "force": {"type": "bool", "default": False},
}


def run(module: TunionModule) -> dict[str, Any]:
    p = module.params
    result = ensure_token(
        p["pkcs11_library"],
        p["token_label"],
        p["so_pin"],
        p["user_pin"],
        force=p["force"],
        check_mode=module.check_mode,
    )
    before = "absent" if result.get("action") == "initialise" else f"present ({result['objects']} objects)"
    after = "present (0 objects)" if result["changed"] else before
    result["diff"] = {"before": {"token": before}, "after": {"token": after}}
    if result.get("action") == "reinitialise":
        module.warn(f"token {p['token_label']!r} re-initialised: {result['destroyed']} objects destroyed")
    return result


def main() -> None:
    TunionModule(OPTIONS, argspec.PKCS11, requires=[PKCS11_REQUIREMENT]).run(run)


if __name__ == "__main__":
    main()
