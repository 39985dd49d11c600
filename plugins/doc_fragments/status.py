# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options of the modules that work out the statuses in force and the rotations that follow from them
(tunion.keymgmt.openbao_city_revoke, tunion.keymgmt.distribution_plan; docs/revocation.md)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  cities:
    description: Every city of the inventory, name to six-digit city code.
    type: dict
    required: true
  status:
    description:
      - Desired statuses, C(tunion_status) of the inventory - sections C(cities), C(holders), C(sams),
        C(key_versions); each entry a status word or C({status, reason, date}). See docs/revocation.md.
      - Merged with the statuses recorded in OpenBao (C(province/status/...)); a recorded suspension or revocation
        stays in force until the inventory lifts it with an explicit C(active) entry.
    type: dict
    default: {}
  sam_registry:
    description: Path of the SAM registry CSV (desired assignments); names its holders and SAMs.
    type: path
  catalogue:
    description: The key catalogue; names the key versions a status may refer to, and says which key types are shared.
    type: list
    elements: dict
  grace_days:
    description: Days an old version of a rotated shared key stays in use after the revocation date.
    type: int
    default: 30
  today:
    description:
      - The day the run acts on (YYYY-MM-DD, the whole string), for the end of grace periods; defaults to today in
        the network's time zone (Asia/Shanghai, the calendar of validity dates).
      - The playbooks pass C(status_now), so C(-e status_now=2026-12-25) shows what a later run will do.
    type: str
"""
