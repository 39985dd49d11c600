"""CLI: ``python -m tunion_lab.sam_emulator {serve,start,stop,status,insert,wait-idle} --lab-dir .lab``."""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tunion_lab.sam_emulator.client import SOCKET_NAME, EmulatorClient

DEFAULT_PORTS = "35963-35966"


def _ports(spec: str) -> list[int]:
    if "-" in spec:
        lo, hi = spec.split("-", 1)
        return list(range(int(lo), int(hi) + 1))
    return [int(p) for p in spec.split(",")]


def _paths(lab_dir: str) -> dict[str, Path]:
    lab = Path(lab_dir).resolve()
    return {
        "state": lab / "sam" / "state",
        "run": lab / "run",
        "log": lab / "log" / "sam-emulator.log",
        "pid": lab / "run" / "sam-emulator.pid",
        "sock": lab / "run" / SOCKET_NAME,
    }


def cmd_serve(a: argparse.Namespace) -> int:
    from tunion_lab.sam_emulator.server import Emulator, serve_control

    p = _paths(a.lab_dir)
    p["run"].mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.DEBUG if a.debug else logging.INFO, format="%(asctime)s %(name)s %(message)s")
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1 <pid>: thread stacks into the log
    emu = Emulator(a.state_dir or p["state"], _ports(a.ports), a.host)
    emu.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    logging.getLogger("tunion.sam_emulator").info("serving %d readers, control socket %s", len(emu.readers), p["sock"])
    try:
        serve_control(emu, Path(a.socket or p["sock"]), stop)
    finally:
        emu.stop()
    return 0


def _running(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def cmd_start(a: argparse.Namespace) -> int:
    p = _paths(a.lab_dir)
    pid = _running(p["pid"])
    if pid:
        print(f"sam-emulator: running (pid {pid})")
        return 0
    for d in (p["run"], p["log"].parent, p["state"]):
        d.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "tunion_lab.sam_emulator", "--lab-dir", str(Path(a.lab_dir).resolve()), "serve"]
    argv += ["--ports", a.ports, "--host", a.host] + (["--debug"] if a.debug else [])
    with open(p["log"], "ab") as logf:
        proc = subprocess.Popen(
            argv,
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=str(Path(__file__).resolve().parents[2]),
        )
    p["pid"].write_text(f"{proc.pid}\n")
    for _ in range(100):
        if p["sock"].exists():
            print(f"sam-emulator: started (pid {proc.pid})")
            return 0
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    print(f"sam-emulator: failed to start, see {p['log']}", file=sys.stderr)
    return 1


def cmd_stop(a: argparse.Namespace) -> int:
    p = _paths(a.lab_dir)
    pid = _running(p["pid"])
    if pid:
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            if _running(p["pid"]) is None:
                break
            time.sleep(0.1)
        print(f"sam-emulator: stopped (pid {pid})")
    with contextlib.suppress(FileNotFoundError):
        p["pid"].unlink()
    return 0


def _client(a: argparse.Namespace) -> EmulatorClient:
    return EmulatorClient(a.socket or _paths(a.lab_dir)["sock"])


def cmd_status(a: argparse.Namespace) -> int:
    p = _paths(a.lab_dir)
    if not p["sock"].exists():
        print("sam-emulator: not running")
        return 3
    with _client(a) as c:
        print(json.dumps(c.call("status"), indent=2))
    return 0


def cmd_insert(a: argparse.Namespace) -> int:
    """Queue SAMs already manufactured: ``--serials``, or ``--count`` serials from ``--first``.

    New SAMs are manufactured by the province's HSM (tunion_lab/sam_supply.py ``manufacture``), not from this CLI."""
    serials = list(a.serials or [])
    if a.count:
        base = int(a.first, 16)
        serials += [f"{base + i:020X}" for i in range(a.count)]
    faults = json.loads(a.faults) if a.faults else None
    sams = [{"serial": s, "faults": faults, "reader": a.reader} for s in serials]
    with _client(a) as c:
        print(json.dumps(c.insert(sams)))
    return 0


def cmd_wait_idle(a: argparse.Namespace) -> int:
    with _client(a) as c:
        try:
            c.call("wait_idle", timeout=a.timeout)
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tunion_lab.sam_emulator", description=__doc__)
    ap.add_argument("--lab-dir", default=".lab")
    ap.add_argument("--socket", help="control socket (default <lab-dir>/run/sam-emulator.sock)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("serve", "start"):
        sp = sub.add_parser(name)
        sp.add_argument("--ports", default=DEFAULT_PORTS, help="vpcd reader ports, e.g. 35963-35966")
        sp.add_argument("--host", default="127.0.0.1")
        sp.add_argument("--state-dir", help="SAM memory (default <lab-dir>/sam/state)")
        sp.add_argument("--debug", action="store_true", help="log every control message")
    sub.add_parser("stop")
    sub.add_parser("status")
    sp = sub.add_parser("insert")
    sp.add_argument("--serials", nargs="*")
    sp.add_argument("--count", type=int, default=0)
    sp.add_argument("--first", default="44000000000000000001")
    sp.add_argument("--reader", type=int)
    sp.add_argument("--faults", help='JSON, e.g. {"remove_after": 5}')
    sp = sub.add_parser("wait-idle")
    sp.add_argument("--timeout", type=float, default=60)
    a = ap.parse_args(argv)
    return {
        "serve": cmd_serve,
        "start": cmd_start,
        "stop": cmd_stop,
        "status": cmd_status,
        "insert": cmd_insert,
        "wait-idle": cmd_wait_idle,
    }[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
