"""Prometheus metrics, in a registry of our own."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

GRAPHQL_LATENCY = Histogram(
    "zixly_graphql_request_duration_seconds",
    "GraphQL operation latency by operation name.",
    ["operation", "type"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
GRAPHQL_ERRORS = Counter(
    "zixly_graphql_errors_total",
    "GraphQL errors returned, by error code.",
    ["operation", "code"],
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
    "(failed authentications per client address).",
    ["limit"],
    registry=REGISTRY,
)
RATE_LIMIT_UNAVAILABLE = Counter(
    "zixly_rate_limit_unavailable_total",
    "Requests let through unchecked because Redis could not be asked (the limit fails open).",
    registry=REGISTRY,
)

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_MAX_OPERATION_LABELS = 200
_seen_operations: set[str] = set()


def operation_label(name: str | None) -> str:
    """Client-chosen operation names, bounded so they cannot blow up label cardinality."""
    if not name or not _NAME.match(name):
        return "anonymous"
    if name in _seen_operations:
        return name
    if len(_seen_operations) >= _MAX_OPERATION_LABELS:
        return "other"
    _seen_operations.add(name)
    return name
