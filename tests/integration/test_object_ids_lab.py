"""Every object in the province token and in every city token carries the CKA_ID that docs/hsm.md's scheme gives its
label: class byte, type code, version, holder id.

Read without the project's code, as each node's own unix user with python-pkcs11 alone (the PIN on stdin); the
expected IDs are computed here from the label, the lab catalogue's type codes (read as YAML) and the reserved codes
docs/hsm.md lists for the collection's own objects (KEKs 0xF1, RSA transport keys 0xF2).
"""

from __future__ import annotations

import re

import pytest
import yaml

from tunion_lab.lab import REPO
from tunion_lab.lab_state import json_as_node, lab_cities

pytestmark = [pytest.mark.lab]

CLASS_BYTES = {"consumption": 0x01, "recharge": 0x02, "internal": 0x03}
RESERVED_CODES = {"kek": 0xF1, "transport_rsa": 0xF2}
# The lab's SAM supplier's batch KEK (tunion_lab/sam_supply.py): a lab object outside the lab catalogue.
LAB_CODES = {"sam_transport": 0x33, "sam_manufacturer": 0x35}  # tunion_lab/sam_supply.py, pkcs11/sam_crypto.py
LABEL_RE = re.compile(r"^(?P<cls>[a-z]+)\.(?P<type>[a-z][a-z0-9_]*)\.v(?P<ver>[0-9a-f]{2})\.(?P<holder>[a-z0-9-]+)$")

# argv: library, token label (as _as_node passes them); the user PIN on stdin.
# Prints [[object class, label, CKA_ID hex], ...] as JSON.
_LIST = r"""
import json, sys
import pkcs11
from pkcs11 import Attribute, ObjectClass
token = pkcs11.lib(sys.argv[1]).get_token(token_label=sys.argv[2])
with token.open(user_pin=sys.stdin.read().strip()) as session:
    # keys only: a data object (the highest accepted SAM blacklist version, docs/blacklist.md) has no CKA_ID
    objects = [obj for obj in session.get_objects() if obj[Attribute.CLASS] != ObjectClass.DATA]
    print(json.dumps([
        [obj.object_class.name, obj[Attribute.LABEL], bytes(obj[Attribute.ID] or b"").hex()]
        for obj in objects
    ]))
"""


def catalogue_codes() -> dict[tuple[str, str], int]:
    entries = yaml.safe_load((REPO / "inventories/lab/group_vars/all/key_catalogue.yml").read_text())["key_catalogue"]
    return {(e["class"], e["name"]): int(e["code"]) for e in entries}


def token_objects(user: str, token_label: str) -> list[list[str]]:
    """_LIST run as the node's unix user, with the node's SoftHSM configuration (the lab tooling's runner)."""
    return json_as_node(user, _LIST, token_label, f"listing {token_label}")


def expected_id(label: str, codes: dict[tuple[str, str], int]) -> str | None:
    """The scheme's CKA_ID for a project label (hex), or None when the label is outside the scheme."""
    m = LABEL_RE.match(label)
    if not m or m["cls"] not in CLASS_BYTES:
        return None
    if m["cls"] == "internal" and m["type"] in RESERVED_CODES:
        code = RESERVED_CODES[m["type"]]
    else:
        code = codes.get((m["cls"], m["type"])) or (LAB_CODES.get(m["type"]) if m["cls"] == "internal" else None)
    if code is None:
        return None
    holder = m["holder"]
    if holder == "province":
        holder_id = "00"
    elif re.fullmatch(r"city-[0-9]{6}", holder):
        holder_id = "01" + holder[5:]
    elif holder.startswith("sam-"):
        holder_id = "02" + holder[4:].rjust(len(holder[4:]) + len(holder[4:]) % 2, "0")
    else:
        return None
    return f"{CLASS_BYTES[m['cls']]:02x}{code:02x}{m['ver']}{holder_id}"


def problems_in(token_label: str, objects: list[list[str]], codes: dict[tuple[str, str], int]) -> list[str]:
    out = []
    for object_class, label, found in objects:
        want = expected_id(label, codes)
        if want is None:
            out.append(f"{token_label}: {object_class} {label!r} is outside the label scheme")
        elif found != want:
            out.append(f"{token_label}: {object_class} {label} has CKA_ID {found or '(none)'}, expected {want}")
    return out


def test_expected_ids_follow_the_documented_examples() -> None:
    codes = catalogue_codes()
    assert expected_id("consumption.purchase.v01.province", codes) == "01110100"
    assert expected_id("recharge.load.v01.city-440100", codes) == "02210101440100"
    assert expected_id("internal.kek.v02.city-440300", codes) == "03f10201440300"
    assert expected_id("internal.transport_rsa.v01.city-440300", codes) == "03f20101440300"
    assert expected_id("vendor object", codes) is None


def test_every_object_of_every_lab_token_has_the_scheme_s_id() -> None:
    codes = catalogue_codes()
    province = token_objects("tunion-province", "tunion-province")
    problems = problems_in("tunion-province", province, codes)
    for city, code in sorted(lab_cities().items()):
        objects = token_objects(f"city-{city}", f"tunion-{city}")
        kinds = {(cls, label.rsplit(".", 2)[0]) for cls, label, _id in objects if label.endswith(f".city-{code}")}
        # a rolled-out city holds at least its KEK and its transport pair: an empty listing would prove nothing
        assert {
            ("SECRET_KEY", "internal.kek"),
            ("PUBLIC_KEY", "internal.transport_rsa"),
            ("PRIVATE_KEY", "internal.transport_rsa"),
        } <= kinds, f"{city}: {sorted(kinds)}"
        problems += problems_in(f"tunion-{city}", objects, codes)
    assert any(label.startswith("internal.kek.") for _cls, label, _id in province)
    assert not problems, f"{len(problems)} objects off the ID scheme:\n" + "\n".join(problems[:40])
