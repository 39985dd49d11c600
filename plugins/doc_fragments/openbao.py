# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connection and authentication options shared by the tunion.keymgmt OpenBao modules."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  url:
    description:
      - Address of the OpenBao server, for example C(https://127.0.0.1:8200).
      - Falls back to the E(BAO_ADDR) then E(VAULT_ADDR) environment variables.
    type: str
  ca_cert:
    description:
      - PEM file of the CA that signed the OpenBao server certificate.
      - Falls back to E(BAO_CACERT) then E(VAULT_CACERT); without it the system trust store is used.
    type: path
  auth_method:
    description:
      - V(token) uses O(token), or else the token stored in O(token_path). This is how the province authenticates.
      - V(approle) logs in with O(role_id) and a response-wrapped secret_id (O(wrapped_secret_id)).
        This is how a city node authenticates. The wrapping token is looked up first and must have been
        created for O(role_name); a wrapping token that was already unwrapped is reported as a possible
        interception. The token obtained is revoked when the module finishes.
    type: str
    choices: [token, approle]
    default: token
  token:
    description:
      - OpenBao token for O(auth_method=token). Falls back to E(BAO_TOKEN) then E(VAULT_TOKEN).
      - Never the root token in a playbook.
    type: str
  token_path:
    description:
      - File holding the token when O(token) is not given (on the managed node, as the connecting user).
    type: path
    default: ~/.openbao/token
  approle_mount:
    description: Mount path of the AppRole auth method.
    type: str
    default: approle
  role_name:
    description:
      - AppRole role name the wrapped secret_id must belong to (checked against the wrapping token's creation path).
    type: str
  role_id:
    description: AppRole role_id for O(auth_method=approle).
    type: str
  wrapped_secret_id:
    description:
      - Single-use wrapping token that holds the secret_id, as issued by M(tunion.keymgmt.openbao_secret_id).
    type: str
  timeout:
    description: Seconds to wait for each OpenBao request.
    type: int
    default: 10
  mount:
    description:
      - Mount path of the KV version 2 engine of the collection (key blocks, KEK envelopes, city status, province
        records). Every path the collection reads or writes is under it (plugins/module_utils/openbao/layout.py).
      - Give every OpenBao task of a site the same mount (set it once with C(module_defaults) for the group
        C(tunion.keymgmt.openbao)); the city policies name it.
    type: str
    default: tunion-kb
notes:
  - Tokens, role_ids and secret_ids are C(no_log); error messages name the address, path and HTTP status only.
  - Every module of the action group C(tunion.keymgmt.openbao) (meta/runtime.yml) takes these options, so a play
    sets them once with C(module_defaults) for C(group/tunion.keymgmt.openbao); the examples leave them out.
requirements:
  - hvac (Python library) on the managed node
"""
