# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run a unit test body in a fresh interpreter: SoftHSM reads SOFTHSM2_CONF once per process, so a throw-away
token made after another test's token is gone is only visible to a new process."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import Any


def _child(func: Callable[..., None], args: tuple[Any, ...], queue: Any) -> None:
    try:
        func(*args)
    except BaseException as exc:
        import traceback

        queue.put("".join(traceback.format_exception(exc)))
        return
    queue.put("")


def isolated(func: Callable[..., None], *args: Any) -> None:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(func, args, queue))
    proc.start()
    error = queue.get(timeout=120)
    proc.join(timeout=30)
    assert not error, error
