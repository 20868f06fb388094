"""Schema extensions: the request boundary (commit or roll back), error masking, metrics."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from graphql import GraphQLError
from strawberry.extensions import MaskErrors, SchemaExtension

from zixly.errors import ZixlyError
from zixly.http.metrics import GRAPHQL_ERRORS, GRAPHQL_LATENCY, root_field_label
from zixly.logging import get_logger

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
    """Unexpected errors become 'Unexpected error' plus the request id; the full error is logged."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=lambda error: not _is_expected(error))

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        context = self.execution_context.context
        request_id = getattr(context, "request_id", "unknown")
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
