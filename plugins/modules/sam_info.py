#!/usr/bin/python
# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: sam_info
short_description: Read the PSAMs in PC/SC readers - serial, terminal number and key slots, never key values
description:
  - Reads the SAM in each matching reader (TUnion PSAM profile, docs/sam-profile.md) - its serial, terminal number,
    key file capacity and, per key slot, the key usage, version, algorithm and KCV. A PSAM has no command that
    returns a key value, so none can be returned.
  - The SAM is left in the reader (no reset), so a personalisation machine does not move it.
extends_documentation_fragment:
  - tunion.keymgmt.attributes
  - tunion.keymgmt.attributes.no_diff
options:
  readers:
    description: PC/SC reader names or shell patterns.
    type: list
    elements: str
    default: ["*"]
  registry:
    description: SAM registry CSV; when given, each SAM's assignment (city, holder, status) is added.
    type: path
requirements:
  - pyscard and a running pcscd on the managed node
"""

EXAMPLES = r"""
- name: What is in the station's readers
  tunion.keymgmt.sam_info:
    readers: ["TUnion Lab VPCD *"]
    registry: "{{ sam_registry_csv }}"
  register: sams
"""

RETURN = r"""
sams:
  description: One entry per reader holding a PSAM.
  returned: always
  type: list
  elements: dict
  contains:
    reader: {description: Reader name., type: str}
    serial: {description: SAM serial (20 hex digits)., type: str}
    terminal: {description: Terminal number (12 hex digits)., type: str}
    capacity: {description: Key slots in the SAM's key file., type: int}
    free_slots: {description: Free key slots., type: int}
    keys:
      description: Key slots - key_type, usage, version, algorithm, kcv.
      type: list
      elements: dict
    assignment: {description: "Registry city_code, holder, status and station (with O(registry)).", type: dict}
empty_readers:
  description: Readers with no SAM (or none answering as a PSAM).
  returned: always
  type: list
  elements: str
"""

from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils.base import Spec, TunionModule
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.sam_registry import Registry
from ansible_collections.tunion.keymgmt.plugins.module_utils.pcsc.channel import (
    PYSCARD_REQUIREMENT,
    PcscContext,
    read_sams,
)

OPTIONS: Spec = {
    "readers": {"type": "list", "elements": "str", "default": ["*"]},
    "registry": {"type": "path"},
}


def run(module: TunionModule) -> dict[str, Any]:
    p = module.params
    registry = Registry.load(p["registry"]) if p["registry"] else None
    pc = PcscContext()
    try:
        sams, empty = read_sams(pc, pc.readers(p["readers"]))
    finally:
        pc.close()
    for sam in sams:
        if registry is not None:
            a = registry.get(sam["serial"])
            sam["assignment"] = a.as_dict() if a else None
    return {"changed": False, "sams": sams, "empty_readers": empty}


def main() -> None:
    TunionModule(OPTIONS, requires=[PYSCARD_REQUIREMENT]).run(run)


if __name__ == "__main__":
    main()
