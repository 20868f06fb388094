"""GraphiQL in a real browser: Debian's chromium, driven by Playwright, against the app under
uvicorn. It opens /graphql, pastes a token into the headers editor, runs a query and a
subscription, and sees the seeded tenant's data; no request leaves loopback (anything else
would be refused and recorded). The screenshot is kept in test-artifacts/graphiql.png.

CI installs chromium (scripts/install-chromium.sh); there a missing browser fails the test
(ZIXLY_REQUIRE_BROWSER or CI), elsewhere it is skipped.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Browser, Page, Route, async_playwright

from tests.conftest import World
from tests.test_graphiql import require_graphiql_installed
from tests.test_subscriptions import event, subscribers
from zixly.container import Services
from zixly.core.events import SyncEventBus
from zixly.core.settings import Settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}
TIMEOUT_MS = 20_000
QUERY = """{
  me { email role tenant { name } }
  clients { nodes { name } }
}"""
SUBSCRIPTION = """subscription Watch {
  syncEvents { provider status message recordsSynced }
}"""


def require_chromium() -> None:
    if CHROMIUM.is_file():
        return
    message = f"{CHROMIUM} is missing: run scripts/install-chromium.sh"
    if os.environ.get("CI") or os.environ.get("ZIXLY_REQUIRE_BROWSER"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    require_chromium()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield launched
        await launched.close()


@dataclass(frozen=True)
class Sent:
    method: str
    url: str
    headers: dict[str, str]
    body: str | None


@dataclass
class Traffic:
    """Every request the page made (as it went out), and any refused for leaving loopback."""

    requests: list[Sent] = field(default_factory=list)
    sockets: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    async def route(self, route: Route) -> None:
        request = route.request
        self.requests.append(
            Sent(request.method, request.url, await request.all_headers(), request.post_data)
        )
        if urlsplit(request.url).hostname in LOOPBACK:
            await route.continue_()
        else:
            self.refused.append(request.url)
            await route.abort("blockedbyclient")

    def watch(self, page: Page) -> None:
        page.on("websocket", lambda ws: self.sockets.append(ws.url))
        page.on(
            "console",
            lambda message: (
                self.console_errors.append(message.text) if message.type == "error" else None
            ),
        )
        page.on("pageerror", lambda error: self.console_errors.append(str(error)))


async def editor_value(page: Page, selector: str) -> str:
    """The text of GraphiQL's CodeMirror editor under ``selector``."""
    value: str = await page.eval_on_selector(
        f"{selector} .CodeMirror", "element => element.CodeMirror.getValue()"
    )
    return value


async def paste(page: Page, selector: str, text: str) -> None:
    """Select everything in an editor and paste ``text`` over it, as a person would."""
    await page.click(f"{selector} .CodeMirror")
    await page.keyboard.press("Control+A")
    await page.keyboard.insert_text(text)


async def analysed(page: Page) -> None:
    """Wait until GraphiQL has read the query editor's new document (operation names and
    types, which decide HTTP or WebSocket): it does so 100 ms after an edit, well before a
    person reaches the run button, but a busy machine can take longer."""
    await page.wait_for_function(
        """() => {
            const editor = document.querySelector(".graphiql-query-editor .CodeMirror").CodeMirror;
            const document_ = editor.documentAST;
            return Boolean(document_ && document_.loc.source.body === editor.getValue());
        }""",
        timeout=TIMEOUT_MS,
    )


async def result(page: Page, contains: str) -> dict[str, Any]:
    """The result pane's JSON, once it shows ``contains``."""
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    text = ""
    while time.monotonic() < deadline:
        text = await editor_value(page, ".graphiql-response")
        if contains in text:
            parsed: dict[str, Any] = json.loads(text)
            return parsed
        await asyncio.sleep(0.1)
    raise AssertionError(f"the result pane never showed {contains!r}; it shows {text!r}")


async def test_graphiql_runs_a_query_and_a_subscription_with_a_pasted_token(
    browser: Browser,
    live_server: str,
    client: httpx.AsyncClient,
    services: Services,
    settings: Settings,
    world: World,
) -> None:
    require_graphiql_installed(settings)
    tenant = await world.tenant("graphiql", clients=2)
    token = world.token(tenant.admin, tenant.slug)
    expected = (
        await client.post(
            "/graphql", json={"query": QUERY}, headers={"Authorization": f"Bearer {token}"}
        )
    ).json()
    assert expected["data"]["me"]["tenant"]["name"] == f"Tenant {tenant.slug}"
    started = time.monotonic()

    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    traffic = Traffic()
    await context.route("**/*", traffic.route)
    page = await context.new_page()
    traffic.watch(page)
    try:
        await page.goto(f"{live_server}/graphql", timeout=TIMEOUT_MS)
        await page.wait_for_selector(".graphiql-query-editor .CodeMirror", timeout=TIMEOUT_MS)
        # The headers editor is open, pre-filled with the placeholder the page explains.
        headers_editor = '.graphiql-editor-tool[aria-label="Headers"] .graphiql-editor:not(.hidden)'
        await page.wait_for_selector(f"{headers_editor} .CodeMirror", timeout=TIMEOUT_MS)
        placeholder = json.loads(await editor_value(page, headers_editor))
        assert placeholder == {"Authorization": "Bearer <token>"}
        assert "zixly token --email" in await page.inner_text("#zixly-hint")

        await paste(
            page, headers_editor, json.dumps({"Authorization": f"Bearer {token}"}, indent=2)
        )
        await paste(page, ".graphiql-query-editor", QUERY)
        await analysed(page)
        await page.click(".graphiql-execute-button")
        shown = await result(page, f"Tenant {tenant.slug}")
        assert shown == expected  # the real result, as the API gives it to any client
        # The token made the schema load: the documentation explorer knows the Query type.
        await page.click('button[aria-label="Show Documentation Explorer"]')
        await page.wait_for_selector(".graphiql-doc-explorer >> text=Query", timeout=TIMEOUT_MS)
        await page.click('button[aria-label="Hide Documentation Explorer"]')

        ARTIFACTS.mkdir(exist_ok=True)
        screenshot = ARTIFACTS / "graphiql.png"
        await page.screenshot(path=str(screenshot))
        print(f"\nGraphiQL screenshot: {screenshot}")

        # A subscription over graphql-transport-ws, the headers going in connection_init.
        await paste(page, ".graphiql-query-editor", SUBSCRIPTION)
        await analysed(page)
        await page.click(".graphiql-execute-button")
        async with asyncio.timeout(TIMEOUT_MS / 1000):
            while await subscribers(services, tenant.id) != 1:
                await asyncio.sleep(0.05)
        await SyncEventBus(services.redis).publish(tenant.id, event("xero", 7))
        streamed = await result(page, "xero synced")
        assert streamed == {
            "data": {
                "syncEvents": {
                    "provider": "xero",
                    "status": "SUCCEEDED",
                    "message": "xero synced",
                    "recordsSynced": 7,
                }
            }
        }
        await page.screenshot(path=str(ARTIFACTS / "graphiql-subscription.png"))
    finally:
        await context.close()
    print(f"browser part: {time.monotonic() - started:.1f} s")

    assert traffic.refused == []  # nothing asked for any host but this one
    hosts = {urlsplit(r.url).hostname for r in traffic.requests} | {
        urlsplit(url).hostname for url in traffic.sockets
    }
    assert hosts == {"127.0.0.1"}
    assert traffic.sockets == [live_server.replace("http://", "ws://") + "/graphql"]
    assert traffic.console_errors == []  # no CSP violation, no script error
    api_calls = [r for r in traffic.requests if r.method == "POST"]
    assert api_calls, "GraphiQL sent no request to the API"
    # Nothing went out with the placeholder or without the token: the schema was fetched
    # once the token was there, the query with it.
    for call in api_calls:
        assert urlsplit(call.url).path == "/graphql"
        assert call.headers["authorization"] == f"Bearer {token}"
    bodies = [json.loads(call.body or "{}") for call in api_calls]
    assert any(body.get("operationName") == "IntrospectionQuery" for body in bodies)
    assert any(body.get("query") == QUERY for body in bodies)
