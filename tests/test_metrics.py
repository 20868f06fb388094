"""Custom metrics: the listing, similarity search and recording."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import random
import uuid
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import text

import zixly.domain.metrics as metrics_domain
from tests.conftest import World, gql
from zixly.container import Services
from zixly.db.models import EMBEDDING_DIMENSIONS
from zixly.db.session import Scope
from zixly.domain.embeddings import HashingEmbedder, metric_text
from zixly.domain.metrics import CustomMetricRepository

UTC = dt.UTC
EMBEDDER = HashingEmbedder()

LIST = """
query($range: DateRangeInput!, $name: String, $clientId: ID, $first: Int, $after: String) {
  customMetrics(range: $range, metricName: $name, clientId: $clientId, first: $first,
                after: $after) {
    nodes { id clientId metricName value unit recordDate sourceSystem }
    pageInfo { hasNextPage endCursor }
  }
}"""

SIMILAR = """
query($id: ID!, $k: Int) {
  similarMetrics(metricId: $id, k: $k) { distance similarity metric { id metricName } }
}"""

RECORD = """
mutation($input: RecordCustomMetricInput!) {
  recordCustomMetric(input: $input) {
    id clientId metricName value unit recordDate sourceSystem
  }
}"""


def vector_literal(values: list[float]) -> str:
    return "[" + ",".join(f"{v:.8f}" for v in values) + "]"


async def add_metric(
    owner: asyncpg.Connection,
    tenant_id: uuid.UUID,
    client_id: uuid.UUID,
    name: str,
    when: dt.datetime,
    value: str = "1",
    unit: str | None = "count",
    embed: str | None = None,
) -> uuid.UUID:
    embedding = vector_literal(EMBEDDER.embed(embed)) if embed is not None else None
    found = await owner.fetchval(
        "INSERT INTO custom_metrics (tenant_id, client_kpi_id, metric_name, metric_value, unit, "
        "record_date, source_system, embedding) VALUES ($1, $2, $3, $4, $5, $6, 'asana', "
        "$7::vector) RETURNING id",
        tenant_id,
        client_id,
        name,
        Decimal(value),
        unit,
        when,
        embedding,
    )
    return uuid.UUID(str(found))


def error_of(body: dict[str, Any]) -> dict[str, Any]:
    assert body.get("data") is None, body
    [error] = body["errors"]
    return dict(error["extensions"])


async def all_pages(
    client: httpx.AsyncClient, headers: dict[str, str], variables: dict[str, Any]
) -> list[list[dict[str, Any]]]:
    pages, after = [], None
    while True:
        body = await gql(client, LIST, {**variables, "after": after}, headers=headers)
        page = body["data"]["customMetrics"]
        pages.append(page["nodes"])
        if not page["pageInfo"]["hasNextPage"]:
            return pages
        after = page["pageInfo"]["endCursor"]


async def test_custom_metrics_pages_in_record_date_order(
    client: httpx.AsyncClient, world: World, owner: asyncpg.Connection
) -> None:
    tenant = await world.tenant("cm")
    c0, c1 = tenant.client_ids
    noon = dt.datetime(2025, 3, 15, 12, tzinfo=UTC)
    rows = [
        (c0, "revenue_per_hour", dt.datetime(2025, 3, 1, tzinfo=UTC)),
        (c0, "tasks_completed", dt.datetime(2025, 3, 10, 8, tzinfo=UTC)),
        (c0, "tasks_completed", noon),
        (c0, "revenue_per_hour", noon),
        (c0, "tasks_completed", dt.datetime(2025, 3, 31, 23, 59, 59, tzinfo=UTC)),
        (c1, "tasks_completed", dt.datetime(2025, 3, 5, tzinfo=UTC)),
    ]
    inside = [(await add_metric(owner, tenant.id, c, n, w), c, n, w) for c, n, w in rows]
    for when in (dt.datetime(2025, 4, 1, tzinfo=UTC), dt.datetime(2025, 2, 28, 23, 59, tzinfo=UTC)):
        await add_metric(owner, tenant.id, c0, "tasks_completed", when)
    other = await world.tenant("cm-other")
    await add_metric(owner, other.id, other.client_ids[0], "tasks_completed", noon)

    ordered = sorted(inside, key=lambda r: (r[3], r[0]))
    headers = world.headers(tenant.viewer)
    variables: dict[str, Any] = {"range": {"start": "2025-03-01", "end": "2025-03-31"}, "first": 2}
    pages = await all_pages(client, headers, variables)
    assert [len(p) for p in pages] == [2, 2, 2]
    nodes = [n for p in pages for n in p]
    assert [n["id"] for n in nodes] == [str(r[0]) for r in ordered]
    first = nodes[0]
    assert first == {
        "id": str(ordered[0][0]),
        "clientId": str(c0),
        "metricName": "revenue_per_hour",
        "value": "1.0000",
        "unit": "count",
        "recordDate": "2025-03-01T00:00:00+00:00",
        "sourceSystem": "asana",
    }

    pages = await all_pages(client, headers, {**variables, "name": "tasks_completed"})
    expected = [str(r[0]) for r in ordered if r[2] == "tasks_completed"]
    assert [n["id"] for p in pages for n in p] == expected

    pages = await all_pages(client, headers, {**variables, "clientId": str(c1)})
    assert [n["id"] for p in pages for n in p] == [str(inside[5][0])]

    # A cursor is bound to its tenant.
    body = await gql(client, LIST, variables, headers=headers)
    cursor = body["data"]["customMetrics"]["pageInfo"]["endCursor"]
    body = await gql(
        client, LIST, {**variables, "after": cursor}, headers=world.headers(other.viewer)
    )
    assert error_of(body) == {"code": "VALIDATION_ERROR", "field": "after"}


def cosine_distance(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = (sum(x * x for x in a) * sum(y * y for y in b)) ** 0.5
    return 1.0 - dot / norm


@pytest.fixture
async def neighbourhood(owner: asyncpg.Connection, world: World) -> dict[str, Any]:
    tenant = await world.tenant("sim")
    other = await world.tenant("sim-other")
    c0, c1 = tenant.client_ids
    when = dt.datetime(2025, 3, 1, tzinfo=UTC)
    texts = {
        "target": "tasks_completed count Asana tasks completed",
        "twin": "tasks_completed count tasks completed in Asana this week",
        "created": "tasks_created count Asana tasks created",
        "cycle": "task_cycle_days days average days from task creation to completion",
        "csat": "customer_satisfaction percent customer satisfaction survey score",
    }
    ids = {}
    for n, (label, words) in enumerate(texts.items()):
        client_id = c1 if label == "created" else c0
        ids[label] = await add_metric(
            owner, tenant.id, client_id, label, when + dt.timedelta(hours=n), embed=words
        )
    ids["bare"] = await add_metric(owner, tenant.id, c0, "bare", when)
    # Another tenant's copy of the target: the nearest possible row, never to be returned.
    ids["foreign"] = await add_metric(
        owner, other.id, other.client_ids[0], "target", when, embed=texts["target"]
    )
    target = EMBEDDER.embed(texts["target"])
    distances = {
        label: cosine_distance(target, EMBEDDER.embed(words))
        for label, words in texts.items()
        if label != "target"
    }
    return {"tenant": tenant, "other": other, "ids": ids, "distances": distances}


async def test_similar_metrics_same_tenant_nearest_first(
    client: httpx.AsyncClient, world: World, neighbourhood: dict[str, Any]
) -> None:
    tenant, ids, distances = (neighbourhood[k] for k in ("tenant", "ids", "distances"))
    expected = sorted(distances, key=distances.__getitem__)
    gaps = [distances[b] - distances[a] for a, b in itertools.pairwise(expected)]
    assert min(gaps) > 1e-3, "the fixture's texts must be clearly ordered"
    headers = world.headers(tenant.viewer)

    body = await gql(client, SIMILAR, {"id": str(ids["target"]), "k": 10}, headers=headers)
    found = body["data"]["similarMetrics"]
    assert [f["metric"]["metricName"] for f in found] == expected
    assert str(ids["foreign"]) not in str(body)
    for item in found:
        assert item["distance"] == pytest.approx(distances[item["metric"]["metricName"]], abs=1e-5)
        assert item["similarity"] == pytest.approx(1 - item["distance"], abs=1e-12)

    body = await gql(client, SIMILAR, {"id": str(ids["target"]), "k": 2}, headers=headers)
    assert [f["metric"]["metricName"] for f in body["data"]["similarMetrics"]] == expected[:2]

    # A metric without an embedding has no neighbours.
    body = await gql(client, SIMILAR, {"id": str(ids["bare"])}, headers=headers)
    assert body == {"data": {"similarMetrics": []}}


async def test_similar_metrics_never_reveals_other_tenants(
    client: httpx.AsyncClient, world: World, neighbourhood: dict[str, Any]
) -> None:
    headers = world.headers(neighbourhood["tenant"].viewer)
    for metric_id in (neighbourhood["ids"]["foreign"], uuid.uuid4()):
        body = await gql(client, SIMILAR, {"id": str(metric_id)}, headers=headers)
        assert error_of(body) == {"code": "NOT_FOUND", "field": "metricId"}
    target = str(neighbourhood["ids"]["target"])
    for k in (0, 51):
        body = await gql(client, SIMILAR, {"id": target, "k": k}, headers=headers)
        assert error_of(body) == {"code": "VALIDATION_ERROR", "field": "k"}
    body = await gql(client, SIMILAR, {"id": "not-a-uuid"}, headers=headers)
    assert error_of(body) == {"code": "VALIDATION_ERROR", "field": "metricId"}


async def test_similar_is_exact_for_a_small_tenant_and_leaves_ef_search_alone(
    services: Services, neighbourhood: dict[str, Any]
) -> None:
    tenant, ids, distances = (neighbourhood[k] for k in ("tenant", "ids", "distances"))
    for k in (2, 5, 50):
        async with services.db.transaction(Scope(tenant.id)) as session:
            rows = await CustomMetricRepository(session, tenant.id).similar(ids["target"], k)
            assert (await session.execute(text("SHOW hnsw.ef_search"))).scalar() == "40"
        assert [r.metric_name for r in rows] == sorted(distances, key=distances.__getitem__)[:k]


async def test_similar_uses_the_index_with_a_wider_search_for_a_large_tenant(
    services: Services, neighbourhood: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Treat every tenant as large, to take the index path on a small data set.
    monkeypatch.setattr(metrics_domain, "EXACT_SEARCH_MAX_ROWS", 0)
    tenant, ids, distances = (neighbourhood[k] for k in ("tenant", "ids", "distances"))
    for k, ef_search in ((2, "40"), (5, "50"), (50, "500")):
        async with services.db.transaction(Scope(tenant.id)) as session:
            rows = await CustomMetricRepository(session, tenant.id).similar(ids["target"], k)
            assert (await session.execute(text("SHOW hnsw.ef_search"))).scalar() == ef_search
        # Approximate: what comes back is this tenant's, nearest first, but may be short
        # when other tenants' metrics crowd the index (the reason small tenants go exact).
        names = [r.metric_name for r in rows]
        assert set(names) <= set(distances)
        assert names == sorted(names, key=distances.__getitem__)
    async with services.db.transaction(Scope(tenant.id)) as session:
        assert (await session.execute(text("SHOW hnsw.ef_search"))).scalar() == "40"


async def test_similar_stays_exact_while_other_tenants_crowd_the_index(
    client: httpx.AsyncClient, world: World, owner: Any, neighbourhood: dict[str, Any]
) -> None:
    """Thousands of another tenant's metrics in the shared HNSW index: an index scan
    filtered afterwards finds few or none of this tenant's; the answer is exact."""
    crowd = await world.tenant("sim-crowd", clients=1)
    rng = random.Random(7)
    rows = []
    for n in range(2000):
        vector = [rng.gauss(0, 1) for _ in range(EMBEDDING_DIMENSIONS)]
        rows.append((crowd.id, crowd.client_ids[0], f"crowd_{n}", n, vector_literal(vector)))
    await owner.executemany(
        "INSERT INTO custom_metrics (tenant_id, client_kpi_id, metric_name, metric_value, "
        "record_date, embedding) VALUES ($1, $2, $3, $4, now(), $5::vector)",
        rows,
    )
    distances = neighbourhood["distances"]
    body = await gql(
        client,
        SIMILAR,
        {"id": str(neighbourhood["ids"]["target"]), "k": 3},
        headers=world.headers(neighbourhood["tenant"].viewer),
    )
    names = [m["metric"]["metricName"] for m in body["data"]["similarMetrics"]]
    assert names == sorted(distances, key=distances.__getitem__)[:3]


def record_input(client_id: uuid.UUID, **overrides: Any) -> dict[str, Any]:
    return {
        "input": {
            "clientId": str(client_id),
            "metricName": "revenue_per_hour",
            "value": "12.5",
            "unit": "AUD/h",
            "recordDate": "2025-03-05T09:30:00+00:00",
            "description": "billable revenue per staff hour",
            **overrides,
        }
    }


async def test_record_custom_metric(
    client: httpx.AsyncClient, world: World, owner: asyncpg.Connection
) -> None:
    tenant = await world.tenant("rec")
    c0 = tenant.client_ids[0]
    count = "SELECT count(*) FROM custom_metrics WHERE tenant_id = $1"

    body = await gql(client, RECORD, record_input(c0), headers=world.headers(tenant.viewer))
    assert error_of(body)["code"] == "FORBIDDEN"
    assert await owner.fetchval(count, tenant.id) == 0

    body = await gql(client, RECORD, record_input(c0), headers=world.headers(tenant.editor))
    recorded = body["data"]["recordCustomMetric"]
    assert {k: v for k, v in recorded.items() if k != "id"} == {
        "clientId": str(c0),
        "metricName": "revenue_per_hour",
        "value": "12.5000",
        "unit": "AUD/h",
        "recordDate": "2025-03-05T09:30:00+00:00",
        "sourceSystem": "manual",
    }
    row = await owner.fetchrow(
        "SELECT tenant_id, metadata, embedding::text AS embedding FROM custom_metrics "
        "WHERE id = $1",
        uuid.UUID(recorded["id"]),
    )
    assert row["tenant_id"] == tenant.id
    assert json.loads(row["metadata"]) == {"description": "billable revenue per staff hour"}
    stored = [float(v) for v in row["embedding"].strip("[]").split(",")]
    wanted = EMBEDDER.embed(
        metric_text("revenue_per_hour", "AUD/h", "billable revenue per staff hour")
    )
    assert stored == pytest.approx(wanted, abs=1e-6)

    # The same natural key (a zone-less time is UTC) replaces the value in place.
    body = await gql(
        client,
        RECORD,
        record_input(c0, value="13", recordDate="2025-03-05T09:30:00", description=None),
        headers=world.headers(tenant.admin),
    )
    again = body["data"]["recordCustomMetric"]
    assert (again["id"], again["value"]) == (recorded["id"], "13.0000")
    assert await owner.fetchval(count, tenant.id) == 1
    metadata = await owner.fetchval(
        "SELECT metadata FROM custom_metrics WHERE id = $1", uuid.UUID(recorded["id"])
    )
    assert metadata is None


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"metricName": "Revenue"}, "metricName"),
        ({"metricName": "9lives"}, "metricName"),
        ({"metricName": "a" * 64}, "metricName"),
        ({"value": "NaN"}, "value"),
        ({"value": "Infinity"}, "value"),
        ({"value": "1e10"}, "value"),
        ({"clientId": "nope"}, "clientId"),
    ],
)
async def test_record_custom_metric_validates(
    client: httpx.AsyncClient, world: World, overrides: dict[str, Any], field: str
) -> None:
    tenant = await world.tenant("recval")
    body = await gql(
        client,
        RECORD,
        record_input(tenant.client_ids[0], **overrides),
        headers=world.headers(tenant.editor),
    )
    assert error_of(body) == {"code": "VALIDATION_ERROR", "field": field}


async def test_record_custom_metric_for_another_tenants_client_is_not_found(
    client: httpx.AsyncClient, world: World, owner: asyncpg.Connection
) -> None:
    tenant = await world.tenant("recnf")
    other = await world.tenant("recnf-other")
    for client_id in (other.client_ids[0], uuid.uuid4()):
        body = await gql(
            client, RECORD, record_input(client_id), headers=world.headers(tenant.editor)
        )
        assert error_of(body) == {"code": "NOT_FOUND", "field": "clientId"}
    assert (
        await owner.fetchval(
            "SELECT count(*) FROM custom_metrics WHERE tenant_id = ANY($1::uuid[])",
            [tenant.id, other.id],
        )
        == 0
    )
