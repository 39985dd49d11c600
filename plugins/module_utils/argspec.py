# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Glue shared by the HSM modules: the pkcs11 doc-fragment options and error reporting without tracebacks."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.tunion.keymgmt.plugins.module_utils.catalogue import CatalogueError
from ansible_collections.tunion.keymgmt.plugins.module_utils.hsm import HAS_PKCS11, PKCS11_IMPORT_ERROR, HsmError


def pkcs11_argument_spec() -> dict[str, Any]:
    """Options of the ``tunion.keymgmt.pkcs11`` doc fragment."""
    return {
        "pkcs11_library": {
            "type": "path",
            "default": os.environ.get("PKCS11_LIBRARY", "/usr/lib/softhsm/libsofthsm2.so"),
        },
        "token_label": {"type": "str", "required": True, "no_log": False},
        "user_pin": {"type": "str", "no_log": True},
        "so_pin": {"type": "str", "no_log": True},
    }


def run_module(module: AnsibleModule, body: Callable[[AnsibleModule], dict[str, Any]]) -> None:
    """Run ``body`` and exit; HsmError and CatalogueError become fail_json with their (safe) message."""
    if not HAS_PKCS11:
        module.fail_json(msg=missing_required_lib("python-pkcs11"), exception=PKCS11_IMPORT_ERROR)
    try:
        result = body(module)
    except CatalogueError as exc:
        module.fail_json(msg=str(exc), errors=exc.errors)
    except HsmError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)
