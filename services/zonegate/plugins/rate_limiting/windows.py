"""Fixed windows as Kong's ``kong/tools/timestamp.lua``: each period starts at a round UTC time
(the second, minute, hour, day, first of the month, first of the year), and a window's length for
``RateLimit-Reset`` is Kong's ``EXPIRATION`` table (a month is 30 days, a year 365). Pure."""

from __future__ import annotations

import calendar
import time
from typing import Final

LENGTH: Final[dict[str, int]] = {
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86400,
    "month": 2592000,
    "year": 31536000,
}


def window_start(period: str, now: float) -> int:
    """The start of ``period``'s current window, in Unix seconds."""
    whole = int(now)
    if period in ("second", "minute", "hour", "day"):
        return whole - whole % LENGTH[period]
    moment = time.gmtime(whole)
    month = moment.tm_mon if period == "month" else 1
    return calendar.timegm((moment.tm_year, month, 1, 0, 0, 0, 0, 0, 0))


def window_end(period: str, start: int) -> int:
    """When the window that began at ``start`` ends: the next window's start. Not ``start +
    LENGTH``: a month or a year may be longer than Kong's 30 or 365 days, and a count must
    last its whole window."""
    if period in ("second", "minute", "hour", "day"):
        return start + LENGTH[period]
    moment = time.gmtime(start)
    if period == "month":
        year, month = (moment.tm_year + 1, 1) if moment.tm_mon == 12 else (moment.tm_year, moment.tm_mon + 1)
    else:
        year, month = moment.tm_year + 1, 1
    return calendar.timegm((year, month, 1, 0, 0, 0, 0, 0, 0))


def seconds_left(period: str, start: int, now: float) -> int:
    """Kong's ``RateLimit-Reset``: at least 1."""
    return max(1, LENGTH[period] - int(now - start))
