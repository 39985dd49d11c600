# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test helpers for SAM injection: a token with the SAM keys, the emulator, SAM manufacturing, the registry.

SAM manufacturing is the province's pre-personalisation of blank SAMs: the HSM diversifies each SAM's master key
from the SAM issuer key and wraps it (RSA-OAEP) under the manufacturer's key; the SO exports the trusted batch
transport KEK the same way. The emulator (the manufacturer and the SAMs) unwraps them. No clear key is handled here.

CLI for the lab and the bench:
    .venv/bin/python tests/sam_helpers.py manufacture --count 200 --first 44010000000000000001 --city 440100
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for p in (REPO / "collections", REPO, REPO / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from hsm_helpers import SO_PIN, TEST_COMPONENTS, USER_PIN, kcv_des3  # noqa: E402, F401

from ansible_collections.tunion.keymgmt.plugins.module_utils.hsm import (  # noqa: E402
    HsmToken,
    KeyPolicy,
    hsm_session,
    key_id,
    key_label,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.sam_crypto import (  # noqa: E402
    ensure_batch_kek,
    export_batch_kek,
    manufacture_master_keys,
)
from tunion_lab.sam_emulator.client import EmulatorClient  # noqa: E402

SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"
ISSUER_LABEL = key_label("internal", "sam_issuer", 1)
BATCH_KEK_LABEL = key_label("internal", "sam_transport", 1)
BATCH_KEK_CODE = 0x33
LAB_DIR = Path(os.environ.get("TUNION_LAB_DIR", REPO / ".lab"))
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
    insert: bool = True,
) -> dict[str, Any]:
    """Manufacture SAMs for ``serials`` (new ones only) and queue them in the emulator's hoppers."""
    der = client.manufacturer_key()
    with hsm_session(library, token_label, None, so_pin=so_pin) as so:
        ensure_batch_kek(so, BATCH_KEK_LABEL, key_id("internal", BATCH_KEK_CODE, 1))
        kek_blob = export_batch_kek(so, BATCH_KEK_LABEL, der)
    with hsm_session(library, token_label, user_pin, rw=False) as tok:
        blobs = manufacture_master_keys(tok, ISSUER_LABEL, der, serials)
    sams = [
        {"serial": s, "mk": b.hex(), "reader": reader, "faults": faults} for s, b in zip(serials, blobs, strict=True)
    ]
    if insert:
        client.insert(sams, batch_kek=kek_blob.hex())
    return {"sams": sams, "batch_kek": kek_blob.hex()}


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
    ap = argparse.ArgumentParser(description="Manufacture emulated SAMs from the province token (lab only)")
    ap.add_argument("cmd", choices=["manufacture"])
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--first", default="44010000000000000001")
    ap.add_argument("--token-label", default="tunion-province")
    ap.add_argument("--pin-dir", default=str(LAB_DIR / "secrets" / "hsm-pins"))
    a = ap.parse_args()
    pins = Path(a.pin_dir)
    user_pin = (pins / f"{a.token_label}.user").read_text().strip()
    so_pin = (pins / f"{a.token_label}.so").read_text().strip()
    ensure_emulator()
    with EmulatorClient(emulator_socket()) as c:
        manufacture(c, serials(a.count, a.first), token_label=a.token_label, user_pin=user_pin, so_pin=so_pin)
    print(f"{a.count} SAMs manufactured and queued")
    return 0


if __name__ == "__main__":
    sys.exit(main())
