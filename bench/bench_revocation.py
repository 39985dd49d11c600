#!/usr/bin/env python3
# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Revocation benchmark (issue 6), against the running lab (bin/lab up, cities distributed).

1. Time from the start of a city's access cut to OpenBao's first denial of that city's live token (a poller thread
   reads the city's KEK envelope with the city's own token in a tight loop). The cut is the code path of a revocation
   (plugins/module_utils/flows/status_openbao.cut_city_access: policy first); it is run as a suspension so the city is
   restored without reissuing keys. Aim: under 1 s.
2. Time to a complete enforcement report for the 21 cities: playbooks/enforce_status.yml revoking one city, from
   the start of the run to the report on disk (every node, OpenBao and SAM groups). Aim: under 30 s.
   The city is then restored (reinstated, re-enrolled by distribute.yml).

    bin/bench revocation [--city yunfu] [--rounds 5] [--skip-playbook]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time

import hvac
import hvac.exceptions
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.distribution.access import AccessSettings
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.status_openbao import converge_city
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.status import Status
from ansible_collections.tunion.keymgmt.plugins.module_utils.openbao.client import OpenBaoSettings, connect

from tunion_lab.lab_state import clear_rotations
from tunion_lab.openbao_access import CA_CERT, MOUNT, OPENBAO_URL, PROVINCE_TOKEN_FILE, city_login, province_client
from tunion_lab.playbooks import run_playbook
from tunion_lab.workspace import RevocationWorkspace, today


def denial_round(city: str) -> tuple[float, float]:
    """(seconds to first denial, seconds for the whole access cut)."""
    bao = connect(OpenBaoSettings(url=OPENBAO_URL, ca_cert=CA_CERT, token_path=str(PROVINCE_TOKEN_FILE)))
    client, _, _ = city_login(province_client(), city)
    client.secrets.kv.v2.read_secret_version(f"cities/{city}/kek", mount_point=MOUNT, raise_on_deleted_version=True)
    denied_at: list[float] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                client.secrets.kv.v2.read_secret_version(
                    f"cities/{city}/kek", mount_point=MOUNT, raise_on_deleted_version=True
                )
            except hvac.exceptions.Forbidden:
                denied_at.append(time.perf_counter())
                return

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    time.sleep(0.05)
    settings = AccessSettings()
    start = time.perf_counter()
    converge_city(
        bao,
        city,
        Status("suspended", "bench: revocation latency", today()),
        settings=settings,
        recorded=None,
        check_mode=False,
    )
    done = time.perf_counter()
    poller.join(timeout=10)
    stop.set()
    if not denied_at:
        raise SystemExit("the city's token was never denied")
    converge_city(
        bao,
        city,
        Status("active", "bench: restored", today()),
        settings=settings,
        recorded={"status": "suspended"},
        check_mode=False,
    )
    return denied_at[0] - start, done - start


def playbook_round(city: str) -> dict[str, float]:
    with RevocationWorkspace() as ws:
        revoke = ws.status_vars({city: {"status": "revoked", "reason": "bench", "date": today()}})
        start = time.perf_counter()
        run = run_playbook("enforce_status.yml", "-e", revoke, *ws.common_args())
        elapsed = time.perf_counter() - start
        report = ws.latest_report()
        if run.returncode or not report["complete"]:
            print(run.stdout[-3000:], file=sys.stderr)
            raise SystemExit("enforcement did not complete")
        nodes = sum(1 for e in report["entries"] if e["kind"] == "node")
        restore_start = time.perf_counter()
        clear_rotations()  # the revoked city held the shared load_auth key: forget the rotation it called for
        active = ws.status_vars({city: {"status": "active", "reason": "bench restore", "date": today()}})
        run_playbook("enforce_status.yml", "-e", active, *ws.common_args())
        if run_playbook("distribute.yml").returncode:
            raise SystemExit(f"could not re-enrol {city}: run playbooks/distribute.yml")
        run_playbook("enforce_status.yml", "-e", active, *ws.common_args())
        start2 = time.perf_counter()
        steady = run_playbook("enforce_status.yml", *ws.common_args())
        steady_elapsed = time.perf_counter() - start2
        return {
            "report_s": elapsed,
            "nodes": nodes,
            "restore_s": start2 - restore_start,
            "steady_s": steady_elapsed,
            "steady_rc": steady.returncode,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--city", default="yunfu")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-playbook", action="store_true")
    args = parser.parse_args()
    rounds = [denial_round(args.city) for _ in range(args.rounds)]
    denial = [r[0] for r in rounds]
    cut = [r[1] for r in rounds]
    print(
        f"first denial after start of revocation: median {statistics.median(denial) * 1000:.1f} ms, "
        f"max {max(denial) * 1000:.1f} ms over {len(denial)} rounds (aim < 1000 ms)"
    )
    print(
        f"whole access cut (policy, secret_ids, AppRole, tokens by accessor): median "
        f"{statistics.median(cut) * 1000:.1f} ms"
    )
    figures = {"denial_ms": [round(d * 1000, 1) for d in denial], "cut_ms": [round(c * 1000, 1) for c in cut]}
    if not args.skip_playbook:
        pb = playbook_round(args.city)
        print(
            f"complete enforcement report for 21 cities (1 revoked, blacklist to 20 + SAM station): "
            f"{pb['report_s']:.1f} s, {pb['nodes']} nodes (aim < 30 s)"
        )
        print(f"no-change enforce_status.yml: {pb['steady_s']:.1f} s; restore of the city: {pb['restore_s']:.1f} s")
        figures.update(pb)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
