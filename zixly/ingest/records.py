"""Validating an ingest request: the envelope and every record, before anything is written.

The fields and their checks are the pydantic models of ``zixly.ingest.models`` (the same
ones /openapi.json publishes). A batch is validated by its request model in one call; only
when that refuses it (or a record has an unknown field) are the envelope and each record
validated again one by one, so that every bad record is named.

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

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from operator import itemgetter
from typing import Any

import pydantic
from pydantic import StringConstraints
from pydantic_core import ErrorDetails

from zixly.core.errors import ValidationError
from zixly.ingest.models import RECORD_MODELS, REQUEST_MODELS, Envelope, IngestModel
from zixly.ingest.values import MAX_LABEL_LENGTH, Bad, text_message

MAX_REPORTED_ERRORS = 1000


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

    def unknown(self, index: int | None, names: set[Any]) -> None:
        for name in sorted(names, key=str):
            self.add(index, str(name)[:MAX_LABEL_LENGTH], "unknown field")

    def refused(self, index: int | None, error: pydantic.ValidationError) -> None:
        """The model's errors, in field order, with the messages of ``zixly.ingest.values``."""
        details: ErrorDetails
        for details in error.errors(include_url=False):
            loc = details["loc"]
            context = details.get("ctx") or {}
            name = str(context.get("field", loc[0] if loc else ""))
            kind = details["type"]
            value = details["input"]
            if kind == "missing" or value is None:  # a null optional field passes as absent
                message = _WHEN_ABSENT.get(name, "is required")
            elif kind in ("model_type", "model_attributes_type", "dict_type"):
                message = "must be an object"
            elif isinstance(context.get("error"), Bad):
                message = context["error"].message
            elif kind == "string_unicode" and len(value) > _MAX_LENGTH.get(name, len(value)):
                message = f"must be at most {_MAX_LENGTH[name]} characters"
            else:
                message = text_message(kind, context, value) or details["msg"]
            self.add(index, name, message)

    def raise_if_any(self) -> None:
        if self.found:
            raise IngestValidationError(self.found, truncated=self.truncated)


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
ENVELOPE_FIELDS = frozenset(Envelope.model_fields)
_WHEN_ABSENT = {"records": "must be an array of records"}
# A text field's length, to word an error about a too long string that is no Unicode
# either as ``values.text`` does (the length first).
_MAX_LENGTH = {
    name: constraint.max_length
    for model in RECORD_MODELS.values()
    for name, info in model.model_fields.items()
    for constraint in info.metadata
    if isinstance(constraint, StringConstraints) and constraint.max_length is not None
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


def _all_known(records: list[Any], allowed: frozenset[str]) -> bool:
    return all(type(record) is dict and record.keys() <= allowed for record in records)


def _one_by_one(
    kind: Kind, body: dict[str, Any], errors: _Errors
) -> tuple[Envelope | None, list[IngestModel | None]]:
    """The slow path: the envelope and each record on their own, every problem recorded."""
    errors.unknown(None, set(body) - ENVELOPE_FIELDS)
    envelope: Envelope | None = None
    try:
        envelope = Envelope.model_validate({k: body[k] for k in body if k in ENVELOPE_FIELDS})
    except pydantic.ValidationError as error:
        errors.refused(None, error)
    records = body.get("records")
    if not isinstance(records, list):
        errors.raise_if_any()
    assert isinstance(records, list)
    model = RECORD_MODELS[kind.value]
    allowed = frozenset(model.model_fields)
    validated: list[IngestModel | None] = []
    for index, record in enumerate(records):
        unknown = set(record) - allowed if type(record) is dict else set()
        if unknown:
            record = {k: record[k] for k in record if k in allowed}
        try:
            validated.append(model.model_validate(record))
        except pydantic.ValidationError as error:
            errors.refused(index, error)
            validated.append(None)
        if unknown:
            errors.unknown(index, unknown)
            validated[-1] = None
    return envelope, validated


def validate(kind: Kind, body: Any, *, max_records: int) -> Batch:
    """The request body as a ``Batch``, or IngestValidationError naming every problem.

    ``max_records`` is checked by the caller first (a 413, not a 422)."""
    errors = _Errors()
    if not isinstance(body, dict):
        errors.add(None, "body", "must be a JSON object")
        errors.raise_if_any()
    records = body.get("records")
    if isinstance(records, list) and len(records) > max_records:  # the endpoint answers 413
        errors.add(None, "records", f"at most {max_records} records per request")
        errors.raise_if_any()
    model = RECORD_MODELS[kind.value]
    envelope: Envelope | None = None
    validated: Sequence[IngestModel | None] = ()
    if body.keys() <= ENVELOPE_FIELDS and isinstance(records, list):
        if _all_known(records, frozenset(model.model_fields)):
            try:
                envelope = REQUEST_MODELS[kind.value].model_validate(body)
                validated = envelope.records
            except pydantic.ValidationError:
                envelope = None
    if envelope is None:
        envelope, validated = _one_by_one(kind, body, errors)
    batch = Batch(
        kind,
        envelope.source_system if envelope else "",
        envelope.workflow_id if envelope else None,
        envelope.execution_id if envelope else None,
    )
    return _across_records(batch, validated, errors)


def _across_records(
    batch: Batch, validated: Sequence[IngestModel | None], errors: _Errors
) -> Batch:
    """One record per natural key, one name per client; the columns for the writer."""
    kind = batch.kind
    names = COLUMNS[kind]
    key_names = NATURAL_KEY[kind]
    key_of = itemgetter("client_id", *key_names)
    row_of = itemgetter("client_id", *names)
    rows: list[tuple[Any, ...]] = []
    seen: dict[tuple[Any, ...], int] = {}
    named: dict[str, tuple[str, int]] = {}
    clients = batch.clients
    for index, record in enumerate(validated):
        if record is None:
            continue
        values = record.__dict__
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
