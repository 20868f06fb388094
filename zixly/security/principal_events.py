"""Changes to who a principal is, announced to every API replica over Redis pub/sub.

A member removed from a tenant, or whose role in it changed, is announced on one channel
once the change has committed; in each API process one ``PrincipalWatch`` listens (a
single pub/sub connection, held while at least one WebSocket is watched) and tells the
WebSockets opened as that user in that tenant (``zixly.graphql.ws`` closes them 4403).

Invariants:

* a change is published only after its transaction committed (``UnitOfWork.after_commit``),
  so no replica acts on a change that was rolled back;
* a change reaches only the watchers of the same tenant *and* user: another tenant's
  change, or another user's, never touches a socket;
* the announcement is a hint, not the enforcement: when Redis cannot publish or deliver it
  (logged), every WebSocket operation is still authorised again against the database
  (``zixly.graphql.ws``), so the change takes effect at the socket's next operation;
* anything on the channel that is not a valid change is logged and skipped.

Accepting an invitation is not announced: it only adds a membership, and an open socket's
principal cannot gain it (a token without a tenant choice keeps the memberships that
existed when it was issued; one that names the tenant could not have connected before).
"""

from __future__ import annotations

import asyncio
import enum
import uuid
from collections.abc import Callable
from contextlib import aclosing, suppress

from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis
from redis.exceptions import RedisError

from zixly.core.errors import UnavailableError
from zixly.core.events import MAX_MESSAGE_BYTES, messages
from zixly.core.logging import get_logger

log = get_logger("zixly.security.principal_events")
CHANNEL = "zixly:principal-changes"
# How long a new watch waits for the listener's subscription before it goes on without it
# (Redis down: the per-operation authorisation still applies), and between reconnections.
SUBSCRIBE_WAIT_SECONDS = 2.0
RETRY_SECONDS = 1.0


class ChangeKind(enum.Enum):
    REMOVED = "removed"
    ROLE_CHANGED = "role_changed"


class PrincipalChange(BaseModel):
    """The wire format of one change (JSON)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    tenant_id: uuid.UUID
    user_id: uuid.UUID
    kind: ChangeKind


def parse_change(data: bytes | str) -> PrincipalChange | None:
    if len(data) > MAX_MESSAGE_BYTES:
        log.warning("principal_changes.skipped", reason="too large")
        return None
    try:
        return PrincipalChange.model_validate_json(data)
    except ValueError as exc:  # bad JSON and pydantic errors alike
        log.warning("principal_changes.skipped", reason=type(exc).__name__)
        return None


async def publish_change(redis: Redis, change: PrincipalChange) -> None:
    """Announce ``change`` to every replica; a Redis failure is logged, never raised (the
    change is committed already, and the next operation is authorised anyway)."""
    try:
        await redis.publish(CHANNEL, change.model_dump_json())
    except (RedisError, OSError) as exc:
        log.warning("principal_changes.publish_failed", kind=change.kind.value, error=repr(exc))


Watcher = Callable[[PrincipalChange], None]
Key = tuple[uuid.UUID, uuid.UUID]


class PrincipalWatch:
    """One process's listener: watchers per (tenant, user), told each change of theirs."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._watchers: dict[Key, set[Watcher]] = {}
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def watch(
        self, tenant_id: uuid.UUID, user_id: uuid.UUID, watcher: Watcher
    ) -> Callable[[], None]:
        """Tell ``watcher`` (synchronously, on the event loop) each change of this user in
        this tenant, from the moment this returns; returns the function that stops it."""
        key = (tenant_id, user_id)
        self._watchers.setdefault(key, set()).add(watcher)
        if self._task is None or self._task.done():
            self._subscribed = asyncio.Event()
            self._task = asyncio.create_task(self._listen(self._subscribed))
        with suppress(TimeoutError):
            async with asyncio.timeout(SUBSCRIBE_WAIT_SECONDS):
                await self._subscribed.wait()
        return lambda: self._unwatch(key, watcher)

    @property
    def watching(self) -> int:
        """How many watchers there are (sockets followed by this process)."""
        return sum(len(watchers) for watchers in self._watchers.values())

    @property
    def listening(self) -> bool:
        return self._task is not None

    def _unwatch(self, key: Key, watcher: Watcher) -> None:
        watchers = self._watchers.get(key)
        if watchers is not None:
            watchers.discard(watcher)
            if not watchers:
                del self._watchers[key]
        if not self._watchers:
            self.stop()

    def stop(self) -> None:
        """Stop listening (the pub/sub connection is released); watching again restarts."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _listen(self, subscribed: asyncio.Event) -> None:
        while True:
            try:
                stream = messages(self.redis, CHANNEL, "principal change", subscribed=subscribed)
                async with aclosing(stream) as raw:
                    async for data in raw:
                        change = parse_change(data)
                        if change is not None:
                            self._dispatch(change)
            except UnavailableError as exc:
                log.warning("principal_changes.listen_failed", error=repr(exc.__cause__))
            await asyncio.sleep(RETRY_SECONDS)

    def _dispatch(self, change: PrincipalChange) -> None:
        for watcher in list(self._watchers.get((change.tenant_id, change.user_id), ())):
            try:
                watcher(change)
            except Exception as exc:  # one broken watcher must not stop the others
                log.error("principal_changes.watcher_failed", error=repr(exc))
