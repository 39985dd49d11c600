"""The lab's SAM supply: emulated SAMs manufactured from the province token, fed to the readers, registered.

SAM manufacturing is the province's pre-personalisation of blank SAMs: the HSM diversifies each SAM's master key
from the SAM issuer key and wraps it (RSA-OAEP) under the manufacturer's key; the SO exports the trusted batch
transport KEK the same way. The emulator (the manufacturer and the SAMs) unwraps them. No clear key is handled here.

CLI (run as the province's unix user, so the token files stay theirs; PINs and serials on stdin, JSON out):
    runuser -u tunion-province -- env SOFTHSM2_CONF=... PYTHONPATH=... .venv/bin/python -m tunion_lab.sam_supply \
        blobs --key <hex>      (stdin: {"user_pin", "so_pin", "serials"})
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.names import key_id, key_label
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.sam_crypto import (
    ensure_batch_kek,
    export_batch_kek,
    manufacture_master_keys,
    register_manufacturer,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import hsm_session

from tunion_lab.lab import CHILD_PYTHONPATH, LAB_DIR, REPO, SOFTHSM_LIBRARY
from tunion_lab.sam_emulator.client import EmulatorClient

SOFTHSM = SOFTHSM_LIBRARY
ISSUER_LABEL = key_label("internal", "sam_issuer", 1)
BATCH_KEK_LABEL = key_label("internal", "sam_transport", 1)
BATCH_KEK_CODE = 0x33
PROVINCE_USER = "tunion-province"
#: the lab's SAM manufacturer (the emulator): number 1, as the SO registers its RSA key in the province token
MANUFACTURER = 1


def manufacture_blobs(
    serials: list[str],
    manufacturer_der: bytes,
    *,
    library: str = SOFTHSM,
    token_label: str,
    user_pin: str,
    so_pin: str,
    manufacturer: int = MANUFACTURER,
    replace_manufacturer: bool = False,
) -> dict[str, Any]:
    """The province's side of manufacturing: each SAM's master key and the batch KEK, wrapped for the manufacturer
    (whose key the SO registers first)."""
    with hsm_session(library, token_label, None, so_pin=so_pin) as so:
        ensure_batch_kek(so, BATCH_KEK_LABEL, key_id("internal", BATCH_KEK_CODE, 1))
        # the SO vouches for the manufacturer's key
        register_manufacturer(so, manufacturer, manufacturer_der, replace=replace_manufacturer)
        kek_blob = export_batch_kek(so, BATCH_KEK_LABEL, manufacturer)
    with hsm_session(library, token_label, user_pin, rw=False) as tok:
        blobs = manufacture_master_keys(tok, ISSUER_LABEL, manufacturer, serials)
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
            "tunion_lab.sam_supply",
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
