#!/usr/bin/python
# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: sam_inject
short_description: Load the catalogue's consumption keys into the PSAMs presented in one or more readers
description:
  - Processes a batch of SAMs in one task, one thread per reader, as a personalisation machine presents them
    (docs/sam-profile.md). For each SAM it reads the serial and key slots, checks the SAM registry, derives the
    SAM's master key inside the HSM, opens the mutually authenticated loading channel (the SAM proves it holds its
    master key first; a SAM that cannot is refused, moved out and not retried, and nothing made under a key is
    sent to it), loads each missing key with WRITE KEY under secure messaging, then verifies each key functionally
    - the SAM computes MAC1 for test cards of three issuers (its own city, another Guangdong city, an issuer
    outside Guangdong) and each must equal the MAC1 the HSM computes from the card key it derives itself; the SAM
    must then accept the HSM's MAC2.
  - The level of each key a SAM receives comes from the catalogue's key hierarchy (docs/key_hierarchy.md) - the
    Ministry-level purchase key, with the two-level MAC1 (80 70 00 00 24), or in a closed scheme the city's
    issuer-level key with the single-level form (80 70 00 00 1C).
  - Every key used is checked against its validity in the catalogue; an expired SAM issuer key or consumption key
    is not used.
  - Only verified keys are recorded, in the observed registry (SQLite, O(observed_db)). A SAM that already holds
    and is recorded with the right versions is left untouched. A SAM removed mid-injection is reported failed
    with the keys actually verified; a later run completes it without duplicates.
  - "Policy (粤交〔2019〕11号 第二条(四), SAMs hold consumption keys only) is enforced before any APDU: the catalogue is
    validated and a requested key that is not consumption-class with C(sam) among its holders is refused; a SAM
    whose serial is not in the registry, is not active, or is assigned to another city, holder or station is
    refused right after its serial is read."
  - Key values never leave the HSM in clear; the APDU trace (O(trace)) carries serials, challenges, cryptograms
    and MACs only.
extends_documentation_fragment:
  - tunion.keymgmt.attributes
  - tunion.keymgmt.attributes.full
  - tunion.keymgmt.pkcs11
options:
  user_pin:
    required: true
  readers:
    description: PC/SC reader names or shell patterns; every matching reader is processed in parallel.
    type: list
    elements: str
    default: ["*"]
  catalogue:
    description: The key catalogue (validated before anything else happens).
    type: list
    elements: dict
    required: true
  keys:
    description:
      - Key types (and optionally versions) to load. Default - every catalogue type a SAM may hold, at its
        highest version valid today. Each is checked against 第二条(四) before any reader is touched.
      - "Each entry is a catalogue key type name, for example V(purchase), or a mapping C({key, version}), for example
        C({key: purchase, version: 1}); without a version, the highest valid today."
    type: list
    elements: raw
  sam_issuer_label:
    description: Label of the SAM issuer master key; each SAM's master key is diversified from it by serial.
    type: str
    default: internal.sam_issuer.v01.province
  batch_kek_label:
    description: Label of the trusted batch transport KEK the SAMs were manufactured with (docs/sam-profile.md).
    type: str
    default: internal.sam_transport.v01.province
  registry:
    description: Path of the SAM registry CSV (desired assignments) on the managed node.
    type: path
    required: true
  observed_db:
    description: Path of the observed-registry SQLite database on the SAM station.
    type: path
    required: true
  blacklist:
    description:
      - The SAM blacklist installed on this station by C(playbooks/enforce_status.yml) (docs/blacklist.md).
      - Its MAC is checked in the HSM first; a SAM it lists is refused before any key APDU (粤交〔2019〕11号 第十七条).
        No list, or one that fails its check, has expired or is older than the highest version this station
        accepted, stops the batch before any SAM (the blacklist fails closed).
    type: path
    default: ~/sam-blacklist/current.json
  station:
    description: Name of this SAM station, recorded with every load and compared with the registry's C(station).
    type: str
    required: true
  operator:
    description: Who runs the injection, recorded with every load.
    type: str
    required: true
  city_code:
    description: Only SAMs assigned to this city are accepted; others are refused.
    type: str
  holder:
    description: Only SAMs assigned to this holder (transport company or agent) are accepted.
    type: str
  max_sams:
    description: Stop after this many SAMs (0 - no limit).
    type: int
    default: 0
  idle_timeout:
    description: A reader is finished when no new SAM is presented in it for this many seconds.
    type: float
    default: 3.0
  advance:
    description:
      - End each SAM's session with a reset, which tells a personalisation machine to take the SAM out and present
        the next. V(false) processes only the SAM currently in each reader. Defaults to V(false) in check mode.
    type: bool
  test_card:
    description: Test card data for the functional verification (hex); see DEFAULT_TEST_CARD in module_utils.
    type: dict
  trace:
    description:
      - Return the APDU trace (never key values). The data of the loading channel (challenges, cryptograms,
        C-MACs, key cryptograms) is withheld from it unless O(trace_channel) is set.
    type: bool
    default: false
  trace_channel:
    description:
      - Debugging only, never in production - also trace the loading channel's data. Authentication pairs and key
        cryptograms are what an attacker on the station would collect.
    type: bool
    default: false
attributes:
  check_mode:
    details: Reads each SAM's serial and key slots and reports what would be loaded; sends no key and no
      authentication, and records nothing.
requirements:
  - pyscard and a running pcscd on the managed node
"""

EXAMPLES = r"""
- name: Load the purchase key into every SAM the machine presents
  tunion.keymgmt.sam_inject:
    token_label: "{{ hsm_token_label }}"
    user_pin: "{{ hsm_user_pin }}"
    catalogue: "{{ key_catalogue }}"
    keys: [{key: purchase}]
    registry: "{{ sam_registry_csv }}"
    observed_db: "{{ sam_observed_db }}"
    station: "{{ inventory_hostname }}"
    operator: "{{ sam_operator }}"
  register: injected
"""

RETURN = r"""
sams:
  description: One entry per SAM handled.
  returned: always
  type: list
  elements: dict
  contains:
    serial: {description: SAM serial (20 hex digits)., type: str}
    reader: {description: Reader it was in., type: str}
    status: {description: "loaded, unchanged, would_load, refused or failed.", type: str}
    keys_loaded: {description: Keys written in this run (type.vVV)., type: list}
    keys_verified: {description: "Keys verified (MAC1 for three issuers' cards, MAC2), and recorded.", type: list}
    keys_to_load: {description: Keys found missing or unverified., type: list}
    error: {description: Why the SAM failed or was refused., type: str}
    apdus: {description: APDUs exchanged with this SAM., type: int}
summary:
  description: Count of SAMs per status, and the total.
  returned: always
  type: dict
  sample: {total: 200, loaded: 200}
sams_per_minute:
  description: Throughput of the batch, over its working time (first SAM in to last SAM done).
  returned: always
  type: float
batch_seconds:
  description: The batch's working time in seconds.
  returned: always
  type: float
reader_errors:
  description: Transient reader problems met before a SAM's serial could be read (each was retried).
  returned: always
  type: list
  elements: str
trace:
  description: APDU trace (only with O(trace)); the loading channel's data withheld unless O(trace_channel).
  returned: when trace is true
  type: list
  elements: str
"""

from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils import argspec
from ansible_collections.tunion.keymgmt.plugins.module_utils.base import Spec, TunionModule
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import (
    PolicyError,
    RegistryError,
    TunionError,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows import journal
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.sam_injection import inject
from ansible_collections.tunion.keymgmt.plugins.module_utils.pcsc.channel import PYSCARD_REQUIREMENT
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.session import PKCS11_REQUIREMENT

OPTIONS: Spec = {
    "user_pin": {"type": "str", "no_log": True, "required": True},
    "readers": {"type": "list", "elements": "str", "default": ["*"]},
    "catalogue": {"type": "list", "elements": "dict", "required": True},
    # names or {key, version} (the role's sam_keys takes both); checked by plan_keys before any reader is touched
    "keys": {"no_log": False, "type": "list", "elements": "raw"},  # key type names and versions, never key material
    "sam_issuer_label": {"type": "str", "default": "internal.sam_issuer.v01.province"},
    "batch_kek_label": {"type": "str", "default": "internal.sam_transport.v01.province"},
    "registry": {"type": "path", "required": True},
    "observed_db": {"type": "path", "required": True},
    "blacklist": {"type": "path", "default": "~/sam-blacklist/current.json"},
    "station": {"type": "str", "required": True},
    "operator": {"type": "str", "required": True},
    "city_code": {"type": "str"},
    "holder": {"type": "str"},
    "max_sams": {"type": "int", "default": 0},
    "idle_timeout": {"type": "float", "default": 3.0},
    "advance": {"type": "bool"},
    "test_card": {"type": "dict"},
    "trace": {"type": "bool", "default": False},
    "trace_channel": {"type": "bool", "default": False},
}


def refused_before_any_apdu(exc: TunionError) -> dict[str, Any]:
    """A refused request or registry: say that no APDU went to any SAM, and list each reason."""
    if isinstance(exc, PolicyError | RegistryError):
        return {"apdus_sent": 0, "errors": exc.errors or [str(exc)]}
    return {}


def run(module: TunionModule) -> dict[str, Any]:
    result: dict[str, Any] = inject(module.params, check_mode=module.check_mode)
    if module._diff:
        result["diff"] = {
            "before": {s["serial"]: s.get("keys_verified", []) for s in result["sams"] if s["status"] == "unchanged"},
            "after": {s["serial"]: s.get("keys_to_load", []) for s in result["sams"]},
        }
    bad = [s for s in result["sams"] if s["status"] in ("failed", "refused")]
    if bad:
        lines = [f"{s['serial']} ({s['reader']}): {s['status']}: {s.get('error', '')}" for s in bad[:10]]
        more = f"; and {len(bad) - 10} more" if len(bad) > 10 else ""
        module.fail_json(
            msg=f"{len(bad)} of {len(result['sams'])} SAMs not loaded: " + "; ".join(lines) + more, **result
        )
    return result


def main() -> None:
    module = TunionModule(
        OPTIONS,
        argspec.PKCS11,
        requires=[PKCS11_REQUIREMENT, PYSCARD_REQUIREMENT],
        journal="inject",
        journal_keys=journal.injected_keys,
    )
    module.run(run, failure_extras=refused_before_any_apdu)


if __name__ == "__main__":
    main()
