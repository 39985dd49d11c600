# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SAM injection end to end without the lab: a throw-away SoftHSM token, emulated SAMs wired in-process.

The whole sequence runs (HSM derivation, EXTERNAL AUTHENTICATE, WRITE KEY under secure messaging, MAC1
verification, observed registry) with the SAMs behind a PcscContext stand-in instead of pcscd/vpcd.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import BlacklistError, PolicyError
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.sam_injection import (
    Injector,
    plan_keys,
    run_batch,
    summarise,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.sam_registry import Registry
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.sam_crypto import SamCrypto
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import hsm_session
from ansible_collections.tunion.keymgmt.plugins.module_utils.registry_store.sqlite import Observed

from tests.support.reference import kcv_des3, pboc_diversify, strip_parity
from tests.support.sam import TEST_CATALOGUE, FakeReaders, make_cards, provision_test_keys
from tunion_lab.ministry_test_keys import clear_test_key
from tunion_lab.sam_emulator.store import StateStore
from tunion_lab.sam_supply import BATCH_KEK_LABEL, ISSUER_LABEL, write_registry
from tunion_lab.scratch_token import SOFTHSM, USER_PIN, temp_token

CITY = "440100"
READERS = ["R0", "R1"]


@pytest.fixture(scope="module")
def token() -> Iterator[str]:
    with temp_token("samunit"):
        with hsm_session(SOFTHSM, "samunit", USER_PIN) as tok:
            provision_test_keys(tok, [CITY])
        yield "samunit"


class Bench:
    def __init__(self, root: Path, token: str) -> None:
        self.root = root
        self.token = token
        self.store = StateStore(root / "state")
        self.readers = FakeReaders(READERS)
        self.obs = Observed(root / "observed.db")

    def serials(self, n: int, base: int = 1) -> list[str]:
        return [f"44{CITY}{base + i:012d}" for i in range(n)]

    def feed(self, serials: list[str], **kw: Any) -> None:
        for i, card in enumerate(make_cards(self.store, serials, token_label=self.token, **kw)):
            self.readers.insert(READERS[i % 2], card)

    def registry(self, serials: list[str], status: str = "active") -> Registry:
        return Registry.load(write_registry(self.root / "reg.csv", [(s, CITY, "gz-metro", status) for s in serials]))

    def run(self, registry: Registry, keys: list[dict[str, Any]] | None = None, **kw: Any) -> list[Any]:
        plans = plan_keys(TEST_CATALOGUE, keys or [{"key": "purchase"}])
        inj_kw = {k: kw.pop(k) for k in ("check_mode", "city_code", "blacklisted") if k in kw}
        with hsm_session(SOFTHSM, self.token, USER_PIN, rw=False) as tok:
            inj = Injector(
                plans=plans,
                registry=registry,
                observed=self.obs,
                crypto=SamCrypto(tok, ISSUER_LABEL, BATCH_KEK_LABEL),
                station="sam-station-01",
                operator="tester",
                **inj_kw,
            )
            return run_batch(inj, READERS, idle_timeout=0.2, context=self.readers.context, **kw)


@pytest.fixture
def bench(tmp_path_factory: pytest.TempPathFactory, token: str) -> Bench:
    # not tmp_path: the emulated SAMs' state is written behind by a thread, after the test may have ended
    return Bench(tmp_path_factory.mktemp("sam-bench"), token)


def test_batch_loads_verifies_and_records(bench: Bench) -> None:
    serials = bench.serials(10)
    bench.feed(serials)
    trace: list[str] = []
    results = bench.run(bench.registry(serials), trace=trace)
    assert summarise(results) == {"total": 10, "loaded": 10}, [r.error for r in results]
    assert {r.reader for r in results} == set(READERS)
    rows = bench.obs.query(city_code=CITY)
    # the hierarchy gives a PSAM the Ministry-level key: the master itself, not the city's issuer-level key
    master = clear_test_key("purchase")
    assert len(rows) == 10 and {r["kcv"] for r in rows} == {kcv_des3(master).hex().upper()}
    assert {r["verified_by"] for r in rows} == {"MAC1+MAC2 (3 issuers)"}
    for s in serials:  # the SAMs really hold it (their memory, read back from the sealed store), for two levels
        slot = bench.store.load(s).slots[0]
        assert strip_parity(slot.key) == strip_parity(master) and slot.levels == 2
    # the trace withholds the loading channel's data; no form of the key is in it
    assert any(" > 84D40102" in t and "withheld" in t for t in trace)
    assert not [t for t in trace if " > 8050" in t and "withheld" not in t]
    stored = bench.store.load(serials[0]).slots[0].key  # SoftHSM sets DES parity on derived keys
    city = pboc_diversify(master, bytes.fromhex(CITY.rjust(16, "0")))
    forms = {k.hex().upper() for k in (master, stored, city)}
    assert not [t for t in trace if any(f in t for f in forms)]


def test_second_run_leaves_sams_untouched(bench: Bench) -> None:
    serials = bench.serials(4)
    bench.feed(serials)
    reg = bench.registry(serials)
    bench.run(reg)
    bench.feed(serials)  # the same SAMs presented again
    apdus = bench.readers.apdus
    results = bench.run(reg)
    assert summarise(results) == {"total": 4, "unchanged": 4}
    assert bench.readers.apdus - apdus == 4 * 4  # select, EF15, EF16, key slots: nothing written
    assert len(bench.obs.query()) == 4


def test_recharge_key_refused_before_any_apdu(bench: Bench) -> None:
    serials = bench.serials(2)
    bench.feed(serials)
    with pytest.raises(PolicyError, match=r"第二条\(四\)"):
        bench.run(bench.registry(serials), keys=[{"key": "load"}])
    with pytest.raises(PolicyError, match="not in the key catalogue"):
        bench.run(bench.registry(serials), keys=[{"key": "nope"}])
    with pytest.raises(PolicyError, match="no version 7"):
        bench.run(bench.registry(serials), keys=[{"key": "purchase", "version": 7}])
    assert bench.readers.apdus == 0


def test_unregistered_revoked_and_other_city_refused(bench: Bench) -> None:
    serials = bench.serials(3)
    bench.feed(serials)
    reg = Registry.load(
        write_registry(
            bench.root / "reg.csv",
            [(serials[1], CITY, "gz-metro", "revoked"), (serials[2], "440300", "sz-bus", "active")],
        )
    )
    results = {r.serial: r for r in bench.run(reg, city_code=CITY)}
    assert [r.status for r in results.values()] == ["refused"] * 3
    assert "not in the SAM registry" in results[serials[0]].error
    assert "is revoked" in results[serials[1]].error
    assert "assigned to city 440300" in results[serials[2]].error
    assert all(r.apdus == 2 for r in results.values())  # SELECT and the serial: refused before anything else
    assert bench.obs.query() == []


def test_removed_mid_injection_then_completed_without_duplicates(bench: Bench) -> None:
    serials = bench.serials(1)
    reg = bench.registry(serials)
    bench.feed(serials, faults={"remove_after": 5})  # after INITIALIZE UPDATE
    (res,) = bench.run(reg)
    assert res.status == "failed" and res.keys_verified == [] and "left reader" in res.error
    assert bench.obs.query() == []
    # removed right after WRITE KEY: the key is in the SAM but unverified, so nothing is recorded
    bench.feed(serials, faults={"remove_after": 7})
    (res,) = bench.run(reg)
    assert res.status == "failed" and res.keys_loaded == ["purchase.v01"] and res.keys_verified == []
    assert bench.obs.query() == []
    bench.feed(serials)  # put back in: verified (not written again) and recorded once
    (res,) = bench.run(reg)
    assert res.status == "loaded" and res.keys_loaded == [] and res.keys_verified == ["purchase.v01"]
    assert len(bench.obs.query()) == 1


def test_faulty_sam_mac1_is_not_recorded(bench: Bench) -> None:
    serials = bench.serials(1)
    bench.feed(serials, faults={"bad_mac": True})
    (res,) = bench.run(bench.registry(serials))
    assert res.status == "failed" and "not verified" in res.error and res.attempts == 3
    assert bench.obs.query() == []


def test_full_key_file_reported(bench: Bench) -> None:
    serials = bench.serials(1)
    bench.feed(serials, faults={"full": True})
    (res,) = bench.run(bench.registry(serials))
    assert res.status == "failed" and "key file is full" in res.error


def test_check_mode_reports_without_writing(bench: Bench) -> None:
    serials = bench.serials(2)
    bench.feed(serials)
    results = bench.run(bench.registry(serials), check_mode=True, advance=False)
    assert {r.status for r in results} == {"would_load"}
    assert all(r.keys_to_load == ["purchase.v01"] for r in results)
    assert bench.obs.query() == []
    assert all(not bench.store.load(s).slots for s in serials)


def test_blacklisted_sam_refused_before_any_key_apdu(bench: Bench) -> None:
    serials = bench.serials(2, base=900)
    bench.feed(serials)
    listed = {serials[0]: {"serial": serials[0], "status": "revoked", "cause": "city 440100", "reason": "第十七条"}}
    results = {r.serial: r for r in bench.run(bench.registry(serials), blacklisted=listed)}
    assert results[serials[0]].status == "refused"
    assert "SAM blacklist" in results[serials[0]].error
    assert results[serials[0]].apdus == 2  # SELECT and the serial only
    assert results[serials[1]].status == "loaded"
    assert {row["serial"] for row in bench.obs.query()} == {serials[1]}


def test_station_blacklist_is_checked_before_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails closed: no list is a refusal; the checks themselves are flows/test_blacklist.py's (station_list)."""
    from ansible_collections.tunion.keymgmt.plugins.module_utils.flows import blacklist, sam_injection

    with pytest.raises(sam_injection.SamError, match="no SAM blacklist at"):
        sam_injection.verified_blacklist(None, str(tmp_path / "none.json"))
    with pytest.raises(sam_injection.SamError, match="no SAM blacklist path"):
        sam_injection.verified_blacklist(None, None)
    path = tmp_path / "current.json"
    path.write_text('{"format": "x", "entries": [{"serial": "44010000000000000001"}]}')

    def tampered(tok: Any, doc: dict[str, Any], *, city_code: str | None) -> None:
        raise BlacklistError("MAC check failed in the HSM")

    monkeypatch.setattr(blacklist, "verify", tampered)
    with pytest.raises(sam_injection.SamError, match="not trustworthy"):
        sam_injection.verified_blacklist(None, str(path))
    monkeypatch.setattr(blacklist, "station_list", lambda tok, path, today: json.loads(Path(path).read_text()))
    assert set(sam_injection.verified_blacklist(None, str(path))) == {"44010000000000000001"}
    monkeypatch.undo()
    path.write_text("not json")
    with pytest.raises(sam_injection.SamError, match="cannot be read"):
        sam_injection.verified_blacklist(None, str(path))
