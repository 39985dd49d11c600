"""Comparing what each city reports with what the province granted."""

from __future__ import annotations

from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.distribution.compare import compare_status


def test_compare_lists_every_kind_of_difference() -> None:
    expected = {"a": {"x.v01": {"kcv": "AAAAAA"}, "y.v01": {"kcv": "BBBBBB"}}, "b": {"x.v01": {"kcv": "CCCCCC"}}}
    reported = {
        "a": {"keys": {"x.v01": {"kcv": "AAAAAA"}, "y.v01": {"kcv": "000000"}, "z.v01": {"kcv": "1"}}},
        "b": None,
    }
    problems = {(d["city"], d["key"], d["problem"]) for d in compare_status(expected, reported)}
    assert problems == {
        ("a", "y.v01", "KCV differs"),
        ("a", "z.v01", "installed but not granted"),
        ("b", "x.v01", "city never reported"),
    }
