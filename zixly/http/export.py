"""CSV export of financials, streamed from a server-side cursor.

``GET /export/financials.csv?start=YYYY-MM-DD&end=YYYY-MM-DD[&clientId=<client id>]``

Authentication and the rate limit are the middleware's (as for /graphql). The query runs in
one tenant-scoped transaction that stays open while the response streams; the first batch
is read before the response starts, so a failing query still gets a JSON error and status.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Annotated, Any

import pydantic
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from zixly.container import Services
from zixly.core.errors import AuthenticationError, ValidationError, ZixlyError
from zixly.core.logging import get_logger
from zixly.core.outages import unavailable
from zixly.db.session import UnitOfWork
from zixly.domain.financials import FinancialRepository
from zixly.domain.ids import optional_id
from zixly.domain.ranges import DateRange
from zixly.http.middleware import error_response
from zixly.security.principal import Principal, Role

log = get_logger("zixly.export")

HEADER = (
    "record_date",
    "client_id",
    "client_name",
    "revenue",
    "expenses",
    "net_profit",
    "cash_flow",
    "currency",
    "source_system",
)
BATCH_SIZE = 1000
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# A spreadsheet treats a cell starting with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """Neutralise text a spreadsheet would evaluate. Numbers and dates are ours, left as is
    (a negative amount must stay a number)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _date(name: str) -> Callable[[Any], dt.date]:
    def parse(value: Any) -> dt.date:
        if not value:
            raise ValidationError(f"{name} is required (YYYY-MM-DD)", field=name)
        try:
            if not isinstance(value, str) or not _ISO_DATE.match(value):
                raise ValueError(value)
            return dt.date.fromisoformat(value)
        except ValueError as exc:
            raise ValidationError(f"{name} is not a valid date (YYYY-MM-DD)", field=name) from exc

    return parse


class ExportQuery(BaseModel):
    """The query of ``GET /export/financials.csv`` (/openapi.json documents it from here).

    Its validators raise Zixly's typed ``ValidationError`` (400, with the parameter as
    ``field``), which pydantic passes through; other parameters are ignored."""

    model_config = ConfigDict(extra="ignore")

    start: Annotated[dt.date, BeforeValidator(_date("start"))] = Field(
        description="the first day, YYYY-MM-DD"
    )
    end: Annotated[dt.date, BeforeValidator(_date("end"))] = Field(
        description="the last day, YYYY-MM-DD (the range includes it)"
    )
    clientId: Annotated[
        uuid.UUID | None, BeforeValidator(lambda value: optional_id(value, "clientId"))
    ] = Field(None, description="only this client (its id, as in GraphQL)")

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> ExportQuery:
        try:
            return cls.model_validate(dict(params))
        except pydantic.ValidationError as error:
            name = str(error.errors()[0]["loc"][0])  # the first missing date
            raise ValidationError(f"{name} is required (YYYY-MM-DD)", field=name) from None


def _csv_chunk(rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerows([safe_cell(value) for value in row] for row in rows)
    return buffer.getvalue()


async def export_financials_csv(request: Request) -> Response:
    services: Services = request.app.state.services
    state: dict[str, Any] = request.scope.get("state", {})
    request_id: str = state.get("request_id", "")
    principal: Principal | None = state.get("principal")
    try:
        if principal is None:  # the middleware authenticates every /export/ request
            raise AuthenticationError("missing bearer token")
        tenant_id = principal.require_role(Role.VIEWER)
        query = ExportQuery.parse(request.query_params)
        date_range = DateRange.checked(
            query.start, query.end, max_days=services.settings.max_range_days
        )
        client_id = query.clientId
    except ZixlyError as error:
        return error_response(error, request_id)

    stack = AsyncExitStack()
    try:
        uow: UnitOfWork = state["uow"]  # opened, tenant-scoped, by authentication
        # A heavy report: the longer statement timeout, for this transaction only.
        timeout = services.settings.report_statement_timeout_ms
        session = await stack.enter_async_context(uow.session(statement_timeout_ms=timeout))
        result = await FinancialRepository(session, tenant_id).stream_for_export(
            date_range, client_id, batch_size=BATCH_SIZE
        )
        partitions = result.partitions()
        first: Sequence[Any] = await anext(partitions, [])
    except Exception as exc:
        await stack.aclose()
        typed = exc if isinstance(exc, ZixlyError) else unavailable(exc)
        if typed is not None:  # a timeout, no connection in time, over the caps...
            log.warning("export.unavailable", code=typed.code, cause=repr(exc.__cause__ or exc))
            return error_response(typed, request_id)
        log.error("export.failed", error=repr(exc), exc_info=exc)
        return error_response(
            ZixlyError(f"Unexpected error (request id {request_id})."), request_id
        )

    async def body() -> AsyncIterator[str]:
        try:
            yield _csv_chunk([HEADER, *first])
            async for partition in partitions:
                yield _csv_chunk(partition)
        except Exception as exc:
            # The status is sent already: abort the stream so the client sees a broken
            # download, never a CSV that merely looks complete.
            log.error("export.failed_midstream", error=repr(exc), exc_info=exc)
            raise
        finally:
            await stack.aclose()

    filename = f"financials_{date_range.start.isoformat()}_{date_range.end.isoformat()}.csv"
    return StreamingResponse(
        body(),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
        # Closes the transaction if the body was never iterated (client went away first).
        background=BackgroundTask(stack.aclose),
    )
