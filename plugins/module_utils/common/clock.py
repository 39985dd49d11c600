# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one clock of the collection: instants in UTC, calendar days in the network's time zone.

Validity periods (粤交〔2019〕11号 第二十条) and status dates are Chinese calendar days, so :func:`today` is the
day in Asia/Shanghai (UTC+08:00, no daylight saving): from 00:00 to 08:00 there it is already the next day in
UTC terms. Instants (records, reports) are UTC with a ``Z``.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any

#: the network's time zone (China Standard Time has had no daylight saving since 1991)
NETWORK_TZ = _dt.timezone(_dt.timedelta(hours=8), "CST")
_DAY_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")


def now() -> str:
    """This instant, UTC, ISO-8601 to the second with ``Z``: ``2026-12-01T02:03:04Z``."""
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def today() -> _dt.date:
    """The network's calendar day (Asia/Shanghai)."""
    return _dt.datetime.now(NETWORK_TZ).date()


def parse_day(value: Any, default: _dt.date | None = None) -> _dt.date:
    """A day given as ``YYYY-MM-DD`` (the whole string), or a date; empty gives ``default`` or :func:`today`.

    Raises ValueError with a readable message: ``2026-12-01$(...)`` or ``2026-12-01T00:00`` is not a day.
    """
    if isinstance(value, _dt.datetime):
        raise ValueError(f"{value.isoformat()!r} is a time, not a day (YYYY-MM-DD)")
    if isinstance(value, _dt.date):
        return value
    text = str(value if value is not None else "").strip()
    if not text:
        return default or today()
    if not _DAY_RE.match(text):
        raise ValueError(f"{str(value)[:40]!r} is not a day (YYYY-MM-DD)")
    try:
        return _dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a day (YYYY-MM-DD)") from None
