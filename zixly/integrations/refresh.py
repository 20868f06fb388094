"""Race-free token refresh.

One refresh per integration at a time, across processes: a Redis lock per integration
(with a timeout, so a crashed holder cannot wedge it, and a blocking timeout, so waiters
give up). Under the lock the row is read again: when another worker has just refreshed,
its tokens are used and the provider is not called. Otherwise the provider is called
outside any database transaction, and the new access AND refresh token are written in one
transaction before the lock is released, so with rotating (single-use) refresh tokens no
one ever sends the old one again. Timeouts, 5xx and 429 (nothing changed at the provider) are
tried again under the lock with exponential backoff, a 429 after its Retry-After.

After the lock is released, hooks carry the outcome on (zixly.integrations.sync): a new
access token is pushed into the tenant's n8n credential (a failed push is retried by the
next run and never touches the stored token), and a refused grant raises the reconnect alert.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

from redis.asyncio import Redis
from redis.exceptions import LockError
from sqlalchemy import Table, select

from zixly.core.errors import UnavailableError, ZixlyError
from zixly.core.logging import get_logger
from zixly.core.settings import Settings
from zixly.db.models import Integration
from zixly.db.session import Database
from zixly.integrations.sync import (
    alert_service,
    invalid_grant_alert,
    retry_pending_pushes,
    token_pusher,
    worker_deps,
)
from zixly.providers.oauth import (
    InvalidGrantError,
    OAuthClient,
    ProviderRateLimitedError,
    ProviderUnavailableError,
    TokenSet,
)
from zixly.providers.registry import Provider, provider
from zixly.providers.tokens import STAFF, StoredIntegration, TokenStore

log = get_logger("zixly.integrations.refresh")

LOCK_PREFIX = "zixly:integration-refresh:"
REFRESHABLE = ("ACTIVE", "STALE")
_TABLE = cast(Table, Integration.__table__)

Outcome = Literal["refreshed", "fresh", "skipped"]
InvalidGrantHook = Callable[[StoredIntegration], Awaitable[None]]
RefreshedHook = Callable[[StoredIntegration], Awaitable[None]]


class RefreshBusyError(UnavailableError):
    """Another worker held the integration's refresh lock for longer than we would wait."""

    code = "REFRESH_BUSY"
    retryable = True


@dataclass(frozen=True)
class RefreshResult:
    integration_id: uuid.UUID
    outcome: Outcome | None
    error: str | None = None  # the error code when the refresh failed


class TokenRefresher:
    def __init__(
        self,
        db: Database,
        redis: Redis,
        store: TokenStore,
        oauth: OAuthClient,
        *,
        min_remaining: timedelta = timedelta(minutes=5),
        lock_timeout: float | None = None,
        blocking_timeout: float = 30.0,
        on_invalid_grant: InvalidGrantHook | None = None,
        on_refreshed: RefreshedHook | None = None,
    ) -> None:
        self.db = db
        self.redis = redis
        self.store = store
        self.oauth = oauth
        self.min_remaining = min_remaining
        settings = oauth.settings
        self.attempts = settings.oauth_refresh_attempts
        self.backoff = settings.oauth_retry_backoff_seconds
        self.max_wait = settings.oauth_retry_max_wait_seconds
        # The lock must outlive every attempt at the provider, the waits between them and the
        # write that follows.
        self.lock_timeout = lock_timeout or (
            (settings.oauth_timeout_seconds + self.max_wait) * self.attempts + 10
        )
        self.blocking_timeout = blocking_timeout
        # Alerting (another module) hooks in here; the log line is always written.
        self.on_invalid_grant = on_invalid_grant
        # Called after the new tokens committed and the lock is released (n8n credentials).
        self.on_refreshed = on_refreshed

    async def refresh_integration(self, integration_id: uuid.UUID) -> Outcome:
        lock = self.redis.lock(
            f"{LOCK_PREFIX}{integration_id}",
            timeout=self.lock_timeout,
            blocking_timeout=self.blocking_timeout,
        )
        if not await lock.acquire():
            raise RefreshBusyError(
                "the integration is being refreshed elsewhere", integration_id=str(integration_id)
            )
        try:
            outcome, stored = await self._refresh_locked(integration_id)
        finally:
            try:
                await lock.release()
            except LockError:  # expired while we worked; the write already happened
                log.warning("integration.refresh.lock_expired", integration_id=str(integration_id))
        if outcome == "refreshed" and self.on_refreshed is not None:
            try:
                await self.on_refreshed(stored)
            except Exception as exc:  # the new tokens are stored; the hook's work can wait
                log.error(
                    "integration.refresh.hook_failed",
                    integration_id=str(integration_id),
                    error=type(exc).__name__,
                )
        return outcome

    async def _refresh_with_backoff(
        self, spec: Provider, stored: StoredIntegration, params: dict[str, str]
    ) -> TokenSet:
        """The provider call, tried again after timeouts, 5xx and 429 (nothing changed at
        the provider then): exponential backoff with jitter, or the 429's Retry-After; a
        wait longer than ``max_wait`` ends the attempt (the next cron run tries again)."""
        assert stored.refresh_token is not None
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            try:
                return await self.oauth.refresh(spec, stored.refresh_token, **params)
            except (ProviderUnavailableError, ProviderRateLimitedError) as exc:
                asked = exc.retry_after if isinstance(exc, ProviderRateLimitedError) else None
                wait = asked if asked is not None else delay * (1 + random.random() / 4)  # noqa: S311
                if attempt == self.attempts or wait > self.max_wait:
                    raise
                log.warning(
                    "integration.refresh.retrying",
                    integration_id=str(stored.id),
                    provider=stored.provider,
                    code=exc.code,
                    attempt=attempt,
                    wait_seconds=round(wait, 2),
                )
                await asyncio.sleep(wait)
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    async def _refresh_locked(self, integration_id: uuid.UUID) -> tuple[Outcome, StoredIntegration]:
        async with self.db.transaction(STAFF) as session:
            stored = await self.store.load(session, integration_id)
        now = datetime.now(UTC)
        if stored.status not in REFRESHABLE or stored.refresh_token is None:
            return "skipped", stored
        if stored.expires_at is not None and stored.expires_at - now > self.min_remaining:
            return "fresh", stored  # refreshed by someone else while we waited for the lock
        spec = provider(stored.provider)
        shop = stored.metadata.get("shop")
        params = {"shop": str(shop)} if shop else {}
        try:
            tokens = await self._refresh_with_backoff(spec, stored, params)
        except InvalidGrantError:
            await self._reject(stored)
            raise
        async with self.db.transaction(STAFF) as session:
            await self.store.save(
                session,
                stored,
                access_token=tokens.access_token,
                refresh_token=tokens.refresh_token,
                expires_at=now + tokens.expires_in,
            )
        log.info(
            "integration.refreshed",
            integration_id=str(stored.id),
            tenant_id=str(stored.tenant_id),
            provider=stored.provider,
        )
        return "refreshed", stored

    async def _reject(self, stored: StoredIntegration) -> None:
        """invalid_grant: mark ERROR, unless the stored refresh token changed meanwhile (then
        the rejection was of a token already replaced, not of the grant)."""
        async with self.db.transaction(STAFF) as session:
            current = await self.store.load(session, stored.id, for_update=True)
            if current.refresh_token != stored.refresh_token:
                return
            await self.store.set_status(session, current, "ERROR")
        log.error(
            "integration.refresh.invalid_grant",
            integration_id=str(stored.id),
            tenant_id=str(stored.tenant_id),
            provider=stored.provider,
            action="the tenant must reconnect the integration",
        )
        if self.on_invalid_grant is not None:
            try:
                await self.on_invalid_grant(stored)
            except Exception as exc:  # ERROR is recorded; the alert must not hide the cause
                log.error(
                    "integration.refresh.alert_failed",
                    integration_id=str(stored.id),
                    error=type(exc).__name__,
                )

    async def expiring(self, window: timedelta) -> list[uuid.UUID]:
        c = _TABLE.c
        async with self.db.transaction(STAFF) as session:
            rows = await session.execute(
                select(c.id)
                .where(
                    c.status.in_(REFRESHABLE),
                    c.refresh_token_ciphertext.is_not(None),
                    c.expires_at < datetime.now(UTC) + window,
                )
                .order_by(c.expires_at)
            )
            return [row.id for row in rows]

    async def refresh_expiring(
        self, window: timedelta = timedelta(minutes=10), *, concurrency: int = 8
    ) -> list[RefreshResult]:
        """Refresh every integration expiring within ``window``; one failure does not stop
        the others (each is reported in the result)."""
        gate = asyncio.Semaphore(concurrency)

        async def one(integration_id: uuid.UUID) -> RefreshResult:
            async with gate:
                try:
                    return RefreshResult(
                        integration_id, await self.refresh_integration(integration_id)
                    )
                except ZixlyError as exc:
                    log.warning(
                        "integration.refresh.failed",
                        integration_id=str(integration_id),
                        code=exc.code,
                    )
                    return RefreshResult(integration_id, None, exc.code)

        return list(await asyncio.gather(*(one(i) for i in await self.expiring(window))))


async def refresh_expiring_tokens(ctx: dict[str, Any]) -> dict[str, int]:
    """The arq cron job (ctx from ``zixly.workers.settings.startup``): push again the n8n credentials a
    previous run failed to update, then refresh what expires within 10 minutes; the counts
    per outcome / error code are the job's result."""
    settings: Settings = ctx["settings"]
    deps = worker_deps(ctx)
    pending = await retry_pending_pushes(deps, ctx["redis"])
    refresher = TokenRefresher(
        ctx["db"],
        ctx["redis"],
        TokenStore(ctx["keyring"]),
        OAuthClient(ctx["http"], settings),
        on_invalid_grant=invalid_grant_alert(alert_service(ctx)),
        on_refreshed=token_pusher(deps, ctx["redis"]),
    )
    results = await refresher.refresh_expiring()
    counts = Counter(r.outcome or r.error or "unknown" for r in results)
    counts.update({f"push_{name}": n for name, n in pending.items() if n})
    return dict(counts)
