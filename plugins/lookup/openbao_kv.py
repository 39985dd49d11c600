# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Lookup tunion.keymgmt.openbao_kv: one field of a KV v2 secret, read on the controller."""

from __future__ import annotations

DOCUMENTATION = r"""
name: openbao_kv
short_description: Read one field of a KV version 2 secret from OpenBao
version_added: 0.1.0
author: tunion-keyops engineers (@tunion-keyops)
description:
  - Reads one field of the latest version of each KV version 2 secret named in the terms, on the controller, with
    the operator's own OpenBao token, and returns the field's values in the order of the terms.
  - This is how an inventory takes the HSM PINs from OpenBao instead of holding them, for example
    C(hsm_user_pin) in C(inventories/production.example).
  - It connects as the collection's modules do (O(url), O(ca_cert), O(token) or the token in O(token_path)), and
    its errors name the address, mount, path and field only, never a value or a token.
options:
  _terms:
    description: Paths of the secrets inside O(mount), for example V(hsm/tunion-province).
    type: list
    elements: str
    required: true
  field:
    description: The field of each secret to return, for example V(user_pin).
    type: str
    required: true
  mount:
    description: Mount path of the KV version 2 secrets engine that holds the secrets.
    type: str
    default: tunion-kb
  url:
    description:
      - Address of the OpenBao server, for example V(https://127.0.0.1:8200).
      - Taken from the inventory's C(openbao_addr) (the address the roles use), else from E(BAO_ADDR) then
        E(VAULT_ADDR).
    type: str
    env:
      - name: VAULT_ADDR
      - name: BAO_ADDR
    vars:
      - name: openbao_addr
  ca_cert:
    description:
      - PEM file of the CA that signed the OpenBao server certificate, on the controller.
      - Taken from the inventory's C(openbao_ca_cert), which must then name a file on the controller as well, else
        from E(BAO_CACERT) then E(VAULT_CACERT); without any of them the system trust store is used.
    type: path
    env:
      - name: VAULT_CACERT
      - name: BAO_CACERT
    vars:
      - name: openbao_ca_cert
  token:
    description:
      - OpenBao token of the operator. Falls back to E(BAO_TOKEN) then E(VAULT_TOKEN), then to O(token_path).
      - Never the root token.
    type: str
    env:
      - name: VAULT_TOKEN
      - name: BAO_TOKEN
  token_path:
    description: File holding the token when O(token) is not given (on the controller, as the operator).
    type: path
    default: ~/.openbao/token
  timeout:
    description: Seconds to wait for each OpenBao request.
    type: int
    default: 10
notes:
  - The value comes back in clear to the play. Use it where a secret belongs (a C(no_log) module option, a variable
    such as C(hsm_user_pin)); a task that prints it, such as M(ansible.builtin.debug), shows it.
  - A missing secret or field is an error that names the mount, path and field; the lookup never returns an empty
    value in its place.
requirements:
  - hvac (Python library) on the controller
"""

EXAMPLES = r"""
# inventories/<site>/group_vars/all/hsm.yml: one KV entry per token (hsm/<token label>: user_pin, so_pin)
hsm_user_pin: "{{ lookup('tunion.keymgmt.openbao_kv', 'hsm/' ~ hsm_token_label, field='user_pin', mount='province') }}"

# Two secrets at once: a list, in the order of the terms
pins: >-
  {{ query('tunion.keymgmt.openbao_kv', 'hsm/tunion-province', 'hsm/tunion-440100',
           field='user_pin', mount='province') }}
"""

RETURN = r"""
_raw:
  description: The value of O(field) in each secret, in the order of the terms.
  type: list
  elements: raw
"""

from typing import Any

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import TunionError
from ansible_collections.tunion.keymgmt.plugins.module_utils.openbao.client import (
    HAS_HVAC,
    HVAC_IMPORT_ERROR,
    OpenBaoSettings,
    connect,
)


class LookupModule(LookupBase):
    def run(self, terms: list[Any], variables: dict[str, Any] | None = None, **kwargs: Any) -> list[Any]:
        self.set_options(var_options=variables, direct=kwargs)
        if not HAS_HVAC:
            raise AnsibleLookupError(f"openbao_kv needs the Python library hvac on the controller: {HVAC_IMPORT_ERROR}")
        field: str = self.get_option("field")
        mount: str = self.get_option("mount")
        url = self.get_option("url")
        if not url:
            raise AnsibleLookupError(
                "openbao_kv: no OpenBao address: set url, the inventory's openbao_addr or BAO_ADDR, "
                "e.g. https://127.0.0.1:8200"
            )
        settings = OpenBaoSettings(
            url=url,
            ca_cert=self.get_option("ca_cert"),
            token=self.get_option("token"),
            token_path=self.get_option("token_path"),
            timeout=self.get_option("timeout"),
        )
        try:
            bao = connect(settings)
            return [self._field(bao.kv_read(mount, str(path)), mount, str(path), field, url) for path in terms]
        except TunionError as exc:  # texts name address, path and status only (openbao/client.py)
            raise AnsibleLookupError(f"openbao_kv: {exc}") from None

    @staticmethod
    def _field(secret: dict[str, Any] | None, mount: str, path: str, field: str, url: str) -> Any:
        if secret is None:
            raise AnsibleLookupError(
                f"openbao_kv: OpenBao at {url} has no secret {mount}/{path} (or its latest version is deleted): "
                f"check the path, and that {mount} is a KV version 2 mount"
            )
        data = secret.get("data") or {}
        if field not in data:
            # field names are not secret; naming them shows a typo at once
            names = ", ".join(sorted(str(name) for name in data)) or "none"
            raise AnsibleLookupError(
                f"openbao_kv: the secret {mount}/{path} has no field {field!r} (its fields: {names})"
            )
        return data[field]
