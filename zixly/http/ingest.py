"""The ingest endpoint: what tenants' n8n workflows post their data to.

    POST /ingest/v1/financials | /ingest/v1/lead-events | /ingest/v1/custom-metrics
    POST /ingest/v1/heartbeat
    Authorization: Bearer zik_...      (an ingest token, zixly/ingest/tokens.py)

Plain REST with JSON, not GraphQL: see docs/decisions.md ("Ingest is REST"). The body is
``{"workflow_id", "execution_id", "source_system", "records": [...]}``; the answer is
``{"kind", "received", "inserted", "updated", "unchanged"}``. Every error is JSON
``{"code", "message", "requestId", ...}``: 401 with an RFC 6750 challenge, 413 over the
size or record limit, 422 with ``errors: [{index, field, message}]`` (nothing written),
429 with Retry-After, 503 when the database is unavailable; anything unexpected is masked
to its request id (and logged in full).

Order of work, cheapest refusal first: the declared size; the client address's
failed-authentication window (shared with /graphql: bad ingest tokens count toward it);
the token (format, then its digest looked up; nothing else about it is compared); the
tenant's ingest rate limit; then the body is read (bounded), parsed and validated, and
written in one transaction with the tenant set (row-level security). Large bodies are
parsed and validated in a worker thread so the event loop keeps serving other requests.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pydantic
import structlog
from prometheus_client import Counter
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from zixly.container import Services
from zixly.core.errors import (
    AuthenticationError,
    NotFoundError,
    RateLimitedError,
    UnavailableError,
    ValidationError,
    ZixlyError,
)
from zixly.core.logging import get_logger
from zixly.core.metrics import REGISTRY
from zixly.core.outages import unavailable
from zixly.db.session import Scope
from zixly.ingest.models import HeartbeatRequest
from zixly.ingest.records import IngestValidationError, Kind, parse_json, validate
from zixly.ingest.tokens import IngestPrincipal, resolve, touch, well_formed
from zixly.ingest.writer import BatchWriter, WriteResult
from zixly.security.authenticator import MalformedCredentials, MissingCredentials
from zixly.security.ratelimit import Decision

log = get_logger("zixly.ingest")

PREFIX = "/ingest/v1"
REALM = "zixly-ingest"
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]  # all but POST get a typed 405
HEARTBEAT_MAX_BYTES = 64 * 1024
THREAD_THRESHOLD_BYTES = 64 * 1024  # parse and validate bigger bodies off the event loop
LARGE_PARSES_AT_ONCE = 2
_TIMEOUT = text("SELECT set_config('statement_timeout', :timeout, true)")
# statement timeout, deadlock, serialisation failure: worth sending the same batch again
RETRYABLE_SQLSTATES = frozenset({"57014", "40P01", "40001"})

INGEST_ROWS = Counter(
    "zixly_ingest_rows_total",
    "Ingested records by kind and outcome: inserted, updated, unchanged, or rejected "
    "(in a batch refused as a whole).",
    ["kind", "outcome"],
    registry=REGISTRY,
)


class PayloadTooLargeError(ZixlyError):
    code = "PAYLOAD_TOO_LARGE"
    http_status = 413


class InvalidIngestToken(AuthenticationError):
    bearer_error: str | None = "invalid_token"


def _challenge(error: ZixlyError) -> str:
    bearer_error = getattr(error, "bearer_error", "invalid_token")
    if bearer_error is None:
        return f'Bearer realm="{REALM}"'
    return f'Bearer realm="{REALM}", error="{bearer_error}"'


class ErrorJSONResponse(JSONResponse):
    """JSON with everything beyond ASCII escaped. A 422 quotes the request's own text (an
    unknown field's name, a value that is no date), which may hold a lone surrogate: valid
    in a JSON ``\\u`` escape, impossible to encode as UTF-8."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")


def error_response(
    error: ZixlyError, request_id: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {
        "code": error.code,
        "message": error.message,
        "requestId": request_id,
        **{k: v for k, v in error.details.items() if k not in ("code", "message", "requestId")},
    }
    if isinstance(error, IngestValidationError):
        body["errors"] = [e.as_dict() for e in error.errors]
        body["truncated"] = error.truncated
    all_headers = {**error.headers(), **(headers or {})}
    if error.http_status == 401:
        all_headers["WWW-Authenticate"] = _challenge(error)
    return ErrorJSONResponse(body, status_code=error.http_status, headers=all_headers)


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise MissingCredentials("missing ingest token: send 'Authorization: Bearer zik_...'")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise MalformedCredentials("malformed Authorization header: expected 'Bearer zik_...'")
    return token


class _Refused(Exception):
    """An answer decided before the work: ``response`` is sent as it is."""

    def __init__(self, response: Response) -> None:
        self.response = response


class IngestEndpoint:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.settings = services.settings
        self.guard = services.guard
        # Parsing JSON costs many times its size in memory (an 8 MiB body of empty objects
        # peaks near 200 MB): large bodies are parsed a few at a time, the rest wait.
        self._large_parses = asyncio.Semaphore(LARGE_PARSES_AT_ONCE)

    # --- routes ---------------------------------------------------------------------------------

    async def records(self, request: Request) -> Response:
        request_id = _request_id(request)
        if request.method != "POST":
            return _method_not_allowed(request_id)
        try:
            kind = Kind(request.path_params["kind"])
        except ValueError:
            kinds = ", ".join(k.value for k in Kind)
            return error_response(
                NotFoundError(f"no ingest kind {request.path_params['kind']!r}; one of {kinds}"),
                request_id,
            )
        return await self._guarded(request, request_id, kind)

    async def heartbeat(self, request: Request) -> Response:
        if request.method != "POST":
            return _method_not_allowed(_request_id(request))
        return await self._guarded(request, _request_id(request), None)

    # --- the work -------------------------------------------------------------------------------

    async def _guarded(self, request: Request, request_id: str, kind: Kind | None) -> Response:
        started = time.perf_counter()
        try:
            principal, limits = await self._admit(request, kind)
            if kind is None:
                response = await self._heartbeat(request, principal)
            else:
                response = await self._ingest(request, principal, kind, started)
            response.headers.update(limits)
            return response
        except _Refused as refused:
            return refused.response
        except IngestValidationError as error:
            if kind is not None:
                INGEST_ROWS.labels(kind.value, "rejected").inc(error.details.get("received", 0))
            log.info("ingest.rejected", kind=kind and kind.value, errors=len(error.errors))
            return error_response(error, request_id)
        except ZixlyError as error:
            if error.http_status >= 500:
                log.warning("ingest.unavailable", reason=error.message, cause=repr(error.__cause__))
            else:
                log.info("ingest.refused", code=error.code, reason=error.message)
            return error_response(error, request_id)
        except Exception as exc:
            typed = unavailable(exc)  # no pooled connection in time, Redis down...
            if typed is not None:
                log.warning("ingest.unavailable", reason=typed.message, cause=repr(exc))
                return error_response(typed, request_id)
            log.error("ingest.unexpected_error", error=repr(exc), exc_info=exc)
            return error_response(
                ZixlyError(f"Unexpected error (request id {request_id})."), request_id
            )

    async def _admit(
        self, request: Request, kind: Kind | None
    ) -> tuple[IngestPrincipal, dict[str, str]]:
        """Size, address, token, rate limit: who this is, and the rate-limit headers."""
        request_id = _request_id(request)
        limit = self._max_bytes(kind)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise PayloadTooLargeError(
                f"the request body is larger than {limit} bytes", max_bytes=limit
            )
        address = request.client.host if request.client else "unknown"
        authorization = request.headers.get("authorization")
        blocked = await self.guard.address_blocked(address, authorization)
        if blocked is not None:
            raise _Refused(
                self._rate_limited(
                    "auth_failures",
                    address,
                    blocked,
                    request_id,
                    "too many failed authentications with these credentials",
                )
            )
        try:
            principal = await self._authenticate(authorization)
        except AuthenticationError as error:
            await self.guard.record_auth_failure(address, authorization, error)
            raise
        structlog.contextvars.bind_contextvars(tenant_id=str(principal.tenant_id))
        decision = await self.guard.admit_ingest(f"tenant:{principal.tenant_id}")
        if decision is not None and not decision.allowed:
            raise _Refused(
                self._rate_limited(
                    "ingest",
                    f"tenant:{principal.tenant_id}",
                    decision,
                    request_id,
                    f"ingest rate limit of {decision.limit} requests per "
                    f"{self.settings.rate_limit_window_seconds}s exceeded",
                )
            )
        return principal, decision.headers() if decision is not None else {}

    async def _authenticate(self, authorization: str | None) -> IngestPrincipal:
        token = _bearer(authorization)
        if not well_formed(token):
            raise InvalidIngestToken("not an ingest token (expected zik_ and 43 characters)")
        try:
            async with self.services.db.transaction(Scope.system()) as session:
                principal = await resolve(session, token)
        except (OperationalError, InterfaceError, OSError) as exc:
            raise UnavailableError("the database is unavailable; try again shortly") from exc
        if principal is None:
            raise InvalidIngestToken("unknown, revoked or expired ingest token")
        return principal

    def _rate_limited(
        self, limit: str, key: str, decision: Decision, request_id: str, message: str
    ) -> Response:
        self.guard.rejected(limit, key)
        error = RateLimitedError(
            f"{message}; retry after {decision.retry_after_seconds}s",
            retry_after=decision.retry_after_seconds,
        )
        return error_response(error, request_id, decision.headers())

    def _max_bytes(self, kind: Kind | None) -> int:
        return HEARTBEAT_MAX_BYTES if kind is None else self.settings.ingest_max_body_bytes

    async def _body(self, request: Request, limit: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLargeError(
                    f"the request body is larger than {limit} bytes", max_bytes=limit
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _parse(self, body: bytes, kind: Kind) -> Any:
        try:
            parsed = parse_json(body)
        except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError included
            raise ValidationError(f"the body is not valid JSON: {exc}", field="body") from None
        except RecursionError:
            raise ValidationError("the body is nested too deeply", field="body") from None
        records = parsed.get("records") if isinstance(parsed, dict) else None
        maximum = self.settings.ingest_max_records
        if isinstance(records, list) and len(records) > maximum:
            raise PayloadTooLargeError(
                f"{len(records)} records; at most {maximum} per request", max_records=maximum
            )
        try:
            return validate(kind, parsed, max_records=maximum)
        except IngestValidationError as error:
            error.details["received"] = len(records) if isinstance(records, list) else 0
            raise

    async def _ingest(
        self, request: Request, principal: IngestPrincipal, kind: Kind, started: float
    ) -> Response:
        body = await self._body(request, self.settings.ingest_max_body_bytes)
        received = time.perf_counter()
        if len(body) > THREAD_THRESHOLD_BYTES:
            async with self._large_parses:
                batch = await asyncio.to_thread(self._parse, body, kind)
        else:
            batch = self._parse(body, kind)
        validated = time.perf_counter()
        # The tenant's cap on concurrent batches (a share of the pool; 429 over it), apart
        # from its people's requests: long batches of one tenant cannot hold the whole pool.
        ticket = await self.services.db.admission.enter(principal.tenant_id, None, kind="ingest:")
        try:
            async with self.services.db.transaction(Scope(tenant_id=principal.tenant_id)) as s:
                timeout = str(self.settings.ingest_statement_timeout_ms)
                await s.execute(_TIMEOUT, {"timeout": timeout})
                try:
                    result = await BatchWriter(s, principal.tenant_id).write(batch)
                except IngestValidationError as error:
                    error.details["received"] = len(batch)
                    raise
                await touch(s, principal.token_id)
        except (OperationalError, InterfaceError, OSError) as exc:
            raise UnavailableError(
                "the database is unavailable; nothing was written, try again shortly"
            ) from exc
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) not in RETRYABLE_SQLSTATES:
                raise
            raise UnavailableError(
                "the database did not finish in time or the batch collided with another; "
                "nothing was written, try again shortly",
                retryable=True,
            ) from exc
        finally:
            ticket.release()
        self._count(result)
        log.info(
            "ingest.batch",
            kind=kind.value,
            source_system=batch.source_system,
            workflow_id=batch.workflow_id,
            execution_id=batch.execution_id,
            received=result.received,
            inserted=result.inserted,
            updated=result.updated,
            unchanged=result.unchanged,
            bytes=len(body),
            validate_ms=round((validated - received) * 1000, 1),
            write_ms=round((time.perf_counter() - validated) * 1000, 1),
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return JSONResponse(result.as_dict())

    async def _heartbeat(self, request: Request, principal: IngestPrincipal) -> Response:
        body = await self._body(request, HEARTBEAT_MAX_BYTES)
        if body.strip():
            try:
                parsed = parse_json(body)
            except (ValueError, RecursionError):
                raise ValidationError("the body is not valid JSON", field="body") from None
            mismatch = ValidationError(
                "tenant does not match the ingest token's tenant", field="tenant"
            )
            try:
                claimed = HeartbeatRequest.model_validate(parsed).tenant
            except pydantic.ValidationError:  # not an object is fine; a tenant not a string
                if isinstance(parsed, dict):
                    raise mismatch from None
                claimed = None
            if claimed is not None and claimed != str(principal.tenant_id):
                raise mismatch
        try:
            async with self.services.db.transaction(Scope(tenant_id=principal.tenant_id)) as s:
                await touch(s, principal.token_id)
        except (OperationalError, InterfaceError, OSError) as exc:
            raise UnavailableError("the database is unavailable; try again shortly") from exc
        log.info("ingest.heartbeat", tenant=principal.tenant_slug)
        return JSONResponse({"status": "ok", "tenant": principal.tenant_slug})

    @staticmethod
    def _count(result: WriteResult) -> None:
        kind = result.kind.value
        for outcome, n in (
            ("inserted", result.inserted),
            ("updated", result.updated),
            ("unchanged", result.unchanged),
        ):
            if n:
                INGEST_ROWS.labels(kind, outcome).inc(n)


class MethodNotAllowedError(ZixlyError):
    code = "METHOD_NOT_ALLOWED"
    http_status = 405


def _method_not_allowed(request_id: str) -> Response:
    error = MethodNotAllowedError("the ingest endpoint takes POST only")
    return error_response(error, request_id, {"Allow": "POST"})


def _request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def ingest_mount(services: Services) -> Mount:
    endpoint = IngestEndpoint(services)
    return Mount(
        PREFIX,
        routes=[
            Route("/heartbeat", endpoint.heartbeat, methods=METHODS),
            Route("/{kind}", endpoint.records, methods=METHODS),
        ],
    )
