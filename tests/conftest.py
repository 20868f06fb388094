"""Shared fixtures: one real embedded PostgreSQL (pgvector) and Redis for the whole run."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn

from zixly.app import create_app
from zixly.container import Services
from zixly.core.settings import Settings
from zixly.db.migrate import upgrade
from zixly.dev.seed import ensure_client, ensure_tenant, ensure_user
from zixly.embedded.stack import EmbeddedStack, Endpoints
from zixly.security.tokens import mint_token

JWT_SECRET = "test-secret-" + "x" * 40


def plain_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("zixly")


@pytest.fixture(scope="session")
async def endpoints(data_dir: Path) -> AsyncIterator[Endpoints]:
    os.environ.setdefault("XDG_RUNTIME_DIR", str(data_dir))
    stack = EmbeddedStack(data_dir, database_url=None, migrations_database_url=None, redis_url=None)
    found = await stack.start()
    await upgrade(found.migrations_database_url)
    yield found
    stack.stop()


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "jwt_secret": JWT_SECRET,
        "rate_limit_per_minute": 100_000,
        "log_json": True,
        "alert_webhook_allow_loopback": True,  # the tests' webhook receivers run on 127.0.0.1
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
def settings(data_dir: Path) -> Settings:
    return make_settings(data_dir)


@pytest.fixture(scope="session")
async def owner(endpoints: Endpoints) -> AsyncIterator[asyncpg.Connection]:
    """A connection as the table owner, for arranging fixtures (bypasses RLS by design)."""
    conn = await asyncpg.connect(plain_dsn(endpoints.migrations_database_url))
    yield conn
    await conn.close()


@pytest.fixture(scope="session")
async def services(settings: Settings, endpoints: Endpoints) -> AsyncIterator[Services]:
    built = Services.build(
        settings, database_url=endpoints.database_url, redis_url=endpoints.redis_url
    )
    yield built
    await built.close()


@pytest.fixture(scope="session")
async def client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@dataclass
class TenantFixture:
    id: uuid.UUID
    slug: str
    admin: str
    editor: str
    viewer: str
    client_ids: list[uuid.UUID]


class World:
    """Builds tenants, users and tokens for a test; every name is unique to the test run."""

    def __init__(self, owner: asyncpg.Connection, settings: Settings) -> None:
        self.owner = owner
        self.settings = settings

    def token(self, email: str, tenant: str | None = None, **kw: Any) -> str:
        return mint_token(
            self.settings, JWT_SECRET.encode(), email=email, subject=email, tenant=tenant, **kw
        )

    def headers(self, email: str, tenant: str | None = None, **kw: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(email, tenant, **kw)}"}

    async def tenant(self, label: str = "t", clients: int = 2) -> TenantFixture:
        slug = f"{label}-{uuid.uuid4().hex[:10]}"
        tenant_id = await ensure_tenant(self.owner, slug, f"Tenant {slug}", "retail")
        emails = {}
        for role in ("ADMIN", "EDITOR", "VIEWER"):
            email = f"{role.lower()}@{slug}.test"
            await ensure_user(self.owner, email, tenant_id=tenant_id, role=role)
            emails[role] = email
        client_ids = [
            await ensure_client(self.owner, tenant_id, f"C-{n}", f"Client {n} of {slug}", "retail")
            for n in range(clients)
        ]
        return TenantFixture(
            tenant_id, slug, emails["ADMIN"], emails["EDITOR"], emails["VIEWER"], client_ids
        )

    async def staff(self) -> str:
        email = f"staff-{uuid.uuid4().hex[:8]}@zixly.test"
        await ensure_user(self.owner, email, is_staff=True)
        return email


@pytest.fixture
def world(owner: asyncpg.Connection, settings: Settings) -> World:
    return World(owner, settings)


async def gql(
    client: httpx.AsyncClient,
    query: str,
    variables: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    response = await client.post(
        "/graphql", json={"query": query, "variables": variables or {}}, headers=headers or {}
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="session", autouse=True)
def _quiet_logs() -> Iterator[None]:
    from zixly.core.logging import configure_logging

    configure_logging("WARNING", json=True)
    yield


class _InProcessServer(uvicorn.Server):
    """uvicorn on the tests' event loop; leaves the process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@pytest.fixture(scope="session")
async def live_server(services: Services) -> AsyncIterator[str]:
    """The app served by a real uvicorn on 127.0.0.1 (a free port); yields the base URL."""
    async with served(services) as url:
        yield url


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.asynccontextmanager
async def serve_app(app: Any, *, port: int = 0, **config: Any) -> AsyncIterator[str]:
    """Serve an ASGI app with a real uvicorn on a loopback port (0: a free one), on the
    tests' event loop; yields the base URL. ``config`` adds uvicorn settings."""
    server = _InProcessServer(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            lifespan="off",
            log_config=None,
            log_level="warning",
            **config,
        )
    )
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:
            if task.done():
                task.result()  # surfaces a start-up failure
                raise RuntimeError("uvicorn exited before it started")
            await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    server.should_exit = True
    await task


@contextlib.asynccontextmanager
async def served(services: Services, *, port: int = 0) -> AsyncIterator[str]:
    """Serve the Zixly app over ``services`` (WebSockets included)."""
    async with serve_app(
        create_app(services), port=port, ws="websockets-sansio", timeout_graceful_shutdown=5
    ) as url:
        yield url


@contextlib.asynccontextmanager
async def other_app(
    endpoints: Endpoints,
    settings: Settings,
    *,
    database_url: str | None = None,
    redis_url: str | None = None,
    address: str = "127.0.0.1",
) -> AsyncIterator[tuple[Services, httpx.AsyncClient]]:
    """A second Services + app (other settings, or a broken dependency), and a client that
    connects from ``address`` (the per-address failed-authentication limit keys on it)."""
    built = Services.build(
        settings,
        database_url=database_url or endpoints.database_url,
        redis_url=redis_url or endpoints.redis_url,
    )
    transport = httpx.ASGITransport(app=create_app(built), client=(address, 40000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield built, c
    finally:
        await built.close()


class LogLines:
    """What the application logged (the real JSON renderer's output), one dict per line."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.text.splitlines() if line.strip()]
        return [line for line in lines if event is None or line.get("event") == event]


@pytest.fixture
def logs() -> Iterator[LogLines]:
    """Application logs at INFO, captured for the test (restored to quiet afterwards)."""
    from zixly.core.logging import configure_logging

    captured = LogLines()
    configure_logging("INFO", json=True, stream=captured.stream)
    yield captured
    configure_logging("WARNING", json=True)


def unreachable_database_url() -> str:
    """A database URL whose socket directory does not exist (connecting fails at once)."""
    return f"postgresql+asyncpg://zixly_app@/zixly?host=/nonexistent-{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def app_with_broken_data_path(
    services: Services, owner: asyncpg.Connection
) -> AsyncIterator[httpx.AsyncClient]:
    """An app whose authentication works while reading the tenant data tables fails at the
    database (SELECT revoked from the application role for the duration): every data access
    is an unexpected error, raised by PostgreSQL itself."""
    tables = "client_kpis, financials, lead_events, custom_metrics"
    app_role = services.settings.app_role
    await owner.execute(f"REVOKE SELECT ON {tables} FROM {app_role}")
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(services)), base_url="http://testserver"
        ) as c:
            yield c
    finally:
        await owner.execute(f"GRANT SELECT ON {tables} TO {app_role}")
