#!/usr/bin/python
# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: key_catalogue_validate
short_description: Validate the key catalogue before any token is touched
description:
  - Checks the whole key catalogue against the province's key management rules (粤交〔2019〕11号) and reports every
    violation at once. Nothing is changed anywhere; run it before any task that touches an HSM or a SAM.
  - "A recharge-class (充值类) or internal key with V(sam) among its holders is refused (第二条(四)): SAMs hold
    consumption keys only."
  - Duplicate key type/version pairs, unknown algorithms, validity periods that end before they start, consumption
    keys not from the Ministry and recharge keys not from the province (第九条) are refused.
extends_documentation_fragment:
  - tunion.keymgmt.attributes
  - tunion.keymgmt.attributes.no_diff
options:
  catalogue:
    description: The key catalogue, a list of key types (see docs/hsm.md for the fields).
    type: list
    elements: dict
    required: true
"""

EXAMPLES = r"""
- name: Refuse a bad catalogue before anything touches a token
  tunion.keymgmt.key_catalogue_validate:
    catalogue: "{{ key_catalogue }}"
"""

RETURN = r"""
catalogue:
  description: The validated catalogue, normalised, with the label and CKA_ID of every version.
  returned: success
  type: list
  elements: dict
sam_key_types:
  description: Key types that may be loaded into SAMs (consumption class with V(sam) among holders).
  returned: success
  type: list
  elements: str
errors:
  description: Every rule the catalogue breaks, one sentence each.
  returned: failure
  type: list
  elements: str
"""

from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils.base import Spec, TunionModule
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.catalogue import catalogue_summary, load_catalogue

OPTIONS: Spec = {"catalogue": {"type": "list", "elements": "dict", "required": True}}


def run(module: TunionModule) -> dict[str, Any]:
    cat = load_catalogue(module.params["catalogue"])
    return {"changed": False, "catalogue": catalogue_summary(cat), "sam_key_types": [e.name for e in cat.for_sam()]}


def main() -> None:
    TunionModule(OPTIONS).run(run)


if __name__ == "__main__":
    main()
