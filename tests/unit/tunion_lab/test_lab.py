"""The lab command's refusals: clear messages, no traceback, nothing changed."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest

from tunion_lab import lab


@pytest.fixture
def held_port() -> int:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_a_taken_port_is_named_and_nothing_is_created(
    tmp_path: Path, held_port: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lab_dir = tmp_path / "lab"
    config = dataclasses.replace(lab.load_config(lab_dir), openbao_port=held_port)
    monkeypatch.setattr(lab, "load_config", lambda: config)
    monkeypatch.setattr(lab, "require_root", lambda: None)

    assert lab.main(["up"]) == 2

    err = capsys.readouterr().err
    assert f"port 127.0.0.1:{held_port} is already taken" in err
    assert "openbao_port" in err, "the message names the setting that moves the port"
    assert "Traceback" not in err
    assert not lab_dir.exists(), "a refused start changes nothing"


def test_sshd_groups_never_exceed_sixteen_addresses() -> None:
    config = lab.load_config(Path("/nonexistent"))
    groups = lab.address_groups(config)
    assert all(len(group) <= lab.SSHD_MAX_ADDRESSES for group in groups)
    assert sum(len(group) for group in groups) == len(config.addresses) == 24


def test_reader_conf_declares_two_readers_per_vpcd_entry() -> None:
    config = lab.load_config(Path("/nonexistent"))
    conf = lab.reader_conf(config)
    assert conf.count("LIBPATH") == config.vpcd_entries
    assert len(config.vpcd_ports) == 2 * config.vpcd_entries >= 4


def test_an_inventory_host_off_loopback_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inventory = tmp_path / "inv"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    (inventory / "group_vars" / "all" / "lab.yml").write_text((lab.INVENTORY / "group_vars/all/lab.yml").read_text())
    (inventory / "hosts.yml").write_text(
        "all:\n  children:\n    cities:\n      hosts:\n        x:\n"
        "          ansible_host: 10.0.0.1\n          ansible_user: city-x\n"
    )
    monkeypatch.setattr(lab, "INVENTORY", inventory)
    with pytest.raises(lab.LabError, match="must be loopback"):
        lab.load_config(tmp_path)
