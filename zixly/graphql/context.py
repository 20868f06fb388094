"""The typed per-request GraphQL context."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.types import Info as StrawberryInfo

from zixly.container import Services
from zixly.db.session import UnitOfWork
from zixly.graphql.loaders import Loaders
from zixly.security.principal import Principal, Role


@dataclass
class Context:
    services: Services
    principal: Principal
    request_id: str
    uow: UnitOfWork
    loaders: Loaders
    request: Any = None
    response: Any = None
    connection_params: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.uow.session() as session:
            yield session

    @asynccontextmanager
    async def report_session(self) -> AsyncIterator[AsyncSession]:
        """The request's transaction with the heavy reports' longer statement timeout
        (``report_statement_timeout_ms``), from here to the end of the transaction."""
        timeout = self.services.settings.report_statement_timeout_ms
        async with self.uow.session(statement_timeout_ms=timeout) as session:
            yield session

    @asynccontextmanager
    async def staff_session(self) -> AsyncIterator[AsyncSession]:
        """A transaction of its own acting through the staff policy (``SET LOCAL ROLE``),
        separate from the request's unit of work; it commits when the block succeeds.
        FORBIDDEN unless the caller is staff."""
        async with self.services.db.transaction(self.principal.staff_scope) as session:
            yield session

    def tenant(self, minimum: Role = Role.VIEWER) -> uuid.UUID:
        """The caller's tenant, after checking the caller holds at least ``minimum``."""
        return self.principal.require_role(minimum)

    @property
    def settings(self) -> Any:
        return self.services.settings


Info = StrawberryInfo[Context, None]


def build_context(
    services: Services,
    principal: Principal,
    request_id: str,
    request: Any = None,
    uow: UnitOfWork | None = None,
) -> Context:
    """``uow``: the request's unit of work when authentication already opened it."""
    uow = uow or UnitOfWork(services.db, principal.scope)
    return Context(
        services=services,
        principal=principal,
        request_id=request_id,
        uow=uow,
        loaders=Loaders(uow, principal.tenant_id),
        request=request,
    )
