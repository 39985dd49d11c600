# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The option groups of the collection, one per doc fragment (plugins/doc_fragments/), merged by :func:`build`.

A module names the groups it takes and adds its own options; an option is declared once, in its group, so a
group's options are the same in every module of its action group (meta/runtime.yml, module_defaults).
"""

from __future__ import annotations

import os

from ansible.module_utils.basic import env_fallback
from ansible_collections.tunion.keymgmt.plugins.module_utils.base import Spec
from ansible_collections.tunion.keymgmt.plugins.module_utils.openbao.layout import DEFAULT_MOUNT, DEFAULT_TOKEN_PATH

#: tunion.keymgmt.pkcs11
PKCS11: Spec = {
    "pkcs11_library": {
        "type": "path",
        "default": os.environ.get("PKCS11_LIBRARY", "/usr/lib/softhsm/libsofthsm2.so"),
    },
    "token_label": {"type": "str", "required": True, "no_log": False},
    "user_pin": {"type": "str", "no_log": True},
    "so_pin": {"type": "str", "no_log": True},
}

#: tunion.keymgmt.openbao
OPENBAO: Spec = {
    "url": {"type": "str", "fallback": (env_fallback, ["BAO_ADDR", "VAULT_ADDR"])},
    "ca_cert": {"type": "path", "fallback": (env_fallback, ["BAO_CACERT", "VAULT_CACERT"])},
    "auth_method": {"type": "str", "default": "token", "choices": ["token", "approle"]},
    "token": {"type": "str", "no_log": True, "fallback": (env_fallback, ["BAO_TOKEN", "VAULT_TOKEN"])},
    "token_path": {"type": "path", "default": DEFAULT_TOKEN_PATH},
    "approle_mount": {"type": "str", "default": "approle"},
    "role_name": {"type": "str"},
    "role_id": {"type": "str", "no_log": True},
    "wrapped_secret_id": {"type": "str", "no_log": True},
    "timeout": {"type": "int", "default": 10},
    "mount": {"type": "str", "default": DEFAULT_MOUNT},
}

#: tunion.keymgmt.distribution.city
CITY: Spec = {
    "city": {"type": "str", "required": True},
    "city_code": {"type": "str", "required": True},
}

#: tunion.keymgmt.distribution.targets
TARGETS: Spec = {
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

#: tunion.keymgmt.status: the modules that work out the statuses in force (openbao_city_revoke, distribution_plan)
STATUS: Spec = {
    "cities": {"type": "dict", "required": True},
    "status": {"type": "dict", "default": {}},
    "sam_registry": {"type": "path"},
    "catalogue": {"type": "list", "elements": "dict"},
    "grace_days": {"type": "int", "default": 30},
    "today": {"type": "str"},
}
