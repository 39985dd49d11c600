"""Fixtures of the tests that run playbooks against the lab."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tunion_lab.workspace import RevocationWorkspace


@pytest.fixture
def ws() -> Iterator[RevocationWorkspace]:
    """The files a test hands to the status playbooks, in a directory only the province user can use; removed after."""
    with RevocationWorkspace() as workspace:
        yield workspace
