"""The defects a hostile sweep of bad inputs found (issue 9), each swept over its values, at module level.

Every case must be refused before anything is reached (OpenBao, the HSM, pcscd), with a message that names the bad
value and says what is expected instead.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from .cases import CITIES, GRANTS, REGISTRY_LINES, REGISTRY_OPTION, base_args, blacklist_document, write_registry
from .conftest import MODULES, NO_LIBRARY, argument_spec, assert_clean_failure, run_module

UNREACHED = ("127.0.0.1:1", NO_LIBRARY, "pcscd")


def refused_before_connecting(name: str, args: dict[str, Any], *words: str) -> str:
    msg = assert_clean_failure(name, run_module(name, args), *words)
    for unreached in UNREACHED:
        assert unreached not in msg, f"{name} connected before refusing its input: {msg}"
    return msg


# ------------------------------------------------------------------ a registry line for a city the inventory lacks
STATUS_MODULES = sorted(n for n, o in REGISTRY_OPTION.items() if o == "sam_registry")


@pytest.mark.parametrize("code", ["449999", "440000", "000000", "440101", "999999"])
@pytest.mark.parametrize("name", STATUS_MODULES)
def test_registry_city_not_in_inventory(name: str, code: str, tmp_path: Path) -> None:
    args = base_args(name, tmp_path)
    line = f"44{code}000000000009,{code},some-bus,active,,\n"
    args["sam_registry"] = write_registry(tmp_path, [*REGISTRY_LINES, line])
    msg = refused_before_connecting(name, args, "line 4", code)
    for known in CITIES.values():
        assert known in msg, f"{name}: the message does not list the known city {known}: {msg}"


# ------------------------------------------------------------------ a grant for a city the inventory lacks
@pytest.mark.parametrize("city", ["atlantis", "Guangzhou", "guangzhou ", "440100"])
def test_grant_for_unknown_city_refused(city: str, tmp_path: Path) -> None:
    args = base_args("openbao_city_revoke", tmp_path)
    args["grants"] = {**args["grants"], city: copy.deepcopy(GRANTS)}
    refused_before_connecting("openbao_city_revoke", args, repr(city))


@pytest.mark.parametrize("city", ["atlantis", "Guangzhou"])
def test_target_for_unknown_city_refused(city: str, tmp_path: Path) -> None:
    args = base_args("distribution_plan", tmp_path)
    args["targets"] = [*args["targets"], {"city": city, "city_code": "449999", "grants": copy.deepcopy(GRANTS)}]
    refused_before_connecting("distribution_plan", args, repr(city))


# ------------------------------------------------------------------ an emergency request with a status that is none
@pytest.mark.parametrize("status", ["deleted", "REVOKED", "", "destroyed", "revoked;"])
def test_request_with_unknown_status(status: str, tmp_path: Path) -> None:
    args = base_args("openbao_city_revoke", tmp_path)
    args["request"] = {"name": "guangzhou", "status": status, "reason": "audit finding 2026-17"}
    msg = refused_before_connecting("openbao_city_revoke", args, repr(status), "revoked", "suspended")
    assert "name the holder" not in msg.lower()


# ------------------------------------------------------------------ a grant of a key type the catalogue lacks
@pytest.mark.parametrize("key_type", ["no_such_type", "Purchase", "load.v01"])
@pytest.mark.parametrize("name", ["keyblock_publish", "keyblock_status", "distribution_plan"])
def test_grant_of_unknown_key_type(name: str, key_type: str, tmp_path: Path) -> None:
    args = base_args(name, tmp_path)
    args["targets"][0]["grants"].append({"key_type": key_type, "version": 1})
    msg = refused_before_connecting(name, args, repr(key_type), "catalogue")
    assert "issue it first" not in msg


# ------------------------------------------------------------------ the day a run acts on, parsed strictly
BAD_DAYS = [
    "2026-12-01$(touch /tmp/x)",
    "2026-12-01; id",
    "2026-12-01T00:00:00",
    "2026-12-1",
    "2026-13-01",
    "2026-02-30",
    "20261201",
    "2026-W49-2",
    "tomorrow",
]


@pytest.mark.parametrize("day", BAD_DAYS)
@pytest.mark.parametrize("name", ["openbao_city_revoke", "distribution_plan"])
def test_today_parsed_strictly(name: str, day: str, tmp_path: Path) -> None:
    args = base_args(name, tmp_path) | {"today": day}
    refused_before_connecting(name, args, repr(day), "YYYY-MM-DD")


@pytest.mark.parametrize("day", BAD_DAYS)
def test_status_date_parsed_strictly(day: str, tmp_path: Path) -> None:
    args = base_args("openbao_city_revoke", tmp_path)
    args["status"]["cities"]["guangzhou"] = {"status": "suspended", "reason": "audit", "date": day}
    refused_before_connecting("openbao_city_revoke", args, repr(day))


# ------------------------------------------------------------------ sam_keys as a list of names
@pytest.mark.parametrize("keys", [["purchase"], ["purchase", {"key": "purchase", "version": 1}], []])
def test_sam_keys_as_names_accepted(keys: list[Any], tmp_path: Path) -> None:
    """The list-of-names form the inventory comment suggests is accepted: the run goes on to pcscd."""
    args = base_args("sam_inject", tmp_path) | {"keys": keys}
    msg = assert_clean_failure("sam_inject", run_module("sam_inject", args), "pcscd")
    assert "dictionary requested" not in msg


@pytest.mark.parametrize(
    ("keys", "words"),
    [
        (["load"], ("load", "第二条(四)")),
        (["no_such_type"], ("no_such_type",)),
        ([7], ("7", "key type name")),
        ([{"version": 1}], ("key",)),
        ([{"key": "purchase", "version": "one"}], ("one",)),
        ([{"key": "purchase", "colour": "red"}], ("colour",)),
    ],
)
def test_sam_keys_bad_entries(keys: list[Any], words: tuple[str, ...], tmp_path: Path) -> None:
    args = base_args("sam_inject", tmp_path) | {"keys": keys}
    msg = refused_before_connecting("sam_inject", args, *words)
    assert "dictionary requested" not in msg


# ------------------------------------------------------------------ a province token file that cannot be read
OPENBAO_MODULES = [name for name in MODULES if "url" in argument_spec(name)]


def _not_ascii(tmp: Path) -> Path:
    path = tmp / "token"
    path.write_bytes(b"\xff\xfe\xfd")
    return path


def _under_a_file(tmp: Path) -> Path:
    (tmp / "plain").write_text("x")
    return tmp / "plain" / "token"


def _directory(tmp: Path) -> Path:
    return tmp


@pytest.mark.parametrize("make", [_not_ascii, _under_a_file, _directory], ids=["not-ascii", "under-a-file", "dir"])
@pytest.mark.parametrize("name", OPENBAO_MODULES)
def test_token_file_unreadable(name: str, make: Any, tmp_path: Path) -> None:
    args = base_args(name, tmp_path)
    del args["token"]
    args["token_path"] = str(make(tmp_path))
    msg = assert_clean_failure(name, run_module(name, args), args["token_path"])
    assert "no OpenBao token" not in msg


@pytest.mark.parametrize("name", sorted(REGISTRY_OPTION))
def test_registry_line_number_counts_comments_and_blank_lines(name: str, tmp_path: Path) -> None:
    """The line number in the message is the file's, comments and blank lines included."""
    bad = "4444XYZ,440100,guangzhou-metro,active,,\n"
    lines = ["# desired SAMs\n", *REGISTRY_LINES, "\n", "# a stolen batch\n", bad]
    args = base_args(name, tmp_path)
    args[REGISTRY_OPTION[name]] = write_registry(tmp_path, lines)
    refused_before_connecting(name, args, "line 7", "4444XYZ")


# ------------------------------------------------------------------ blacklist documents and statuses of the wrong shape
def _doc(**changes: Any) -> dict[str, Any]:
    return blacklist_document() | changes


BAD_DOCUMENTS: dict[str, tuple[Any, tuple[str, ...]]] = {
    "other-format": (_doc(format="TUNION-SAMBL-0"), ("TUNION-SAMBL-1",)),
    "version-zero": (_doc(version=0), ("version 0",)),
    "version-text": (_doc(version="1"), ("version '1'",)),
    "version-bool": (_doc(version=True), ("version True",)),
    "mac-not-mapping": (_doc(mac="00" * 16), ("TUNION-SAMBL-1",)),
    "entries-changed": (_doc(entries=[{"serial": "44440100000000000001", "status": "revoked"}]), ("digest",)),
}


@pytest.mark.parametrize("kind", sorted(BAD_DOCUMENTS))
def test_blacklist_document_refused_before_the_hsm(kind: str, tmp_path: Path) -> None:
    doc, words = BAD_DOCUMENTS[kind]
    args = base_args("sam_blacklist_install", tmp_path) | {"blacklist": doc}
    refused_before_connecting("sam_blacklist_install", args, *words)
    assert not (tmp_path / "blacklist.json").exists()


@pytest.mark.parametrize("status", ["revoked", ["revoked"], {"status": "deleted"}, 3])
@pytest.mark.parametrize("kind", ["cities", "holders", "sams"])
def test_blacklist_statuses_of_the_wrong_shape(kind: str, status: Any, tmp_path: Path) -> None:
    name = {"cities": "guangzhou", "holders": "guangzhou-metro", "sams": "44440100000000000001"}[kind]
    args = base_args("sam_blacklist_publish", tmp_path) | {"statuses": {kind: {name: status}}}
    refused_before_connecting("sam_blacklist_publish", args, f"statuses.{kind}.{name}")


@pytest.mark.parametrize(
    "started_at", ["not-a-time", "2026-12-01", "2026-12-01T08:00:00", "2026-12-01T08:00:00+00:00$(id)", "12:00"]
)
def test_report_start_is_an_instant(started_at: str, tmp_path: Path) -> None:
    args = base_args("enforcement_report", tmp_path) | {"started_at": started_at}
    refused_before_connecting("enforcement_report", args, repr(started_at))


@pytest.mark.parametrize("started_at", ["2026-12-01T08:00:00+00:00", "2026-12-01T08:00:00Z", "2026-12-01T16:00+08:00"])
def test_report_start_as_the_role_gives_it(started_at: str, tmp_path: Path) -> None:
    args = base_args("enforcement_report", tmp_path) | {"started_at": started_at}
    assert_clean_failure("enforcement_report", run_module("enforcement_report", args), "127.0.0.1:1")
