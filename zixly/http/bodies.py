"""The JSON bodies of the REST answers, as pydantic models for /openapi.json.

The request models are the ones that validate (``zixly.ingest.models``); these describe
what the endpoints answer: the two error formats (``middleware.error_response``, the
GraphQL-style one of /graphql, /export, /metrics and the editor; ``ingest.error_response``,
the flat one of the ingest endpoint) and the health answers. Schemathesis checks in CI that
every answer conforms (tests/test_openapi.py).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ErrorExtensions(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str = Field(
        description="UNAUTHENTICATED, FORBIDDEN, TENANT_REQUIRED, NOT_FOUND, VALIDATION_ERROR, "
        "BAD_REQUEST, RATE_LIMITED, UNAVAILABLE, QUERY_TIMEOUT, BLOCKED, INTERNAL..."
    )
    requestId: str = Field(description="the X-Request-ID of the answer; the log line has it too")
    field: str | None = Field(None, description="the parameter at fault (VALIDATION_ERROR)")
    retry_after: float | None = Field(None, description="seconds (also in Retry-After)")


class ErrorItem(BaseModel):
    message: str
    extensions: ErrorExtensions


class ErrorBody(BaseModel):
    """Every error of /export, /metrics and /editor (and of /graphql before GraphQL runs)."""

    errors: list[ErrorItem] = Field(min_length=1, max_length=1)


class IngestFieldError(BaseModel):
    index: int | None = Field(description="the record's position in records; null: the envelope")
    field: str = Field(description='the field ("" for a record that is not an object)')
    message: str


class IngestErrorBody(BaseModel):
    """Every error of the ingest endpoint."""

    model_config = ConfigDict(extra="allow")

    code: str = Field(
        description="VALIDATION_ERROR, PAYLOAD_TOO_LARGE, UNAUTHENTICATED, RATE_LIMITED, "
        "NOT_FOUND, METHOD_NOT_ALLOWED, UNAVAILABLE, INTERNAL"
    )
    message: str
    requestId: str
    field: str | None = Field(None, description="400: what could not be read (body)")
    errors: list[IngestFieldError] | None = Field(
        None, description="422: every invalid value (the first 1000), nothing was written"
    )
    truncated: bool | None = Field(None, description="422: more errors than listed")
    received: int | None = Field(None, description="422: records in the refused batch")
    max_bytes: int | None = Field(None, description="413: the body limit")
    max_records: int | None = Field(None, description="413: the record limit")
    retry_after: float | None = None
    retryable: bool | None = None


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, str] = Field(
        description='database and redis: "ok" or "unavailable: <exception type>"'
    )
