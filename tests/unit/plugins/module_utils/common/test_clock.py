# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The clock: days parsed strictly (the whole string or nothing), today as the network's calendar day, instants UTC."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

import pytest
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.clock import now, parse_day, today


@pytest.mark.parametrize(
    "value", ["24/11/2026", "2026-12-01$(touch /tmp/x)", "2026-12-01T00:00:00", "2026-13-01", "20261201", "x"]
)
def test_a_bad_day_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="is not a day"):
        parse_day(value)


def test_a_day_is_the_whole_string() -> None:
    assert parse_day("2026-12-01") == dt.date(2026, 12, 1)
    assert parse_day(" 2026-12-01 ") == dt.date(2026, 12, 1)


def test_today_is_the_day_in_china() -> None:
    """第二十条 validity dates are Chinese calendar days: today() agrees with the tz database's Asia/Shanghai."""
    before = dt.datetime.now(ZoneInfo("Asia/Shanghai")).date()
    assert today() in {before, dt.datetime.now(ZoneInfo("Asia/Shanghai")).date()}


def test_now_is_utc_with_z() -> None:
    stamp = now()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamp)
    taken = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    assert abs((dt.datetime.now(dt.UTC) - taken).total_seconds()) < 5
