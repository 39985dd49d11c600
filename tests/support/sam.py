# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test helpers for SAM injection without the lab: a throw-away token with the SAM keys, emulated cards made from
it, and in-process readers wired straight to them (the emulator's card logic, without pcscd or vpcd)."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import CardGone
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.names import key_id, key_label
from ansible_collections.tunion.keymgmt.plugins.module_utils.pcsc.channel import SamChannel
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.policy import KeyPolicy
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import HsmToken

from tests.support.reference import kcv_des3
from tunion_lab.ministry_test_keys import TEST_COMPONENTS
from tunion_lab.sam_emulator.card import Faults, PsamCard
from tunion_lab.sam_emulator.store import StateStore
from tunion_lab.sam_supply import ISSUER_LABEL, manufacture_blobs
from tunion_lab.scratch_token import SO_PIN, USER_PIN

TEST_CITY = "440100"

#: a catalogue for tests on a throw-away token: the lab's purchase key (tests-only, known components), a recharge
#: key that must never reach a SAM, and the SAM issuer key
TEST_CATALOGUE: list[dict[str, Any]] = [
    {
        "name": "purchase",
        "class": "consumption",
        "origin": "ministry",
        "algorithm": "3DES-2KEY",
        "code": 0x11,
        "usage": "derive",
        "scope": "city",
        "holders": ["hsm", "sam"],
        "source": "components",
        "tests_only": True,
        "versions": [{"version": 1, "not_before": "2025-01-01", "not_after": "2030-12-31"}],
    },
    {
        "name": "load",
        "class": "recharge",
        "origin": "province",
        "algorithm": "3DES-2KEY",
        "code": 0x21,
        "usage": "derive",
        "scope": "city",
        "holders": ["hsm"],
        "versions": [{"version": 1, "not_before": "2025-01-01", "not_after": "2030-12-31"}],
    },
    {
        "name": "sam_issuer",
        "class": "internal",
        "origin": "province",
        "algorithm": "3DES-2KEY",
        "code": 0x31,
        "usage": "derive",
        "scope": "province",
        "holders": ["hsm"],
        "versions": [{"version": 1, "not_before": "2025-01-01", "not_after": "2030-12-31"}],
    },
]


def provision_test_keys(tok: HsmToken, cities: list[str]) -> None:
    """User session: the tests-only purchase key from its components, its city keys, a load key, a SAM issuer."""
    comps = [bytearray(bytes.fromhex(c)) for c in TEST_COMPONENTS["purchase"]]
    kcvs = [kcv_des3(bytes(c)) for c in comps]
    pol = KeyPolicy(usage="derive")
    purchase, _ = tok.import_components(
        "3DES-2KEY",
        comps,
        kcvs,
        expected_kcv=None,
        label=key_label("consumption", "purchase", 1),
        id=key_id("consumption", 0x11, 1),
        policy=pol,
    )
    load = tok.generate_secret("3DES-2KEY", key_label("recharge", "load", 1), key_id("recharge", 0x21, 1), pol)
    for city in cities:
        h = f"city-{city}"
        tok.derive_pboc(purchase, city, label=key_label("consumption", "purchase", 1, h), policy=pol)
        tok.derive_pboc(load, city, label=key_label("recharge", "load", 1, h), policy=pol)
    tok.generate_secret("3DES-2KEY", ISSUER_LABEL, key_id("internal", 0x31, 1), pol)


# ---------------------------------------------------------------------------------------------- in-process readers
class FakeChannel(SamChannel):
    """A SamChannel wired straight to an emulated card (the emulator's card logic, without pcscd or vpcd)."""

    def __init__(
        self, bank: FakeReaders, reader: str, card: PsamCard, trace: list[str] | None, trace_channel: bool = False
    ) -> None:
        super().__init__(reader, None, None, trace, trace_channel)
        self.bank = bank
        self.card = card

    def _exchange(self, apdu: bytes, what: str) -> list[int]:
        self.bank.apdus += 1
        f = self.card.faults
        if f.remove_after and self.card.apdus >= f.remove_after:
            self.bank.pull(self.reader, self.card)
            raise CardGone(f"{what}: the SAM left reader {self.reader!r}")
        return list(self.card.process(apdu))


class FakeReaders:
    """Readers with hoppers of emulated SAMs; ``context()`` is a PcscContext stand-in for run_batch."""

    def __init__(self, names: list[str]) -> None:
        self.hoppers: dict[str, deque[PsamCard]] = {n: deque() for n in names}
        self.apdus = 0

    def insert(self, reader: str, card: PsamCard) -> None:
        self.hoppers[reader].append(card)

    def pull(self, reader: str, card: PsamCard) -> None:
        if self.hoppers[reader] and self.hoppers[reader][0] is card:
            self.hoppers[reader].popleft()

    def context(self) -> FakeContext:
        return FakeContext(self)


class FakeContext:
    def __init__(self, bank: FakeReaders) -> None:
        self.bank = bank

    def readers(self, patterns: list[str] | None = None) -> list[str]:
        return list(self.bank.hoppers)

    def connect(self, reader: str, trace: list[str] | None = None, trace_channel: bool = False) -> SamChannel | None:
        hopper = self.bank.hoppers[reader]
        if not hopper:
            return None
        hopper[0].power_on()
        return FakeChannel(self.bank, reader, hopper[0], trace, trace_channel)

    def wait_for_card(self, reader: str, timeout: float) -> None:
        time.sleep(min(timeout, 0.01))

    def release(self, channel: SamChannel, advance: bool) -> None:
        assert isinstance(channel, FakeChannel)
        if advance:
            self.bank.pull(channel.reader, channel.card)

    def close(self) -> None:
        pass


def make_cards(
    store: StateStore, serials: list[str], *, token_label: str, faults: dict[str, Any] | None = None
) -> list[PsamCard]:
    """Manufacture SAMs from a test token into ``store`` (RSA-OAEP path) and return them as cards."""
    der = store.manufacturer_public_key()
    made = manufacture_blobs(
        serials,
        der,
        token_label=token_label,
        user_pin=USER_PIN,
        so_pin=SO_PIN,
        replace_manufacturer=True,  # each test store is a manufacturer with a key of its own
    )
    cards = []
    for sam in made["sams"]:
        state = store.load(sam["serial"]) if store.exists(sam["serial"]) else None
        state = state or store.manufacture(sam["serial"], None, sam["mk"], made["batch_kek"])
        cards.append(PsamCard(state, store.save, Faults.from_dict(faults)))
    return cards
