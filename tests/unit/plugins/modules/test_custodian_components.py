"""Custodian component files are read exactly as the custodian typed them (issue 9, hostile sweep).

The project's own format is ``value: <hex>`` and ``kcv: <hex>``, unquoted. Read as YAML, a genuine KCV such as 043430
becomes the octal number 18200 (and 123456 a decimal, 0b1010 the binary 10), then fails as "not hex". The KCVs here
are computed independently (cryptography), the key is imported by hsm_key in process into a throw-away SoftHSM token.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.plugins.filter.core import from_yaml
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import ComponentError
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.component import component_of, parse_component
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from tunion_lab.scratch_token import SOFTHSM, USER_PIN, temp_token

from .conftest import assert_clean_failure, lab_catalogue, run_module

HEX = "0123456789ABCDEF"


def retyped(text: str) -> bool:
    """True when YAML (as Ansible's from_yaml reads it) makes something other than this text of it."""
    return from_yaml(f"kcv: {text}")["kcv"] != text


def yaml_retyped_kcvs() -> list[str]:
    """Every form of a 6-hex-digit KCV that YAML 1.1 retypes, swept: octal, decimal, binary, zero."""
    forms = ["0" + "".join(p) for p in itertools.product("07", repeat=5)]  # 0[0-7]{5}: octal
    forms += ["043430", "012345", "000000", "000001", "077777"]
    forms += ["123456", "999999", "100000", "700000", "987650"]  # [1-9][0-9]{5}: decimal
    forms += ["0b" + "".join(p) for p in itertools.product("01", repeat=4)]  # 0b[01]{4}: binary
    return sorted({f for f in forms if retyped(f)})


RETYPED = yaml_retyped_kcvs()


def test_the_sweep_is_what_yaml_retypes() -> None:
    assert len(RETYPED) > 40
    assert {"043430", "123456", "0b1010", "000000"} <= set(RETYPED)
    # and forms YAML leaves alone stay out of it (they are read right either way)
    assert not any(retyped(v) for v in ("0E1234", "1E1234", "08A000", "ABCDEF", "012389"))


@pytest.mark.parametrize("kcv", RETYPED)
def test_parse_keeps_what_was_typed(kcv: str) -> None:
    value = "0123456789ABCDEF0123456789ABCDEF"
    got = parse_component(f"value: {value}\nkcv: {kcv}\n", "custodian-1/purchase-v01.yml")
    assert (got.value, got.kcv) == (value, kcv)


@pytest.mark.parametrize(
    "text",
    [
        "---\nvalue: 250A41031FFD5B24D95CF00EC114EDA3\nkcv: 043430\n",
        "# custodian 1, 2026-11-30\nvalue: '250A41031FFD5B24D95CF00EC114EDA3'\nkcv: \"043430\"\n",
        "value:   250A41031FFD5B24D95CF00EC114EDA3   \n\nkcv: 043430  # as on the form\n",
        "kcv: 043430\r\nvalue: 250A41031FFD5B24D95CF00EC114EDA3\r\n",
    ],
    ids=["document-start", "quoted-and-comment", "spaces-and-trailing-comment", "crlf-any-order"],
)
def test_parse_accepts_what_a_custodian_writes(text: str) -> None:
    got = parse_component(text, "f")
    assert (got.value, got.kcv) == ("250A41031FFD5B24D95CF00EC114EDA3", "043430")


SECRET = "250A41031FFD5B24D95CF00EC114EDA3"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (f"value: {SECRET}\n", ("no kcv",)),
        ("kcv: 043430\n", ("no value",)),
        (f"value: {SECRET}\nkcv: 043430\nkcv: 043430\n", ("line 3", "twice")),
        (f"value: {SECRET}\nkvc: 043430\n", ("line 2", "'kvc'")),
        (f"{{value: {SECRET}, kcv: 043430}}\n", ("line 1", "name: value")),
        (f"- value: {SECRET}\n", ("line 1",)),
        ("", ("no value and no kcv",)),
    ],
)
def test_parse_refuses_with_line_and_never_shows_the_value(text: str, words: tuple[str, ...]) -> None:
    with pytest.raises(ComponentError) as exc:
        parse_component(text, "custodian-2/purchase-v01.yml")
    msg = str(exc.value)
    assert "custodian-2/purchase-v01.yml" in msg
    for word in words:
        assert word in msg
    assert SECRET not in msg and SECRET[:8] not in msg


@pytest.mark.parametrize("kcv", ["043430", "123456", "0b1010"])
def test_from_yaml_numbers_refused_with_advice(kcv: str) -> None:
    parsed = from_yaml(f"value: {SECRET}\nkcv: {kcv}\n")
    with pytest.raises(ComponentError) as exc:
        component_of(parsed, "component 2")
    msg = str(exc.value)
    assert "component 2" in msg and "kcv" in msg and "from_yaml" in msg and "quote" in msg
    assert SECRET not in msg


# ------------------------------------------------------------------ hsm_key, in process, with a throw-away token
def des3_kcv(key16: bytes) -> str:
    enc = Cipher(TripleDES(key16 + key16[:8]), modes.ECB()).encryptor()
    return (enc.update(bytes(8)) + enc.finalize())[:3].hex().upper()


def component_with(kcv_ok: Callable[[str], bool]) -> tuple[bytes, str]:
    """A random component whose own KCV has the form asked for (found by trying, each try checked independently)."""
    while True:
        comp = os.urandom(16)
        kcv = des3_kcv(comp)
        if kcv_ok(kcv):
            return comp, kcv


FORMS: dict[str, Callable[[str], bool]] = {
    "octal": lambda k: re.fullmatch(r"0[0-7]{5}", k) is not None,
    "decimal": lambda k: re.fullmatch(r"[1-9][0-9]{5}", k) is not None,
    "leading-zero-decimal": lambda k: re.fullmatch(r"0[0-9]{5}", k) is not None and retyped(k),
}


def xor(*parts: bytes) -> bytes:
    out = bytearray(16)
    for part in parts:
        out = bytearray(a ^ b for a, b in zip(out, part, strict=True))
    return bytes(out)


@pytest.fixture(scope="module")
def components() -> list[tuple[bytes, str]]:
    return [component_with(FORMS["octal"]), component_with(FORMS["decimal"]), component_with(FORMS["octal"])]


@pytest.fixture
def token() -> Iterator[str]:
    with temp_token("custodian"):
        yield "custodian"


def catalogue(combined_kcv: str) -> list[dict[str, Any]]:
    """The lab catalogue, its purchase key expecting the KCV of these components."""
    cat = lab_catalogue()
    purchase = next(e for e in cat if e["name"] == "purchase")
    purchase["versions"] = [{**purchase["versions"][0], "kcv": combined_kcv}]
    return cat


def hsm_key_args(token: str, components: list[tuple[bytes, str]], given: list[Any]) -> dict[str, Any]:
    combined = des3_kcv(xor(*(c for c, _ in components)))
    return {
        "pkcs11_library": SOFTHSM,
        "token_label": token,
        "user_pin": USER_PIN,
        "catalogue": catalogue(combined),
        "key": "purchase",
        "version": 1,
        "components": given,
    }


def files_as_typed(components: list[tuple[bytes, str]]) -> list[str]:
    """The project's own format, unquoted, exactly what each custodian types."""
    return [f"value: {comp.hex().upper()}\nkcv: {kcv}\n" for comp, kcv in components]


@pytest.mark.slow
def test_hsm_key_imports_components_whose_kcvs_yaml_would_retype(
    token: str, components: list[tuple[bytes, str]]
) -> None:
    texts = files_as_typed(components)
    assert all(retyped(kcv) for _, kcv in components)  # the very values from_yaml would have spoilt
    result = run_module("hsm_key", hsm_key_args(token, components, texts))
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] and result["action"] == "imported"
    assert result["kcv"] == des3_kcv(xor(*(c for c, _ in components)))
    for comp, _ in components:
        assert comp.hex().upper() not in str(result)
    again = run_module("hsm_key", hsm_key_args(token, components, texts))
    assert not again["changed"] and again["kcv"] == result["kcv"]


@pytest.mark.slow
def test_hsm_key_refuses_from_yaml_numbers(token: str, components: list[tuple[bytes, str]]) -> None:
    parsed = [yaml.safe_load(text) for text in files_as_typed(components)]
    assert not isinstance(parsed[0]["kcv"], str)
    msg = assert_clean_failure(
        "hsm_key", run_module("hsm_key", hsm_key_args(token, components, parsed)), "component 1", "quote"
    )
    assert "not hex" not in msg


@pytest.mark.slow
def test_hsm_key_names_a_missing_custodian_file(
    token: str, components: list[tuple[bytes, str]], tmp_path: Path
) -> None:
    """A missing file is named; two of three components are not imported as a "KCV mismatch"."""
    missing = str(tmp_path / "custodian-3" / "purchase-v01.yml")
    args = hsm_key_args(token, components, files_as_typed(components)[:2]) | {"missing_components": [missing]}
    msg = assert_clean_failure("hsm_key", run_module("hsm_key", args), missing)
    assert "mismatch" not in msg.lower()


@pytest.mark.parametrize("kcv", ["043430", "123456", "0b1010", "000000"])
def test_catalogue_kcv_read_as_a_number_is_refused_with_advice(kcv: str) -> None:
    cat = catalogue("E1C5AD")
    cat[0]["versions"][0]["kcv"] = from_yaml(f"kcv: {kcv}")["kcv"]
    msg = assert_clean_failure("key_catalogue_validate", run_module("key_catalogue_validate", {"catalogue": cat}))
    assert "purchase" in msg and "quote" in msg and "043430" in msg
