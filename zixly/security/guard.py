"""The rate limits in front of everything authenticated (HTTP routes and WebSockets).

Sliding windows in Redis: requests per tenant, and failed authentications. Failures are
charged to whom the credential claims to be, so one attacker cannot lock out everyone
behind the same address (a NAT, an office, a mobile carrier):

* a token that names an account (a JWT whose payload carries the email claim or ``sub``,
  read before verification) is charged to that account *from that address*: after
  ``AUTH_FAILURES_PER_WINDOW`` failures, that account's tokens from that address are
  refused before they are checked; every other account at the address is unaffected;
* failures of a token whose signature verified (expired, over the maximum lifetime, wrong
  audience, unknown user: the account's genuine tokens) are also charged to the account
  across addresses (``ACCOUNT_FAILURES_PER_WINDOW``). Forged tokens are not, so naming a
  victim in forged tokens from many addresses cannot lock the victim out;
* a credential that names no account (garbage, an ingest token) is charged to the
  address, with the much higher ``ADDRESS_FAILURES_PER_WINDOW``; only such credentials
  are refused from an address over it.

All windows fail open when Redis cannot answer in time: an outage of the limiter must not
take the API down with it (logged and counted).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable

from joserfc import jws
from joserfc.errors import JoseError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from zixly.core.logging import get_logger
from zixly.core.metrics import RATE_LIMIT_REJECTIONS, RATE_LIMIT_UNAVAILABLE
from zixly.core.settings import Settings
from zixly.security.ratelimit import Decision, RateLimiter
from zixly.security.verifier import MAX_TOKEN_BYTES, RefusedClaims, claim

log = get_logger("zixly.http")

# Failed authentications allowed per window: per account and address, per account across
# addresses (verified tokens only), per address for credentials naming no account. The
# address is the ASGI client: behind a proxy, run uvicorn with --proxy-headers /
# --forwarded-allow-ips so it is the real client's.
AUTH_FAILURES_PER_WINDOW = 30
ACCOUNT_FAILURES_PER_WINDOW = 100
ADDRESS_FAILURES_PER_WINDOW = 300
AUTH_FAILURE_WINDOW_SECONDS = 60
_MAX_ACCOUNT_LENGTH = 320


def claimed_account(authorization: str | None, settings: Settings) -> str | None:
    """Whom a bearer JWT claims to be (unverified), as an opaque key; ``None`` when the
    credential names nobody. A claim, not a proof: it only decides whose window a failure
    is charged to, never who is let in."""
    _, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if not token or len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
        return None
    try:
        payload = json.loads(jws.extract_compact(token.encode()).payload)
    except (JoseError, ValueError, UnicodeError, RecursionError):
        return None
    if not isinstance(payload, dict):
        return None
    for name in (settings.email_claim, "sub"):
        identity = claim(payload, name)
        if isinstance(identity, str) and 0 < len(identity) <= _MAX_ACCOUNT_LENGTH:
            return hashlib.sha256(identity.strip().lower().encode()).hexdigest()[:32]
    return None


class AccessGuard:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.window_seconds = settings.rate_limit_window_seconds
        self.requests = RateLimiter(
            redis, settings.rate_limit_per_minute, settings.rate_limit_window_seconds
        )
        window = AUTH_FAILURE_WINDOW_SECONDS
        self.pair_failures = RateLimiter(
            redis, AUTH_FAILURES_PER_WINDOW, window, prefix="authfail:pair"
        )
        self.account_failures = RateLimiter(
            redis, ACCOUNT_FAILURES_PER_WINDOW, window, prefix="authfail:account"
        )
        self.address_failures = RateLimiter(
            redis, ADDRESS_FAILURES_PER_WINDOW, window, prefix="authfail:address"
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

    def _windows(self, address: str, authorization: str | None) -> list[tuple[RateLimiter, str]]:
        account = claimed_account(authorization, self.settings)
        if account is None:
            return [(self.address_failures, address)]
        return [(self.pair_failures, f"{address}|{account}"), (self.account_failures, account)]

    async def address_blocked(
        self, address: str, authorization: str | None = None
    ) -> Decision | None:
        """The exhausted failed-authentication window these credentials from this address
        fall under, if any (see the module's docstring for which windows apply)."""
        for limiter, key in self._windows(address, authorization):
            decision = await self._ask(limiter.peek, key)
            if decision is None:
                return None  # the limiter is down: fail open, without asking again
            if not decision.allowed:
                return decision
        return None

    async def record_auth_failure(
        self, address: str, authorization: str | None = None, error: Exception | None = None
    ) -> None:
        """Charge one failed authentication (``error``: why it failed) to its windows."""
        for limiter, key in self._windows(address, authorization):
            if limiter is self.account_failures and not isinstance(error, RefusedClaims):
                continue  # a forged token naming the account is not the account's
            if await self._ask(limiter.hit, key) is None:
                return

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
