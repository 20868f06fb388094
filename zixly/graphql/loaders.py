"""Per-request DataLoaders. Never module-level: a loader caches, and its cache must not
outlive the request or cross tenants."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from strawberry.dataloader import DataLoader

from zixly.db.rows import AnyRow
from zixly.db.session import UnitOfWork
from zixly.domain.clients import ClientRepository
from zixly.domain.financials import FinancialRepository


class Loaders:
    def __init__(self, uow: UnitOfWork, tenant_id: uuid.UUID | None) -> None:
        self._uow = uow
        self._tenant_id = tenant_id
        self.latest_financial: DataLoader[uuid.UUID, AnyRow | None] = DataLoader(
            self._load_latest_financial
        )
        self.client: DataLoader[uuid.UUID, AnyRow | None] = DataLoader(self._load_client)

    def _tenant(self) -> uuid.UUID:
        assert self._tenant_id is not None, "loaders need a tenant"
        return self._tenant_id

    async def _load_latest_financial(self, client_ids: Sequence[uuid.UUID]) -> list[AnyRow | None]:
        async with self._uow.session() as session:
            found = await FinancialRepository(session, self._tenant()).latest_for_clients(
                list(client_ids)
            )
        return [found.get(client_id) for client_id in client_ids]

    async def _load_client(self, ids: Sequence[uuid.UUID]) -> list[AnyRow | None]:
        async with self._uow.session() as session:
            found = await ClientRepository(session, self._tenant()).get_many(list(ids))
        return [found.get(i) for i in ids]
