"""Token refresh against the provider sandbox served by a real uvicorn, with the real
PostgreSQL and Redis. Provider behaviour (Xero: rotating single-use refresh tokens, 30-minute
access tokens, Basic client auth; 429 with Retry-After) follows
docs/au-rules-and-provider-apis.md ("Provider API shapes and limits")."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.conftest import World, make_settings, serve_app
from zixly.container import Services
from zixly.dev.sandbox.oauth import Fault, ProviderSandbox
from zixly.integrations.refresh import TokenRefresher
from zixly.providers.oauth import (
    InvalidGrantError,
    OAuthClient,
    ProviderRateLimitedError,
    ProviderUnavailableError,
)
from zixly.providers.tokens import STAFF, StoredIntegration, TokenStore, integration_binding
from zixly.security.crypto import Keyring

CLIENT = ("zixly-client", "zixly-client-secret")
ATTEMPTS = 3


class Rig:
    def __init__(
        self, sandbox: ProviderSandbox, refresher: TokenRefresher, owner: asyncpg.Connection
    ) -> None:
        self.sandbox = sandbox
        self.refresher = refresher
        self.owner = owner
        self.keyring = refresher.store.keyring

    async def integration(
        self, world: World, provider: str = "xero", expires_in: timedelta = timedelta(minutes=2)
    ) -> tuple[uuid.UUID, uuid.UUID, str]:
        tenant = await world.tenant("refresh", clients=0)
        row_id = uuid.uuid4()
        refresh = self.sandbox.grant(provider)
        bind = lambda field: integration_binding(tenant.id, row_id, field)  # noqa: E731
        await self.owner.execute(
            "INSERT INTO integrations (id, tenant_id, provider, status, access_token_ciphertext,"
            " refresh_token_ciphertext, expires_at) VALUES ($1, $2, $3, 'ACTIVE', $4, $5, $6)",
            row_id,
            tenant.id,
            provider,
            self.keyring.encrypt("old-access", bind("access_token")),
            self.keyring.encrypt(refresh, bind("refresh_token")),
            datetime.now(UTC) + expires_in,
        )
        return tenant.id, row_id, refresh

    async def stored(self, row_id: uuid.UUID) -> StoredIntegration:
        async with self.refresher.db.transaction(STAFF) as session:
            return await self.refresher.store.load(session, row_id)


@pytest.fixture
async def rig(services: Services, owner: asyncpg.Connection, data_dir: Path) -> AsyncIterator[Rig]:
    sandbox = ProviderSandbox(clients={"xero": CLIENT, "hubspot": CLIENT})
    async with serve_app(sandbox.app()) as url, httpx.AsyncClient() as http:
        settings = make_settings(
            data_dir,
            provider_base_urls={name: f"{url}/{name}" for name in ("xero", "hubspot", "myob")},
            oauth_clients={
                name: {"client_id": CLIENT[0], "client_secret": CLIENT[1]}
                for name in ("xero", "hubspot")
            },
            oauth_timeout_seconds=0.5,
            oauth_refresh_attempts=ATTEMPTS,
            oauth_retry_backoff_seconds=0.05,
            oauth_retry_max_wait_seconds=5.0,
        )
        refresher = TokenRefresher(
            services.db,
            services.redis,
            TokenStore(Keyring.from_settings(settings)),
            OAuthClient(http, settings),
        )
        yield Rig(sandbox, refresher, owner)


async def test_concurrent_refreshes_call_the_provider_once(rig: Rig, world: World) -> None:
    rig.sandbox.delay = 0.2  # keep the winner inside the lock while the others queue
    tenant_id, row_id, old = await rig.integration(world)

    outcomes = await asyncio.gather(*(rig.refresher.refresh_integration(row_id) for _ in range(20)))

    assert sorted(outcomes) == ["fresh"] * 19 + ["refreshed"]
    assert rig.sandbox.total_calls == 1
    assert rig.sandbox.calls[old] == 1
    stored = await rig.stored(row_id)
    assert stored.refresh_token is not None and stored.access_token is not None
    new = stored.refresh_token.reveal()
    assert new != old and rig.sandbox.live[new] == "xero" and new not in rig.sandbox.used
    assert stored.access_token.reveal().startswith("xero-at-")
    assert stored.status == "ACTIVE"
    remaining = stored.expires_at - datetime.now(UTC)  # type: ignore[operator]
    assert timedelta(minutes=29) < remaining <= timedelta(minutes=30)

    # Ciphertext only, sealed to this row: the columns hold v1 values that decrypt with the
    # row's binding and not with another row's.
    row = await rig.owner.fetchrow(
        "SELECT access_token_ciphertext a, refresh_token_ciphertext r FROM integrations"
        " WHERE id = $1",
        row_id,
    )
    assert row["r"].startswith("v1.") and new not in row["r"]
    assert (
        rig.keyring.decrypt(
            row["r"], integration_binding(tenant_id, row_id, "refresh_token")
        ).reveal()
        == new
    )
    with pytest.raises(Exception, match="authenticate"):
        rig.keyring.decrypt(row["r"], integration_binding(tenant_id, uuid.uuid4(), "refresh_token"))
    with pytest.raises(asyncpg.CheckViolationError):
        await rig.owner.execute(
            "UPDATE integrations SET refresh_token_ciphertext = 'plain' WHERE id = $1", row_id
        )

    # The stored (rotated) token works for the next refresh.
    await rig.owner.execute("UPDATE integrations SET expires_at = now() WHERE id = $1", row_id)
    assert await rig.refresher.refresh_integration(row_id) == "refreshed"
    assert rig.sandbox.calls[new] == 1 and rig.sandbox.total_calls == 2


async def test_reused_refresh_token_marks_the_integration_error(rig: Rig, world: World) -> None:
    _, row_id, old = await rig.integration(world)
    rig.sandbox.used.add(old)  # someone already spent it
    alerts: list[uuid.UUID] = []

    async def alert(stored: StoredIntegration) -> None:
        alerts.append(stored.id)

    rig.refresher.on_invalid_grant = alert
    with pytest.raises(InvalidGrantError):
        await rig.refresher.refresh_integration(row_id)

    stored = await rig.stored(row_id)
    assert stored.status == "ERROR"
    assert alerts == [row_id]
    assert stored.refresh_token is not None and stored.refresh_token.reveal() == old
    # An ERROR integration is no longer refreshed (the user must reconnect).
    assert await rig.refresher.refresh_integration(row_id) == "skipped"
    assert rig.sandbox.calls[old] == 1


@pytest.mark.parametrize("fault", [Fault(status=503), Fault(status=200, delay=1.0)])
async def test_5xx_and_timeouts_are_retryable_and_change_nothing(
    rig: Rig, world: World, fault: Fault
) -> None:
    """Every attempt fails: the refresh gives up with a retryable error and changes nothing."""
    _, row_id, old = await rig.integration(world)
    before = await rig.owner.fetchrow("SELECT * FROM integrations WHERE id = $1", row_id)
    rig.sandbox.faults.extend([fault] * ATTEMPTS)

    with pytest.raises(ProviderUnavailableError) as caught:
        await rig.refresher.refresh_integration(row_id)

    assert caught.value.retryable and caught.value.code == "UNAVAILABLE"
    assert rig.sandbox.calls[old] == ATTEMPTS
    after = await rig.owner.fetchrow("SELECT * FROM integrations WHERE id = $1", row_id)
    assert dict(after) == dict(before)
    # Nothing was spent: the next run refreshes with the same token.
    assert await rig.refresher.refresh_integration(row_id) == "refreshed"
    assert rig.sandbox.calls[old] == ATTEMPTS + 1


async def test_transient_failures_are_retried_with_backoff(rig: Rig, world: World) -> None:
    """A 5xx, then a 429 asking for 0.3 s: the third call (after waiting) refreshes."""
    _, row_id, old = await rig.integration(world)
    rig.sandbox.faults.extend([Fault(status=502), Fault(status=429, retry_after="0.3")])

    started = time.monotonic()
    assert await rig.refresher.refresh_integration(row_id) == "refreshed"

    assert time.monotonic() - started >= 0.3 + 0.05  # Retry-After, and the first backoff
    assert rig.sandbox.calls[old] == 3
    stored = await rig.stored(row_id)
    assert stored.refresh_token is not None and stored.refresh_token.reveal() != old


async def test_429_carries_retry_after(rig: Rig, world: World) -> None:
    """A Retry-After longer than the refresh will wait ends it at once (the next cron run
    tries again), carrying the provider's value."""
    _, row_id, old = await rig.integration(world)
    rig.sandbox.faults.append(Fault(status=429, retry_after="7"))

    with pytest.raises(ProviderRateLimitedError) as caught:
        await rig.refresher.refresh_integration(row_id)
    assert rig.sandbox.calls[old] == 1

    assert caught.value.retry_after == 7.0
    assert caught.value.extensions == {
        "code": "RATE_LIMITED",
        "retry_after": 7.0,
        "provider": "xero",
    }
    assert (await rig.stored(row_id)).status == "ACTIVE"


async def test_refresh_expiring_refreshes_only_those_in_the_window(rig: Rig, world: World) -> None:
    _, soon, _ = await rig.integration(world, "xero", timedelta(minutes=3))
    _, later, later_token = await rig.integration(world, "hubspot", timedelta(hours=2))
    _, reusable, reusable_token = await rig.integration(world, "myob", timedelta(minutes=1))

    results = {r.integration_id: r for r in await rig.refresher.refresh_expiring(concurrency=2)}

    assert results[soon].outcome == "refreshed"
    assert results[reusable].outcome == "refreshed"
    assert later not in results
    assert rig.sandbox.calls[later_token] == 0
    assert (await rig.stored(reusable)).refresh_token != reusable_token


async def test_a_refresh_leaves_the_sync_status_alone(rig: Rig, world: World) -> None:
    """A refresh proves the grant, not the sync: a STALE integration stays STALE until the
    monitor sees a successful run (otherwise every refresh would flap STALE -> ACTIVE)."""
    _, row_id, _ = await rig.integration(world)
    await rig.owner.execute("UPDATE integrations SET status = 'STALE' WHERE id = $1", row_id)

    assert await rig.refresher.refresh_integration(row_id) == "refreshed"

    stored = await rig.stored(row_id)
    assert stored.status == "STALE"
    assert stored.access_token is not None and stored.access_token.reveal() != "old-access"
