"""Which JSON media type a GraphQL-over-HTTP response takes, from the request's Accept header.

``application/graphql-response+json`` when the client accepts it at least as much as
``application/json`` (exact types beat wildcards), else ``application/json``. A request
whose Accept header allows neither (nor ``*/*`` or ``application/*``) is not acceptable:
the GraphQL endpoint answers it 406. No Accept header means ``application/json``.

Kept below both the GraphQL view and the HTTP middleware, so that an error the middleware
answers for ``/graphql`` (401, 429, 413...) has the media type the view would have used:
clients such as Apollo Client 4 read the GraphQL errors of a non-2xx response only when it
is ``application/graphql-response+json``.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import Scope

GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"
GRAPHQL_PATH = "/graphql"


def _quality(accept: str, media: str) -> float:
    best = 0.0
    for part in accept.split(","):
        kind, *params = (p.strip() for p in part.split(";"))
        kind = kind.lower()
        if kind not in (media, "*/*", media.split("/")[0] + "/*"):
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
                if not 0.0 <= q <= 1.0:  # also NaN
                    q = 0.0
        best = max(best, q if kind == media else q - 0.001)  # exact beats wildcard
    return best


def response_media_type(headers: Headers) -> str:
    """``application/graphql-response+json`` when the client prefers it, else
    ``application/json``."""
    accept = headers.get("accept", "")
    if GRAPHQL_RESPONSE not in accept.lower():
        return JSON
    preferred = _quality(accept, GRAPHQL_RESPONSE)
    return GRAPHQL_RESPONSE if preferred > 0 and preferred >= _quality(accept, JSON) else JSON


def acceptable(headers: Headers) -> bool:
    """Whether the client takes either JSON media type (a missing or empty Accept does)."""
    accept = headers.get("accept", "").strip()
    return not accept or max(_quality(accept, GRAPHQL_RESPONSE), _quality(accept, JSON)) > 0


def error_media_type(scope: Scope) -> str:
    """The media type of an error answered for ``scope``: negotiated on the GraphQL endpoint,
    ``application/json`` elsewhere."""
    if scope.get("path") != GRAPHQL_PATH:
        return JSON
    return response_media_type(Headers(scope=scope))
