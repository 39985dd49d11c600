# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PKCS#11 connection options shared by the tunion.keymgmt HSM modules."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  pkcs11_library:
    description:
      - Path of the PKCS#11 module on the managed node. SoftHSM2 in the lab; the vendor library in production.
      - Falls back to the E(PKCS11_LIBRARY) environment variable.
    type: path
    default: /usr/lib/softhsm/libsofthsm2.so
  token_label:
    description:
      - Label of the token (at most 32 bytes). Tokens are found by label, never by slot number.
    type: str
    required: true
  user_pin:
    description:
      - User PIN of the token. It is presented once; a wrong PIN is reported and never retried, and a PIN is not
        presented at all when the token says it is on its final try or locked.
      - In the lab it comes from a generated file under the lab directory, in production from OpenBao.
    type: str
  so_pin:
    description:
      - Security officer PIN. Needed only to initialise a token, or to create trusted (CKA_TRUSTED) KEKs.
    type: str
requirements:
  - python-pkcs11 >= 0.10 on the managed node
notes:
  - Every module of the action group C(tunion.keymgmt.pkcs11) (meta/runtime.yml) takes these options, so a play
    sets them once with C(module_defaults) for C(group/tunion.keymgmt.pkcs11).
  - PINs are C(no_log). No module returns key values; keys are identified by label and KCV.
"""
