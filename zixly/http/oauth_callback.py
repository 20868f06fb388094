"""``GET /oauth/<provider>/callback``: where a provider sends the browser back after consent.

A browser navigation, so no JWT: the single-use state (zixly.integrations.connect) is what
identifies the tenant and user. The answer is a small, static page (or, with
``ZIXLY_OAUTH_RETURN_URL``, a redirect there) saying connected or failed with a typed
reason. Nothing from the request is reflected except the provider name, which must be one
of the registry's, and the reason, one of ours; tokens and codes never appear. The page
loads nothing, sends no referrer (the callback URL carries the code) and is not cached.
"""

from __future__ import annotations

import html
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from zixly.container import Services
from zixly.core.errors import UnavailableError
from zixly.core.logging import get_logger
from zixly.core.outages import unavailable
from zixly.integrations.connect import ConnectFailure, OAuthConnectError
from zixly.providers.registry import PROVIDERS

log = get_logger("zixly.http.oauth")
# What the callback reads from the query; values longer than this are not a real answer.
_PARAMS = {"state": 128, "code": 4096, "error": 64, "shop": 128}
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'",
    "X-Content-Type-Options": "nosniff",
}
_MESSAGES = {
    ConnectFailure.INVALID_STATE: "This link is unknown, expired or was already used. "
    "Start connecting again from Zixly.",
    ConnectFailure.PROVIDER_MISMATCH: "This link was issued for another provider.",
    ConnectFailure.ACCESS_DENIED: "Access was not granted.",
    ConnectFailure.PROVIDER_ERROR: "The provider reported an error.",
    ConnectFailure.INVALID_REQUEST: "The provider's answer was incomplete.",
    ConnectFailure.INVALID_GRANT: "The provider refused the authorization. Start again.",
    ConnectFailure.PROVIDER_UNAVAILABLE: "The provider could not be reached. Try again shortly.",
    ConnectFailure.FORBIDDEN: "Only a tenant ADMIN can connect providers.",
    ConnectFailure.INTERNAL: "Zixly could not complete the connection. Start again.",
    ConnectFailure.UNAVAILABLE: "Zixly is unavailable for a moment. Start connecting again "
    "from Zixly shortly.",
}
_STATUS = {
    ConnectFailure.FORBIDDEN: 403,
    ConnectFailure.INTERNAL: 500,
    ConnectFailure.UNAVAILABLE: 503,
}


async def oauth_callback(request: Request) -> Response:
    services: Services = request.app.state.services
    name = str(request.path_params["provider"])
    if name not in PROVIDERS:
        return message_page(404, "Not found", "There is no such provider.")
    query: dict[str, str] = {}
    for key, limit in _PARAMS.items():
        value = request.query_params.get(key)
        if value is not None:
            query[key] = value if len(value) <= limit else ""
    request_id = getattr(request.state, "request_id", None)
    try:
        await services.connector.complete(name, query, request_id=request_id)
    except OAuthConnectError as exc:
        return _answer(services, name, exc.reason)
    except Exception as exc:  # rolled back: nothing stored, no job; the state is spent
        if unavailable(exc) is not None:  # Redis or PostgreSQL down: 503, Retry-After
            log.warning("integration.connect.unavailable", provider=name, error=repr(exc))
            return _answer(services, name, ConnectFailure.UNAVAILABLE)
        log.error("integration.connect.failed", provider=name, error=type(exc).__name__)
        return _answer(services, name, ConnectFailure.INTERNAL)
    return _answer(services, name, None)


def _answer(services: Services, provider: str, failure: ConnectFailure | None) -> Response:
    back = services.settings.oauth_return_url
    if back:
        params = {"provider": provider, "status": "failed" if failure else "connected"}
        if failure is not None:
            params["reason"] = failure.value
        separator = "&" if "?" in back else "?"
        return RedirectResponse(f"{back}{separator}{urlencode(params)}", 303, headers=_HEADERS)
    if failure is None:
        return message_page(200, f"{provider} connected", "Zixly will start syncing shortly.")
    status = _STATUS.get(failure, 400)
    page = message_page(
        status, f"{provider} not connected", f"{_MESSAGES[failure]} ({failure.value})"
    )
    if failure is ConnectFailure.UNAVAILABLE:
        page.headers["Retry-After"] = str(UnavailableError.default_retry_after)
    return page


def message_page(status: int, title: str, message: str) -> HTMLResponse:
    """A small static page (no-store, no referrer, nothing loaded); the text is escaped."""
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Zixly: {html.escape(title)}</title></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(message)}</p>"
        "<p>You can close this window.</p></body></html>"
    )
    return HTMLResponse(body, status_code=status, headers=_HEADERS)


def oauth_routes() -> list[Route]:
    return [Route("/oauth/{provider}/callback", oauth_callback, methods=["GET"])]
