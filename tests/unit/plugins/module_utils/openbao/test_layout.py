"""The OpenBao layout: the city policy reaches only the city's own paths."""

from __future__ import annotations

from ansible_collections.tunion.keymgmt.plugins.module_utils.openbao.layout import OpenBaoLayout


def test_city_policy_is_scoped_to_the_city() -> None:
    hcl = OpenBaoLayout().city_policy_hcl("zhuhai")
    paths = [line.split('"')[1] for line in hcl.splitlines() if line.startswith("path")]
    assert all("zhuhai" in p or p.startswith("auth/token/") for p in paths)
    assert not any("province" in p or (p.endswith("/*") and "blocks" not in p) for p in paths)
    assert 'capabilities = ["read"] }' in hcl.split("/kek")[1].splitlines()[0]


def test_enrolment_is_create_only() -> None:
    """Written once (issue 10 item 8): KV v2 calls a write to an existing path "update", so create without update,
    patch or delete lets the city's first enrolment through and refuses every later one."""
    hcl = OpenBaoLayout().city_policy_hcl("zhuhai")
    line = next(x for x in hcl.splitlines() if x.startswith('path "tunion-kb/data/cities/zhuhai/enrolment"'))
    assert line.endswith('{ capabilities = ["create", "read"] }')
    assert "tunion-kb/metadata/cities/zhuhai/enrolment" not in hcl
    assert "tunion-kb/delete/" not in hcl and "tunion-kb/destroy/" not in hcl
