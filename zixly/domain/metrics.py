"""Custom metrics: listing, recording (with an embedding) and similarity search."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Table, func, null, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from zixly.core.bounds import OutOfBounds, check_instant, fixed_point
from zixly.core.errors import NotFoundError, ValidationError
from zixly.db.models import CustomMetric
from zixly.db.rows import AnyRow
from zixly.domain.clients import ClientRepository
from zixly.domain.embeddings import Embedder, metric_text
from zixly.domain.pages import Page, split_page
from zixly.domain.ranges import DateRange

M = cast(Table, CustomMetric.__table__)
COLUMNS = (
    M.c.id,
    M.c.client_kpi_id,
    M.c.metric_name,
    M.c.metric_value,
    M.c.unit,
    M.c.record_date,
    M.c.source_system,
)

METRIC_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# numeric(14, 4): at most 10 digits before the point.
MAX_UNIT_LENGTH = 40
MAX_DESCRIPTION_LENGTH = 1000
MAX_NEIGHBOURS = 50
MANUAL_SOURCE = "manual"


@dataclass(frozen=True)
class NewMetric:
    """A manually recorded metric value, validated."""

    client_id: uuid.UUID
    metric_name: str
    value: Decimal
    unit: str | None
    record_date: dt.datetime
    description: str | None

    @classmethod
    def checked(
        cls,
        *,
        client_id: uuid.UUID,
        metric_name: str,
        value: Decimal,
        unit: str | None,
        record_date: dt.datetime,
        description: str | None,
    ) -> NewMetric:
        if not METRIC_NAME.fullmatch(metric_name):
            raise ValidationError(
                "metricName must be lower-case letters, digits and underscores, starting "
                "with a letter, at most 63 characters",
                field="metricName",
            )
        try:  # the column is NUMERIC(14,4)
            value = fixed_point(value, precision=14, scale=4)
        except OutOfBounds as bad:
            raise ValidationError(f"value {bad}", field="value") from None
        if unit is not None and not 0 < len(unit) <= MAX_UNIT_LENGTH:
            raise ValidationError(f"unit must have 1 to {MAX_UNIT_LENGTH} characters", field="unit")
        if description is not None and len(description) > MAX_DESCRIPTION_LENGTH:
            raise ValidationError(
                f"description may have at most {MAX_DESCRIPTION_LENGTH} characters",
                field="description",
            )
        try:
            record_date = check_instant(record_date)
        except OutOfBounds as bad:
            raise ValidationError(f"recordDate {bad}", field="recordDate") from None
        return cls(client_id, metric_name, value, unit, record_date, description)


def check_neighbours(k: int) -> int:
    if not 1 <= k <= MAX_NEIGHBOURS:
        raise ValidationError(f"k must be between 1 and {MAX_NEIGHBOURS}", field="k")
    return k


# Up to this many embedded metrics a tenant is searched exactly (see ``similar``): about
# 10 ms of distance computations at 384 dimensions.
EXACT_SEARCH_MAX_ROWS = 20_000


def hnsw_ef_search(k: int) -> int:
    """Candidates the HNSW index scan should collect to return ``k`` rows after filtering."""
    return min(1000, max(40, k * 10))


class CustomMetricRepository:
    def __init__(self, session: AsyncSession, tenant_id: uuid.UUID) -> None:
        self.session = session
        self.tenant_id = tenant_id

    async def page(
        self,
        date_range: DateRange,
        *,
        metric_name: str | None,
        client_id: uuid.UUID | None,
        first: int,
        after: tuple[str, str] | None,
    ) -> Page[AnyRow]:
        query = select(*COLUMNS).where(
            M.c.tenant_id == self.tenant_id,
            M.c.record_date >= date_range.start_datetime(),
            M.c.record_date < date_range.end_datetime_exclusive(),
        )
        if metric_name is not None:
            query = query.where(M.c.metric_name == metric_name)
        if client_id is not None:
            query = query.where(M.c.client_kpi_id == client_id)
        if after is not None:
            last_date, last_id = after
            query = query.where(
                tuple_(M.c.record_date, M.c.id)
                > (dt.datetime.fromisoformat(last_date), uuid.UUID(last_id))
            )
        query = query.order_by(M.c.record_date, M.c.id).limit(first + 1)
        return split_page(list((await self.session.execute(query)).all()), first)

    async def similar(self, metric_id: uuid.UUID, k: int) -> list[AnyRow]:
        """The ``k`` metrics of this tenant nearest to ``metric_id`` by cosine distance.

        Rows carry ``distance`` (cosine distance, 0 = same direction). Raises NotFoundError
        when the metric is not this tenant's (RLS makes another tenant's metric invisible,
        and the explicit tenant filter does too), so existence is never revealed.

        Exact for all but very large tenants. pgvector 0.6's HNSW index is shared by every
        tenant and applies the ``tenant_id`` filter (and RLS) *after* its scan, which yields at
        most ``hnsw.ef_search`` candidates: most can be other tenants', so an index search can
        miss true neighbours or return fewer than ``k`` rows. A tenant with up to
        ``EXACT_SEARCH_MAX_ROWS`` embedded metrics is therefore searched exactly (its rows by
        the tenant index, ordered by ``cosine_distance()``, which the HNSW index does not
        serve); a larger tenant goes through the index with ``ef_search`` widened to
        ``max(40, 10k)`` for this transaction only (``set_config(..., true)``): approximate,
        as HNSW is, and sub-linear.
        """
        has_embedding = (
            await self.session.execute(
                select(M.c.embedding.is_not(None)).where(
                    M.c.tenant_id == self.tenant_id, M.c.id == metric_id
                )
            )
        ).scalar_one_or_none()
        if has_embedding is None:
            raise NotFoundError("no custom metric with this id", field="metricId")
        if not has_embedding:
            return []
        target = (
            select(M.c.embedding)
            .where(M.c.tenant_id == self.tenant_id, M.c.id == metric_id)
            .scalar_subquery()
        )
        candidates = (M.c.tenant_id == self.tenant_id, M.c.embedding.is_not(None))
        sample = select(M.c.id).where(*candidates).limit(EXACT_SEARCH_MAX_ROWS + 1).subquery()
        size = (await self.session.execute(select(func.count()).select_from(sample))).scalar_one()
        if size <= EXACT_SEARCH_MAX_ROWS:
            distance = func.cosine_distance(M.c.embedding, target)
            order: tuple[Any, ...] = (distance, M.c.id)
        else:
            await self.session.execute(
                select(func.set_config("hnsw.ef_search", str(hnsw_ef_search(k)), True))
            )
            # The distance operator alone: a tie-breaker would stop the index ordering.
            distance = M.c.embedding.cosine_distance(target)
            order = (distance,)
        query = (
            select(*COLUMNS, distance.label("distance"))
            .where(*candidates, M.c.id != metric_id)
            .order_by(*order)
            .limit(k)
        )
        return list((await self.session.execute(query)).all())

    async def record(self, metric: NewMetric, embedder: Embedder) -> AnyRow:
        """Insert or replace the manual value for (client, name, record date)."""
        client = await ClientRepository(self.session, self.tenant_id).get(metric.client_id)
        if client is None:
            raise NotFoundError("no client with this id", field="clientId")
        embedding = embedder.embed(metric_text(metric.metric_name, metric.unit, metric.description))
        # null(), not None: None would store the JSON value null rather than SQL NULL.
        metadata = {"description": metric.description} if metric.description else null()
        statement = insert(M).values(
            tenant_id=self.tenant_id,
            client_kpi_id=metric.client_id,
            metric_name=metric.metric_name,
            metric_value=metric.value,
            unit=metric.unit,
            record_date=metric.record_date,
            source_system=MANUAL_SOURCE,
            metadata=metadata,
            embedding=embedding,
        )
        upsert = statement.on_conflict_do_update(
            constraint="custom_metrics_natural_key",
            set_={
                "metric_value": statement.excluded.metric_value,
                "unit": statement.excluded.unit,
                "metadata": statement.excluded.metadata,
                "embedding": statement.excluded.embedding,
            },
        ).returning(*COLUMNS)
        return (await self.session.execute(upsert)).one()
