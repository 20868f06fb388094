"""The one adapter around an n8n instance's HTTP API (verified against n8n 1.123 and 2.41).

Two surfaces: the internal ``/rest`` API (owner setup, login, API keys; authenticated by the
``n8n-auth`` session cookie) and the public ``/api/v1`` API (workflows, credentials,
executions; authenticated by ``X-N8N-API-KEY``). Every httpx or HTTP failure leaves as an
``N8nError`` subclass with the status and n8n's own short message, never a body or a header.

A freshly started n8n brings its routes up one after another: ``/healthz/readiness`` first,
the public API later, ``/rest/owner/setup`` later still. Express answers a route that does not
exist yet with 404 "Cannot POST /path". So each call is retried, until ``retry_for`` seconds
have passed, on that 404, on the "n8n is starting up" page it serves on every path while it
migrates, and on connection errors (the request never reached n8n, so a retry
cannot do anything twice). Timeouts and other errors mid-request are not retried: a POST may
have taken effect.

A client made with the instance's ``version`` follows that line (zixly.provisioning.n8n.versions):
on 2.x activation is ``/publish`` (``/activate`` is deprecated there), a published workflow is
unpublished before it is deleted, and the owner's session comes from logging in (the owner is
set from the environment). Without a version it uses the calls both lines answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from zixly.provisioning.n8n.errors import (
    N8nError,
    N8nNotFoundError,
    N8nRejectedError,
    N8nUnauthorizedError,
    N8nUnavailableError,
)
from zixly.provisioning.n8n.versions import N8nLine, line

AUTH_COOKIE = "n8n-auth"
API_KEY_HEADER = "X-N8N-API-KEY"
# What POST /api/v1/workflows accepts; everything else in an export (id, active, tags,
# createdAt, updatedAt, versionId, meta, pinData, shared...) is read-only there.
WORKFLOW_WRITABLE = ("name", "nodes", "connections", "settings", "staticData")
_MESSAGE_LIMIT = 300
_KEYS_PAGE = 250  # n8n 2.x pages GET /rest/api-keys (at most 250 a page)


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None


class N8nClient:
    def __init__(
        self,
        base_url: str,
        http: httpx.AsyncClient,
        *,
        api_key: str | None = None,
        retry_for: float = 10.0,
        retry_interval: float = 0.25,
        version: str | None = None,
        session: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = http
        self._api_key = api_key
        self._retry_for = retry_for
        self._retry_interval = retry_interval
        self.version = version
        self._line: N8nLine | None = line(version) if version else None
        self._session = session  # the owner's cookie: lets activation wait for publication

    def with_api_key(self, api_key: str) -> N8nClient:
        return self._copy(api_key, self._session)

    def with_session(self, cookie: str) -> N8nClient:
        """This client, also holding the owner's session: ``activate_workflow`` then
        returns only once a 2.x publish is live (``wait_published``)."""
        return self._copy(self._api_key, cookie)

    def _copy(self, api_key: str | None, session: str | None) -> N8nClient:
        return N8nClient(
            self.base_url,
            self._http,
            api_key=api_key,
            retry_for=self._retry_for,
            retry_interval=self._retry_interval,
            version=self.version,
            session=session,
        )

    @property
    def publishes(self) -> bool:
        """n8n 2.x: activation publishes, and webhooks go live shortly after it."""
        return self._line is not None and self._line.publishes

    @property
    def owner_from_env(self) -> bool:
        return self._line is not None and self._line.owner_from_env

    def __repr__(self) -> str:
        return f"N8nClient({self.base_url!r}, api_key={'set' if self._api_key else 'unset'})"

    # --- readiness ----------------------------------------------------------------------------
    async def wait_ready(self, within: float = 90.0) -> None:
        """Wait up to ``within`` seconds for readiness, the public API and the setup route."""
        deadline = time.monotonic() + within
        probes: list[tuple[str, str, str]] = [
            ("readiness", "GET", "/healthz/readiness"),
            ("public API", "GET", "/api/v1/workflows"),
            # An empty body is rejected (400) without side effects; 404 means not routed yet.
            ("owner route", "POST", "/rest/login" if self.owner_from_env else "/rest/owner/setup"),
        ]
        for what, method, path in probes:
            last = "no answer"
            while True:
                try:
                    response = await self._http.request(
                        method, self._url(path), json={} if method == "POST" else None
                    )
                except httpx.TransportError as exc:
                    last = type(exc).__name__
                else:
                    last = f"HTTP {response.status_code}"
                    if _probe_passed(what, response):
                        break
                if time.monotonic() >= deadline:
                    raise N8nUnavailableError(
                        f"n8n at {self.base_url} not ready after {within:.0f}s "
                        f"(waiting for the {what}; last: {last})"
                    )
                await asyncio.sleep(self._retry_interval)

    # --- owner, login, API keys (session cookie) ------------------------------------------------
    async def setup_owner(self, email: str, first_name: str, last_name: str, password: str) -> str:
        """Create the instance owner; if one exists already, log in instead. Returns the cookie."""
        body = {
            "email": email,
            "firstName": first_name,
            "lastName": last_name,
            "password": password,
        }
        try:
            response = await self._request("POST", "/rest/owner/setup", json=body, auth=None)
        except N8nRejectedError as exc:
            if "already setup" not in exc.message.lower():
                raise
            return await self.login(email, password)
        return self._take_cookie(response)

    async def login(self, email: str, password: str, *, within: float = 0.0) -> str:
        """Log in; ``within`` > 0 retries a refused login that long (an owner set from the
        environment is written while n8n starts, possibly after its routes are up)."""
        body = {"emailOrLdapLoginId": email, "password": password}
        deadline = time.monotonic() + within
        while True:
            try:
                response = await self._request("POST", "/rest/login", json=body, auth=None)
            except N8nUnauthorizedError:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(self._retry_interval)
                continue
            return self._take_cookie(response)

    async def api_key_scopes(self, cookie: str) -> list[str]:
        data = _data(await self._request("GET", "/rest/api-keys/scopes", cookie=cookie))
        return [str(scope) for scope in data]

    async def list_api_keys(self, cookie: str) -> list[dict[str, Any]]:
        """Keys of the logged-in user (n8n shows them redacted): 1.x answers a list, 2.x
        pages of ``{"items": [...]}`` (and would list every user's keys to the owner)."""
        keys: list[dict[str, Any]] = []
        params: dict[str, Any] = {"ownership": "mine", "take": _KEYS_PAGE, "skip": 0}
        while True:
            data = _data(await self._request("GET", "/rest/api-keys", params=params, cookie=cookie))
            page = data.get("items", []) if isinstance(data, dict) else data
            keys.extend(k for k in page if isinstance(k, dict))
            if not isinstance(data, dict) or len(page) < _KEYS_PAGE:
                return keys
            params["skip"] += len(page)

    async def delete_api_key(self, cookie: str, key_id: str) -> None:
        await self._request("DELETE", f"/rest/api-keys/{key_id}", cookie=cookie)

    async def create_api_key(
        self, cookie: str, label: str, scopes: Iterable[str] | None = None
    ) -> str:
        """A non-expiring key with ``scopes`` (default: every scope n8n allows this user).

        Scopes the instance does not offer (its license decides) are dropped.
        """
        allowed = await self.api_key_scopes(cookie)
        chosen = allowed if scopes is None else [s for s in scopes if s in set(allowed)]
        body = {"label": label, "expiresAt": None, "scopes": chosen}
        data = _data(await self._request("POST", "/rest/api-keys", json=body, cookie=cookie))
        raw = data.get("rawApiKey") if isinstance(data, dict) else None
        if not isinstance(raw, str) or not raw:
            raise N8nError("n8n created an API key but returned no raw key", status=200)
        return raw

    # --- workflows (public API) -----------------------------------------------------------------
    async def list_workflows(
        self,
        *,
        cursor: str | None = None,
        limit: int = 100,
        active: bool | None = None,
        name: str | None = None,
    ) -> Page:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        if active is not None:
            params["active"] = "true" if active else "false"
        if name is not None:
            params["name"] = name
        return _page(await self._request("GET", "/api/v1/workflows", params=params))

    async def all_workflows(self, **filters: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = await self.list_workflows(cursor=cursor, **filters)
            items.extend(page.items)
            if not page.next_cursor:
                return items
            cursor = page.next_cursor

    async def get_workflow(self, workflow_id: str) -> dict[str, Any]:
        return _object(await self._request("GET", f"/api/v1/workflows/{workflow_id}"))

    async def create_workflow(self, workflow: Mapping[str, Any]) -> dict[str, Any]:
        """Create from an export; read-only fields are left out, ``settings`` defaults to {}."""
        body = {key: workflow[key] for key in WORKFLOW_WRITABLE if key in workflow}
        body.setdefault("settings", {})
        return _object(await self._request("POST", "/api/v1/workflows", json=body))

    async def update_workflow(
        self, workflow_id: str, workflow: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Replace a workflow in place (``PUT /api/v1/workflows/<id>``: same id; n8n 1.123
        keeps an active workflow active and republishes it; settings are merged into the
        stored ones). Read-only fields are left out as for ``create_workflow``, and so is
        ``staticData``: it holds the running workflow's state (a schedule's last run)."""
        writable = [key for key in WORKFLOW_WRITABLE if key != "staticData"]
        body = {key: workflow[key] for key in writable if key in workflow}
        body.setdefault("settings", {})
        path = f"/api/v1/workflows/{workflow_id}"
        return _object(await self._request("PUT", path, json=body))

    async def activate_workflow(self, workflow_id: str) -> dict[str, Any]:
        """Activate (1.x) or publish (2.x: its webhooks go live shortly after; with a session,
        ``with_session``, this waits for that)."""
        verb = "publish" if self.publishes else "activate"
        done = _object(await self._request("POST", f"/api/v1/workflows/{workflow_id}/{verb}"))
        if self._session is not None:
            await self.wait_published(self._session, workflow_id)
        return done

    async def deactivate_workflow(self, workflow_id: str) -> dict[str, Any]:
        verb = "unpublish" if self.publishes else "deactivate"
        return _object(await self._request("POST", f"/api/v1/workflows/{workflow_id}/{verb}"))

    async def delete_workflow(self, workflow_id: str) -> None:
        """Delete; on 2.x a published workflow is unpublished first (n8n refuses otherwise)
        and the delete waits out the unpublishing (409 "still being unpublished")."""
        path = f"/api/v1/workflows/{workflow_id}"
        if not self.publishes:
            await self._request("DELETE", path)
            return
        if (await self.get_workflow(workflow_id)).get("active"):
            await self.deactivate_workflow(workflow_id)
        deadline = time.monotonic() + self._retry_for
        while True:
            try:
                await self._request("DELETE", path)
                return
            except N8nRejectedError as exc:
                if exc.status != 409 or time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(self._retry_interval)

    async def wait_published(
        self, cookie: str, workflow_id: str, within: float = 30.0, *, version_id: Any = None
    ) -> None:
        """On 2.x, wait until a publish is live: its triggers (webhooks) are registered.

        n8n 2.x publishes through an outbox: the publish call answers before the webhooks
        exist (a webhook answers 404 for a moment). ``GET /rest/workflows/<id>/publication-
        status`` tells when every trigger is activated; with ``version_id``, that version
        must be the live one. A no-op on 1.x (activation is synchronous there)."""
        if not self.publishes:
            return
        path = f"/rest/workflows/{workflow_id}/publication-status"
        deadline = time.monotonic() + within
        while True:
            status = _data(await self._request("GET", path, cookie=cookie))
            state = status.get("status") if isinstance(status, dict) else None
            live = status.get("liveVersionId") if isinstance(status, dict) else None
            if state == "published" and version_id in (None, live):
                return
            if state in ("failed", "partial"):
                errors = [t.get("errorMessage") for t in status.get("triggers", [])]
                reason = "; ".join(str(e) for e in errors if e)[:_MESSAGE_LIMIT] or state
                text = f"n8n could not publish workflow {workflow_id}: {reason}"
                raise N8nRejectedError(text, status=409, path=path)
            if time.monotonic() >= deadline:
                text = f"workflow {workflow_id} not published after {within:.0f}s ({state})"
                raise N8nUnavailableError(text, path=path)
            await asyncio.sleep(0.1)

    # --- tags (public API) ----------------------------------------------------------------------
    async def all_tags(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 100}
        while True:
            page = _page(await self._request("GET", "/api/v1/tags", params=params))
            items.extend(page.items)
            if not page.next_cursor:
                return items
            params["cursor"] = page.next_cursor

    async def create_tag(self, name: str) -> dict[str, Any]:
        """Raises ``N8nRejectedError`` (409) when a tag of that name exists already."""
        return _object(await self._request("POST", "/api/v1/tags", json={"name": name}))

    async def set_workflow_tags(
        self, workflow_id: str, tag_ids: Iterable[str]
    ) -> list[dict[str, Any]]:
        """Replace the workflow's tags; returns them as n8n now has them."""
        body = [{"id": tag_id} for tag_id in tag_ids]
        path = f"/api/v1/workflows/{workflow_id}/tags"
        tags = _json(await self._request("PUT", path, json=body))
        return [tag for tag in tags if isinstance(tag, dict)] if isinstance(tags, list) else []

    # --- credentials (public API to create; the internal one, with a cookie, to list and update) -
    async def create_credential(
        self, name: str, credential_type: str, data: Mapping[str, Any]
    ) -> dict[str, Any]:
        body = {"name": name, "type": credential_type, "data": dict(data)}
        return _object(await self._request("POST", "/api/v1/credentials", json=body))

    async def list_credentials(self, cookie: str) -> list[dict[str, Any]]:
        """Every credential the logged-in user sees (id, name, type; never the data).

        The public API has no listing in 1.123, so this is the internal one (session cookie).
        """
        data = _data(await self._request("GET", "/rest/credentials", cookie=cookie))
        return [c for c in data if isinstance(c, dict)] if isinstance(data, list) else []

    async def update_credential(
        self,
        cookie: str,
        credential_id: str,
        name: str,
        credential_type: str,
        data: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Replace a credential's data in place (its id, and so every workflow's reference
        to it, stays). The public API has no update in 1.123: this is the internal
        ``PATCH /rest/credentials/<id>`` (session cookie), which re-encrypts ``data``."""
        body = {"name": name, "type": credential_type, "data": dict(data)}
        path = f"/rest/credentials/{credential_id}"
        found = _data(await self._request("PATCH", path, json=body, cookie=cookie))
        if not isinstance(found, dict):
            raise N8nError("n8n answered a credential update with an unexpected shape", status=200)
        return found

    async def get_credential(
        self, cookie: str, credential_id: str, *, include_data: bool = False
    ) -> dict[str, Any]:
        """One credential (internal API); n8n blanks password fields in ``data``."""
        params = {"includeData": "true" if include_data else "false"}
        path = f"/rest/credentials/{credential_id}"
        found = _data(await self._request("GET", path, params=params, cookie=cookie))
        if not isinstance(found, dict):
            raise N8nError("n8n answered with an unexpected shape", status=200)
        return found

    async def delete_credential(self, credential_id: str) -> None:
        await self._request("DELETE", f"/api/v1/credentials/{credential_id}")

    async def get_credential_schema(self, credential_type: str) -> dict[str, Any]:
        path = f"/api/v1/credentials/schema/{credential_type}"
        return _object(await self._request("GET", path))

    # --- executions -----------------------------------------------------------------------------
    async def list_executions(
        self,
        *,
        workflow_id: str | None = None,
        status: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page:
        """``status``: success, error or waiting (n8n's filter values)."""
        params: dict[str, Any] = {"limit": limit}
        if workflow_id is not None:
            params["workflowId"] = workflow_id
        if status is not None:
            params["status"] = status
        if cursor:
            params["cursor"] = cursor
        return _page(await self._request("GET", "/api/v1/executions", params=params))

    async def get_execution(
        self, execution_id: str, *, include_data: bool = False
    ) -> dict[str, Any]:
        """One execution; with ``include_data`` its run data too (``data.resultData.error``
        holds a failed run's error and the node it came from)."""
        params = {"includeData": "true" if include_data else "false"}
        path = f"/api/v1/executions/{execution_id}"
        return _object(await self._request("GET", path, params=params))

    # --- transport --------------------------------------------------------------------------
    def _url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        cookie: str | None = None,
        auth: str | None = "api_key",
    ) -> httpx.Response:
        headers: dict[str, str] = {"Accept": "application/json"}
        if cookie is not None:
            headers["Cookie"] = f"{AUTH_COOKIE}={cookie}"
        elif auth == "api_key":
            if not self._api_key:
                raise N8nUnauthorizedError("no n8n API key configured for this client")
            headers[API_KEY_HEADER] = self._api_key
        deadline = time.monotonic() + self._retry_for
        while True:
            try:
                response = await self._http.request(
                    method, self._url(path), json=json, params=params, headers=headers
                )
            except httpx.ConnectError as exc:
                if time.monotonic() < deadline:
                    await asyncio.sleep(self._retry_interval)
                    continue
                raise N8nUnavailableError(
                    f"n8n at {self.base_url} is unreachable ({type(exc).__name__})",
                    method=method,
                    path=path,
                ) from exc
            except httpx.TimeoutException as exc:
                raise N8nUnavailableError(
                    f"n8n at {self.base_url} timed out ({type(exc).__name__})",
                    method=method,
                    path=path,
                ) from exc
            except httpx.HTTPError as exc:
                raise N8nUnavailableError(
                    f"n8n at {self.base_url} failed mid-request ({type(exc).__name__})",
                    method=method,
                    path=path,
                ) from exc
            if _not_up_yet(response) and time.monotonic() < deadline:
                await asyncio.sleep(self._retry_interval)
                continue
            return _checked(response, method, path)

    def _take_cookie(self, response: httpx.Response) -> str:
        """Return the session cookie and drop it from the shared client's jar.

        Cookie jars ignore ports, so a cookie of the instance on 127.0.0.1:5701 would
        otherwise ride along to every other instance on 127.0.0.1.
        """
        value = response.cookies.get(AUTH_COOKIE)
        jar = self._http.cookies.jar
        for stored in [c for c in jar if c.name == AUTH_COOKIE]:
            jar.clear(stored.domain, stored.path, stored.name)
        if not value:
            raise N8nError("n8n answered without a session cookie", status=response.status_code)
        return value


# --- response helpers ---------------------------------------------------------------------------


def _route_missing(response: httpx.Response) -> bool:
    """Express's own 404 for an unrouted path (HTML "Cannot GET /x"), not n8n's JSON 404."""
    return (
        response.status_code == 404
        and "Cannot " in response.text[:500]
        and ("json" not in response.headers.get("content-type", ""))
    )


def _starting_up(response: httpx.Response) -> bool:
    """The page n8n serves on every path while it migrates its database."""
    return "html" in response.headers.get("content-type", "") and (
        "starting up" in response.text[:500]
    )


def _not_up_yet(response: httpx.Response) -> bool:
    return _route_missing(response) or _starting_up(response)


def _probe_passed(what: str, response: httpx.Response) -> bool:
    # While migrating, n8n answers every path with 200 "n8n is starting up" (HTML): only
    # JSON answers count.
    if "json" not in response.headers.get("content-type", ""):
        return False
    if what == "readiness":
        return response.status_code == 200
    if what == "public API":
        return response.status_code in (200, 401)
    return response.status_code < 500


def _safe_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(message, str) or not message:
        message = response.reason_phrase or f"HTTP {response.status_code}"
    return message[:_MESSAGE_LIMIT]


def _checked(response: httpx.Response, method: str, path: str) -> httpx.Response:
    status = response.status_code
    details = {"method": method, "path": path}
    if _starting_up(response):
        raise N8nUnavailableError(
            f"n8n {method} {path}: still starting up", method=method, path=path
        )
    if status < 400:
        return response
    text = f"n8n {method} {path}: {_safe_message(response)}"
    if status in (401, 403):
        raise N8nUnauthorizedError(text, status=status, **details)
    if status == 404:
        if _route_missing(response):
            raise N8nUnavailableError(text, status=status, **details)
        raise N8nNotFoundError(text, status=status, **details)
    if status in (400, 405, 409, 422):
        raise N8nRejectedError(text, status=status, **details)
    if status in (502, 503, 504):
        raise N8nUnavailableError(text, status=status, **details)
    raise N8nError(text, status=status, **details)


def _json(response: httpx.Response) -> Any:
    if response.status_code == 204 or not response.content:
        return None
    try:
        return response.json()
    except ValueError as exc:
        raise N8nError(
            f"n8n answered {response.request.method} {response.request.url.path} with non-JSON",
            status=response.status_code,
        ) from exc


def _data(response: httpx.Response) -> Any:
    """The internal /rest API wraps its answers in {"data": ...}."""
    body = _json(response)
    return body.get("data") if isinstance(body, dict) else body


def _object(response: httpx.Response) -> dict[str, Any]:
    body = _json(response)
    if not isinstance(body, dict):
        raise N8nError("n8n answered with an unexpected shape", status=response.status_code)
    return body


def _page(response: httpx.Response) -> Page:
    body = _object(response)
    items = body.get("data")
    cursor = body.get("nextCursor")
    return Page(
        items=[item for item in items if isinstance(item, dict)] if isinstance(items, list) else [],
        next_cursor=cursor if isinstance(cursor, str) and cursor else None,
    )
