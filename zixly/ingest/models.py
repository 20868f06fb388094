"""The ingest request as pydantic models: what validates a body and what /openapi.json says.

One type per kind of value (an id, a name, an amount, a date, an instant...): text is
checked by pydantic itself (``StringConstraints``), the others by a parser of
``zixly.ingest.values`` carried with the JSON schema of what it takes, made from the same
limits (``Checked``); the record models list which fields a record has and which are required, and
forbid any other. ``zixly.ingest.records`` runs them (and the checks across records), and
``zixly.http.openapi`` publishes ``model_json_schema()`` of the same classes.

A value of ``null`` is the same as leaving an optional field out; for a required field it
is "is required". Unknown keys are named by ``records`` before a model sees the record
(a key may hold a lone surrogate, which pydantic cannot report by name).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StringConstraints,
    model_validator,
)
from pydantic_core import PydanticCustomError, core_schema

from zixly.core.bounds import DATE_RANGE_TEXT
from zixly.ingest import values as v

JsonSchema = dict[str, Any]
NULL: JsonSchema = {"type": "null"}


def refused(field: str, message: str) -> PydanticCustomError:
    """An error for ``field`` raised by a check across fields (its own ``loc`` is the
    record's); ``records`` reads the field from the context."""
    return PydanticCustomError("zixly", message, {"field": field})


@dataclass(frozen=True)
class Checked:
    """A field's validator (``parse``, raising ``values.Bad``) and its JSON schema."""

    parse: Callable[[Any], Any]
    schema: JsonSchema
    required: bool = True

    def __get_pydantic_core_schema__(
        self, _source: Any, _handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        # ``parse`` raises ``values.Bad`` (a ValueError): pydantic reports it as a
        # value_error whose message ``records`` takes as it is. Null is checked in pydantic.
        checked = core_schema.no_info_plain_validator_function(self.parse)
        return checked if self.required else core_schema.nullable_schema(checked)

    def __get_pydantic_json_schema__(
        self, _schema: core_schema.CoreSchema, _handler: GetJsonSchemaHandler
    ) -> JsonSchema:
        return dict(self.schema) if self.required else {"anyOf": [self.schema, NULL]}


def _amount_schema(column: tuple[int, int]) -> JsonSchema:
    precision, scale = column
    what = (
        f"a JSON number or a numeric string (no exponent needed), finite, below "
        f"10^{precision - scale} in magnitude, at most {scale} decimal places; stored exactly"
    )
    return {
        "anyOf": [
            {
                "type": "number",
                "exclusiveMinimum": -(10 ** (precision - scale)),
                "exclusiveMaximum": 10 ** (precision - scale),
            },
            {"type": "string", "maxLength": v.MAX_NUMERIC_TEXT},
        ],
        "description": what,
    }


DATE: JsonSchema = {
    "type": "string",
    "format": "date",
    "description": f"a calendar date YYYY-MM-DD {DATE_RANGE_TEXT}",
}
INSTANT: JsonSchema = {
    "type": "string",
    "format": "date-time",
    "maxLength": 40,
    "description": f"ISO 8601 with a UTC offset, {DATE_RANGE_TEXT} (UTC); stored in UTC",
}


def _text(max_length: int) -> StringConstraints:
    """Checked by pydantic itself: a string, at most ``max_length`` characters, no control
    character, not only spaces (``values.text_message`` words its errors as ``values.text``)."""
    return StringConstraints(
        strict=True, min_length=1, max_length=max_length, pattern=v.TEXT_PATTERN
    )


ID = _text(v.MAX_ID_LENGTH)
NAME = _text(v.MAX_NAME_LENGTH)
LABEL = _text(v.MAX_LABEL_LENGTH)
UNIT = _text(v.MAX_UNIT_LENGTH)
MONEY = _amount_schema(v.MONEY_COLUMN)
METRIC_VALUE = _amount_schema(v.METRIC_COLUMN)
CURRENCY: JsonSchema = {"const": v.CURRENCY, "description": "only AUD; convert before sending"}
METRIC_NAME: JsonSchema = {"type": "string", "pattern": v.METRIC_NAME.pattern}
SOURCE_SYSTEM: JsonSchema = {
    "type": "string",
    "pattern": v.SOURCE_SYSTEM.pattern,
    "not": {"enum": sorted(v.RESERVED_SOURCES)},
    "description": "the system the data comes from (xero, hubspot...); 'manual' is reserved",
}
ENVELOPE_LABEL: JsonSchema = {
    "anyOf": [
        {
            "type": "string",
            "minLength": 1,
            "maxLength": v.MAX_LABEL_LENGTH,
            "pattern": v.TEXT_PATTERN,
        },
        {"type": "integer"},
    ],
    "description": "n8n's id (a number is taken as its text)",
}

ClientId = Annotated[str, ID]
ClientName = Annotated[str | None, NAME]
Id = Annotated[str, ID]
ExternalId = Annotated[str | None, ID]
Label = Annotated[str, LABEL]
Money = Annotated[Decimal, Checked(v.money, MONEY)]
OptionalMoney = Annotated[Decimal | None, Checked(v.money, MONEY, required=False)]
Date = Annotated[str, Checked(v.date, DATE)]
Instant = Annotated[dt.datetime, Checked(v.instant, INSTANT)]
Currency = Annotated[str | None, Checked(v.currency, CURRENCY, required=False)]
MetricName = Annotated[str, Checked(v.metric_name, METRIC_NAME)]
MetricValue = Annotated[Decimal, Checked(v.metric_value, METRIC_VALUE)]
Unit = Annotated[str | None, UNIT]
SourceSystem = Annotated[str, Checked(v.source_system, SOURCE_SYSTEM)]
EnvelopeLabel = Annotated[str | None, Checked(v.envelope_label, ENVELOPE_LABEL, required=False)]
RecordList = Annotated[list[Any], Checked(v.record_list, {"type": "array"})]


class IngestModel(BaseModel):
    # Forbidden here too, so the schema says so (``records`` names them first).
    model_config = ConfigDict(extra="forbid", frozen=False, revalidate_instances="never")


class FinancialRecord(IngestModel):
    """One day of a client's profit and loss (``POST /ingest/v1/financials``); natural key:
    client_id and record_date (within the source system)."""

    client_id: ClientId = Field(description="the client's id in the source system")
    client_name: ClientName = Field(
        None, description="creates or renames the client; required for a client new to Zixly"
    )
    record_date: Date
    revenue: Money
    expenses: Money
    net_profit: OptionalMoney = Field(None, description="revenue - expenses to the cent if given")
    cash_flow: OptionalMoney = Field(None, description="net_profit when left out")
    currency: Currency = None
    external_id: ExternalId = None

    @model_validator(mode="after")
    def _profit(self) -> FinancialRecord:
        values = self.__dict__
        expected = values["revenue"] - values["expenses"]
        given = values["net_profit"]
        if given is None:
            values["net_profit"] = expected
        elif given != expected:
            raise refused("net_profit", f"must equal revenue - expenses ({expected}), not {given}")
        if values["cash_flow"] is None:
            values["cash_flow"] = values["net_profit"]
        values["currency"] = v.CURRENCY
        return self


class LeadEventRecord(IngestModel):
    """A deal or lead reaching a stage (``POST /ingest/v1/lead-events``); natural key:
    client_id, lead_id, stage and event_date (the same instant in any offset)."""

    client_id: ClientId
    client_name: ClientName = None
    lead_id: Id
    stage: Label
    status: Label
    event_date: Instant
    value: OptionalMoney = None
    external_id: ExternalId = None


class CustomMetricRecord(IngestModel):
    """A named measurement (``POST /ingest/v1/custom-metrics``); natural key: client_id,
    metric_name and record_date (an instant)."""

    client_id: ClientId
    client_name: ClientName = None
    metric_name: MetricName
    metric_value: MetricValue
    unit: Unit = None
    record_date: Instant


class Envelope(IngestModel):
    """The body of every ingest request, its records aside (validated one by one when
    the batch is refused, so that every bad record is named)."""

    source_system: SourceSystem
    workflow_id: EnvelopeLabel = None
    execution_id: EnvelopeLabel = None
    records: RecordList


class FinancialsRequest(Envelope):
    records: list[FinancialRecord]


class LeadEventsRequest(Envelope):
    records: list[LeadEventRecord]


class CustomMetricsRequest(Envelope):
    records: list[CustomMetricRecord]


class IngestResult(BaseModel):
    """The answer to a batch that was written (or that changed nothing)."""

    kind: str = Field(description="financials, lead-events or custom-metrics")
    received: int = Field(ge=0)
    inserted: int = Field(ge=0)
    updated: int = Field(ge=0)
    unchanged: int = Field(ge=0)


class HeartbeatRequest(BaseModel):
    """``POST /ingest/v1/heartbeat``: an empty body, or an object that may name the tenant."""

    model_config = ConfigDict(extra="allow")
    tenant: str | None = Field(None, description="if given, the token's tenant id")


class HeartbeatResult(BaseModel):
    status: str = Field(description='"ok"')
    tenant: str = Field(description="the token's tenant slug")


RECORD_MODELS: Mapping[str, type[IngestModel]] = {
    "financials": FinancialRecord,
    "lead-events": LeadEventRecord,
    "custom-metrics": CustomMetricRecord,
}
REQUEST_MODELS: Mapping[str, type[Envelope]] = {
    "financials": FinancialsRequest,
    "lead-events": LeadEventsRequest,
    "custom-metrics": CustomMetricsRequest,
}
