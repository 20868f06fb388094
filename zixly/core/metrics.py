"""Prometheus metrics, in a registry of our own."""

from __future__ import annotations

import hmac

from graphql import DocumentNode, FieldNode, GraphQLSchema, get_operation_ast
from prometheus_client import CollectorRegistry, Counter, Histogram

from zixly.core.errors import AuthenticationError, NotFoundError, ZixlyError
from zixly.core.settings import Settings

REGISTRY = CollectorRegistry(auto_describe=True)

GRAPHQL_LATENCY = Histogram(
    "zixly_graphql_request_duration_seconds",
    "GraphQL operation latency by root field (the schema's, never the client's operation name).",
    ["root_field", "type"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
GRAPHQL_ERRORS = Counter(
    "zixly_graphql_errors_total",
    "GraphQL errors returned, by root field and error code.",
    ["root_field", "code"],
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "zixly_http_requests_total",
    "HTTP responses by route and status class.",
    ["route", "status"],
    registry=REGISTRY,
)
RATE_LIMIT_REJECTIONS = Counter(
    "zixly_rate_limit_rejections_total",
    "Requests answered 429, by limit: 'tenant' (requests per tenant) or 'auth_failures' "
    "(failed authentications per account and address, see zixly.security.guard).",
    ["limit"],
    registry=REGISTRY,
)
RATE_LIMIT_UNAVAILABLE = Counter(
    "zixly_rate_limit_unavailable_total",
    "Requests let through unchecked because Redis could not be asked (the limit fails open).",
    registry=REGISTRY,
)

# Root fields of introspection, which are not in the root types' field maps.
_INTROSPECTION_FIELDS = frozenset({"__schema", "__type"})


def root_field_label(
    schema: GraphQLSchema, document: DocumentNode | None, operation_name: str | None
) -> str:
    """The label of an operation: the schema's root field it selects.

    Operation names are client-chosen (they can carry tenant names or anything else a
    client puts there) and unbounded; root field names come from the schema, so the
    label set is bounded and the same for every tenant. An operation selecting several
    root fields (or a fragment at the root) is ``multiple``; a document that does not
    name one operation of the schema is ``invalid``.
    """
    operation = get_operation_ast(document, operation_name) if document is not None else None
    if operation is None:
        return "invalid"
    root = schema.get_root_type(operation.operation)
    selections = operation.selection_set.selections
    fields = [selection for selection in selections if isinstance(selection, FieldNode)]
    if len(fields) != len(selections):  # a fragment at the root
        return "multiple"
    names = {field.name.value for field in fields} - {"__typename"}
    if not names:
        return "__typename"
    if len(names) > 1:
        return "multiple"
    (name,) = names
    if name in _INTROSPECTION_FIELDS or (root is not None and name in root.fields):
        return name
    return "invalid"


def metrics_access(settings: Settings, authorization: str | None) -> ZixlyError | None:
    """Who may read /metrics: the bearer of ``ZIXLY_METRICS_TOKEN`` (Prometheus sends it
    with ``authorization: {credentials: ...}`` in its scrape config). Without a token the
    endpoint is open in development and absent (404) otherwise. ``None``: allowed."""
    if settings.metrics_token is None:
        if settings.development:
            return None
        return NotFoundError("not found: /metrics needs ZIXLY_METRICS_TOKEN to be set")
    expected = f"Bearer {settings.metrics_token.get_secret_value()}".encode()
    if not hmac.compare_digest((authorization or "").encode(), expected):
        return AuthenticationError("/metrics needs 'Authorization: Bearer <ZIXLY_METRICS_TOKEN>'")
    return None
