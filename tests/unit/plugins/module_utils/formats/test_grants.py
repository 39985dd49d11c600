"""Grants: parsed, defaulted and refused when a key type is granted twice or is one no city may hold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import DistributionError
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.grants import (
    Grant,
    check_grantable,
    parse_grants,
    parse_targets,
)


def test_grants_are_checked() -> None:
    assert parse_grants(["load", {"key_type": "tac", "version": 2}]) == [
        Grant("load", 1),
        Grant("tac", 2),
    ]
    with pytest.raises(DistributionError, match="twice"):
        parse_grants(["load", {"key_type": "load"}])


# ------------------------------------------------------------------ only what a city may hold is grantable (第六条)
def _lab_catalogue() -> list[dict[str, Any]]:
    path = Path(__file__).parents[5] / "inventories" / "lab" / "group_vars" / "all" / "key_catalogue.yml"
    return json.loads(json.dumps(yaml.safe_load(path.read_text(encoding="utf-8"))["key_catalogue"], default=str))


LAB = _lab_catalogue()
INTERNAL = [e["name"] for e in LAB if e["class"] == "internal"]
CITY_HELD = [e["name"] for e in LAB if e["class"] in ("consumption", "recharge")]


def _target(key_type: str) -> list[dict[str, Any]]:
    grants = [{"key_type": "purchase", "version": 1}, {"key_type": key_type, "version": 1}]
    return [{"city": "guangzhou", "city_code": "440100", "grants": grants}]


def test_the_lab_catalogue_has_both_kinds() -> None:
    assert {"sam_issuer", "backup_kek", "blacklist_mac"} <= set(INTERNAL)
    assert {"purchase", "tac", "load", "load_auth"} <= set(CITY_HELD)


@pytest.mark.parametrize("key_type", INTERNAL)
def test_an_internal_key_is_never_granted(key_type: str) -> None:
    with pytest.raises(DistributionError) as err:
        parse_targets(_target(key_type), LAB)
    msg = str(err.value)
    for word in ("guangzhou", repr(key_type), "internal-class", "粤交〔2019〕11号", "第六条"):
        assert word in msg, msg


@pytest.mark.parametrize("key_type", [k for k in CITY_HELD if k != "purchase"])
def test_consumption_and_recharge_keys_are_granted(key_type: str) -> None:
    (target,) = parse_targets(_target(key_type), LAB)
    assert [g.key_type for g in target.grants] == ["purchase", key_type]


@pytest.mark.parametrize("key_class", ["internal", "other", ""])
def test_check_grantable_refuses_any_class_but_the_two(key_class: str) -> None:
    with pytest.raises(DistributionError, match="no city may hold"):
        check_grantable("shenzhen", Grant("x", 1), key_class)
    for ok in ("consumption", "recharge"):
        check_grantable("shenzhen", Grant("x", 1), ok)
