# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Glue for the distribution modules: shared argument specs and failures as messages, never tracebacks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.tunion.keymgmt.plugins.module_utils.distribution import DistributionError
from ansible_collections.tunion.keymgmt.plugins.module_utils.hsm import HsmError
from ansible_collections.tunion.keymgmt.plugins.module_utils.hsm_module import pkcs11_argument_spec
from ansible_collections.tunion.keymgmt.plugins.module_utils.keyblock import KeyBlockError
from ansible_collections.tunion.keymgmt.plugins.module_utils.openbao import (
    HAS_HVAC,
    HVAC_IMPORT_ERROR,
    OPENBAO_ARGSPEC,
    OpenBao,
    OpenBaoError,
)

# Options of the tunion.keymgmt.distribution doc fragments.
CITY_SPEC: dict[str, Any] = {
    "city": {"type": "str", "required": True},
    "city_code": {"type": "str", "required": True},
}
TARGETS_SPEC: dict[str, Any] = {
    "targets": {
        "type": "list",
        "elements": "dict",
        "required": True,
        "options": {
            "city": {"type": "str", "required": True},
            "city_code": {"type": "str", "required": True},
            "grants": {"type": "list", "elements": "raw", "default": []},
            "kek_version": {"type": "int", "default": 1},
        },
    },
    "catalogue": {"type": "list", "elements": "dict"},
}


def argument_spec(*, hsm: bool, **extra: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = {k: dict(v) for k, v in OPENBAO_ARGSPEC.items()}
    if hsm:
        spec.update(pkcs11_argument_spec())
    spec.update(extra)
    return spec


def run(module: AnsibleModule, body: Callable[[AnsibleModule, list[OpenBao]], dict[str, Any]]) -> None:
    """Run ``body``; our errors become fail_json with their (secret-free) message; AppRole tokens are revoked."""
    if not HAS_HVAC:
        module.fail_json(msg=missing_required_lib("hvac"), exception=HVAC_IMPORT_ERROR)
    opened: list[OpenBao] = []
    try:
        result = body(module, opened)
    except (OpenBaoError, DistributionError, KeyBlockError, HsmError) as exc:
        for bao in opened:
            bao.revoke_self()
        module.fail_json(msg=str(exc))
    for bao in opened:
        bao.revoke_self()
    module.exit_json(**result)
