"""What values may reach PostgreSQL: the documented range of dates and instants, fixed-point
amounts within their column, and text PostgreSQL can store.

Dates and instants lie in 1900-01-01 .. 2200-12-31 (instants compared in UTC). No business
record Zixly keeps predates 1900, and 2200 leaves room for forecasts and far-future
placeholders; both ends stay far from what the stack cannot take: asyncpg maps
``date.min``/``datetime.min`` (year 1) to ``-infinity`` and the maxima to ``infinity``,
Python cannot represent year 10000 (a date-time of 9999-12-31 with a negative offset is
there in UTC), and range arithmetic (a day or a month past the end) must not overflow.
Infinity is never stored.

Amounts are ``NUMERIC(precision, scale)`` columns: a value is accepted when it is finite,
below ``10 ** (precision - scale)`` in magnitude and has at most ``scale`` decimal places
(trailing zeros do not count), and is passed on quantized to the scale, so PostgreSQL never
rounds, overflows or parses an exponent.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal, InvalidOperation

MIN_DATE = dt.date(1900, 1, 1)
MAX_DATE = dt.date(2200, 12, 31)
MIN_INSTANT = dt.datetime.combine(MIN_DATE, dt.time.min, tzinfo=dt.UTC)
MAX_INSTANT = dt.datetime.combine(MAX_DATE, dt.time.max, tzinfo=dt.UTC)
DATE_RANGE_TEXT = f"between {MIN_DATE.isoformat()} and {MAX_DATE.isoformat()}"
# NUL (PostgreSQL text cannot hold it) and lone surrogates (a JSON \u escape can carry one,
# UTF-8 cannot encode it).
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


class OutOfBounds(ValueError):
    """A value outside what the column (or the documented range) takes; the message says
    what is allowed, without repeating the value."""


def check_date(value: dt.date) -> dt.date:
    if not MIN_DATE <= value <= MAX_DATE:
        raise OutOfBounds(f"must be a date {DATE_RANGE_TEXT}")
    return value


def check_instant(value: dt.datetime) -> dt.datetime:
    """``value`` in UTC (a naive value is taken as UTC), within the documented range."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    try:
        utc = value.astimezone(dt.UTC)
    except OverflowError:  # 9999-12-31T23:00:00-10:00 is in year 10000 in UTC
        raise OutOfBounds(f"must be a date-time {DATE_RANGE_TEXT} (UTC)") from None
    if not MIN_INSTANT <= utc <= MAX_INSTANT:
        raise OutOfBounds(f"must be a date-time {DATE_RANGE_TEXT} (UTC)")
    return utc


def fixed_point(value: Decimal, *, precision: int, scale: int) -> Decimal:
    """``value`` exactly as a ``NUMERIC(precision, scale)`` column stores it."""
    limit = Decimal(10) ** (precision - scale)
    if not value.is_finite():
        raise OutOfBounds("must be a finite number")
    # Comparisons are exact (no context): abs() or arithmetic on 1E+999999999999 would
    # overflow the decimal context.
    if not -limit < value < limit:
        raise OutOfBounds(f"must be less than {limit:,.0f} in magnitude")
    try:
        exact = value.quantize(Decimal(1).scaleb(-scale))
    except InvalidOperation:  # pragma: no cover - excluded by the magnitude check
        raise OutOfBounds(f"must be less than {limit:,.0f} in magnitude") from None
    if exact != value:
        raise OutOfBounds(f"must have at most {scale} decimal places")
    return exact


def storable(text: str) -> bool:
    """Whether PostgreSQL can store ``text`` (no NUL, no lone surrogate)."""
    return (text.isascii() and "\x00" not in text) or _UNSTORABLE.search(text) is None
