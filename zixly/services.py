"""The long-lived objects a running API holds (one per process), built at start-up."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from redis.asyncio import Redis

from zixly.auth.authenticator import Authenticator
from zixly.auth.tokens import load_signing_secret
from zixly.auth.verifier import TokenVerifier
from zixly.db.session import Database, create_engine
from zixly.domain.cursors import CursorCodec
from zixly.http.guard import AccessGuard
from zixly.principal_events import PrincipalWatch
from zixly.settings import Settings

REDIS_TIMEOUT_SECONDS = 2.0


@dataclass
class Services:
    settings: Settings
    db: Database
    redis: Redis
    # Commands on a request's path (rate limits, editor sessions, OAuth states, job queue):
    # socket timeouts bound the wait, so a Redis that stopped answering gives a 503.
    redis_commands: Redis
    http: httpx.AsyncClient
    verifier: TokenVerifier
    authenticator: Authenticator
    cursors: CursorCodec
    guard: AccessGuard
    # Removals and role changes announced by any replica (closes this process's WebSockets).
    principal_watch: PrincipalWatch

    @classmethod
    def build(cls, settings: Settings, *, database_url: str, redis_url: str) -> Services:
        secret = load_signing_secret(settings)
        db = Database(create_engine(database_url, settings), settings)
        # Shared, pub/sub included: a connect timeout only (a socket timeout would also end
        # idle subscriptions).
        redis = Redis.from_url(
            redis_url, decode_responses=False, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
        )
        # The rate limits and the other commands of a request get a client of their own
        # whose socket timeouts bound how long a request waits on a Redis that stopped
        # answering (the limits then fail open; the rest answer 503).
        limits_redis = Redis.from_url(
            redis_url,
            decode_responses=False,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        )
        http = httpx.AsyncClient(timeout=httpx.Timeout(10.0))
        verifier = TokenVerifier(settings, secret, http)
        return cls(
            settings=settings,
            db=db,
            redis=redis,
            redis_commands=limits_redis,
            http=http,
            verifier=verifier,
            authenticator=Authenticator(settings, verifier, db),
            cursors=CursorCodec(secret),
            guard=AccessGuard(limits_redis, settings),
            principal_watch=PrincipalWatch(redis),
        )

    async def close(self) -> None:
        self.principal_watch.stop()
        await self.http.aclose()
        await self.redis.aclose()
        await self.guard.close()
        await self.db.dispose()
