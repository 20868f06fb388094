"""Caps on concurrent database work per tenant and per user, so no one can starve the rest.

Every request's unit of work is admitted here before it takes a pooled connection for its
scope: at most ``tenant_limit`` transactions of one tenant and ``user_limit`` of one user
at once in this process (``tenant_limit`` is a share of the pool, so one tenant always
leaves the rest of the pool to the others). A request over a cap waits up to
``wait_seconds`` for a slot, then gets ``RATE_LIMITED`` (429, ``Retry-After``) without
having touched the pool.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from dataclasses import dataclass, field

from zixly.core.errors import RateLimitedError
from zixly.core.logging import get_logger
from zixly.core.settings import Settings

log = get_logger("zixly.db.admission")
RETRY_AFTER_SECONDS = 1


@dataclass
class _Gate:
    """The slots of one key; dropped when nobody holds or waits for one."""

    limit: int
    held: int = 0
    waiting: int = 0
    freed: asyncio.Event = field(default_factory=asyncio.Event)


class Ticket:
    """The slots one unit of work holds; ``release`` gives them back (idempotent)."""

    def __init__(self, admission: Admission, keys: list[str]) -> None:
        self._admission = admission
        self._keys = keys

    def release(self) -> None:
        keys, self._keys = self._keys, []
        for key in keys:
            self._admission._leave(key)


class Admission:
    def __init__(self, *, tenant_limit: int, user_limit: int, wait_seconds: float) -> None:
        self.tenant_limit = tenant_limit
        self.user_limit = user_limit
        self.wait_seconds = wait_seconds
        self._gates: dict[str, _Gate] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Admission:
        pool = settings.db_pool_size + settings.db_max_overflow
        tenant_limit = max(1, math.floor(pool * settings.db_tenant_pool_share))
        return cls(
            tenant_limit=tenant_limit,
            user_limit=min(settings.db_user_max_concurrency, tenant_limit),
            wait_seconds=settings.db_admission_wait_seconds,
        )

    def _keys(
        self, tenant_id: uuid.UUID | None, user_id: uuid.UUID | None, kind: str
    ) -> list[tuple[str, int]]:
        keys: list[tuple[str, int]] = []
        if user_id is not None:
            keys.append((f"{kind}user:{user_id}", self.user_limit))
        if tenant_id is not None:
            keys.append((f"{kind}tenant:{tenant_id}", self.tenant_limit))
        return keys

    def try_enter(
        self, tenant_id: uuid.UUID | None, user_id: uuid.UUID | None, *, kind: str = ""
    ) -> Ticket | None:
        """The slots at once, or ``None`` (nothing taken) when a cap is reached. ``kind``
        names separate caps of the same size (``"ingest:"``: a tenant's bulk loads and its
        people's requests do not take each other's slots)."""
        keys = self._keys(tenant_id, user_id, kind)
        if any(self._gate(key, limit).held >= limit for key, limit in keys):
            for key, _ in keys:
                self._drop_if_idle(key)
            return None
        for key, _ in keys:
            self._gates[key].held += 1
        return Ticket(self, [key for key, _ in keys])

    async def enter(
        self, tenant_id: uuid.UUID | None, user_id: uuid.UUID | None, *, kind: str = ""
    ) -> Ticket:
        """The slots, waiting up to ``wait_seconds``; ``RateLimitedError`` after that."""
        taken: list[str] = []
        try:
            async with asyncio.timeout(self.wait_seconds):
                for key, limit in self._keys(tenant_id, user_id, kind):
                    await self._take(key, limit)
                    taken.append(key)
        except TimeoutError:
            for key in taken:
                self._leave(key)
            which = "user" if len(taken) == 0 and user_id is not None else "tenant"
            log.info("db.admission.rejected", limit=which, wait_s=self.wait_seconds)
            limit = self.user_limit if which == "user" else self.tenant_limit
            raise RateLimitedError(
                f"too many requests of this {which} are using the database at once "
                f"(at most {limit}); retry after {RETRY_AFTER_SECONDS}s",
                retry_after=RETRY_AFTER_SECONDS,
                limit=f"{kind}{which}_concurrency",
            ) from None
        except BaseException:
            for key in taken:
                self._leave(key)
            raise
        return Ticket(self, taken)

    def _gate(self, key: str, limit: int) -> _Gate:
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = _Gate(limit)
        return gate

    async def _take(self, key: str, limit: int) -> None:
        gate = self._gate(key, limit)
        gate.waiting += 1
        try:
            while gate.held >= gate.limit:
                gate.freed.clear()
                await gate.freed.wait()
        finally:
            gate.waiting -= 1
        gate.held += 1

    def _leave(self, key: str) -> None:
        gate = self._gates.get(key)
        if gate is None:
            return
        gate.held -= 1
        gate.freed.set()
        self._drop_if_idle(key)

    def _drop_if_idle(self, key: str) -> None:
        gate = self._gates.get(key)
        if gate is not None and gate.held <= 0 and gate.waiting == 0:
            del self._gates[key]

    def in_use(self, key: str) -> int:
        gate = self._gates.get(key)
        return gate.held if gate else 0
