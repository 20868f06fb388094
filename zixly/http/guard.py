"""The rate limits in front of everything authenticated (HTTP routes and WebSockets).

Two sliding windows in Redis: requests per tenant, and failed authentications per client
address (an address over that limit is refused before its token is even checked, so a guess
cannot succeed while throttled). Both fail open when Redis cannot answer in time: an outage
of the limiter must not take the API down with it (logged and counted).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from zixly.http.metrics import RATE_LIMIT_REJECTIONS, RATE_LIMIT_UNAVAILABLE
from zixly.http.ratelimit import Decision, RateLimiter
from zixly.logging import get_logger
from zixly.settings import Settings

log = get_logger("zixly.http")

# Failed authentications allowed per client address per window, so tokens cannot be guessed
# at speed. The address is the ASGI client: behind a proxy, run uvicorn with
# --proxy-headers / --forwarded-allow-ips so it is the real client's.
AUTH_FAILURES_PER_WINDOW = 30
AUTH_FAILURE_WINDOW_SECONDS = 60


class AccessGuard:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.window_seconds = settings.rate_limit_window_seconds
        self.requests = RateLimiter(
            redis, settings.rate_limit_per_minute, settings.rate_limit_window_seconds
        )
        self.auth_failures = RateLimiter(
            redis, AUTH_FAILURES_PER_WINDOW, AUTH_FAILURE_WINDOW_SECONDS, prefix="authfail"
        )
        # Ingest requests per tenant (zixly/http/ingest.py): a bucket of their own, so a
        # tenant's bulk loads and its people's API use do not starve each other.
        self.ingest = RateLimiter(
            redis,
            settings.ingest_rate_limit_per_minute,
            settings.rate_limit_window_seconds,
            prefix="ingest",
        )

    async def close(self) -> None:
        await self.redis.aclose()

    async def address_blocked(self, address: str) -> Decision | None:
        """The failed-authentication window of this address, when it is exhausted."""
        decision = await self._ask(self.auth_failures.peek, address)
        return decision if decision is not None and not decision.allowed else None

    async def record_auth_failure(self, address: str) -> None:
        await self._ask(self.auth_failures.hit, address)

    async def admit(self, key: str) -> Decision | None:
        """Count one request against ``key``'s window; ``None`` when the limiter is down."""
        return await self._ask(self.requests.hit, key)

    async def admit_ingest(self, key: str) -> Decision | None:
        """Count one ingest request against ``key``'s window; ``None`` when the limiter is down."""
        return await self._ask(self.ingest.hit, key)

    @staticmethod
    def rejected(limit: str, key: str) -> None:
        RATE_LIMIT_REJECTIONS.labels(limit).inc()
        log.info("ratelimit.rejected", limit=limit, key=key)

    @staticmethod
    async def _ask(check: Callable[[str], Awaitable[Decision]], key: str) -> Decision | None:
        try:
            return await check(key)
        except (RedisError, OSError) as exc:
            RATE_LIMIT_UNAVAILABLE.inc()
            log.warning("ratelimit.unavailable", error=repr(exc))
            return None
