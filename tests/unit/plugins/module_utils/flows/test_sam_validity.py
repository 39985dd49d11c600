# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""sam_inject enforces the catalogue's validity (issue 10, item 7): the module's body (flows.sam_injection.inject)
runs against a throw-away SoftHSM token and in-process SAMs; with the SAM issuer key or the purchase key expired
in the catalogue, no key is written to any SAM."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows import sam_injection

from tests.support.sam import TEST_CATALOGUE, FakeReaders, make_cards, provision_test_keys
from tunion_lab.sam_emulator.store import StateStore
from tunion_lab.sam_supply import BATCH_KEK_LABEL, ISSUER_LABEL, write_registry
from tunion_lab.scratch_token import SOFTHSM, USER_PIN, temp_token

CITY = "440100"


@pytest.fixture(scope="module")
def token() -> Iterator[str]:
    with temp_token("samvalid"):
        from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import hsm_session

        with hsm_session(SOFTHSM, "samvalid", USER_PIN) as tok:
            provision_test_keys(tok, [CITY])
        yield "samvalid"


def catalogue(**expired: str) -> list[dict[str, Any]]:
    """The test catalogue with the named key types' validity ending on the given day."""
    cat = copy.deepcopy(TEST_CATALOGUE)
    for e in cat:
        if e["name"] in expired:
            e["versions"][0]["not_after"] = expired[e["name"]]
    return cat


def inject(root: Path, token: str, cat: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, n: int = 2) -> Any:
    serials = [f"44{CITY}{root.name[-6:].encode().hex()[:4].upper()}{i:08d}" for i in range(n)]
    store = StateStore(root / "state")
    readers = FakeReaders(["R0"])
    for card in make_cards(store, serials, token_label=token):
        readers.insert("R0", card)
    monkeypatch.setattr(sam_injection, "PcscContext", readers.context)
    # the blacklist is not what these tests look at (tests/unit/.../test_sam_injection.py and the lab test it)
    monkeypatch.setattr(sam_injection, "verified_blacklist", lambda tok, path: {})
    reg = write_registry(root / "reg.csv", [(s, CITY, "gz-metro", "active") for s in serials])
    params = {
        "catalogue": cat,
        "keys": [{"key": "purchase", "version": 1}],
        "registry": str(reg),
        "observed_db": str(root / "observed.db"),
        "pkcs11_library": SOFTHSM,
        "token_label": token,
        "user_pin": USER_PIN,
        "sam_issuer_label": ISSUER_LABEL,
        "batch_kek_label": BATCH_KEK_LABEL,
        "station": "sam-station-01",
        "operator": "tester",
        "readers": ["R0"],
        "idle_timeout": 0.2,
        "advance": True,
    }
    return sam_injection.inject(params), readers, store, serials


def test_valid_keys_load(tmp_path_factory: pytest.TempPathFactory, token: str, monkeypatch: pytest.MonkeyPatch):
    out, _readers, _store, _serials = inject(tmp_path_factory.mktemp("valid"), token, catalogue(), monkeypatch)
    assert out["summary"] == {"total": 2, "loaded": 2}


@pytest.mark.parametrize("day", ["2025-06-30", "2020-01-01"])
def test_an_expired_sam_issuer_key_is_not_used(
    tmp_path_factory: pytest.TempPathFactory, token: str, monkeypatch: pytest.MonkeyPatch, day: str
):
    root = tmp_path_factory.mktemp("issuer")
    cat = catalogue(sam_issuer=day)
    cat[-1]["versions"][0]["not_before"] = "2019-01-01"
    out, _readers, store, serials = inject(root, token, cat, monkeypatch)
    assert out["summary"].get("loaded", 0) == 0 and out["summary"]["failed"] == 2
    assert all(f"expired on {day}" in s["error"] and ISSUER_LABEL in s["error"] for s in out["sams"])
    assert all(not store.load(s).slots for s in serials)  # nothing reached any SAM
    assert all(not s.get("keys_loaded") for s in out["sams"])


def test_an_expired_consumption_key_is_refused_before_any_reader(
    tmp_path_factory: pytest.TempPathFactory, token: str, monkeypatch: pytest.MonkeyPatch
):
    cat = catalogue(purchase="2025-06-30")
    with pytest.raises(sam_injection.PolicyError, match="not valid on"):
        inject(tmp_path_factory.mktemp("purchase"), token, cat, monkeypatch)


def test_validity_lookup_is_what_the_token_checks(
    tmp_path_factory: pytest.TempPathFactory, token: str, monkeypatch: pytest.MonkeyPatch
):
    """The purchase key itself expired in the catalogue but asked for by a station whose plan was made earlier (a
    long batch crossing midnight): the token's own check, from the catalogue the module was given, refuses it."""
    from ansible_collections.tunion.keymgmt.plugins.module_utils.formats import catalogue as catmod

    real = sam_injection.plan_keys
    monkeypatch.setattr(sam_injection, "plan_keys", lambda c, k: real(catalogue(), k))  # planned while valid
    cat = catalogue(purchase="2025-06-30")
    assert catmod.load_catalogue(cat).validity_for("consumption.purchase.v01.province")[1].isoformat() == "2025-06-30"
    out, _readers, store, serials = inject(tmp_path_factory.mktemp("crossing"), token, cat, monkeypatch)
    assert out["summary"].get("loaded", 0) == 0
    assert all("expired on 2025-06-30" in s["error"] for s in out["sams"]), out["sams"]
    assert all(not store.load(s).slots for s in serials)
