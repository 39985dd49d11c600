"""Must show 2 of issue 10 on the running lab: a city key installed by distribution cannot encrypt arbitrary data with
the city's PIN, and it carries its validity dates.

The attack runs as each city's own unix user with python-pkcs11 alone and the city's PIN (stdin): C_Encrypt and
C_Decrypt with every granted key in the city's token, whatever its flags say. The dates are read from the token's
object files as that user (SoftHSM 2.6.1 writes a private object's CKA_START_DATE/CKA_END_DATE in clear but answers
CKR_GENERAL_ERROR when they are read back): every granted key's object file holds both.
"""

from __future__ import annotations

import pytest

from tunion_lab.lab_state import json_as_node, lab_cities

pytestmark = [pytest.mark.lab]

# argv: library, token label; the user PIN on stdin. For every secret key whose label names a granted key (not the
# KEK), the outcome of C_Encrypt/C_Decrypt on its handle; then the (start, end) dates of every object file that has
# both, and the number of secret keys that are not KEKs. Prints JSON.
_ATTACK = r"""
import glob, json, os, sys
import pkcs11
from pkcs11 import Attribute, Mechanism, ObjectClass
from pkcs11 import exceptions as p11e
from pkcs11._pkcs11 import DecryptMixin, EncryptMixin, Object, SecretKey


class AnyKey(SecretKey, EncryptMixin, DecryptMixin, Object):
    pass


token = pkcs11.lib(sys.argv[1]).get_token(token_label=sys.argv[2])
out = {"keys": {}, "dates": []}
with token.open(rw=True, user_pin=sys.stdin.read().strip()) as session:
    for key in list(session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY})):  # the search ends first
        label = key[Attribute.LABEL]
        if label.startswith("internal."):
            continue
        handle = AnyKey(key.wrapper)
        outcome = {}
        for what, call in (
            ("encrypt", lambda: handle.encrypt(bytes(8), mechanism=Mechanism.DES3_ECB)),
            ("decrypt", lambda: handle.decrypt(bytes(8), mechanism=Mechanism.DES3_ECB)),
        ):
            try:
                call()
                outcome[what] = "ALLOWED"
            except p11e.PKCS11Error as exc:
                outcome[what] = f"{type(exc).__name__} {exc}".strip()
        out["keys"][label] = outcome
conf = open(os.environ["SOFTHSM2_CONF"]).read()
tokendir = next(line.split("=", 1)[1].strip() for line in conf.splitlines() if line.startswith("directories.tokendir"))
for path in glob.glob(os.path.join(tokendir, "*", "*.object")):
    data = open(path, "rb").read()
    pair = []
    for attr in (0x110, 0x111):
        tag = attr.to_bytes(8, "big") + (3).to_bytes(8, "big") + (8).to_bytes(8, "big")
        at = data.find(tag)
        pair.append(data[at + len(tag): at + len(tag) + 8].decode() if at >= 0 else "")
    if all(pair):
        out["dates"].append(pair)
print(json.dumps(out))
"""


def attack(city: str) -> dict:
    return json_as_node(f"city-{city}", _ATTACK, f"tunion-{city}", "the attack")


@pytest.mark.parametrize("city", lab_cities())
def test_installed_city_keys_refuse_encryption_and_carry_dates(city: str) -> None:
    found = attack(city)
    assert found["keys"], f"{city}: no granted key installed"
    allowed = {label: o for label, o in found["keys"].items() if "ALLOWED" in o.values()}
    assert allowed == {}, f"{city}: the city PIN encrypts with {sorted(allowed)}"
    # refused for the key's own flags (CKR_KEY_FUNCTION_NOT_PERMITTED), not for a busy session or a missing key
    assert {v for o in found["keys"].values() for v in o.values()} == {"PKCS11Error Unmapped error code 0x68"}, found
    # one object file with both dates per granted key (the KEK and the RSA pair carry none)
    assert len(found["dates"]) == len(found["keys"]), found
    for start, end in found["dates"]:
        assert start.isdigit() and end.isdigit() and start <= end
