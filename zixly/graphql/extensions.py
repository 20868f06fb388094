"""Schema extensions: the request boundary (commit or roll back), error masking, metrics."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

from graphql import GraphQLError
from starlette.responses import Response
from strawberry.extensions import MaskErrors, ParserCache, SchemaExtension

from zixly.core.errors import (
    RateLimitedError,
    ServiceUnavailableError,
    UnavailableError,
    ZixlyError,
)
from zixly.core.logging import get_logger
from zixly.core.metrics import GRAPHQL_ERRORS, GRAPHQL_LATENCY, root_field_label
from zixly.core.outages import unavailable
from zixly.graphql.error_codes import EXECUTE, PARSE, VALIDATE, with_code

log = get_logger("zixly.graphql")


def _is_expected(error: GraphQLError) -> bool:
    original = error.original_error
    # No original error: a syntax or validation error from graphql-core itself. No path:
    # raised before execution (variable coercion, e.g. an invalid date), about the input.
    return original is None or error.path is None or isinstance(original, ZixlyError)


class RequestBoundary(SchemaExtension):
    """Commits the request's unit of work when the operation had no errors, else rolls back."""

    async def on_operation(self) -> AsyncIterator[None]:
        yield
        context = self.execution_context.context
        uow = getattr(context, "uow", None)
        if uow is None:
            return
        result = self.execution_context.result
        failed = bool(result is None or getattr(result, "errors", None))
        await uow.finish(commit=not failed)


class MaskUnexpectedErrors(MaskErrors):
    """Unexpected errors become 'Unexpected error' plus the request id; the full error is logged.
    Every other error gets an ``extensions.code`` (``zixly.graphql.error_codes``)."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=lambda error: not _is_expected(error))
        self.phase = PARSE

    def on_parse(self) -> Iterator[None]:
        self.phase = PARSE
        yield

    def on_validate(self) -> Iterator[None]:
        self.phase = VALIDATE
        yield

    def on_execute(self) -> Iterator[None]:
        self.phase = EXECUTE
        yield

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        document = self.execution_context.graphql_document
        # Masked errors are INTERNAL already; with_code keeps a code that is there.
        return [with_code(error, self.phase, document) for error in super()._process_errors(errors)]

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        context = self.execution_context.context
        request_id = getattr(context, "request_id", "unknown")
        typed = _typed(error)
        if typed is not None:  # an outage (Redis, a staff transaction...): typed, no traceback
            log.warning(
                "graphql.unavailable",
                path=error.path,
                code=typed.code,
                cause=repr(error.original_error),
            )
            return GraphQLError(
                message=typed.message,
                nodes=error.nodes,
                source=error.source,
                positions=error.positions,
                path=error.path,
                original_error=None,
                extensions={**typed.extensions, "requestId": request_id},
            )
        log.error(
            "graphql.unexpected_error",
            request_id=request_id,
            path=error.path,
            error=repr(error.original_error),
            exc_info=error.original_error,
        )
        return GraphQLError(
            message=f"Unexpected error (request id {request_id}).",
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            original_error=None,
            extensions={"code": "INTERNAL", "requestId": request_id},
        )


def _typed(error: GraphQLError) -> ZixlyError | None:
    """The Zixly error behind ``error``, outages of PostgreSQL and Redis typed."""
    original = error.original_error
    if isinstance(original, ZixlyError):
        return original
    return unavailable(original) if original is not None else None


class RetryAfterStatus(SchemaExtension):
    """An HTTP answer whose errors say "retry later" (UNAVAILABLE, QUERY_TIMEOUT,
    RATE_LIMITED) carries ``Retry-After``; when Zixly's own database or Redis could not
    serve it (``ServiceUnavailableError``) and there is no data, it is a 503 as well."""

    def on_operation(self) -> Iterator[None]:
        yield
        ec = self.execution_context
        response = getattr(ec.context, "response", None)
        errors = getattr(ec.result, "errors", None) or []
        if not isinstance(response, Response) or not errors:
            return
        retryable = [
            typed
            for typed in map(_typed, errors)
            if isinstance(typed, UnavailableError | RateLimitedError) and typed.headers()
        ]
        if not retryable:
            return
        slowest = max(retryable, key=lambda e: int(e.headers()["Retry-After"]))
        response.headers.update(slowest.headers())
        outage = any(isinstance(e, ServiceUnavailableError) for e in retryable)
        if outage and getattr(ec.result, "data", None) is None:
            response.status_code = ServiceUnavailableError.http_status


class CachedParse(ParserCache):
    """Strawberry's parser cache, except that a document that does not parse is left to
    Strawberry's own parse inside the operation: raised here, the error would skip every
    extension's end of operation (masking, error codes, the request boundary)."""

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        try:
            context.graphql_document = self.cached_parse_document(
                context.query, **context.parse_options
            )
        except Exception:  # noqa: S110 - parsed (and reported) again by Strawberry
            pass
        yield


class OperationMetrics(SchemaExtension):
    async def on_operation(self) -> AsyncIterator[None]:
        started = time.perf_counter()
        yield
        ec = self.execution_context
        name = root_field_label(ec.schema._schema, ec.graphql_document, ec.operation_name)
        try:
            kind = ec.operation_type.value
        except (RuntimeError, AttributeError):
            kind = "invalid"
        GRAPHQL_LATENCY.labels(name, kind).observe(time.perf_counter() - started)
        for error in getattr(ec.result, "errors", None) or []:
            code = (error.extensions or {}).get("code", "GRAPHQL_VALIDATION")
            GRAPHQL_ERRORS.labels(name, str(code)).inc()
