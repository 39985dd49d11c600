# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One city down must not hold up the others' enforcement (issue 14): a whole site.yml run with one city unreachable
still takes a new SAM blacklist to the 20 reachable nodes and writes the enforcement report, then fails at its end
naming the city that is out of step. The drift report (--check --diff) with a city out of step goes on to the
enforcement plays too."""

from __future__ import annotations

import pytest

from tests.support.revocation import entry, node_blacklist
from tunion_lab.lab_state import lab_cities
from tunion_lab.playbooks import run_playbook
from tunion_lab.workspace import RevocationWorkspace, today

pytestmark = pytest.mark.lab

DOWN = "maoming"
SAM = "44010000000000000077"


def test_one_city_unreachable_the_others_still_get_the_blacklist(ws: RevocationWorkspace) -> None:
    codes = lab_cities()
    registry = ws.registry({codes["guangzhou"]: [(SAM, "gz-metro")]})
    suspended = ws.status_vars(sams={SAM: {"status": "suspended", "reason": "test: city down", "date": today()}})
    offline = str(ws.offline_inventory(DOWN))
    try:
        run = run_playbook("site.yml", "-i", offline, "-e", suspended, *ws.common_args(registry))
        assert run.returncode != 0, "a run with a city out of step must end in failure"
        assert "Out of step" in run.stdout and DOWN in run.stdout, run.stdout[-3000:]
        report = ws.latest_report()
        assert entry(report, f"node:{DOWN}")["state"] == "unreachable"
        version = report["blacklist"]["version"]
        for city in codes:
            if city == DOWN:
                continue
            held = node_blacklist(city)
            assert held and held["version"] == version, city
            assert SAM in {e["serial"] for e in held["entries"]}, city
        # the drift report: the city is still down, and the check run still reaches the enforcement plays
        drift = run_playbook("site.yml", "--check", "--diff", "-i", offline, "-e", suspended, *ws.common_args(registry))
        assert drift.returncode != 0
        assert "PLAY [Cities - destroy a revoked city's keys" in drift.stdout
        assert "PLAY [Province - enforcement report]" in drift.stdout
        assert "Out of step" in drift.stdout
    finally:
        lifted = ws.status_vars(sams={SAM: {"status": "active", "reason": "test restore", "date": today()}})
        back = run_playbook("enforce_status.yml", "-e", lifted, *ws.common_args(registry))
        assert back.returncode == 0, back.stdout[-3000:]
    assert SAM not in {e["serial"] for e in (node_blacklist(DOWN) or {"entries": []})["entries"]}
