# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test helpers for SAM injection: a token with the SAM keys, the emulator, SAM manufacturing, the registry.

SAM manufacturing is the province's pre-personalisation of blank SAMs: the HSM diversifies each SAM's master key
from the SAM issuer key and wraps it (RSA-OAEP) under the manufacturer's key; the SO exports the trusted batch
transport KEK the same way. The emulator (the manufacturer and the SAMs) unwraps them. No clear key is handled here.

CLI (run as the province's unix user, so the token files stay theirs; serials on stdin, JSON out):
    runuser -u tunion-province -- env SOFTHSM2_CONF=... .venv/bin/python tests/sam_helpers.py blobs --key <hex>
    (stdin: {"user_pin", "so_pin", "serials"})
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils.hsm import (
    HsmToken,
    KeyPolicy,
    hsm_session,
    key_id,
    key_label,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.sam_apdu import CardGone, SamChannel
from ansible_collections.tunion.keymgmt.plugins.module_utils.sam_crypto import (
    ensure_batch_kek,
    export_batch_kek,
    manufacture_master_keys,
)

from tests.support.reference import kcv_des3
from tunion_lab.lab import CHILD_PYTHONPATH, LAB_DIR, REPO
from tunion_lab.ministry_test_keys import TEST_COMPONENTS
from tunion_lab.sam_emulator.card import Faults, PsamCard
from tunion_lab.sam_emulator.client import EmulatorClient
from tunion_lab.sam_emulator.store import StateStore
from tunion_lab.scratch_token import SO_PIN, USER_PIN

SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"
ISSUER_LABEL = key_label("internal", "sam_issuer", 1)
BATCH_KEK_LABEL = key_label("internal", "sam_transport", 1)
BATCH_KEK_CODE = 0x33
TEST_CITY = "440100"
PROVINCE_USER = "tunion-province"

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


def manufacture_blobs(
    serials: list[str], manufacturer_der: bytes, *, library: str = SOFTHSM, token_label: str, user_pin: str, so_pin: str
) -> dict[str, Any]:
    """The province's side of manufacturing: each SAM's master key and the batch KEK, wrapped for the manufacturer."""
    with hsm_session(library, token_label, None, so_pin=so_pin) as so:
        ensure_batch_kek(so, BATCH_KEK_LABEL, key_id("internal", BATCH_KEK_CODE, 1))
        kek_blob = export_batch_kek(so, BATCH_KEK_LABEL, manufacturer_der)
    with hsm_session(library, token_label, user_pin, rw=False) as tok:
        blobs = manufacture_master_keys(tok, ISSUER_LABEL, manufacturer_der, serials)
    return {
        "batch_kek": kek_blob.hex(),
        "sams": [{"serial": s, "mk": b.hex()} for s, b in zip(serials, blobs, strict=True)],
    }


def queue(
    client: EmulatorClient,
    made: dict[str, Any],
    *,
    reader: int | None = None,
    faults: dict[str, Any] | None = None,
    serials: list[str] | None = None,
) -> None:
    """Queue manufactured SAMs (or, with ``serials``, SAMs the emulator already knows) in the hoppers."""
    if serials is not None:
        client.insert([{"serial": s, "reader": reader, "faults": faults} for s in serials])
        return
    sams = [dict(s, reader=reader, faults=faults) for s in made["sams"]]
    client.insert(sams, batch_kek=made["batch_kek"])


def manufacture(
    client: EmulatorClient,
    serials: list[str],
    *,
    library: str = SOFTHSM,
    token_label: str,
    user_pin: str,
    so_pin: str,
    reader: int | None = None,
    faults: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Manufacture SAMs for ``serials`` in this process's token and queue them in the emulator's hoppers."""
    made = manufacture_blobs(
        serials, client.manufacturer_key(), library=library, token_label=token_label, user_pin=user_pin, so_pin=so_pin
    )
    queue(client, made, reader=reader, faults=faults)
    return made


def manufacture_as_province(serials: list[str], manufacturer_der: bytes, lab_dir: Path = LAB_DIR) -> dict[str, Any]:
    """Manufacture from the lab province token, as its unix user (token files must stay theirs)."""
    home = lab_dir / "nodes" / PROVINCE_USER
    pins = lab_dir / "secrets" / "hsm-pins"
    out = subprocess.run(
        [
            "runuser",
            "-u",
            PROVINCE_USER,
            "--",
            "env",
            f"SOFTHSM2_CONF={home / '.config' / 'softhsm2' / 'softhsm2.conf'}",
            f"HOME={home}",
            f"PYTHONPATH={CHILD_PYTHONPATH}",
            str(REPO / ".venv" / "bin" / "python"),
            "-m",
            "tests.support.sam",
            "blobs",
            "--key",
            manufacturer_der.hex(),
        ],
        # the PIN files are root's (0600): the PINs reach the child on its stdin, never on a command line
        input=json.dumps(
            {
                "user_pin": (pins / f"{PROVINCE_USER}.user").read_text().strip(),
                "so_pin": (pins / f"{PROVINCE_USER}.so").read_text().strip(),
                "serials": serials,
            }
        ),
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
    )
    if out.returncode:
        raise RuntimeError(f"manufacturing failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def serials(count: int, first: str = "44010000000000000001") -> list[str]:
    base = int(first, 16)
    return [f"{base + i:020X}" for i in range(count)]


def write_registry(path: Path, rows: list[tuple[str, str, str, str]], station: str = "") -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["serial", "city_code", "holder", "status", "station", "note"])
        for serial, city, holder, status in rows:
            w.writerow([serial, city, holder, status, station, ""])
    return path


# ---------------------------------------------------------------------------------------------- the emulator
def emulator_socket(lab_dir: Path = LAB_DIR) -> Path:
    return lab_dir / "run" / "sam-emulator.sock"


def ensure_emulator(lab_dir: Path = LAB_DIR) -> bool:
    """Start the lab's emulator if it is not running; True if this call started it."""
    sock = emulator_socket(lab_dir)
    if sock.exists():
        try:
            EmulatorClient(sock, timeout=5).close()
            return False
        except OSError:
            pass
    subprocess.run(
        [sys.executable, "-m", "tunion_lab.sam_emulator", "--lab-dir", str(lab_dir), "start"],
        check=True,
        cwd=REPO,
        capture_output=True,
    )
    for _ in range(100):
        if sock.exists():
            return True
        time.sleep(0.05)
    raise RuntimeError("the SAM emulator did not start")


def stop_emulator(lab_dir: Path = LAB_DIR) -> None:
    subprocess.run(
        [sys.executable, "-m", "tunion_lab.sam_emulator", "--lab-dir", str(lab_dir), "stop"], cwd=REPO, check=False
    )


def today() -> str:
    return _dt.date.today().isoformat()


def main() -> int:
    """``blobs --key HEX``, stdin ``{"user_pin", "so_pin", "serials"}``: prints the manufacturing JSON."""
    ap = argparse.ArgumentParser(description="Manufacture emulated SAMs from the province token (lab only)")
    ap.add_argument("cmd", choices=["blobs"])
    ap.add_argument("--key", required=True, help="the manufacturer's RSA public key, PKCS#1 DER in hex")
    ap.add_argument("--token-label", default="tunion-province")
    a = ap.parse_args()
    req = json.load(sys.stdin)
    made = manufacture_blobs(
        req["serials"], bytes.fromhex(a.key), token_label=a.token_label, user_pin=req["user_pin"], so_pin=req["so_pin"]
    )
    print(json.dumps(made))
    return 0


if __name__ == "__main__":
    sys.exit(main())


# ---------------------------------------------------------------------------------------------- in-process readers
class FakeChannel(SamChannel):
    """A SamChannel wired straight to an emulated card (the emulator's card logic, without pcscd or vpcd)."""

    def __init__(self, bank: FakeReaders, reader: str, card: PsamCard, trace: list[str] | None) -> None:
        super().__init__(reader, None, None, trace)
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

    def connect(self, reader: str, trace: list[str] | None = None) -> SamChannel | None:
        hopper = self.bank.hoppers[reader]
        if not hopper:
            return None
        hopper[0].power_on()
        return FakeChannel(self.bank, reader, hopper[0], trace)

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
    made = manufacture_blobs(
        serials, store.manufacturer_public_key(), token_label=token_label, user_pin=USER_PIN, so_pin=SO_PIN
    )
    cards = []
    for sam in made["sams"]:
        state = store.load(sam["serial"]) if store.exists(sam["serial"]) else None
        state = state or store.manufacture(sam["serial"], None, sam["mk"], made["batch_kek"])
        cards.append(PsamCard(state, store.save, Faults.from_dict(faults)))
    return cards


def inject_result(stdout: str) -> dict[str, Any]:
    """The sam_inject task result from ansible-playbook -v/-vvv output (the JSON object after '=> ')."""
    dec = json.JSONDecoder()
    pos = stdout.find("=> {")
    while pos >= 0:
        try:
            obj, _ = dec.raw_decode(stdout, pos + 3)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and "summary" in obj and "sams" in obj:
            return obj
        pos = stdout.find("=> {", pos + 1)
    raise AssertionError(f"no sam_inject result in:\n{stdout[-3000:]}")
