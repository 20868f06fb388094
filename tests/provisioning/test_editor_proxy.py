"""The n8n editor behind Zixly's proxy, with a real n8n process provisioned by the lifecycle.

Only ``alpha`` gets an instance; ``bravo`` is a second tenant whose members can hold editor
sessions of their own (for their own, absent, instance) but never open alpha's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from tests.conftest import TenantFixture, World, served
from tests.provisioning.conftest import N8N_VERSION, load_workflow
from tests.provisioning.instance_support import SCHEDULE_NAME, LifecycleEnv
from zixly.app import create_app
from zixly.container import Services
from zixly.core.settings import Settings
from zixly.http.editor_proxy import COOKIE
from zixly.provisioning.n8n.versions import line
from zixly.provisioning.runtimes.process import ProcessRuntime
from zixly.security.crypto import Keyring


@dataclass
class Editor:
    env: LifecycleEnv
    world: World
    http: httpx.AsyncClient  # over the ASGI app, with no cookie jar use (cookies sent by hand)
    alpha: TenantFixture
    bravo: TenantFixture

    async def login(self, tenant: TenantFixture, email: str) -> httpx.Response:
        token = self.world.token(email)
        return await self.http.get(f"/editor/{tenant.slug}/login", params={"token": token})

    async def session(self, tenant: TenantFixture, email: str) -> str:
        response = await self.login(tenant, email)
        assert response.status_code == 303, response.text
        value = response.cookies.get(COOKIE)
        assert value
        self.http.cookies.clear()
        return value

    async def call(
        self,
        slug: str,
        method: str,
        path: str,
        session: str | None,
        *,
        headers: dict[str, str] | None = None,
        json: object = None,
    ) -> httpx.Response:
        sent = dict(headers or {})
        if session:
            sent["Cookie"] = f"{COOKIE}={session}"
        response = await self.http.request(
            method, f"/editor/{slug}/{path}", headers=sent, json=json
        )
        self.http.cookies.clear()
        return response


@pytest.fixture(scope="module")
async def editor(
    services: Services,
    process_runtime: ProcessRuntime,
    n8n_http: httpx.AsyncClient,
    owner: asyncpg.Connection,
    settings: Settings,
) -> AsyncIterator[Editor]:
    env = LifecycleEnv(
        db=services.db,
        redis=services.redis,
        runtime=process_runtime,
        http=n8n_http,
        keyring=Keyring.from_settings(settings),  # the app's keyring opens the owner password
        owner=owner,
        settings=settings,
        keys="",
    )
    world = World(owner, settings)
    alpha = await world.tenant("edit-alpha", clients=0)
    bravo = await world.tenant("edit-bravo", clients=0)
    env.tenants.append(alpha.id)
    transport = httpx.ASGITransport(app=create_app(services))
    try:
        await env.lifecycle().provision(alpha.id, templates=[load_workflow("schedule-noop.json")])
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield Editor(env, world, http, alpha, bravo)
    finally:
        await env.cleanup()


async def test_login_sets_a_scoped_session_cookie_and_redirects(editor: Editor) -> None:
    for email in (editor.alpha.editor, editor.alpha.admin):
        response = await editor.login(editor.alpha, email)
        assert response.status_code == 303
        assert response.headers["location"] == f"/editor/{editor.alpha.slug}/"
        cookies = response.headers.get_list("set-cookie")
        assert len(cookies) == 1
        attributes = {part.strip().split("=")[0].lower() for part in cookies[0].split(";")}
        assert {"httponly", "path", "samesite", "max-age"} <= attributes
        assert f"Path=/editor/{editor.alpha.slug}/" in cookies[0]
        assert "SameSite=strict" in cookies[0]
        assert "Max-Age=28800" in cookies[0]
        editor.http.cookies.clear()


async def test_the_editor_page_and_its_api_come_through_the_proxy(editor: Editor) -> None:
    session = await editor.session(editor.alpha, editor.alpha.editor)
    page = await editor.call(editor.alpha.slug, "GET", "", session, headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    # n8n rewrote its asset base to the proxy prefix (N8N_PATH set by the lifecycle).
    assert f"/editor/{editor.alpha.slug}/" in page.text
    assert "set-cookie" not in page.headers
    assert page.headers["x-frame-options"] == "DENY"

    listed = await editor.call(editor.alpha.slug, "GET", "rest/workflows", session)
    assert listed.status_code == 200, listed.text
    assert [w["name"] for w in listed.json()["data"]] == [SCHEDULE_NAME]
    # The user n8n sees is the instance owner (Zixly logged in for the customer).
    me = await editor.call(editor.alpha.slug, "GET", "rest/login", session)
    assert me.status_code == 200
    row = await editor.env.row(editor.alpha.id)
    assert me.json()["data"]["email"] == row.owner_email
    assert "set-cookie" not in me.headers


async def test_n8n_compresses_only_for_clients_that_accept_it(editor: Editor) -> None:
    """The body is relayed as n8n sends it: gzip only when the client asked for it (the
    proxy's own HTTP client would otherwise ask on every client's behalf)."""
    session = await editor.session(editor.alpha, editor.alpha.editor)
    for accepted, encoding in ((None, None), ("identity", None), ("gzip", "gzip")):
        request = editor.http.build_request(
            "GET",
            f"/editor/{editor.alpha.slug}/",
            headers={"Cookie": f"{COOKIE}={session}", "Accept": "text/html"},
        )
        del request.headers["accept-encoding"]  # httpx's default: gzip, deflate
        if accepted:
            request.headers["accept-encoding"] = accepted
        response = await editor.http.send(request)
        assert response.status_code == 200, accepted
        assert response.headers.get("content-encoding") == encoding, accepted
        assert "<html" in response.text.lower()


async def test_a_workflow_edited_through_the_proxy_is_saved_in_n8n(editor: Editor) -> None:
    session = await editor.session(editor.alpha, editor.alpha.admin)
    slug = editor.alpha.slug
    listed = (await editor.call(slug, "GET", "rest/workflows", session)).json()["data"]
    workflow_id = listed[0]["id"]
    current = (await editor.call(slug, "GET", f"rest/workflows/{workflow_id}", session)).json()
    version = current["data"]["versionId"]
    saved = await editor.call(
        slug,
        "PATCH",
        f"rest/workflows/{workflow_id}",
        session,
        json={"name": "Renamed in the editor", "versionId": version},
        headers={"Origin": "http://testserver"},
    )
    assert saved.status_code == 200, saved.text
    assert "set-cookie" not in saved.headers
    api = await editor.env.api(editor.alpha.id)
    assert (await api.get_workflow(workflow_id))["name"] == "Renamed in the editor"
    # A write from another origin is refused before it reaches n8n.
    foreign = await editor.call(
        slug,
        "PATCH",
        f"rest/workflows/{workflow_id}",
        session,
        json={"name": "CSRF", "versionId": version},
        headers={"Origin": "https://evil.example"},
    )
    assert foreign.status_code == 403
    assert (await api.get_workflow(workflow_id))["name"] == "Renamed in the editor"


async def test_viewers_and_strangers_cannot_open_the_editor(editor: Editor) -> None:
    viewer = await editor.login(editor.alpha, editor.alpha.viewer)
    assert viewer.status_code == 403
    assert "set-cookie" not in viewer.headers
    # bravo's editor asking for alpha's editor: not a member there.
    stranger = await editor.login(editor.alpha, editor.bravo.editor)
    assert stranger.status_code == 403
    assert "set-cookie" not in stranger.headers
    bad = await editor.http.get(f"/editor/{editor.alpha.slug}/login", params={"token": "not-a-jwt"})
    assert bad.status_code == 401


async def test_another_tenants_session_and_no_session_are_refused(editor: Editor) -> None:
    bravo_session = await editor.session(editor.bravo, editor.bravo.admin)
    slug = editor.alpha.slug
    for path in ("", "rest/workflows"):
        crossed = await editor.call(slug, "GET", path, bravo_session)
        assert crossed.status_code == 403, path
        assert SCHEDULE_NAME not in crossed.text
        missing = await editor.call(slug, "GET", path, None)
        assert missing.status_code == 401
        forged = await editor.call(slug, "GET", path, "made-up-session-id")
        assert forged.status_code == 401


async def test_blocked_routes_are_refused(editor: Editor) -> None:
    session = await editor.session(editor.alpha, editor.alpha.admin)
    slug = editor.alpha.slug
    for method, path in (
        ("GET", "rest/api-keys"),
        ("POST", "rest/api-keys"),
        ("GET", "REST/API-KEYS"),
        ("POST", "rest/owner/setup"),
        ("POST", "rest/invitations"),
        ("PATCH", "rest/me/password"),
        ("POST", "rest/community-packages"),
        ("POST", "rest/login"),
        ("GET", "api/v1/workflows"),
        ("GET", "rest/workflows/../api-keys"),
    ):
        response = await editor.call(slug, method, path, session, json={})
        assert response.status_code in (400, 403), (method, path, response.status_code)
    # Still the owner's API keys are untouched (the bootstrap's one key).
    row = await editor.env.row(editor.alpha.id)
    assert row.api_key_ciphertext is not None


async def test_logout_ends_only_the_zixly_session(editor: Editor) -> None:
    session = await editor.session(editor.alpha, editor.alpha.editor)
    slug = editor.alpha.slug
    out = await editor.call(slug, "POST", "rest/logout", session)
    assert out.status_code == 200
    assert (await editor.call(slug, "GET", "rest/workflows", session)).status_code == 401
    # The owner's n8n session (shared by every editor session of the tenant) still works.
    other = await editor.session(editor.alpha, editor.alpha.admin)
    assert (await editor.call(slug, "GET", "rest/workflows", other)).status_code == 200


async def test_the_push_websocket_is_relayed_to_n8n(editor: Editor, services: Services) -> None:
    session = await editor.session(editor.alpha, editor.alpha.editor)
    async with served(services) as base:
        origin = Origin(base)
        url = base.replace("http", "ws", 1) + f"/editor/{editor.alpha.slug}/rest/push"
        headers = {"Cookie": f"{COOKIE}={session}"}
        # n8n itself refuses a push connection without a pushRef: 1.x says why first (proof
        # the relay reached it), 2.x closes it at once.
        async with connect(url, additional_headers=headers, origin=origin) as ws:
            try:
                first: str | bytes | None = await asyncio.wait_for(ws.recv(), 10)
            except ConnectionClosed:
                first = None
            if line(N8N_VERSION).major < 2:
                assert first == 'The query parameter "pushRef" is missing!'
            else:
                assert first is None
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
        # With a pushRef, the owner's session is accepted and the channel stays open.
        async with connect(
            url + "?pushRef=zixlytest", additional_headers=headers, origin=origin
        ) as ws:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ws.recv(), 1.5)
        # No editor session: closed by the proxy before n8n is asked.
        with pytest.raises((ConnectionClosed, InvalidStatus)):
            async with connect(url + "?pushRef=zixlytest", origin=origin) as ws:
                await asyncio.wait_for(ws.recv(), 10)
