"""Throw-away SoftHSM2 tokens for tests and benchmarks: a token directory of their own, cleaned up afterwards."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.session import load_library

from tunion_lab.lab import SOFTHSM_LIBRARY as SOFTHSM

#: the PINs of every scratch token (the token lives only as long as the block that made it)
SO_PIN = "87654321"
USER_PIN = "123456"


@contextmanager
def temp_token(label: str = "test", *, init: bool = True) -> Iterator[Path]:
    """A throw-away SoftHSM2 token directory; sets SOFTHSM2_CONF for this process and its children.

    SoftHSM reads SOFTHSM2_CONF only in C_Initialize, and python-pkcs11 keeps one initialised library per process:
    the library is re-initialised on the way in and out, so this process sees the token (and then the previous one).
    """
    old = os.environ.get("SOFTHSM2_CONF")
    with tempfile.TemporaryDirectory(prefix="tunion-hsm-") as tmp:
        tdir = Path(tmp) / "tokens"
        tdir.mkdir()
        conf = Path(tmp) / "softhsm2.conf"
        conf.write_text(f"directories.tokendir = {tdir}\nobjectstore.backend = file\nlog.level = ERROR\n")
        os.environ["SOFTHSM2_CONF"] = str(conf)
        try:
            if init:
                subprocess.run(
                    [
                        "softhsm2-util",
                        "--init-token",
                        "--free",
                        "--label",
                        label,
                        "--so-pin",
                        SO_PIN,
                        "--pin",
                        USER_PIN,
                    ],
                    check=True,
                    capture_output=True,
                )
            load_library(SOFTHSM).reinitialize()
            yield Path(tmp)
        finally:
            if old is None:
                os.environ.pop("SOFTHSM2_CONF", None)
            else:
                os.environ["SOFTHSM2_CONF"] = old
            load_library(SOFTHSM).reinitialize()
