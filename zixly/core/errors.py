"""Zixly's own error types.

Adapters translate outside errors into these (``raise ZixlyError(...) from exc``).
Each carries a stable ``code`` that GraphQL puts in ``extensions.code`` and HTTP
endpoints map to a status, so clients can branch on the kind of failure.
"""

from __future__ import annotations

import math
from typing import Any


class ZixlyError(Exception):
    code = "INTERNAL"
    http_status = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        # graphql-core copies an original error's ``extensions`` dict into the response.
        self.extensions: dict[str, Any] = {"code": self.code, **details}

    def headers(self) -> dict[str, str]:
        """HTTP headers of the error's answer: ``Retry-After`` (whole seconds) when the
        error says after how long the same request may succeed (``retry_after``)."""
        after = self.details.get("retry_after")
        if isinstance(after, bool) or not isinstance(after, int | float):
            return {}
        return {"Retry-After": str(max(1, math.ceil(after)))}


class ValidationError(ZixlyError):
    """Input that is well-formed GraphQL but not acceptable (reversed dates, bad cursor...)."""

    code = "VALIDATION_ERROR"
    http_status = 400

    def __init__(self, message: str, *, field: str | None = None, **details: Any) -> None:
        if field is not None:
            details["field"] = field
        super().__init__(message, **details)


class BadRequestError(ZixlyError):
    """A request that is not what the endpoint takes (a body that is not a JSON object,
    invalid UTF-8, a malformed header...), refused before its content is looked at."""

    code = "BAD_REQUEST"
    http_status = 400


class NotFoundError(ZixlyError):
    code = "NOT_FOUND"
    http_status = 404


class AuthenticationError(ZixlyError):
    code = "UNAUTHENTICATED"
    http_status = 401


class ForbiddenError(ZixlyError):
    code = "FORBIDDEN"
    http_status = 403


class TenantRequiredError(ForbiddenError):
    """A user of several tenants named none (token claim or X-Zixly-Tenant header)."""

    code = "TENANT_REQUIRED"


class MethodNotAllowedError(ZixlyError):
    """The endpoint does not take this operation with this HTTP method (a mutation over GET):
    ``allow`` lists the methods that would do (the ``Allow`` header)."""

    code = "METHOD_NOT_ALLOWED"
    http_status = 405

    def __init__(self, message: str, *, allow: str, **details: Any) -> None:
        super().__init__(message, allow=allow, **details)

    def headers(self) -> dict[str, str]:
        return {**super().headers(), "Allow": str(self.details["allow"])}


class NotAcceptableError(ZixlyError):
    """The client accepts none of the media types the endpoint answers with (406)."""

    code = "NOT_ACCEPTABLE"
    http_status = 406


class ConflictError(ZixlyError):
    code = "CONFLICT"
    http_status = 409


class RateLimitedError(ZixlyError):
    code = "RATE_LIMITED"
    http_status = 429


class UnavailableError(ZixlyError):
    """An outside system (database, Redis, provider, n8n) could not be reached, or the
    server has no capacity for the request right now (no free database connection in time):
    the client retries after ``retry_after`` seconds (the ``Retry-After`` header)."""

    code = "UNAVAILABLE"
    http_status = 503
    default_retry_after = 5

    def __init__(self, message: str, **details: Any) -> None:
        details.setdefault("retry_after", self.default_retry_after)
        super().__init__(message, **details)


class ServiceUnavailableError(UnavailableError):
    """Zixly's own PostgreSQL or Redis cannot serve the request now (unreachable, no pooled
    connection free in time): the whole answer is a 503, GraphQL included."""


class QueryTimeoutError(ServiceUnavailableError):
    """A statement ran past its transaction's statement timeout and PostgreSQL cancelled it
    (nothing of the request was committed). Retrying later, or with a smaller range, helps."""

    code = "QUERY_TIMEOUT"
