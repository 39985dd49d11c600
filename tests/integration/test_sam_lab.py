# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SAM injection in the lab: emulated PSAMs in the vpcd readers, the province token, inject_sams.yml over SSH.

Must show (issue 5): 200 SAMs over 4 readers all loaded, and a plain pyscard script outside the project gets from
each the MAC1 an independent computation expects; refusals (recharge key, unregistered SAM) before any key APDU; a
SAM pulled out after 5 APDUs ends failed and is completed by the next run without duplicates; the tests-only
purchase key never appears in -vvv output, logs or lab files.

TUNION_SAM_READERS / TUNION_SAM_SLOTS narrow the readers (pattern) and emulator slots (indices) when some of the
lab's readers are out of order; by default all four are used. PCSCLITE_CSOCK_NAME and TUNION_SAM_EMULATOR_LAB point
the test at another pcscd and its emulator.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.sam_injection import DEFAULT_TEST_CARD

from tests.support.leaks import find_in_lab_files, secret_forms
from tests.support.reference import kcv_des3, pboc_diversify
from tunion_lab.lab import LAB_DIR, REPO
from tunion_lab.ministry_test_keys import TEST_COMPONENTS, clear_test_key
from tunion_lab.playbooks import inject_result, run_ansible, run_playbook
from tunion_lab.sam_emulator.client import EmulatorClient, emulator_socket, ensure_emulator, stop_emulator
from tunion_lab.sam_supply import PROVINCE_USER, manufacture_as_province, queue, write_registry

pytestmark = [pytest.mark.lab, pytest.mark.slow]

READERS = os.environ.get("TUNION_SAM_READERS", "TUnion Lab VPCD *")
SLOTS = [int(x) for x in os.environ.get("TUNION_SAM_SLOTS", "0,1,2,3").split(",")]
# another pcscd than the lab's (its socket; the interop script inherits PCSCLITE_CSOCK_NAME) and its emulator
PCSCD_SOCKET = os.environ.get("PCSCLITE_CSOCK_NAME", "")
EMULATOR_LAB = Path(os.environ.get("TUNION_SAM_EMULATOR_LAB", str(LAB_DIR)))
CITIES = ["440100", "440300", "440400", "440600"]
N = 200
RULE = "第二条(四)"
TEST_PURCHASE = {k: v for k, v in DEFAULT_TEST_CARD.items() if k != "data"}  # what the interop script sends


def city_key(city: str) -> bytes:
    """A city's issuer-level purchase key (what its HSM holds; never a PSAM's)."""
    return pboc_diversify(clear_test_key("purchase"), bytes.fromhex(city.rjust(16, "0")))


#: the test cards of the interop script: two Guangdong cities and Beijing (JT/T 978 issuers outside Guangdong),
#: card numbers outside any issuable range
INTEROP_CARDS = [
    {"serial": f"FFFF{code}000001", "issuer": code.rjust(16, "0")} for code in ("440100", "440300", "110000")
]


def odd_parity(key: bytes) -> bytes:
    """The form SoftHSM stores a derived DES key in (odd parity set)."""
    return bytes((b & 0xFE) | (bin(b & 0xFE).count("1") % 2 == 0) for b in key)


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorClient]:
    if not (LAB_DIR / "nodes" / PROVINCE_USER).exists():
        pytest.fail("the lab is not up: run bin/lab up, then playbooks/site.yml (provision_hsm, issue_keys)")
    started = ensure_emulator(EMULATOR_LAB)
    client = EmulatorClient(emulator_socket(EMULATOR_LAB))
    client.call("clear", eject=True)
    yield client
    client.call("clear", eject=True)
    client.close()
    if started:
        stop_emulator(EMULATOR_LAB)


class Station:
    """Registry and observed DB of this test module, readable and writable by the SAM station's user."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.stamp = f"{int(time.time()) & 0xFFFF:04X}"
        self.registry = root / "sam_registry.csv"
        self.observed = root / "observed.db"
        self.rows: list[tuple[str, str, str, str]] = []

    def serial(self, city: str, n: int) -> str:
        return f"44{city}{self.stamp}{n:08X}"

    def register(self, serials: list[str], city: str, holder: str) -> None:
        self.rows += [(s, city, holder, "active") for s in serials]
        write_registry(self.registry, self.rows)
        os.chmod(self.registry, 0o600)
        shutil.chown(self.registry, PROVINCE_USER, PROVINCE_USER)  # the station's user reads it, nobody else

    def extra_vars(self, **more: Any) -> str:
        v = {
            "sam_registry_csv": str(self.registry),
            "sam_observed_db": str(self.observed),
            "sam_readers": [READERS],
            "sam_idle_timeout": 5,  # vpcd may need a second or two to recover a reseated reader
            "sam_trace": True,
            "sam_pcscd_socket": PCSCD_SOCKET,
        }
        v.update(more)
        return json.dumps(v)

    def loaded_rows(self, serial: str | None = None) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(str(self.observed))
        try:
            if serial:
                return db.execute(
                    "SELECT serial, key_type, version, kcv FROM sam_keys WHERE serial = ?", (serial,)
                ).fetchall()
            return db.execute("SELECT serial, key_type, version, kcv, city_code FROM sam_keys").fetchall()
        finally:
            db.close()


@pytest.fixture(scope="module")
def station() -> Iterator[Station]:
    """A directory in the SAM station user's home (its own files, as on a real station)."""
    root = LAB_DIR / "nodes" / PROVINCE_USER / f"sam-test-{os.getpid()}"
    root.mkdir(mode=0o700)
    shutil.chown(root, PROVINCE_USER, PROVINCE_USER)
    yield Station(root)
    shutil.rmtree(root, ignore_errors=True)


def make(emu: EmulatorClient, serials: list[str], **kw: Any) -> None:
    made = manufacture_as_province(serials, emu.manufacturer_key())
    for i, sam in enumerate(made["sams"]):
        queue(emu, {"batch_kek": made["batch_kek"], "sams": [sam]}, reader=kw.get("reader", SLOTS[i % len(SLOTS)]),
              faults=kw.get("faults"))  # fmt: skip


def test_batch_of_200_over_4_readers_and_pyscard_interop(emu: EmulatorClient, station: Station) -> None:
    serials = [station.serial(c, i) for i in range(N // len(CITIES)) for c in CITIES]
    for c in CITIES:
        station.register([s for s in serials if s[2:8] == c], c, f"holder-{c}")
    make(emu, serials)

    run = run_playbook("inject_sams.yml", "-vvv", "-e", station.extra_vars())
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    res = inject_result(run.stdout)
    assert res["summary"].get("loaded") == N, res["summary"]
    assert len({s["reader"] for s in res["sams"]}) == len(SLOTS)
    # observed registry: one verified purchase key per SAM, the Ministry-level key whatever the SAM's city
    rows = station.loaded_rows()
    assert len(rows) == N and len({r[0] for r in rows}) == N
    for serial, key_type, version, kcv, _city in rows:
        assert (key_type, version) == ("purchase", 1)
        assert kcv == kcv_des3(clear_test_key("purchase")).hex().upper(), serial

    # Interop: each SAM presented again to a plain pyscard script that imports nothing from the project
    for i, slot in enumerate(SLOTS):
        queue(emu, {}, serials=serials[i :: len(SLOTS)], reader=slot)
    cfg = {
        "purchase_components": TEST_COMPONENTS["purchase"],
        "serials": serials,
        "key_version": 1,
        "readers": [READERS.replace("*", "").strip()],
        "cards": INTEROP_CARDS,
        "purchase": TEST_PURCHASE,
        "idle_seconds": 3,
    }
    script = REPO / "tests" / "interop" / "pyscard_mac1.py"
    imported = {
        (n.module if isinstance(n, ast.ImportFrom) else a.name).split(".")[0]
        for n in ast.walk(ast.parse(script.read_text()))
        if isinstance(n, ast.Import | ast.ImportFrom)
        for a in n.names
    }
    assert imported <= {"__future__", "json", "sys", "threading", "time", "cryptography", "smartcard"}, imported
    out = subprocess.run(
        # the input carries the published test components: on stdin, never in a file left behind
        [sys.executable, str(script), "/dev/stdin"],
        input=json.dumps(cfg),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = json.loads(out.stdout)
    assert report["checked"] == N and report["matched"] == N, report["mismatches"][:3]  # every card, MAC2 too
    assert report["serials"] == sorted(serials)

    # Nothing leaks: the tests-only purchase key and the city keys, in any form, at -vvv, in logs and lab files
    keys = [clear_test_key("purchase"), *map(city_key, CITIES)]
    needles = [f for k in keys + [odd_parity(k) for k in keys] for f in secret_forms(k)]
    text = (run.stdout + run.stderr + out.stdout).encode()
    assert not [n for n in needles if n in text]
    assert '"trace"' in run.stdout and "> 84D40102" in run.stdout  # WRITE KEY went over the wire
    assert "84D4010226 [" in run.stdout and "8050000008 [" in run.stdout  # its data withheld from the trace
    assert find_in_lab_files(needles) == []
    assert [p for p in station.root.rglob("*") if p.is_file() and any(n in p.read_bytes() for n in needles)] == []


def test_recharge_key_refused_before_any_apdu(emu: EmulatorClient, station: Station) -> None:
    serial = station.serial("440100", 0x1000)
    station.register([serial], "440100", "holder-440100")
    make(emu, [serial], reader=SLOTS[0])
    emu.call("history", clear=True)
    run = run_playbook("inject_sams.yml", "-e", station.extra_vars(sam_keys=[{"key": "load"}]))
    assert run.returncode != 0
    assert RULE in run.stdout and "refusing to send key 'load'" in run.stdout
    status = emu.call("status")["readers"][SLOTS[0]]
    assert status["present"] == serial and status["apdus"] == 0  # the SAM got no APDU at all
    assert emu.call("history")["history"] == []
    emu.call("clear", eject=True)


def test_unregistered_sam_refused(emu: EmulatorClient, station: Station) -> None:
    serial = station.serial("440300", 0x2000)  # manufactured, never registered
    make(emu, [serial], reader=SLOTS[0])
    emu.call("history", clear=True)
    run = run_playbook("inject_sams.yml", "-v", "-e", station.extra_vars())
    assert run.returncode != 0
    assert f"SAM {serial} is not in the SAM registry" in run.stdout
    sam = next(s for s in inject_result(run.stdout)["sams"] if s["serial"] == serial)
    assert sam["status"] == "refused" and sam["apdus"] == 2  # SELECT and READ BINARY of the serial: nothing else
    assert station.loaded_rows(serial) == []


def test_removed_after_5_apdus_then_completed(emu: EmulatorClient, station: Station) -> None:
    serial = station.serial("440400", 0x3000)
    station.register([serial], "440400", "holder-440400")
    make(emu, [serial], reader=SLOTS[0], faults={"remove_after": 5})
    run = run_playbook("inject_sams.yml", "-v", "-e", station.extra_vars())
    assert run.returncode != 0
    sam = next(s for s in inject_result(run.stdout)["sams"] if s["serial"] == serial)
    assert sam["status"] == "failed" and not sam.get("keys_verified")
    assert station.loaded_rows(serial) == []  # nothing unverified is recorded

    queue(emu, {}, serials=[serial], reader=SLOTS[0])  # the operator puts it back in
    run = run_playbook("inject_sams.yml", "-v", "-e", station.extra_vars())
    assert run.returncode == 0, run.stdout[-3000:]
    sam = next(s for s in inject_result(run.stdout)["sams"] if s["serial"] == serial)
    assert sam["status"] == "loaded" and sam["keys_verified"] == ["purchase.v01"]
    assert len(station.loaded_rows(serial)) == 1

    queue(emu, {}, serials=[serial], reader=SLOTS[0])  # a third time: already there, nothing to do
    run = run_playbook("inject_sams.yml", "-v", "-e", station.extra_vars())
    assert run.returncode == 0 and run.changed == 0
    assert next(s for s in inject_result(run.stdout)["sams"] if s["serial"] == serial)["status"] == "unchanged"
    assert len(station.loaded_rows(serial)) == 1


def test_check_mode_reports_and_changes_nothing(emu: EmulatorClient, station: Station) -> None:
    serial = station.serial("440600", 0x4000)
    station.register([serial], "440600", "holder-440600")
    make(emu, [serial], reader=SLOTS[0])
    run = run_playbook("inject_sams.yml", "--check", "-v", "-e", station.extra_vars())
    assert run.returncode == 0, run.stdout[-3000:]
    sam = next(s for s in inject_result(run.stdout)["sams"] if s["serial"] == serial)
    assert sam["status"] == "would_load" and sam["keys_to_load"] == ["purchase.v01"]
    assert station.loaded_rows(serial) == []
    emu.call("clear", eject=True)


def test_sam_info_reads_slots_never_values(emu: EmulatorClient, station: Station) -> None:
    serial = station.serial("440300", 0x5000)
    station.register([serial], "440300", "holder-440300")
    make(emu, [serial], reader=SLOTS[0])
    assert run_playbook("inject_sams.yml", "-e", station.extra_vars()).returncode == 0
    queue(emu, {}, serials=[serial], reader=SLOTS[0])
    play = station.root / "sam_info.yml"
    play.write_text(
        json.dumps(
            [
                {
                    "hosts": "sam_stations",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "tunion.keymgmt.sam_info": {"readers": [READERS], "registry": str(station.registry)},
                            "environment": {"PCSCLITE_CSOCK_NAME": PCSCD_SOCKET} if PCSCD_SOCKET else {},
                        }
                    ],
                }
            ]
        )
    )
    run = run_ansible("ansible-playbook", str(play), "-v")
    assert run.returncode == 0, run.stdout[-2000:]
    assert serial in run.stdout and '"key_type": "purchase"' in run.stdout
    kcv = kcv_des3(clear_test_key("purchase")).hex().upper()  # the Ministry-level key (docs/key_hierarchy.md)
    assert f'"kcv": "{kcv}"' in run.stdout and '"holder": "holder-440300"' in run.stdout
    assert not [n for n in secret_forms(clear_test_key("purchase")) if n in run.stdout.encode()]
    emu.call("clear", eject=True)


def test_rogue_card_copying_a_registered_serial_is_refused_before_any_cryptogram(
    emu: EmulatorClient, station: Station
) -> None:
    """Issue 11, Must show 1, in the lab: a card in a vpcd reader copies a registered serial and answers INITIALIZE
    UPDATE with chosen challenges (the old transport-key data "TUNIONTK" and its complement), every time it is
    presented. It is refused and moved out at once; what the station sent it is only the public reads and one
    random host challenge per presentation, never anything made under a key."""
    serial = station.serial("440100", 0x6000)
    station.register([serial], "440100", "holder-440100")
    make(emu, [serial], reader=SLOTS[0])  # the genuine SAM is manufactured (the emulator knows its serial) ...
    emu.call("clear", eject=True)  # ... and taken away: only its copy is presented
    chosen = [b"TUNIONTK".hex(), bytes(b ^ 0xFF for b in b"TUNIONTK").hex()]
    emu.call("history", clear=True)
    for _ in range(3):  # the operator re-presents it, three times
        queue(emu, {}, serials=[serial], reader=SLOTS[0], faults={"rogue_challenges": chosen})
    run = run_playbook("inject_sams.yml", "-v", "-e", station.extra_vars())
    assert run.returncode != 0
    sam = next(s for s in inject_result(run.stdout)["sams"] if s["serial"] == serial)
    assert sam["status"] == "refused" and "failed authentication" in sam["error"] and not sam.get("keys_loaded")
    heard = [
        bytes.fromhex(a) for h in emu.call("history")["history"] if h["serial"] == serial for a in h.get("heard", [])
    ]
    assert heard
    host = [a[5:] for a in heard if a[:4] == bytes.fromhex("80500000")]
    assert host and len(set(host)) == len(host)  # a fresh challenge each time
    public = ("00A40400", "00B09500", "00B09600", "80CA0000", "80500000")
    assert all(a[:4].hex().upper() in public for a in heard), [a.hex() for a in heard]
    assert station.loaded_rows(serial) == []
    emu.call("clear", eject=True)
