# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The observed SAM registry in SQLite: upserts, queries, restarts, private file."""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import RegistryError
from ansible_collections.tunion.keymgmt.plugins.module_utils.registry_store.sqlite import Observed


def test_observed_upsert_and_queries(tmp_path: Path) -> None:
    db = tmp_path / "obs" / "observed.db"
    obs = Observed(db)
    row = {
        "serial": "44440100000000000001",
        "key_type": "purchase",
        "version": 1,
        "algorithm": "3DES-2KEY",
        "kcv": "E1C5AD",
        "city_code": "440100",
        "holder": "gz-metro",
        "station": "sam-station-01",
        "operator": "alice",
        "loaded_at": "2026-01-01T00:00:00+00:00",
        "verified_by": "MAC1",
    }
    obs.record_keys([row])
    obs.record_keys([dict(row, operator="bob")])  # a re-run never duplicates
    obs.record_keys([dict(row, serial="44440300000000000001", city_code="440300", holder="sz-bus")])
    obs.close()
    obs = Observed(db)  # survives a restart
    assert len(obs.query()) == 2
    assert obs.query(serial="44440100000000000001")[0]["operator"] == "bob"
    assert [r["serial"] for r in obs.query(city_code="440300")] == ["44440300000000000001"]
    assert [r["serial"] for r in obs.query(holder="gz-metro")] == ["44440100000000000001"]
    assert obs.summary("city_code") == {"440100": 1, "440300": 1}
    assert obs.loaded("44440100000000000001") == {("purchase", 1): "E1C5AD"}
    assert db.stat().st_mode & 0o077 == 0
    with pytest.raises(RegistryError, match="cannot open"):
        Observed("/proc/forbidden/observed.db")
