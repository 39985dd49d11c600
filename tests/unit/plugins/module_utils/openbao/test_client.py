"""The OpenBao client: errors a person can act on, without secrets; settings; unwrap."""

from __future__ import annotations

import hvac.exceptions
import pytest
import requests.exceptions
from ansible_collections.tunion.keymgmt.plugins.module_utils.argspec import OPENBAO as OPENBAO_ARGSPEC
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import OpenBaoError
from ansible_collections.tunion.keymgmt.plugins.module_utils.openbao.client import (
    OpenBaoSettings,
    connect,
    describe,
    translated,
)

URL = "https://127.0.0.1:1"


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (hvac.exceptions.Forbidden("permission denied"), "403 permission denied"),
        (hvac.exceptions.VaultDown("sealed"), "is sealed"),
        (hvac.exceptions.InvalidPath(), "(404)"),
        (hvac.exceptions.InvalidRequest("bad", errors=["invalid secret id"]), "invalid secret id"),
        (requests.exceptions.ConnectionError("refused"), "cannot reach OpenBao"),
        (requests.exceptions.SSLError("bad cert"), "TLS verification"),
        (requests.exceptions.Timeout(), "did not answer in time"),
    ],
)
def test_errors_are_actionable(exc: Exception, expected: str) -> None:
    message = describe(exc, "reading x", URL)
    assert expected in message and "reading x" in message


def test_translated_wraps_and_hides_the_traceback() -> None:
    with pytest.raises(OpenBaoError, match="403") as caught, translated("writing cities/a/status", URL):
        raise hvac.exceptions.Forbidden("permission denied")
    assert caught.value.__suppress_context__


def test_secrets_are_no_log() -> None:
    for name in ("token", "role_id", "wrapped_secret_id"):
        assert OPENBAO_ARGSPEC[name]["no_log"] is True


def test_settings_need_an_address() -> None:
    with pytest.raises(OpenBaoError, match="no OpenBao address"):
        OpenBaoSettings.from_params({"url": None})


def test_missing_token_names_the_file(tmp_path) -> None:
    settings = OpenBaoSettings(url=URL, token_path=str(tmp_path / "absent"))
    with pytest.raises(OpenBaoError, match="absent"):
        connect(settings)


def test_approle_needs_its_parts() -> None:
    with pytest.raises(OpenBaoError, match="role_id"):
        connect(OpenBaoSettings(url=URL, auth_method="approle"))
    with pytest.raises(OpenBaoError, match="wrapped_secret_id"):
        connect(OpenBaoSettings(url=URL, auth_method="approle", role_id="r"))


def test_unreachable_openbao_during_unwrap_is_said_plainly() -> None:
    settings = OpenBaoSettings(url=URL, auth_method="approle", role_id="r", wrapped_secret_id="s.secret", timeout=1)
    with pytest.raises(OpenBaoError, match="cannot reach OpenBao") as caught:
        connect(settings)
    assert "s.secret" not in str(caught.value)
