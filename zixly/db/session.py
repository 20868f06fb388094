"""Engine, tenant-scoped transactions and the per-request unit of work.

The tenant is set once per transaction with ``set_config('app.tenant_id', $1, true)``
(transaction-local: it can never leak to the next user of a pooled connection). Staff
transactions run on a pool of their own, connected as the staff role (or a login role that
is a member of it, hence the ``SET LOCAL ROLE``), whose explicit policies are the only path
across tenants. The application role is a member of no role, so no statement sent over the
tenant pool (not even an injected ``SET ROLE``) can act as staff.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from zixly.core.logging import get_logger
from zixly.core.outages import typed_outages
from zixly.core.settings import Settings
from zixly.db.admission import Admission, Ticket
from zixly.db.rows import AnyRow

_SCOPE_SQL = text(
    "SELECT set_config('app.tenant_id', :tenant, true), "
    "set_config('app.user_id', :user, true), "
    "set_config('statement_timeout', :timeout, true)"
)
_TIMEOUT_SQL = text("SELECT set_config('statement_timeout', :timeout, true)")
log = get_logger("zixly.db")


@dataclass(frozen=True)
class Scope:
    """Whose data a transaction may see."""

    tenant_id: uuid.UUID | None
    user_id: uuid.UUID | None = None
    staff: bool = False

    @classmethod
    def system(cls) -> Scope:
        """No tenant, no staff: sees nothing tenant-scoped (used for look-ups by definer funcs)."""
        return cls(tenant_id=None)


def staff_database_url(url: str | URL, settings: Settings) -> str:
    """The staff pool's URL: ``staff_database_url``, else ``url`` with the staff role as
    its user and no password (the embedded stack trusts its socket)."""
    if settings.staff_database_url:
        return settings.staff_database_url
    staff = make_url(url).set(username=settings.staff_role, password=None)
    return staff.render_as_string(hide_password=False)


def create_engine(url: str, settings: Settings, *, pool_size: int | None = None) -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=pool_size or settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        # No pre-ping (a round trip per checkout); recycle instead, and a broken connection
        # invalidates the pool on first use.
        pool_recycle=1800,
        # Statement errors name the statement, not its values: rows carry tenant data.
        hide_parameters=True,
        connect_args={
            "statement_cache_size": settings.db_statement_cache_size,
            "server_settings": {"application_name": "zixly-api"},
        },
    )


class Database:
    def __init__(
        self, engine: AsyncEngine, settings: Settings, staff_engine: AsyncEngine | None = None
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.sessionmaker = async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
        # Connects lazily: a process that never runs a staff transaction opens no connection.
        self.staff_engine = staff_engine or create_engine(
            staff_database_url(engine.url, settings),
            settings,
            pool_size=settings.staff_db_pool_size,
        )
        self.staff_sessionmaker = async_sessionmaker(
            self.staff_engine, expire_on_commit=False, autoflush=False
        )
        # Per-tenant and per-user caps on the requests' units of work (zixly.db.admission).
        self.admission = Admission.from_settings(settings)

    async def apply_scope(self, session: AsyncSession, scope: Scope) -> None:
        await session.execute(
            _SCOPE_SQL,
            {
                "tenant": str(scope.tenant_id) if scope.tenant_id else "",
                "user": str(scope.user_id) if scope.user_id else "",
                "timeout": str(self.settings.statement_timeout_ms),
            },
        )
        if scope.staff:
            # A role name from validated settings, quoted; never user input.
            role = self.settings.staff_role.replace('"', '""')
            await session.execute(text(f'SET LOCAL ROLE "{role}"'))

    @asynccontextmanager
    async def transaction(self, scope: Scope) -> AsyncIterator[AsyncSession]:
        """One transaction with the scope applied; commits on success, rolls back on error."""
        sessionmaker = self.staff_sessionmaker if scope.staff else self.sessionmaker
        async with sessionmaker() as session, session.begin():
            await self.apply_scope(session, scope)
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()
        await self.staff_engine.dispose()


class UnitOfWork:
    """A request's single transaction, opened lazily and shared by its resolvers.

    GraphQL resolves sibling fields concurrently, and one session must not run two
    statements at once, so access is serialised with a lock. The request boundary
    calls ``finish`` (commit on success, roll back on any error).

    Before it takes a pooled connection for its scope, the unit of work is admitted by the
    database's per-tenant and per-user caps (``zixly.db.admission``; ``admit`` when
    authentication opened it). What the database raises when it cannot serve (no
    connection free in time, unreachable, a statement past its timeout) leaves as the
    typed error of ``zixly.core.outages.typed_outages`` (503 with ``Retry-After``).

    ``after_commit`` callbacks run once the transaction has committed, never after a roll
    back (announcements of what the transaction changed: see ``zixly.security.principal_events``).
    """

    def __init__(self, db: Database, scope: Scope) -> None:
        self.db = db
        self.scope = scope
        self._lock = asyncio.Lock()
        self._session: AsyncSession | None = None
        self._ticket: Ticket | None = None
        self._after_commit: list[Callable[[], Awaitable[None]]] = []

    def after_commit(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run ``callback`` after this unit of work commits (dropped if it rolls back). A
        callback that fails is logged: the transaction is committed by then."""
        self._after_commit.append(callback)

    @asynccontextmanager
    async def session(
        self, *, statement_timeout_ms: int | None = None
    ) -> AsyncIterator[AsyncSession]:
        """The transaction; ``statement_timeout_ms`` sets the statement timeout from here
        to the end of the transaction (the heavy reports' longer one)."""
        async with self._lock:
            with typed_outages():
                if self._session is None:
                    if self._ticket is None:
                        self._ticket = await self.db.admission.enter(
                            self.scope.tenant_id, self.scope.user_id
                        )
                    session = self.db.sessionmaker()
                    await session.begin()
                    try:
                        await self.db.apply_scope(session, self.scope)
                    except BaseException:
                        await session.close()
                        raise
                    self._session = session
                if statement_timeout_ms is not None:
                    await _set_timeout(self._session, statement_timeout_ms)
                yield self._session

    async def open_with(self, statement: Any, params: dict[str, Any]) -> AnyRow | None:
        """Begin the transaction with a statement that applies the scope itself.

        Authentication uses this: one statement looks the user up and sets
        ``app.tenant_id`` (and the rest) from its own result, so a request costs one
        transaction, not one to authenticate plus one to work. The caller then records the
        scope that statement applied in ``self.scope`` and calls ``admit``.
        """
        async with self._lock:
            if self._session is not None:
                raise RuntimeError("the unit of work is already open")
            with typed_outages():
                session = self.db.sessionmaker()
                await session.begin()
                try:
                    row = (await session.execute(statement, params)).first()
                except BaseException:
                    await session.close()
                    raise
            self._session = session
            return row

    async def admit(self) -> None:
        """Take this scope's slots (``self.scope`` as authentication found it). Over a cap,
        the look-up's connection goes back to the pool while the request waits; the
        transaction is opened again, scoped, when it is next used."""
        if self._ticket is not None:
            return
        scope = self.scope
        self._ticket = self.db.admission.try_enter(scope.tenant_id, scope.user_id)
        if self._ticket is not None:
            return
        session, self._session = self._session, None
        if session is not None:
            try:
                await session.rollback()  # the look-up wrote nothing
            finally:
                await session.close()
        self._ticket = await self.db.admission.enter(scope.tenant_id, scope.user_id)

    async def finish(self, *, commit: bool) -> None:
        session, self._session = self._session, None
        ticket, self._ticket = self._ticket, None
        callbacks, self._after_commit = self._after_commit, []
        try:
            if session is None:
                return
            try:
                with typed_outages():
                    if commit:
                        await session.commit()
                    else:
                        await session.rollback()
            finally:
                await session.close()
        finally:
            if ticket is not None:
                ticket.release()
        if commit:
            for callback in callbacks:
                try:
                    await callback()
                except Exception as exc:  # committed already: report, do not fail the request
                    log.error("uow.after_commit_failed", error=repr(exc))


async def _set_timeout(session: AsyncSession, milliseconds: int) -> None:
    await session.execute(_TIMEOUT_SQL, {"timeout": str(milliseconds)})
