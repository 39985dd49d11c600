# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The desired SAM registry CSV: validation, refusals, 100,000 SAMs."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import RegistryError
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.sam_registry import Registry

HEADER = "serial,city_code,holder,status,station,note\n"


def reg(text: str) -> Registry:
    return Registry.parse(io.StringIO(HEADER + text), "test.csv")


def test_refusals_name_the_reason() -> None:
    r = reg(
        "44440100000000000001,440100,gz-metro,active,,\n"
        "44440100000000000002,440100,gz-metro,revoked,,lost\n"
        "44440100000000000003,440100,gz-bus,suspended,,\n"
        "44440100000000000004,440100,gz-bus,active,station-02,\n"
    )
    assert r.refusal("44440100000000000001", station="s1", city_code="440100", holder="gz-metro") is None
    assert "not in the SAM registry" in (r.refusal("44440100000000000009") or "")
    assert "is revoked" in (r.refusal("44440100000000000002") or "")
    assert "is suspended" in (r.refusal("44440100000000000003") or "")
    assert "assigned to city 440100, not 440300" in (r.refusal("44440100000000000001", city_code="440300") or "")
    assert "holder 'gz-metro', not 'gz-bus'" in (r.refusal("44440100000000000001", holder="gz-bus") or "")
    assert "SAM station 'station-02'" in (r.refusal("44440100000000000004", station="sam-station-01") or "")
    assert r.get("44440100000000000001".lower()) is not None  # serials are case-insensitive hex


def test_bad_rows_are_all_reported_with_line_numbers() -> None:
    with pytest.raises(RegistryError) as exc:
        reg(
            "4444010000000000000X,440100,gz,active,,\n"
            "44440100000000000001,4401,gz,active,,\n"
            "44440100000000000002,440100,gz metro,active,,\n"
            "44440100000000000003,440100,gz,lost,,\n"
            "44440100000000000003,440100,gz,active,,\n"
        )
    errs = exc.value.errors
    assert any("line 2" in e and "20 hex digits" in e for e in errs)
    assert any("line 3" in e and "city_code" in e for e in errs)
    assert any("line 4" in e and "holder" in e for e in errs)
    assert any("line 5" in e and "status 'lost'" in e for e in errs)
    assert any("line 6" in e and "listed twice" in e for e in errs)
    with pytest.raises(RegistryError, match="header lacks"):
        Registry.parse(io.StringIO("serial,city\n"), "x.csv")
    with pytest.raises(RegistryError, match="does not exist"):
        Registry.load("/nonexistent/registry.csv")


def test_100k_sams_stream_and_index(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with path.open("w") as f:
        f.write("# comments are allowed\n" + HEADER)
        for i in range(100_000):
            f.write(f"44{440100 + (i % 21) * 100}{i:012d},{440100 + (i % 21) * 100},holder-{i % 500},active,,\n")
    r = Registry.load(path)
    assert len(r) == 100_000
    assert r.get(f"44440100{2:012d}") is None  # i=2 belongs to city 440300
    assert r.get(f"44{440100 + 2 * 100}{2:012d}").holder == "holder-2"
