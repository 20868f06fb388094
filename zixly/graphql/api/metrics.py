"""Custom metrics: listing, similarity search and manual recording."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import strawberry

from zixly.domain.embeddings import HashingEmbedder
from zixly.domain.ids import optional_id, parse_id
from zixly.domain.metrics import CustomMetricRepository, NewMetric, check_neighbours
from zixly.graphql.context import Info
from zixly.graphql.inputs import DateRangeInput
from zixly.graphql.relay import Connection, build_connection, decode_after, page_size
from zixly.security.principal import Role

LISTING = "customMetrics"


@strawberry.type(description="One value of a named metric, recorded for a client.")
class CustomMetric:
    id: strawberry.ID
    client_id: strawberry.ID
    metric_name: str
    value: Decimal
    unit: str | None
    record_date: dt.datetime
    source_system: str

    @classmethod
    def from_row(cls, row: Any) -> CustomMetric:
        return cls(
            id=strawberry.ID(str(row.id)),
            client_id=strawberry.ID(str(row.client_kpi_id)),
            metric_name=row.metric_name,
            value=row.metric_value,
            unit=row.unit,
            record_date=row.record_date,
            source_system=row.source_system,
        )


@strawberry.type(description="A metric near another one in embedding space.")
class SimilarMetric:
    metric: CustomMetric
    distance: float = strawberry.field(
        description="Cosine distance between the embeddings: 0 is identical, 2 opposite."
    )
    similarity: float = strawberry.field(description="Cosine similarity, 1 - distance.")


@strawberry.input
class RecordCustomMetricInput:
    client_id: strawberry.ID
    metric_name: str = strawberry.field(description="Matches ^[a-z][a-z0-9_]{0,62}$.")
    value: Decimal = strawberry.field(description="Finite, below 10^10 in magnitude.")
    record_date: dt.datetime = strawberry.field(description="Without a zone: UTC.")
    unit: str | None = None
    description: str | None = strawberry.field(
        default=None, description="Free text; with the name and unit, it shapes the embedding."
    )


@strawberry.type
class MetricsQuery:
    @strawberry.field(
        description="Custom metric values recorded in the range (UTC days), oldest first."
    )
    async def custom_metrics(
        self,
        info: Info,
        range: DateRangeInput,
        metric_name: str | None = None,
        client_id: strawberry.ID | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[CustomMetric]:
        ctx = info.context
        tenant_id = ctx.tenant()
        date_range = range.checked(ctx)
        client = optional_id(client_id, "clientId")
        limit = page_size(ctx, first)
        cursor = decode_after(ctx, LISTING, after, 2)
        async with ctx.session() as session:
            page = await CustomMetricRepository(session, tenant_id).page(
                date_range,
                metric_name=metric_name,
                client_id=client,
                first=limit,
                after=(cursor[0], cursor[1]) if cursor else None,
            )
        return build_connection(
            ctx,
            LISTING,
            page,
            CustomMetric.from_row,
            lambda r: [r.record_date.isoformat(), str(r.id)],
        )

    @strawberry.field(
        description="The k metrics of this tenant whose embeddings are nearest (cosine) to "
        "the given metric's, nearest first, excluding the metric itself. k is 1 to 50."
    )
    async def similar_metrics(
        self, info: Info, metric_id: strawberry.ID, k: int = 5
    ) -> list[SimilarMetric]:
        ctx = info.context
        tenant_id = ctx.tenant()
        metric = parse_id(metric_id, "metricId")
        check_neighbours(k)
        async with ctx.session() as session:
            rows = await CustomMetricRepository(session, tenant_id).similar(metric, k)
        return [
            SimilarMetric(
                metric=CustomMetric.from_row(row),
                distance=row.distance,
                similarity=1.0 - row.distance,
            )
            for row in rows
        ]


@strawberry.type
class MetricsMutation:
    @strawberry.mutation(
        description="Record (or replace) the manual value of a metric for a client at a "
        "moment. Requires EDITOR."
    )
    async def record_custom_metric(
        self, info: Info, input: RecordCustomMetricInput
    ) -> CustomMetric:
        ctx = info.context
        tenant_id = ctx.tenant(Role.EDITOR)
        metric = NewMetric.checked(
            client_id=parse_id(input.client_id, "clientId"),
            metric_name=input.metric_name,
            value=input.value,
            unit=input.unit,
            record_date=input.record_date,
            description=input.description,
        )
        async with ctx.session() as session:
            row = await CustomMetricRepository(session, tenant_id).record(metric, HashingEmbedder())
        return CustomMetric.from_row(row)
