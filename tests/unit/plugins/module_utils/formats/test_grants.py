"""Grants: parsed, defaulted and refused when a key type is granted twice."""

from __future__ import annotations

import pytest
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import DistributionError
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.grants import Grant, parse_grants


def test_grants_are_checked() -> None:
    assert parse_grants(["load", {"key_type": "tac", "version": 2}]) == [
        Grant("load", 1),
        Grant("tac", 2),
    ]
    with pytest.raises(DistributionError, match="twice"):
        parse_grants(["load", {"key_type": "load"}])
