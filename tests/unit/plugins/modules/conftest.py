"""In-process runs of the collection's modules, the way ansible-core's own unit tests call them.

A module's ``main()`` must end in ``exit_json``/``fail_json`` (SystemExit with one JSON document on stdout); any other
exception is what Ansible would show the key officer as a Python traceback.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args

REPO = Path(__file__).resolve().parents[4]
MODULES = sorted(p.stem for p in (REPO / "plugins" / "modules").glob("*.py") if p.stem != "__init__")
NO_LIBRARY = "/nonexistent/libpkcs11-missing.so"
NO_OPENBAO = "http://127.0.0.1:1"  # nothing listens on port 1: a refused connection, at once


def package(name: str) -> str:
    return f"ansible_collections.tunion.keymgmt.plugins.modules.{name}"


class SpecCaptured(Exception):
    """Raised from AnsibleModule.__init__ to stop a module once its argument spec is known."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__("argument spec captured")
        self.spec = spec


def argument_spec(name: str) -> dict[str, Any]:
    """The argument spec a module hands to AnsibleModule, however the module assembles it."""
    original = basic.AnsibleModule.__init__

    def capture(self: Any, *args: Any, **kwargs: Any) -> None:
        spec = kwargs.get("argument_spec", args[0] if args else None)
        raise SpecCaptured(spec or {})

    mod = importlib.import_module(package(name))
    basic.AnsibleModule.__init__ = capture  # type: ignore[method-assign]
    try:
        with patch_module_args({}):
            mod.main()
    except SpecCaptured as exc:
        return exc.spec
    finally:
        basic.AnsibleModule.__init__ = original  # type: ignore[method-assign]
    raise AssertionError(f"{name}.main() did not create an AnsibleModule")


def required_options(name: str) -> list[str]:
    return sorted(k for k, v in argument_spec(name).items() if v.get("required"))


def run_module(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run ``name``'s main() with ``args``; its JSON result. A traceback fails the test, with the traceback."""
    mod = importlib.import_module(package(name))
    out = io.StringIO()
    try:
        with patch_module_args(args), contextlib.redirect_stdout(out):
            mod.main()
    except SystemExit:
        pass
    except Exception:  # this is the very thing under test
        pytest.fail(f"{name} ended in a Python traceback, not fail_json:\n{traceback.format_exc()}", pytrace=False)
    else:
        pytest.fail(f"{name}.main() returned without exit_json/fail_json")
    text = out.getvalue()
    try:
        return json.loads(text)
    except ValueError:
        pytest.fail(f"{name} printed no single JSON result:\n{text}", pytrace=False)


def assert_clean_failure(name: str, result: dict[str, Any], *names: str) -> str:
    """A failure a person can act on: failed, a message naming each of ``names``, no traceback anywhere."""
    assert result.get("failed") is True, f"{name} did not fail: {result}"
    msg = str(result.get("msg", ""))
    assert msg.strip(), f"{name} failed without a message: {result}"
    for field in ("msg", "exception", "module_stderr", "module_stdout"):
        assert "Traceback" not in str(result.get(field, "")), f"{name}: traceback in {field}: {result[field]}"
    assert "module_stderr" not in result
    for word in names:
        assert word.lower() in msg.lower(), f"{name}: message does not name {word!r}: {msg}"
    return msg


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No lab, no officer's settings: no OpenBao address or token from the environment, an empty home."""
    for var in ("BAO_ADDR", "VAULT_ADDR", "BAO_TOKEN", "VAULT_TOKEN", "BAO_CACERT", "VAULT_CACERT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PCSCLITE_CSOCK_NAME", str(tmp_path / "no-pcscd.comm"))
    yield


def lab_catalogue() -> list[dict[str, Any]]:
    """The lab's key catalogue as a playbook passes it (dates as text, as they arrive through JSON)."""
    doc = yaml.safe_load((REPO / "inventories" / "lab" / "group_vars" / "all" / "key_catalogue.yml").read_text())
    return json.loads(json.dumps(doc["key_catalogue"], default=str))


@pytest.fixture(autouse=True)
def private_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module that changes key state journals it (docs/journal.md): into the test's own file, not ~/.tunion."""
    path = tmp_path / "journal.sqlite"
    monkeypatch.setenv("TUNION_JOURNAL", str(path))
    return path
