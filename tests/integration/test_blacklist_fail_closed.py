# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The SAM blacklist fails closed (issue 10 item 9, Must show 6), attacked with file operations and raw PKCS#11.

The attacker edits, deletes and replaces list files as root or as the node's own unix user (os.remove, writes);
the terminal's check of current.json is done with python-pkcs11 and hashlib, not with the collection's code.
Every test leaves the lab with a fresh list everywhere (a normal enforce_status.yml run at the end).
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import json
import os
import pwd
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.revocation import node_blacklist
from tunion_lab.lab import LAB_DIR
from tunion_lab.lab_state import _as_node, _pin
from tunion_lab.openbao_access import MOUNT, province_client
from tunion_lab.playbooks import AnsibleRun, run_ansible, run_playbook
from tunion_lab.workspace import RevocationWorkspace, today

STATION_USER = "tunion-province"
STATION_FILE = LAB_DIR / "nodes" / STATION_USER / "sam-blacklist" / "current.json"
CITY = "guangzhou"
CITY_CODE = "440100"
CITY_FILE = LAB_DIR / "nodes" / f"city-{CITY}" / "sam-blacklist" / "current.json"
SAMS = ("44440100000000000019", "44440100000000000020")  # revoked for a while by the station test


def _day(offset: int) -> str:
    return (_dt.date.fromisoformat(today()) + _dt.timedelta(days=offset)).isoformat()


def _enforce(ws: RevocationWorkspace, *args: str) -> AnsibleRun:
    return run_playbook("enforce_status.yml", *ws.common_args(), *args)


def _put(path: Path, text: str, user: str) -> None:
    """The attacker's write: plain file I/O, owned like the real file."""
    path.write_text(text, encoding="utf-8")
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def _inject() -> AnsibleRun:
    return run_playbook("inject_sams.yml", "-e", "sam_max_sams=1", "-e", "sam_idle_timeout=0.5")


def _published(version: int) -> dict[str, Any]:
    kv = province_client().secrets.kv.v2
    read = kv.read_secret_version(
        "province/blacklist", version=version, mount_point=MOUNT, raise_on_deleted_version=True
    )
    return read["data"]["data"]


def _canonical(doc: dict[str, Any]) -> bytes:
    body = {k: v for k, v in doc.items() if k != "mac"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@pytest.fixture
def fresh(ws: RevocationWorkspace) -> Any:
    """The lab as the routine run leaves it before and after each test: a fresh list everywhere."""
    assert _enforce(ws).returncode == 0
    yield ws
    STATION_FILE.unlink(missing_ok=True)  # whatever the attack left there; the run below writes the genuine one
    active = {"status": "active", "reason": "test restore", "date": today()}
    run = _enforce(ws, "-e", ws.status_vars(sams=dict.fromkeys(SAMS, active)))
    assert run.returncode == 0, run.stdout[-3000:]
    assert node_blacklist(CITY)["expires"] == _day(7) and node_blacklist(CITY)["entries"] == []


def test_station_refuses_to_inject_without_a_list_or_with_a_genuine_older_one(fresh: RevocationWorkspace) -> None:
    older = json.loads(STATION_FILE.read_text())
    assert older["expires"] == _day(7)
    # a run on the next day, with two SAMs revoked, renews the list: a new version, accepted and recorded everywhere
    revoked = {"status": "revoked", "reason": "test: fail closed", "date": today()}
    sams = fresh.status_vars(sams=dict.fromkeys(SAMS, revoked))
    renewed = _enforce(fresh, "-e", sams, "-e", f"status_now={_day(1)}")
    assert renewed.returncode == 0, renewed.stdout[-3000:]
    current = json.loads(STATION_FILE.read_text())
    assert current["version"] == older["version"] + 1 and current["expires"] == _day(8)
    assert len(current["entries"]) == 2

    os.remove(STATION_FILE)  # 1. the list deleted: no SAM is loaded
    run = _inject()
    assert run.returncode != 0
    assert "no SAM blacklist at" in run.stdout and "no SAM was loaded" in run.stdout

    _put(STATION_FILE, json.dumps(older), STATION_USER)  # 2. a genuine, unexpired, older list put in its place
    run = _inject()
    assert run.returncode != 0
    assert f"older than v{current['version']}, the highest this node has accepted" in run.stdout

    # 3. forgeries of the current list: every one stops the batch (digest, or the MAC once the digest is redone)
    def redigest(doc: dict[str, Any]) -> dict[str, Any]:
        doc["mac"]["digest"] = hashlib.sha256(_canonical(doc)).hexdigest()
        return doc

    def changed(**fields: Any) -> dict[str, Any]:
        return dict(copy.deepcopy(current), **fields)

    first, second = current["entries"]
    forgeries = {
        "expiry pushed out": changed(expires="2099-12-31"),
        "expiry pushed out, digest redone": redigest(changed(expires="2099-12-31")),
        "expiry a day later, digest redone": redigest(changed(expires=_day(9))),
        "version raised, digest redone": redigest(changed(version=current["version"] + 5)),
        "entries dropped, digest redone": redigest(changed(entries=[], count=0)),
        "one entry dropped, digest redone": redigest(changed(entries=[second], count=1)),
        "entries reordered, digest redone": redigest(changed(entries=[second, first])),
        "a status softened, digest redone": redigest(changed(entries=[dict(first, status="suspended"), second])),
        "province MAC removed": {**copy.deepcopy(current), "mac": {"digest": current["mac"]["digest"]}},
    }
    for name, doc in forgeries.items():
        _put(STATION_FILE, json.dumps(doc), STATION_USER)
        run = _inject()
        assert run.returncode != 0, name
        assert "is not trustworthy" in run.stdout and "no SAM was loaded" in run.stdout, name
    text = json.dumps(current)
    for cut in (0, 1, len(text) // 2, len(text) - 1):  # truncated copies
        _put(STATION_FILE, text[:cut], STATION_USER)
        run = _inject()
        assert run.returncode != 0 and "no SAM was loaded" in run.stdout, cut

    _put(STATION_FILE, text, STATION_USER)  # the genuine current list: the batch runs
    run = _inject()
    assert run.returncode == 0, run.stdout[-3000:]


def test_node_refuses_a_genuine_older_list_after_its_file_was_deleted(fresh: RevocationWorkspace) -> None:
    older = node_blacklist(CITY)
    assert _enforce(fresh, "-e", f"status_now={_day(1)}").returncode == 0
    current = node_blacklist(CITY)
    assert current["version"] == older["version"] + 1
    os.remove(CITY_FILE)
    args = json.dumps(
        {
            "pkcs11_library": "{{ pkcs11_library }}",
            "token_label": "{{ hsm_token_label }}",
            "user_pin": "{{ hsm_user_pin }}",
            "city_code": CITY_CODE,
            "blacklist": older,
        }
    )
    run = run_ansible("ansible", CITY, "-m", "tunion.keymgmt.sam_blacklist_install", "-a", args)
    assert run.returncode != 0
    assert f"blacklist v{older['version']} is older than v{current['version']}" in run.stdout
    assert not CITY_FILE.exists()


def test_an_expired_list_is_reported_and_the_station_refuses_it(fresh: RevocationWorkspace) -> None:
    held = node_blacklist(CITY)
    # the province publishes as on a day long past: the list it makes has already expired on every node's clock
    run = _enforce(fresh, "-e", f"status_now={_day(-10)}")
    assert run.returncode != 0  # the run ends incomplete: no node confirmed the list
    report = fresh.latest_report()
    stale = report["blacklist"]["out_of_date"]
    assert report["blacklist"]["expires"] == _day(-3)
    assert CITY in stale and "OUT OF DATE" in stale[CITY] and "sam-station-01" in stale
    text = (fresh.reports / "latest.txt").read_text()
    assert "out of date (no valid, current SAM blacklist confirmed):" in text and f"  {CITY:<28} failed: " in text
    assert node_blacklist(CITY)["version"] == held["version"]  # the node kept its valid list

    expired = _published(report["blacklist"]["version"])  # genuine, newer than anything held, but expired
    _put(STATION_FILE, json.dumps(expired), STATION_USER)
    run = _inject()
    assert run.returncode != 0
    assert f"expired on {_day(-3)}" in run.stdout and "no SAM was loaded" in run.stdout


_TERMINAL_CHECK = r"""
import hashlib, json, sys
import pkcs11
from pkcs11 import Attribute, Mechanism, ObjectClass
lib, label, path = sys.argv[1], sys.argv[2], sys.argv[3]
pin = sys.stdin.read().strip()
doc = json.load(open(path))
body = json.dumps({k: v for k, v in doc.items() if k != "mac"}, sort_keys=True, separators=(",", ":"),
                  ensure_ascii=False).encode()
assert hashlib.sha256(body).hexdigest() == doc["mac"]["digest"]
with pkcs11.lib(lib).get_token(token_label=label).open(user_pin=pin) as s:
    key = next(s.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: doc["mac"]["province"]["key"]}))
    mac = key.sign(body, mechanism=Mechanism.AES_CMAC).hex().upper()
    forged = key.sign(body.replace(b'"expires":"', b'"expires":"1'), mechanism=Mechanism.AES_CMAC).hex().upper()
print(json.dumps({"good": mac == doc["mac"]["province"]["cmac"], "forged": forged == doc["mac"]["province"]["cmac"]}))
"""


def test_the_terminal_copy_carries_a_mac_that_checks_in_the_hsm(fresh: RevocationWorkspace) -> None:
    doc = json.loads(STATION_FILE.read_text())
    assert {"digest", "province", "cities"} <= set(doc["mac"]) and "expires" in doc
    proc = subprocess.run(
        _as_node(STATION_USER, _TERMINAL_CHECK, "tunion-province", str(STATION_FILE)),
        input=_pin("tunion-province", "user"),
        capture_output=True,
        text=True,
        cwd="/",
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"good": True, "forged": False}


def test_the_highest_accepted_record_is_out_of_other_users_reach() -> None:
    """What the record rests on in the lab (docs/blacklist.md): the token directory, 0700, owned by the node user."""
    tokens = LAB_DIR / "nodes" / f"city-{CITY}" / "tokens"
    st = tokens.stat()
    assert st.st_uid == pwd.getpwnam(f"city-{CITY}").pw_uid and st.st_mode & 0o077 == 0
    other = "city-shenzhen"
    code = "import os, sys; sys.exit(0 if not os.access(sys.argv[2], os.W_OK | os.X_OK) else 1)"
    proc = subprocess.run(_as_node(other, code, str(tokens)), capture_output=True, text=True, cwd="/", check=False)
    assert proc.returncode == 0, f"{other} could write to {tokens}"
