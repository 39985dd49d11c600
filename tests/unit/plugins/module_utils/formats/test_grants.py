"""Grants: parsed, defaulted and refused when a key type is granted twice."""

from __future__ import annotations

import pytest
from ansible_collections.tunion.keymgmt.plugins.module_utils import distribution as dist


def test_grants_are_checked() -> None:
    assert dist.parse_grants(["load", {"key_type": "tac", "version": 2}]) == [
        dist.Grant("load", 1),
        dist.Grant("tac", 2),
    ]
    with pytest.raises(dist.DistributionError, match="twice"):
        dist.parse_grants(["load", {"key_type": "load"}])
