"""The GraphQL-over-HTTP request and response envelope: what a well-formed request is, and
which status and media type a response gets.

A POST body must be UTF-8 JSON (at most ``MAX_JSON_DEPTH`` levels deep), an object (one
operation: batches are not supported), with ``query`` a string and ``variables`` and
``extensions`` objects when given; anything else is ``BAD_REQUEST`` with status 400,
whatever the Accept header says (the GraphQL-over-HTTP specification: a request that is not
well-formed SHOULD get a 4xx). A GET carries the same parameters in its query string, with
``variables`` and ``extensions`` as JSON text (``decode_query_params``); GET runs queries
only (a mutation over GET is 405 with ``Allow: POST``, see ``zixly.graphql.view``).

For well-formed requests the status follows the response's media type, chosen from the
Accept header. ``application/graphql-response+json`` (when the client accepts it at least
as much as ``application/json``): a response without data (a request error: parse,
validation, an operation that cannot be determined or run over HTTP, variables that do
not coerce) is a 400. ``application/json`` (also without an Accept header or with
``*/*``, so that existing clients keep working): 200, as the specification recommends
for that media type; the error's ``extensions.code`` tells what happened.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from zixly.core.errors import BadRequestError
from zixly.http.negotiation import GRAPHQL_RESPONSE as GRAPHQL_RESPONSE
from zixly.http.negotiation import JSON as JSON
from zixly.http.negotiation import acceptable as acceptable
from zixly.http.negotiation import response_media_type as response_media_type

MAX_JSON_DEPTH = 64
TOO_DEEP = f"the request body nests more than {MAX_JSON_DEPTH} levels deep"


class MalformedJson(json.JSONDecodeError):
    """JSON Zixly does not take: invalid UTF-8, or nested too deep. A JSONDecodeError, so
    that Strawberry's WebSocket handler closes with 4400 as for any invalid JSON."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "", 0)
        self.reason = message


def load_json(body: bytes | str) -> Any:
    """JSON from UTF-8 text at most ``MAX_JSON_DEPTH`` levels deep (Python's parser would
    raise RecursionError past about a thousand levels), or a JSONDecodeError."""
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
    except UnicodeDecodeError:
        raise MalformedJson("the request body is not valid UTF-8") from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise MalformedJson(TOO_DEEP) from None
    if _depth(data) > MAX_JSON_DEPTH:
        raise MalformedJson(TOO_DEEP)
    return data


def decode_body(body: bytes | str) -> dict[str, Any]:
    """A GraphQL-over-HTTP POST body as its JSON object, or BadRequestError."""
    try:
        data = load_json(body)
    except MalformedJson as malformed:
        raise BadRequestError(malformed.reason) from None
    except ValueError:
        raise BadRequestError("the request body is not valid JSON") from None
    if isinstance(data, list):
        raise BadRequestError("batched requests are not supported: send one operation")
    if not isinstance(data, dict):
        raise BadRequestError("the request body must be a JSON object")
    check_request(data)
    return data


def decode_query_params(params: Mapping[str, str | None]) -> dict[str, Any]:
    """A GraphQL-over-HTTP GET's parameters, ``variables`` and ``extensions`` decoded from
    their JSON text, or BadRequestError."""
    data: dict[str, Any] = dict(params)
    for name in ("variables", "extensions"):
        text = data.get(name)
        if text is None:
            continue
        if text == "":
            data[name] = None
            continue
        try:
            data[name] = load_json(text)
        except MalformedJson as malformed:
            raise BadRequestError(f"{name}: {malformed.reason}", field=name) from None
        except ValueError:
            raise BadRequestError(f"{name} is not valid JSON", field=name) from None
    check_request(data)
    return data


def check_request(data: dict[str, Any]) -> None:
    """The GraphQL request parameters are of their types (BadRequestError naming one)."""
    for name, kind, what in (
        ("query", str, "a string"),
        ("operationName", str, "a string"),
        ("variables", dict, "an object"),
        ("extensions", dict, "an object"),
    ):
        value = data.get(name)
        if value is not None and not isinstance(value, kind):
            raise BadRequestError(f"{name} must be {what} when given", field=name)


def load_message(text: str | bytes) -> dict[str, Any]:
    """A graphql-transport-ws message, checked as far as Strawberry's handler relies on it
    (it crashes on a message that is not an object, an id that is not a string, or a
    subscribe payload that is not a request), else MalformedJson: the socket closes 4400."""
    message = load_json(text)
    if not isinstance(message, dict):
        raise MalformedJson("a message must be a JSON object")
    if not isinstance(message.get("id", ""), str):
        raise MalformedJson("a message's id must be a string")
    if message.get("type") == "subscribe":
        payload = message.get("payload")
        if not isinstance(payload, dict):
            raise MalformedJson("subscribe needs a payload object")
        try:
            check_request(payload)
        except BadRequestError as error:
            raise MalformedJson(error.message) from None
    return message


def _depth(value: Any) -> int:
    deepest = 0
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            break
        pending.extend((child, depth + 1) for child in children)
    return deepest


def request_error_status(media_type: str, errors: list[dict[str, Any]]) -> int:
    """The status of a response without data: 200 for application/json, else by code."""
    if media_type != GRAPHQL_RESPONSE:
        return 200
    codes = {(e.get("extensions") or {}).get("code") for e in errors}
    for code, status in (("UNAUTHENTICATED", 401), ("FORBIDDEN", 403), ("RATE_LIMITED", 429)):
        if code in codes:
            return status
    return 400
