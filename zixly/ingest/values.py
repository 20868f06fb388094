"""What one ingest value may be: each parser returns the value as it will be stored, or
raises ``Bad`` with the message the client sees (``zixly.ingest.models`` puts them on fields).

Strings: of type string, at most their length, no control characters or lone surrogates,
not empty or only spaces (``text``; record fields get the same rules from pydantic through
``TEXT_PATTERN``, and ``text_message`` words pydantic's errors as ``text`` does). Amounts: JSON numbers (parsed as ``Decimal``, never a binary
float) or numeric strings, finite and fitting their ``NUMERIC`` column exactly. Dates:
YYYY-MM-DD, real calendar dates within ``zixly.core.bounds``' range, kept as text. Instants:
ISO 8601 with an offset, in range, as UTC datetimes.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from zixly.core.bounds import OutOfBounds, check_date, check_instant, fixed_point
from zixly.domain.metrics import METRIC_NAME

MAX_ID_LENGTH = 200
MAX_NAME_LENGTH = 200
MAX_LABEL_LENGTH = 100
MAX_UNIT_LENGTH = 40
MAX_NUMERIC_TEXT = 40
CURRENCY = "AUD"
# The columns: NUMERIC(14,2) for amounts, NUMERIC(14,4) for metric values.
MONEY_COLUMN = (14, 2)
METRIC_COLUMN = (14, 4)
SOURCE_SYSTEM = re.compile(r"^[a-z][a-z0-9_.-]{0,39}$")
RESERVED_SOURCES = frozenset({"manual"})  # what people enter through GraphQL
_ISO_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
# C0 and C1 control characters (the writer's column separators among them) and lone
# surrogates, which a JSON \u escape can carry but UTF-8 (and so PostgreSQL) cannot.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# What pydantic checks of a text field (besides its type and length): no control character
# and not only spaces. A lone surrogate fails before, as a string that is no Unicode.
_PRINTABLE = r"[^\x00-\x1f\x7f-\x9f]"
TEXT_PATTERN = rf"^{_PRINTABLE}*[^\s\x00-\x1f\x7f-\x9f]{_PRINTABLE}*$"

__all__ = ["METRIC_NAME"]


class Bad(ValueError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def quoted(value: str) -> str:
    """``value`` for a message: as it is, lone surrogates escaped (a message is UTF-8)."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def text(max_length: int) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if type(value) is not str:
            raise Bad("must be a string")
        if len(value) > max_length:
            raise Bad(f"must be at most {max_length} characters")
        if not (value.isascii() and value.isprintable()) and _CONTROL.search(value):
            raise Bad("must not contain control characters")
        if not value or value.isspace():
            raise Bad("must not be empty")
        return value

    return parse


def text_message(error_type: str, context: dict[str, Any], value: Any) -> str | None:
    """The message of pydantic's error about a text field (``text``'s, for the same value),
    or None if it is none of those."""
    if error_type == "string_type":
        return "must be a string"
    if error_type == "string_too_long":
        return f"must be at most {context['max_length']} characters"
    if error_type == "string_unicode":
        return "must not contain control characters"
    if error_type == "string_too_short":
        return "must not be empty"
    if error_type == "string_pattern_mismatch":
        if isinstance(value, str) and _CONTROL.search(value):
            return "must not contain control characters"
        return "must not be empty"
    return None


def amount(column: tuple[int, int]) -> Callable[[Any], Decimal]:
    precision, scale = column

    def parse(value: Any) -> Decimal:
        number: Decimal
        kind = type(value)
        if kind is Decimal:  # a JSON number with a fraction (parse_float=Decimal)
            number = value
        elif kind is int:  # not bool: type() is exact
            number = Decimal(value)
        elif kind is str and len(value) <= MAX_NUMERIC_TEXT and "_" not in value:
            try:
                number = Decimal(value)
            except InvalidOperation:
                raise Bad("must be a number") from None
        else:
            raise Bad("must be a number")
        # The canonical text PostgreSQL gets: 0E+5000 or 1.000...0 (any number of zeros) are
        # valid amounts, but numeric input refuses exponents beyond 1000 and 16383 decimals.
        try:
            return fixed_point(number, precision=precision, scale=scale)
        except OutOfBounds as bad:
            raise Bad(str(bad)) from None

    return parse


def date(value: Any) -> str:
    """A calendar date, kept as its text: YYYY-MM-DD is canonical (one text per date)."""
    # fromisoformat alone would also take 20260301 and 2026-W09-7
    if type(value) is not str or len(value) != 10 or value[4] != "-" or value[7] != "-":
        raise Bad("must be a date YYYY-MM-DD")
    try:
        parsed = dt.date.fromisoformat(value)
    except ValueError:
        raise Bad(f"{quoted(value)} is not a calendar date") from None
    try:
        check_date(parsed)
    except OutOfBounds as bad:
        raise Bad(str(bad)) from None
    return value


def instant(value: Any) -> dt.datetime:
    if not isinstance(value, str) or len(value) > 40 or not _ISO_INSTANT.match(value):
        raise Bad("must be an ISO 8601 date-time with an offset, e.g. 2026-03-01T09:30:00+10:00")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise Bad(f"{quoted(value)} is not a valid date-time") from None
    if parsed.tzinfo is None:
        raise Bad("must include a UTC offset (e.g. +10:00 or Z)")
    try:
        return check_instant(parsed)
    except OutOfBounds as bad:
        raise Bad(str(bad)) from None


def currency(value: Any) -> str:
    if value != CURRENCY:
        raise Bad(f"only {CURRENCY} is accepted; convert amounts before sending")
    return CURRENCY


def metric_name(value: Any) -> str:
    if not isinstance(value, str) or not METRIC_NAME.fullmatch(value):
        raise Bad(
            "must be lower-case letters, digits and underscores, starting with a letter, at "
            "most 63 characters"
        )
    return value


money = amount(MONEY_COLUMN)
metric_value = amount(METRIC_COLUMN)
label = text(MAX_LABEL_LENGTH)  # the envelope's ids (record text is checked by pydantic)


def envelope_label(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # n8n ids are numeric strings; accept them as numbers too
    return label(value)


def source_system(value: Any) -> str:
    source = envelope_label(value)
    if not SOURCE_SYSTEM.match(source):
        raise Bad(
            "must be lower-case letters, digits, '_', '.' or '-', starting with a letter, at "
            "most 40 characters"
        )
    if source in RESERVED_SOURCES:
        raise Bad(f"{source!r} is reserved for values entered in Zixly")
    return source


def record_list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise Bad("must be an array of records")
    return value
