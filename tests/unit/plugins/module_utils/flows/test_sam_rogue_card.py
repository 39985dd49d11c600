# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A card that lies (issue 11, Must show 1): it copies a registered SAM's serial (EF15 is public) and answers
INITIALIZE UPDATE with challenges it chose - the old transport-key derivation data "TUNIONTK" and its complement
among them - on every attempt the station allows. The station's real code runs against a throw-away SoftHSM token;
the card records every APDU it is sent, and the test checks it independently with `cryptography`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.sam_injection import (
    MAX_ATTEMPTS,
    Injector,
    plan_keys,
    run_batch,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.sam_registry import Registry
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.sam_crypto import SamCrypto
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import hsm_session
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from tests.support.sam import TEST_CATALOGUE, FakeReaders, make_cards, provision_test_keys
from tunion_lab.sam_emulator.card import Faults, PsamCard
from tunion_lab.sam_emulator.store import StateStore
from tunion_lab.sam_supply import BATCH_KEK_LABEL, ISSUER_LABEL, write_registry
from tunion_lab.scratch_token import SOFTHSM, USER_PIN, temp_token

CITY = "440100"
SERIAL = "44440100000000000777"
TUNIONTK = b"TUNIONTK"
CHOSEN = [TUNIONTK.hex(), bytes(b ^ 0xFF for b in TUNIONTK).hex(), "00" * 8, "FF" * 8]
PUBLIC_PREFIXES = ("00A40400", "00B09500", "00B09600", "80CA0000")


@pytest.fixture(scope="module")
def token() -> Iterator[str]:
    with temp_token("samrogue"):
        with hsm_session(SOFTHSM, "samrogue", USER_PIN) as tok:
            provision_test_keys(tok, [CITY])
        yield "samrogue"


def ecb(key: bytes, data: bytes) -> bytes:
    enc = Cipher(TripleDES(key + key[:8]), modes.ECB()).encryptor()
    return enc.update(data) + enc.finalize()


def pboc(key: bytes, d: bytes) -> bytes:
    return ecb(key, d) + ecb(key, bytes(b ^ 0xFF for b in d))


def run(root: Path, token: str, cards: list[PsamCard]) -> tuple[list, FakeReaders]:
    readers = FakeReaders(["R0"])
    for c in cards:
        readers.insert("R0", c)
    reg = Registry.load(write_registry(root / "reg.csv", [(SERIAL, CITY, "gz-metro", "active")]))
    with hsm_session(SOFTHSM, token, USER_PIN, rw=False) as tok:
        inj = Injector(
            plans=plan_keys(TEST_CATALOGUE, [{"key": "purchase"}]),
            registry=reg,
            observed=None,
            crypto=SamCrypto(tok, ISSUER_LABEL, BATCH_KEK_LABEL),
            station="sam-station-01",
            operator="tester",
        )
        return run_batch(inj, ["R0"], idle_timeout=0.2, context=readers.context), readers


def test_a_rogue_card_is_refused_before_any_cryptogram_and_learns_nothing(
    tmp_path_factory: pytest.TempPathFactory, token: str
) -> None:
    root = tmp_path_factory.mktemp("rogue")
    store = StateStore(root / "state")
    (genuine,) = make_cards(store, [SERIAL], token_label=token)  # the registered SAM whose serial is copied
    # the rogue card: the same serial, presented again and again (every retry the station and the machine allow)
    rogues = [PsamCard(genuine.state, lambda s: None, Faults(rogue_challenges=tuple(CHOSEN))) for _ in CHOSEN]
    results, _ = run(root, token, rogues)

    (res,) = results
    assert res.status == "refused" and res.attempts == 1, res  # moved out at once, never retried
    assert "failed authentication" in res.error and "not retried" in res.error
    heard = [a for r in rogues for a in r.heard]
    assert heard, "the rogue card was presented"
    # what the station sent: the public reads and one fresh host challenge; never a WRITE KEY, an EXTERNAL
    # AUTHENTICATE, a MAC1 or anything else made under a key
    host_challenges = []
    for apdu in heard:
        h = apdu.hex().upper()
        if h.startswith("8050000008"):
            host_challenges.append(apdu[5:])
        else:
            assert h.startswith(PUBLIC_PREFIXES), h
    assert len(host_challenges) == 1 and sum(r.rogue_attempts for r in rogues) == 1
    assert not any(a[:2] in (b"\x84\xd4", b"\x84\x82", b"\x80\x70", b"\x80\x1a") for a in heard)
    # independently: nothing the station sent is an encryption under MK or under the old transport key of any
    # challenge the card chose (MK as the card holds it; the card computes nothing from a random host challenge)
    mk = genuine.state.master_key
    old_tk = pboc(mk, TUNIONTK)
    forms = [ecb(mk, bytes.fromhex(c)) for c in CHOSEN] + [old_tk[:8], old_tk[8:], mk[:8], mk[8:]]
    sent = b"".join(heard)
    assert not [f for f in forms if any(f[i : i + 4] in sent for i in range(5))]


def test_each_presentation_of_a_rogue_card_gets_a_fresh_host_challenge(
    tmp_path_factory: pytest.TempPathFactory, token: str
) -> None:
    """Across runs (the card presented again in a later batch), the station never repeats a host challenge, so no
    answer the card collected can be replayed, and it is refused each time before anything else is sent."""
    root = tmp_path_factory.mktemp("rogue2")
    store = StateStore(root / "state")
    (genuine,) = make_cards(store, [SERIAL], token_label=token)
    challenges = set()
    for n in range(MAX_ATTEMPTS + 2):
        rogue = PsamCard(genuine.state, lambda s: None, Faults(rogue_challenges=(CHOSEN[n % len(CHOSEN)],)))
        (res,), _ = run(root, token, [rogue])
        assert res.status == "refused"
        sent = [a for a in rogue.heard if a[:2] == b"\x80\x50"]
        assert len(sent) == 1 and not [a for a in rogue.heard if a[:1] == b"\x84"]
        challenges.add(bytes(sent[0][5:]))
    assert len(challenges) == MAX_ATTEMPTS + 2


def test_the_genuine_sam_with_the_same_serial_still_loads(tmp_path_factory: pytest.TempPathFactory, token: str) -> None:
    root = tmp_path_factory.mktemp("genuine")
    store = StateStore(root / "state")
    (genuine,) = make_cards(store, [SERIAL], token_label=token)
    (res,), _ = run(root, token, [genuine])
    assert res.status == "loaded" and res.keys_verified == ["purchase.v01"]
