"""Validating an ingest request: the envelope and every record, before anything is written.

Validation is all-or-nothing per request: every bad record is reported (index, field,
message; the first ``MAX_REPORTED_ERRORS``) and nothing is written, so a workflow never
leaves half a batch behind and can simply send the corrected batch again. What passes is
turned into columns (one sequence per column) ready for the set-based writer; values are
exactly what will be stored: amounts as ``Decimal`` with exactly 2 places (4 for metric
values; no rounding anywhere), dates as checked YYYY-MM-DD text, instants in UTC.

Checks: types and lengths of every string (no control characters or lone surrogates,
nothing absurdly long); real calendar dates (2026-02-30 is refused) and instants within
``zixly.core.bounds``' documented range (never infinity); amounts that are
numbers, finite and fit ``NUMERIC(14,2)`` (``NUMERIC(14,4)`` for metric values); AUD only
(templates convert);
``net_profit`` = revenue - expenses to the cent when given; one record per natural key in
the batch (a repeated key would make the upsert touch one row twice); one ``client_name``
per client; no unknown fields (a typo in a template must not silently drop data);
``source_system`` "manual" is reserved for what people enter in Zixly, which ingest must
never overwrite.
Whether a client without ``client_name`` exists is the writer's check (it needs the
database) and is reported the same way.

Numbers are parsed from JSON as ``Decimal`` (``parse_float=Decimal``), never through a
binary float.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from operator import itemgetter
from typing import Any

from zixly.core.bounds import OutOfBounds, check_date, check_instant, fixed_point
from zixly.core.errors import ValidationError
from zixly.domain.metrics import METRIC_NAME

MAX_REPORTED_ERRORS = 1000
MAX_ID_LENGTH = 200
MAX_NAME_LENGTH = 200
MAX_LABEL_LENGTH = 100
MAX_UNIT_LENGTH = 40
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


class Kind(enum.Enum):
    FINANCIALS = "financials"
    LEAD_EVENTS = "lead-events"
    CUSTOM_METRICS = "custom-metrics"


@dataclass(frozen=True)
class FieldError:
    index: int | None  # None: the envelope
    field: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "message": self.message}


class IngestValidationError(ValidationError):
    """422: the batch was refused as a whole; ``errors`` says where and why."""

    http_status = 422

    def __init__(self, errors: list[FieldError], *, truncated: bool = False) -> None:
        count = f"{len(errors)}{'+' if truncated else ''}"
        super().__init__(f"the batch was rejected: {count} invalid value(s); nothing was written")
        self.errors = errors
        self.truncated = truncated


class _Errors:
    def __init__(self) -> None:
        self.found: list[FieldError] = []
        self.truncated = False

    def add(self, index: int | None, field: str, message: str) -> None:
        if len(self.found) < MAX_REPORTED_ERRORS:
            self.found.append(FieldError(index, field, message))
        else:
            self.truncated = True

    def raise_if_any(self) -> None:
        if self.found:
            raise IngestValidationError(self.found, truncated=self.truncated)


class _Bad(Exception):
    def __init__(self, message: str) -> None:
        self.message = message


# --- value parsers (raise _Bad) -----------------------------------------------------------------


def _text(max_length: int) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if type(value) is not str:
            raise _Bad("must be a string")
        if len(value) > max_length:
            raise _Bad(f"must be at most {max_length} characters")
        if not (value.isascii() and value.isprintable()) and _CONTROL.search(value):
            raise _Bad("must not contain control characters")
        if not value or value.isspace():
            raise _Bad("must not be empty")
        return value

    return parse


def _amount(column: tuple[int, int]) -> Callable[[Any], Decimal]:
    precision, scale = column

    def parse(value: Any) -> Decimal:
        number: Decimal
        kind = type(value)
        if kind is Decimal:  # a JSON number with a fraction (parse_float=Decimal)
            number = value
        elif kind is int:  # not bool: type() is exact
            number = Decimal(value)
        elif kind is str and len(value) <= 40 and "_" not in value:
            try:
                number = Decimal(value)
            except InvalidOperation:
                raise _Bad("must be a number") from None
        else:
            raise _Bad("must be a number")
        # The canonical text PostgreSQL gets: 0E+5000 or 1.000...0 (any number of zeros) are
        # valid amounts, but numeric input refuses exponents beyond 1000 and 16383 decimals.
        try:
            return fixed_point(number, precision=precision, scale=scale)
        except OutOfBounds as bad:
            raise _Bad(str(bad)) from None

    return parse


def _date(value: Any) -> str:
    """A calendar date, kept as its text: YYYY-MM-DD is canonical (one text per date)."""
    # fromisoformat alone would also take 20260301 and 2026-W09-7
    if type(value) is not str or len(value) != 10 or value[4] != "-" or value[7] != "-":
        raise _Bad("must be a date YYYY-MM-DD")
    try:
        parsed = dt.date.fromisoformat(value)
    except ValueError:
        raise _Bad(f"{value} is not a calendar date") from None
    try:
        check_date(parsed)
    except OutOfBounds as bad:
        raise _Bad(str(bad)) from None
    return value


def _instant(value: Any) -> dt.datetime:
    if not isinstance(value, str) or len(value) > 40 or not _ISO_INSTANT.match(value):
        raise _Bad("must be an ISO 8601 date-time with an offset, e.g. 2026-03-01T09:30:00+10:00")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise _Bad(f"{value} is not a valid date-time") from None
    if parsed.tzinfo is None:
        raise _Bad("must include a UTC offset (e.g. +10:00 or Z)")
    try:
        return check_instant(parsed)
    except OutOfBounds as bad:
        raise _Bad(str(bad)) from None


def _currency(value: Any) -> str:
    if value != CURRENCY:
        raise _Bad(f"only {CURRENCY} is accepted; convert amounts before sending")
    return CURRENCY


def _metric_name(value: Any) -> str:
    if not isinstance(value, str) or not METRIC_NAME.fullmatch(value):
        raise _Bad(
            "must be lower-case letters, digits and underscores, starting with a letter, at "
            "most 63 characters"
        )
    return value


_money = _amount(MONEY_COLUMN)
_metric_value = _amount(METRIC_COLUMN)
_id = _text(MAX_ID_LENGTH)
_name = _text(MAX_NAME_LENGTH)
_label = _text(MAX_LABEL_LENGTH)
_unit = _text(MAX_UNIT_LENGTH)


# --- records ------------------------------------------------------------------------------------

Fields = tuple[tuple[str, Callable[[Any], Any], bool], ...]  # (name, parser, required)

FINANCIAL_FIELDS: Fields = (
    ("client_id", _id, True),
    ("client_name", _name, False),
    ("record_date", _date, True),
    ("revenue", _money, True),
    ("expenses", _money, True),
    ("net_profit", _money, False),
    ("cash_flow", _money, False),
    ("currency", _currency, False),
    ("external_id", _id, False),
)
LEAD_EVENT_FIELDS: Fields = (
    ("client_id", _id, True),
    ("client_name", _name, False),
    ("lead_id", _id, True),
    ("stage", _label, True),
    ("status", _label, True),
    ("event_date", _instant, True),
    ("value", _money, False),
    ("external_id", _id, False),
)
CUSTOM_METRIC_FIELDS: Fields = (
    ("client_id", _id, True),
    ("client_name", _name, False),
    ("metric_name", _metric_name, True),
    ("metric_value", _metric_value, True),
    ("unit", _unit, False),
    ("record_date", _instant, True),
)
FIELDS: Mapping[Kind, Fields] = {
    Kind.FINANCIALS: FINANCIAL_FIELDS,
    Kind.LEAD_EVENTS: LEAD_EVENT_FIELDS,
    Kind.CUSTOM_METRICS: CUSTOM_METRIC_FIELDS,
}
# The columns the writer receives (besides client_id), in order.
COLUMNS: Mapping[Kind, tuple[str, ...]] = {
    Kind.FINANCIALS: (
        "record_date",
        "revenue",
        "expenses",
        "net_profit",
        "cash_flow",
        "currency",
        "external_id",
    ),
    Kind.LEAD_EVENTS: ("lead_id", "stage", "status", "event_date", "value", "external_id"),
    Kind.CUSTOM_METRICS: ("metric_name", "metric_value", "unit", "record_date"),
}
# Within one source system, what identifies a row (the table's natural key, client aside).
NATURAL_KEY: Mapping[Kind, tuple[str, ...]] = {
    Kind.FINANCIALS: ("record_date",),
    Kind.LEAD_EVENTS: ("lead_id", "stage", "event_date"),
    Kind.CUSTOM_METRICS: ("metric_name", "record_date"),
}


@dataclass
class Batch:
    """A validated request, as columns."""

    kind: Kind
    source_system: str
    workflow_id: str | None
    execution_id: str | None
    client_ids: Sequence[str] = ()
    # name -> values in record order: text, dates as YYYY-MM-DD, amounts as Decimal,
    # instants as UTC datetimes, None where absent
    columns: dict[str, Sequence[Any]] = field(default_factory=dict)
    # client_id -> its name in the batch (upserted), or None (it must exist already)
    clients: dict[str, str | None] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.client_ids)


def _record(
    index: int, record: Any, fields: Fields, allowed: frozenset[str], errors: _Errors
) -> dict[str, Any] | None:
    if type(record) is not dict:
        errors.add(index, "", "must be an object")
        return None
    values: dict[str, Any] = {}
    ok = True
    for name, parse, required in fields:
        raw = record.get(name)
        if raw is None:
            if required:
                errors.add(index, name, "is required")
                ok = False
            values[name] = None
            continue
        try:
            values[name] = parse(raw)
        except _Bad as bad:
            errors.add(index, name, bad.message)
            ok = False
    if not record.keys() <= allowed:
        for name in sorted(set(record) - allowed):
            errors.add(index, str(name)[:MAX_LABEL_LENGTH], "unknown field")
        ok = False
    return values if ok else None


def _financial(index: int, values: dict[str, Any], errors: _Errors) -> bool:
    expected = values["revenue"] - values["expenses"]
    if values["net_profit"] is None:
        values["net_profit"] = expected
    elif values["net_profit"] != expected:
        errors.add(
            index,
            "net_profit",
            f"must equal revenue - expenses ({expected}), not {values['net_profit']}",
        )
        return False
    if values["cash_flow"] is None:
        values["cash_flow"] = values["net_profit"]
    values["currency"] = CURRENCY
    return True


def _envelope_text(
    body: Mapping[str, Any], name: str, errors: _Errors, *, required: bool
) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            errors.add(None, name, "is required")
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # n8n ids are numeric strings; accept them as numbers too
    try:
        return _label(value)
    except _Bad as bad:
        errors.add(None, name, bad.message)
        return None


ENVELOPE_FIELDS = frozenset({"workflow_id", "execution_id", "source_system", "records"})


def validate(kind: Kind, body: Any, *, max_records: int) -> Batch:
    """The request body as a ``Batch``, or IngestValidationError naming every problem.

    ``max_records`` is checked by the caller first (a 413, not a 422)."""
    errors = _Errors()
    if not isinstance(body, dict):
        errors.add(None, "body", "must be a JSON object")
        errors.raise_if_any()
    for name in sorted(set(body) - ENVELOPE_FIELDS):
        errors.add(None, str(name)[:MAX_LABEL_LENGTH], "unknown field")
    source = _envelope_text(body, "source_system", errors, required=True)
    if source is not None and not SOURCE_SYSTEM.match(source):
        errors.add(
            None,
            "source_system",
            "must be lower-case letters, digits, '_', '.' or '-', starting with a letter, at "
            "most 40 characters",
        )
    elif source in RESERVED_SOURCES:
        errors.add(None, "source_system", f"{source!r} is reserved for values entered in Zixly")
    batch = Batch(
        kind,
        source or "",
        _envelope_text(body, "workflow_id", errors, required=False),
        _envelope_text(body, "execution_id", errors, required=False),
    )
    records = body.get("records")
    if not isinstance(records, list):
        errors.add(None, "records", "must be an array of records")
        errors.raise_if_any()
    assert isinstance(records, list)
    if len(records) > max_records:  # the endpoint answers 413 before; a safety net here
        errors.add(None, "records", f"at most {max_records} records per request")
        errors.raise_if_any()

    fields = FIELDS[kind]
    allowed = frozenset(name for name, _, _ in fields)
    names = COLUMNS[kind]
    key_names = NATURAL_KEY[kind]
    key_of = itemgetter("client_id", *key_names)
    row_of = itemgetter("client_id", *names)
    rows: list[tuple[Any, ...]] = []
    seen: dict[tuple[Any, ...], int] = {}
    named: dict[str, tuple[str, int]] = {}
    clients = batch.clients
    financials = kind is Kind.FINANCIALS
    for index, record in enumerate(records):
        values = _record(index, record, fields, allowed, errors)
        if values is None:
            continue
        if financials and not _financial(index, values, errors):
            continue
        key = key_of(values)
        first = seen.setdefault(key, index)
        if first != index:
            errors.add(
                index,
                key_names[-1],
                f"repeats record {first}: same client_id and {', '.join(key_names)}",
            )
            continue
        client_id = values["client_id"]
        name = values["client_name"]
        if name is not None:
            earlier = named.setdefault(client_id, (name, index))
            if earlier[0] != name:
                errors.add(
                    index,
                    "client_name",
                    f"differs from record {earlier[1]}'s name for the same client_id",
                )
                continue
            clients[client_id] = name
        elif client_id not in clients:
            clients[client_id] = None
        if not errors.found:  # once the batch is refused, only keep checking
            rows.append(row_of(values))
    errors.raise_if_any()
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in range(len(names) + 1)]
    batch.client_ids = columns[0]
    batch.columns = dict(zip(names, columns[1:], strict=True))
    return batch


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(body: bytes) -> Any:
    """JSON with every non-integer number as ``Decimal``; NaN and Infinity refused."""
    return json.loads(body, parse_float=Decimal, parse_constant=_no_constants)
