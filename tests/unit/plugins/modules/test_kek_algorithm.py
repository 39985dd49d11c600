"""A city's KEK reports its full algorithm (issue 9, hostile sweep): AES-256, not AES.

SoftHSM 2.6 leaves CKA_VALUE_LEN at 0 after an RSA-OAEP unwrap and refuses it in the unwrap template, so the token
cannot say the length; the label scheme can. The KEK is unwrapped here exactly as a city node does it.
"""

from __future__ import annotations

from typing import Any

import pytest
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.distribution.keys import kek_policy
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.policy import KeyPolicy
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import hsm_session
from pkcs11 import Attribute, KeyType, Mechanism

from tunion_lab.scratch_token import SOFTHSM, USER_PIN, temp_token

from .conftest import run_module


@pytest.mark.slow
@pytest.mark.parametrize("version", [1, 2, 0x1F])
def test_unwrapped_city_kek_is_aes_256(version: int) -> None:
    label = f"internal.kek.v{version:02x}.city-440100"
    with temp_token("kek"):
        with hsm_session(SOFTHSM, "kek", USER_PIN, rw=True) as tok:
            pub, priv = tok.generate_rsa_keypair(2048, "internal.transport_rsa.v01.city-440100")
            # the province's KEK, made extractable here only so that the test can wrap it (an SO does it for real)
            kek = tok.session.generate_key(KeyType.AES, 256, store=False, template={Attribute.EXTRACTABLE: True})
            blob = pub.wrap_key(kek, mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=(Mechanism.SHA_1, 1, None))
            city_kek = tok.unwrap(
                priv, blob, "AES-256", label=label, id=None, policy=kek_policy(province=False), mechanism="rsa-oaep"
            )
            assert city_kek[Attribute.VALUE_LEN] == 0  # why the label has to say it
            assert tok.describe(city_kek, with_kcv=False)["algorithm"] == "AES-256"
        result: dict[str, Any] = run_module(
            "hsm_key_info",
            {"pkcs11_library": SOFTHSM, "token_label": "kek", "user_pin": USER_PIN, "label_prefix": "internal.kek"},
        )
    assert [(k["label"], k["algorithm"]) for k in result["keys"]] == [(label, "AES-256")]


def test_other_aes_keys_keep_their_own_length() -> None:
    with temp_token("aes"), hsm_session(SOFTHSM, "aes", USER_PIN, rw=True) as tok:
        for bits, label in ((128, "internal.backup_kek.v01.province"), (256, "internal.blacklist_mac.v01.province")):
            key = tok.generate_secret(f"AES-{bits}", label, None, KeyPolicy(usage="mac", extractable=False))
            assert tok.describe(key, with_kcv=False)["algorithm"] == f"AES-{bits}"
