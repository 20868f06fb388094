"""The ingest endpoint against the real app, PostgreSQL (RLS) and Redis: validation,
set-based idempotent writes, lineage, tenant isolation, tokens, limits, errors."""

from __future__ import annotations

import copy
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import (
    LogLines,
    TenantFixture,
    World,
    app_with_broken_data_path,
    make_settings,
    other_app,
    plain_dsn,
)
from zixly.app import create_app
from zixly.container import Services, build_lifecycle, build_runtime
from zixly.core.metrics import REGISTRY
from zixly.embedded.stack import Endpoints
from zixly.ingest.instance_tokens import issue_instance_token
from zixly.ingest.tokens import new_token
from zixly.ingest.writer import NULL, SEPARATOR, pack
from zixly.security.guard import ADDRESS_FAILURES_PER_WINDOW

INGEST = "/ingest/v1"
START = dt.date(2026, 1, 1)


@pytest.fixture(scope="module")
async def ingest_client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    """The app, reached from an address of its own (bad tokens count per address)."""
    transport = httpx.ASGITransport(app=create_app(services), client=("198.51.100.10", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def token_for(services: Services, tenant_id: uuid.UUID) -> str:
    return (await issue_instance_token(services.db, tenant_id)).reveal()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def financial(n: int, client: str = "C-0", **changes: Any) -> dict[str, Any]:
    revenue = Decimal(1000 + n) + Decimal("0.25")
    expenses = Decimal(400 + n // 2)
    record = {
        "client_id": client,
        "record_date": (START + dt.timedelta(days=n)).isoformat(),
        "revenue": str(revenue),
        "expenses": float(expenses),
        "net_profit": str(revenue - expenses),
        "currency": "AUD",
        "external_id": f"xero-{n}",
    }
    record.update(changes)
    return record


def envelope(records: list[dict[str, Any]], **changes: Any) -> dict[str, Any]:
    body = {
        "workflow_id": "wf-1",
        "execution_id": "101",
        "source_system": "xero",
        "records": records,
    }
    body.update(changes)
    return body


async def rows(owner: asyncpg.Connection, table: str, tenant_id: uuid.UUID) -> int:
    return int(
        await owner.fetchval(f"SELECT count(*) FROM {table} WHERE tenant_id = $1", tenant_id)
    )


async def counts(owner: asyncpg.Connection, tenant_id: uuid.UUID) -> dict[str, int]:
    return {
        table: await rows(owner, table, tenant_id)
        for table in ("client_kpis", "financials", "lead_events", "custom_metrics")
    }


@pytest.fixture
async def tenant(world: World) -> TenantFixture:
    return await world.tenant("ingest")


@pytest.fixture
async def token(services: Services, tenant: TenantFixture) -> str:
    return await token_for(services, tenant.id)


async def post(client: httpx.AsyncClient, kind: str, token: str, body: Any) -> httpx.Response:
    return await client.post(f"{INGEST}/{kind}", json=body, headers=bearer(token))


# --- writes ---------------------------------------------------------------------------------------


async def test_replaying_a_batch_writes_each_row_once_and_then_changes_nothing(
    ingest_client: httpx.AsyncClient,
    owner: asyncpg.Connection,
    tenant: TenantFixture,
    token: str,
) -> None:
    records = [financial(n, client=f"C-{n % 2}") for n in range(50)]
    answers = []
    for execution in ("101", "102", "103"):
        response = await post(
            ingest_client, "financials", token, envelope(records, execution_id=execution)
        )
        assert response.status_code == 200, response.text
        answers.append(response.json())
    assert answers == [
        {"kind": "financials", "received": 50, "inserted": 50, "updated": 0, "unchanged": 0},
        {"kind": "financials", "received": 50, "inserted": 0, "updated": 0, "unchanged": 50},
        {"kind": "financials", "received": 50, "inserted": 0, "updated": 0, "unchanged": 50},
    ]
    stored = await owner.fetch(
        "SELECT c.client_id, f.record_date, f.revenue, f.expenses, f.net_profit, f.cash_flow, "
        "f.currency, f.external_id, f.source_system, f.source_execution_id "
        "FROM financials f JOIN client_kpis c ON c.id = f.client_kpi_id "
        "WHERE f.tenant_id = $1 ORDER BY f.record_date",
        tenant.id,
    )
    assert len(stored) == 50
    first = stored[0]
    assert (first["client_id"], first["record_date"]) == ("C-0", START)
    assert (first["revenue"], first["expenses"]) == (Decimal("1000.25"), Decimal("400.00"))
    assert first["net_profit"] == first["cash_flow"] == Decimal("600.25")
    assert (first["currency"], first["external_id"]) == ("AUD", "xero-0")
    assert first["source_system"] == "xero"
    # Unchanged rows were not touched: their lineage is still the first execution's.
    assert {r["source_execution_id"] for r in stored} == {"101"}


async def test_a_changed_amount_updates_that_row_only_with_its_lineage(
    ingest_client: httpx.AsyncClient,
    owner: asyncpg.Connection,
    tenant: TenantFixture,
    token: str,
) -> None:
    records = [financial(n) for n in range(5)]
    assert (await post(ingest_client, "financials", token, envelope(records))).json()[
        "inserted"
    ] == 5
    before = {
        r["record_date"]: r
        for r in await owner.fetch(
            "SELECT record_date, revenue, source_workflow_id, source_execution_id, ingested_at, "
            "xmin::text AS version FROM financials WHERE tenant_id = $1",
            tenant.id,
        )
    }
    assert all(r["ingested_at"] is not None for r in before.values())
    assert {(r["source_workflow_id"], r["source_execution_id"]) for r in before.values()} == {
        ("wf-1", "101")
    }
    changed = copy.deepcopy(records)
    changed[3] = financial(3, revenue="5000.00", net_profit=None)
    body = envelope(changed, workflow_id="wf-2", execution_id="202")
    response = await post(ingest_client, "financials", token, body)
    assert response.json() == {
        "kind": "financials",
        "received": 5,
        "inserted": 0,
        "updated": 1,
        "unchanged": 4,
    }
    after = {
        r["record_date"]: r
        for r in await owner.fetch(
            "SELECT record_date, revenue, net_profit, source_workflow_id, source_execution_id, "
            "ingested_at, xmin::text AS version FROM financials WHERE tenant_id = $1",
            tenant.id,
        )
    }
    day = START + dt.timedelta(days=3)
    assert after[day]["revenue"] == Decimal("5000.00")
    assert after[day]["net_profit"] == Decimal("5000.00") - Decimal(401)
    assert (after[day]["source_workflow_id"], after[day]["source_execution_id"]) == ("wf-2", "202")
    assert after[day]["ingested_at"] > before[day]["ingested_at"]
    for other in set(after) - {day}:
        assert after[other]["version"] == before[other]["version"]  # not even a new version
        assert after[other]["ingested_at"] == before[other]["ingested_at"]
        assert after[other]["source_execution_id"] == "101"


async def test_clients_are_created_from_client_name_and_renamed_only_when_changed(
    ingest_client: httpx.AsyncClient,
    owner: asyncpg.Connection,
    tenant: TenantFixture,
    token: str,
) -> None:
    records = [
        financial(0, client="NEW-1", client_name="New One Pty Ltd"),
        financial(1, client="NEW-1"),  # the same client, named once is enough
        financial(2, client="C-1"),  # an existing client, no name needed
        financial(3, client="NZ-1", client_name="Café Ōtautahi Ltd"),
    ]
    response = await post(ingest_client, "financials", token, envelope(records))
    assert response.json()["inserted"] == 4
    name = "SELECT client_name, updated_at FROM client_kpis WHERE tenant_id = $1 AND client_id = $2"
    created = await owner.fetchrow(name, tenant.id, "NEW-1")
    assert created["client_name"] == "New One Pty Ltd"
    assert (await owner.fetchrow(name, tenant.id, "NZ-1"))["client_name"] == ("Café Ōtautahi Ltd")
    await post(ingest_client, "financials", token, envelope(records))
    assert await owner.fetchrow(name, tenant.id, "NEW-1") == created  # no needless update
    records[0]["client_name"] = "New One Holdings"
    await post(ingest_client, "financials", token, envelope(records))
    renamed = await owner.fetchrow(name, tenant.id, "NEW-1")
    assert renamed["client_name"] == "New One Holdings"
    assert renamed["updated_at"] > created["updated_at"]


async def test_lead_events_and_custom_metrics(
    ingest_client: httpx.AsyncClient,
    owner: asyncpg.Connection,
    tenant: TenantFixture,
    token: str,
) -> None:
    leads = [
        {
            "client_id": "C-0",
            "lead_id": f"deal-{n}",
            "stage": "qualified",
            "status": "open",
            "event_date": f"2026-03-0{n + 1}T09:30:00+10:00",
            "value": 1500 + n,
            "external_id": f"hs-{n}",
        }
        for n in range(3)
    ]
    body = envelope(leads, source_system="hubspot")
    assert (await post(ingest_client, "lead-events", token, body)).json() == {
        "kind": "lead-events",
        "received": 3,
        "inserted": 3,
        "updated": 0,
        "unchanged": 0,
    }
    leads[1]["status"] = "won"
    # The same instant written in UTC is the same natural key.
    leads[2]["event_date"] = "2026-03-02T23:30:00Z"
    assert (await post(ingest_client, "lead-events", token, body)).json()["updated"] == 1
    stored = await owner.fetch(
        "SELECT lead_id, status, event_date, value FROM lead_events WHERE tenant_id = $1 "
        "ORDER BY lead_id",
        tenant.id,
    )
    assert [(r["lead_id"], r["status"]) for r in stored] == [
        ("deal-0", "open"),
        ("deal-1", "won"),
        ("deal-2", "open"),
    ]
    assert stored[0]["event_date"] == dt.datetime(2026, 2, 28, 23, 30, tzinfo=dt.UTC)
    assert stored[0]["value"] == Decimal("1500.00")

    metrics: list[dict[str, Any]] = [
        {
            "client_id": "C-1",
            "metric_name": "tasks_completed",
            "metric_value": "42.5",
            "unit": "tasks",
            "record_date": "2026-03-01T00:00:00+11:00",
        },
        {
            "client_id": "C-1",
            "metric_name": "tasks_completed",
            "metric_value": 40,
            "unit": "tasks",
            "record_date": "2026-03-02T00:00:00+11:00",
        },
    ]
    body = envelope(metrics, source_system="asana")
    assert (await post(ingest_client, "custom-metrics", token, body)).json()["inserted"] == 2
    assert (await post(ingest_client, "custom-metrics", token, body)).json()["unchanged"] == 2
    stored = await owner.fetch(
        "SELECT metric_value, unit, record_date, embedding IS NOT NULL AS embedded, "
        "source_system FROM custom_metrics WHERE tenant_id = $1 ORDER BY record_date",
        tenant.id,
    )
    assert [(r["metric_value"], r["unit"], r["source_system"]) for r in stored] == [
        (Decimal("42.5000"), "tasks", "asana"),
        (Decimal("40.0000"), "tasks", "asana"),
    ]
    assert stored[0]["record_date"] == dt.datetime(2026, 2, 28, 13, 0, tzinfo=dt.UTC)
    assert all(r["embedded"] for r in stored)


# --- validation -------------------------------------------------------------------------------

BAD_FINANCIALS = [
    ("record_date", {"record_date": "2026-02-30"}, "not a calendar date"),
    ("record_date", {"record_date": "01/02/2026"}, "YYYY-MM-DD"),
    ("revenue", {"revenue": "12abc"}, "must be a number"),
    ("revenue", {"revenue": True}, "must be a number"),
    ("revenue", {"revenue": "NaN"}, "finite"),
    ("revenue", {"revenue": "1000000000000", "net_profit": None}, "less than"),
    ("expenses", {"expenses": "10.005"}, "2 decimal places"),
    ("currency", {"currency": "USD"}, "only AUD"),
    ("net_profit", {"net_profit": "1.00"}, "must equal revenue - expenses"),
    ("client_id", {"client_id": None}, "is required"),
    ("client_name", {"client_name": "x" * 5000}, "at most 200 characters"),
    ("client_id", {"client_id": "bad\x00id"}, "control characters"),
    ("client_id", {"client_id": "   "}, "must not be empty"),
    ("colour", {"colour": "blue"}, "unknown field"),
]


@pytest.mark.parametrize(
    ("field", "change", "message"), BAD_FINANCIALS, ids=[f"{b[0]}-{b[2]}" for b in BAD_FINANCIALS]
)
async def test_one_bad_record_rejects_the_whole_batch(
    ingest_client: httpx.AsyncClient,
    owner: asyncpg.Connection,
    tenant: TenantFixture,
    token: str,
    field: str,
    change: dict[str, Any],
    message: str,
) -> None:
    records = [financial(n, client="BRAND-NEW", client_name="Brand New") for n in range(20)]
    records[7] = financial(7, client="BRAND-NEW", client_name="Brand New") | change
    before = await counts(owner, tenant.id)
    response = await post(ingest_client, "financials", token, envelope(records))
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "VALIDATION_ERROR"
    assert "nothing was written" in body["message"]
    assert body["requestId"] == response.headers["x-request-id"]
    [error] = body["errors"]
    assert (error["index"], error["field"]) == (7, field)
    assert message in error["message"]
    assert await counts(owner, tenant.id) == before  # not even the new client


async def test_every_bad_record_is_reported(
    ingest_client: httpx.AsyncClient, owner: asyncpg.Connection, tenant: TenantFixture, token: str
) -> None:
    records = [financial(n) for n in range(6)]
    records[1]["revenue"] = "lots"
    records[4] = financial(2)  # repeats record 2's natural key
    records[5]["client_name"] = "Another Name"
    records[0]["client_name"] = "A Name"
    records[3]["record_date"] = "2026-13-01"
    response = await post(ingest_client, "financials", token, envelope(records))
    assert response.status_code == 422
    assert [(e["index"], e["field"]) for e in response.json()["errors"]] == [
        (1, "revenue"),
        (3, "record_date"),
        (4, "record_date"),
        (5, "client_name"),
    ]
    assert "repeats record 2" in response.json()["errors"][2]["message"]
    assert await rows(owner, "financials", tenant.id) == 0


async def test_duplicate_natural_keys_of_each_kind(
    ingest_client: httpx.AsyncClient, tenant: TenantFixture, token: str
) -> None:
    lead = {
        "client_id": "C-0",
        "lead_id": "d1",
        "stage": "won",
        "status": "closed",
        "event_date": "2026-01-01T10:00:00+10:00",
    }
    same_instant = lead | {"event_date": "2026-01-01T00:00:00Z", "status": "open"}
    response = await post(ingest_client, "lead-events", token, envelope([lead, same_instant]))
    assert response.status_code == 422
    assert [(e["index"], e["field"]) for e in response.json()["errors"]] == [(1, "event_date")]
    metric = {
        "client_id": "C-0",
        "metric_name": "hours",
        "metric_value": 1,
        "record_date": "2026-01-01T00:00:00Z",
    }
    response = await post(ingest_client, "custom-metrics", token, envelope([metric, metric]))
    assert [(e["index"], e["field"]) for e in response.json()["errors"]] == [(1, "record_date")]


async def test_a_missing_client_without_client_name_rejects_the_batch(
    ingest_client: httpx.AsyncClient, owner: asyncpg.Connection, tenant: TenantFixture, token: str
) -> None:
    records = [
        financial(0, client="NAMED", client_name="Named Ltd"),
        financial(1, client="GHOST"),
        financial(2, client="C-0"),
        financial(3, client="GHOST"),
    ]
    before = await counts(owner, tenant.id)
    response = await post(ingest_client, "financials", token, envelope(records))
    assert response.status_code == 422
    assert [(e["index"], e["field"]) for e in response.json()["errors"]] == [
        (1, "client_id"),
        (3, "client_id"),
    ]
    assert "send client_name" in response.json()["errors"][0]["message"]
    assert await counts(owner, tenant.id) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"records": []}, "source_system"),
        ({"source_system": "Xero!", "records": []}, "source_system"),
        ({"source_system": "manual", "records": []}, "source_system"),
        ({"source_system": "xero", "records": {}}, "records"),
        ({"source_system": "xero", "records": [], "extra": 1}, "extra"),
        ({"source_system": "xero", "records": [], "workflow_id": ["x"]}, "workflow_id"),
        ([], "body"),
    ],
)
async def test_envelope_errors(
    ingest_client: httpx.AsyncClient, token: str, body: Any, field: str
) -> None:
    response = await post(ingest_client, "financials", token, body)
    assert response.status_code == 422, response.text
    assert [(e["index"], e["field"]) for e in response.json()["errors"]] == [(None, field)]


async def test_malformed_json_and_unknown_kinds(
    ingest_client: httpx.AsyncClient, token: str
) -> None:
    response = await ingest_client.post(
        f"{INGEST}/financials", content=b'{"records": [', headers=bearer(token)
    )
    assert response.status_code == 400
    assert response.json()["code"] == "VALIDATION_ERROR"
    assert response.json()["field"] == "body"
    response = await ingest_client.post(
        f"{INGEST}/financials", content=b'{"revenue": NaN}', headers=bearer(token)
    )
    assert response.status_code == 400
    deep = b"[" * 100_000 + b"]" * 100_000
    response = await ingest_client.post(f"{INGEST}/financials", content=deep, headers=bearer(token))
    assert response.status_code == 400
    assert response.json()["message"] == "the body is nested too deeply"
    response = await post(ingest_client, "invoices", token, envelope([]))
    assert response.status_code == 404
    assert response.json()["code"] == "NOT_FOUND"
    for path in ("financials", "heartbeat"):
        response = await ingest_client.get(f"{INGEST}/{path}", headers=bearer(token))
        assert response.status_code == 405 and response.headers["allow"] == "POST"
        assert response.json()["code"] == "METHOD_NOT_ALLOWED"
    empty = await post(ingest_client, "financials", token, envelope([]))
    assert empty.json() == {
        "kind": "financials",
        "received": 0,
        "inserted": 0,
        "updated": 0,
        "unchanged": 0,
    }


# --- tenants ------------------------------------------------------------------------------------


async def test_a_tenant_writes_only_its_own_clients_and_rows(
    ingest_client: httpx.AsyncClient,
    owner: asyncpg.Connection,
    services: Services,
    world: World,
) -> None:
    a, b = await world.tenant("ingest-a"), await world.tenant("ingest-b")
    await owner.execute(
        "INSERT INTO client_kpis (tenant_id, client_id, client_name) VALUES ($1, 'ONLY-B', 'B')",
        b.id,
    )
    b_token = await token_for(services, b.id)
    await post(ingest_client, "financials", b_token, envelope([financial(0, client="C-0")]))
    b_before = await owner.fetch(
        "SELECT f.*, c.client_name FROM financials f JOIN client_kpis c ON c.id = f.client_kpi_id "
        "WHERE f.tenant_id = $1 ORDER BY f.id",
        b.id,
    )
    b_clients = await owner.fetch(
        "SELECT * FROM client_kpis WHERE tenant_id = $1 ORDER BY id", b.id
    )
    a_token = await token_for(services, a.id)

    # B's client id is only a name in B: A cannot refer to it without creating its own.
    response = await post(ingest_client, "financials", a_token, envelope([financial(0, "ONLY-B")]))
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "client_id"
    # The same record with a name creates A's own client; "C-0" is A's own "C-0".
    records = [
        financial(0, client="ONLY-B", client_name="Taken over?"),
        financial(0, client="C-0", revenue="1.00", expenses="1.00", net_profit="0"),
    ]
    response = await post(ingest_client, "financials", a_token, envelope(records))
    assert response.json()["inserted"] == 2
    a_rows = await owner.fetch(
        "SELECT c.tenant_id AS client_tenant, c.client_id FROM financials f "
        "JOIN client_kpis c ON c.id = f.client_kpi_id WHERE f.tenant_id = $1",
        a.id,
    )
    assert {(r["client_tenant"], r["client_id"]) for r in a_rows} == {
        (a.id, "ONLY-B"),
        (a.id, "C-0"),
    }
    after = await owner.fetch(
        "SELECT f.*, c.client_name FROM financials f JOIN client_kpis c ON c.id = f.client_kpi_id "
        "WHERE f.tenant_id = $1 ORDER BY f.id",
        b.id,
    )
    assert after == b_before
    assert await owner.fetch(
        "SELECT * FROM client_kpis WHERE tenant_id = $1 ORDER BY id", b.id
    ) == (b_clients)


# --- tokens and limits --------------------------------------------------------------------------


async def test_bad_tokens_are_401_with_a_challenge(
    ingest_client: httpx.AsyncClient, owner: asyncpg.Connection, services: Services, world: World
) -> None:
    tenant = await world.tenant("ingest-tok")
    revoked = await token_for(services, tenant.id)
    await token_for(services, tenant.id)  # replaces (revokes) the instance token
    body = envelope([financial(0)])
    for headers, error in [
        ({}, None),
        ({"Authorization": "Basic abc"}, "invalid_request"),
        (bearer("zik_short"), "invalid_token"),
        (bearer(world.token(tenant.admin, tenant.slug)), "invalid_token"),  # a user's JWT
        (bearer(new_token()), "invalid_token"),  # well-formed, unknown
        (bearer(revoked), "invalid_token"),
    ]:
        response = await ingest_client.post(f"{INGEST}/financials", json=body, headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["code"] == "UNAUTHENTICATED"
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith('Bearer realm="zixly-ingest"')
        assert (f'error="{error}"' in challenge) if error else ("error=" not in challenge)
    assert await rows(owner, "financials", tenant.id) == 0


async def test_expired_tokens_are_refused(
    ingest_client: httpx.AsyncClient, owner: asyncpg.Connection, services: Services, world: World
) -> None:
    tenant = await world.tenant("ingest-exp")
    token = await token_for(services, tenant.id)
    response = await post(ingest_client, "heartbeat", token, {})
    assert response.status_code == 200
    await owner.execute(
        "UPDATE ingest_tokens SET expires_at = now() - interval '1 second' WHERE tenant_id = $1",
        tenant.id,
    )
    assert (await post(ingest_client, "heartbeat", token, {})).status_code == 401


async def test_bad_tokens_count_toward_the_address_limit(
    data_dir: Path, endpoints: Endpoints, services: Services, world: World
) -> None:
    tenant = await world.tenant("ingest-guess")
    good = await token_for(services, tenant.id)
    settings = make_settings(data_dir)
    async with other_app(endpoints, settings, address="192.0.2.140") as (_, guesser):
        # Ingest tokens name no account: they count per address, with the address ceiling.
        for _ in range(ADDRESS_FAILURES_PER_WINDOW):
            response = await post(guesser, "heartbeat", new_token(), {})
            assert response.status_code == 401
        blocked = await post(guesser, "heartbeat", good, {})
        assert blocked.status_code == 429
        assert blocked.json()["code"] == "RATE_LIMITED"
        assert int(blocked.headers["retry-after"]) >= 1


async def test_the_ingest_rate_limit_is_per_tenant(
    data_dir: Path, endpoints: Endpoints, services: Services, world: World
) -> None:
    busy, quiet = await world.tenant("ingest-busy"), await world.tenant("ingest-quiet")
    settings = make_settings(data_dir, ingest_rate_limit_per_minute=2, rate_limit_window_seconds=5)
    busy_token, quiet_token = (
        await token_for(services, busy.id),
        await token_for(services, quiet.id),
    )
    async with other_app(endpoints, settings, address="192.0.2.141") as (_, client):
        for remaining in ("1", "0"):
            response = await post(client, "financials", busy_token, envelope([]))
            assert response.status_code == 200
            assert response.headers["x-ratelimit-remaining"] == remaining
        response = await post(client, "financials", busy_token, envelope([]))
        assert response.status_code == 429
        assert 1 <= int(response.headers["retry-after"]) <= 5
        assert response.json()["code"] == "RATE_LIMITED"
        assert (await post(client, "financials", quiet_token, envelope([]))).status_code == 200


async def test_ten_thousand_records_in_one_request_and_the_limits_beyond(
    ingest_client: httpx.AsyncClient,
    owner: asyncpg.Connection,
    services: Services,
    tenant: TenantFixture,
    token: str,
) -> None:
    maximum = services.settings.ingest_max_records
    assert maximum == 10_000
    records = [financial(n, client=f"C-{n % 2}") for n in range(maximum)]
    response = await post(ingest_client, "financials", token, envelope(records))
    assert response.status_code == 200, response.text
    assert response.json()["inserted"] == maximum
    assert await rows(owner, "financials", tenant.id) == maximum

    too_many = envelope([*records, financial(maximum)])
    response = await post(ingest_client, "financials", token, too_many)
    assert response.status_code == 413
    assert response.json()["code"] == "PAYLOAD_TOO_LARGE"
    assert response.json()["max_records"] == maximum

    limit = services.settings.ingest_max_body_bytes
    padding = {"source_system": "xero", "records": [], "workflow_id": "x" * (limit + 1)}
    response = await post(ingest_client, "financials", token, padding)
    assert response.status_code == 413
    assert response.json()["max_bytes"] == limit

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"source_system": "xero", "records": [], "workflow_id": "'
        for _ in range(limit // 65536 + 1):
            yield b"y" * 65536
        yield b'"}'

    response = await ingest_client.post(
        f"{INGEST}/financials", content=chunks(), headers=bearer(token)
    )
    assert response.status_code == 413
    assert await rows(owner, "financials", tenant.id) == maximum


async def test_heartbeat(
    ingest_client: httpx.AsyncClient,
    owner: asyncpg.Connection,
    tenant: TenantFixture,
    token: str,
) -> None:
    last_used = "SELECT last_used_at FROM ingest_tokens WHERE tenant_id = $1 AND revoked_at IS NULL"
    assert await owner.fetchval(last_used, tenant.id) is None
    body = {"tenant": str(tenant.id), "slug": tenant.slug, "template": "zixly-heartbeat"}
    response = await post(ingest_client, "heartbeat", token, body)
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "tenant": tenant.slug}
    first = await owner.fetchval(last_used, tenant.id)
    assert first is not None
    # Throttled: a second use within the minute does not write again.
    assert (await post(ingest_client, "heartbeat", token, body)).status_code == 200
    assert await owner.fetchval(last_used, tenant.id) == first
    await owner.execute(
        "UPDATE ingest_tokens SET last_used_at = now() - interval '2 minutes' WHERE tenant_id = $1",
        tenant.id,
    )
    await post(ingest_client, "financials", token, envelope([]))
    assert await owner.fetchval(last_used, tenant.id) > first
    wrong = body | {"tenant": str(uuid.uuid4())}
    response = await post(ingest_client, "heartbeat", token, wrong)
    assert response.status_code == 400
    assert response.json()["field"] == "tenant"


async def test_unexpected_errors_are_masked_with_the_request_id(
    services: Services, owner: asyncpg.Connection, world: World, logs: LogLines
) -> None:
    tenant = await world.tenant("ingest-broken")
    token = await token_for(services, tenant.id)
    async with app_with_broken_data_path(services, owner) as client:
        response = await post(client, "financials", token, envelope([financial(0)]))
    assert response.status_code == 500
    request_id = response.headers["x-request-id"]
    assert response.json() == {
        "code": "INTERNAL",
        "message": f"Unexpected error (request id {request_id}).",
        "requestId": request_id,
    }
    [logged] = logs.events("ingest.unexpected_error")
    assert logged["request_id"] == request_id
    assert "permission denied" in logged["error"]


async def test_the_token_never_reaches_the_logs(
    ingest_client: httpx.AsyncClient, services: Services, world: World, logs: LogLines
) -> None:
    tenant = await world.tenant("ingest-logs")
    token = await token_for(services, tenant.id)
    await post(ingest_client, "financials", token, envelope([financial(0)]))
    await post(ingest_client, "financials", token, envelope([financial(0, revenue="x")]))
    await post(ingest_client, "heartbeat", token, {})
    assert logs.events("ingest.batch") and logs.events("ingest.token_issued")
    assert token not in logs.text
    assert token[4:] not in logs.text


def test_columns_travel_as_one_text_each_and_a_separator_cannot_slip_in() -> None:
    assert pack(["a", None, "b"]) == f"a{SEPARATOR}{NULL}{SEPARATOR}b"
    assert pack([Decimal("1.50"), None]) == f"1.50{SEPARATOR}{NULL}"
    with pytest.raises(ValueError, match="separator"):
        pack(["a", f"b{SEPARATOR}c"])


async def test_control_characters_never_reach_the_writer(
    ingest_client: httpx.AsyncClient, token: str
) -> None:
    for value in (f"x{SEPARATOR}y", f"x{NULL}y", "caf\u00e9\x1f"):
        response = await post(
            ingest_client, "financials", token, envelope([financial(0, external_id=value)])
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "external_id"


async def test_the_ingest_url_instances_get(
    data_dir: Path, services: Services, ingest_client: httpx.AsyncClient, token: str
) -> None:
    assert make_settings(data_dir, host="10.0.0.5", port=9000).ingest_base_url == (
        "http://10.0.0.5:9000/ingest/v1"
    )
    public = make_settings(data_dir, public_url="https://api.zixly.example/")
    assert public.ingest_base_url == "https://api.zixly.example/ingest/v1"
    chosen = make_settings(data_dir, ingest_url="https://in.zixly.example/v1/")
    assert chosen.ingest_base_url == "https://in.zixly.example/v1"
    lifecycle = build_lifecycle(
        chosen, services.db, services.redis, services.http, build_runtime(chosen), services.keyring
    )
    assert lifecycle.ingest_url == "https://in.zixly.example/v1"
    # ... and the path under it is what this app serves.
    path = services.settings.ingest_base_url.removeprefix(services.settings.base_url)
    response = await ingest_client.post(f"{path}/heartbeat", headers=bearer(token))
    assert response.status_code == 200


async def test_rows_are_counted_by_kind_and_outcome(
    ingest_client: httpx.AsyncClient, tenant: TenantFixture, token: str
) -> None:
    def counted(outcome: str) -> float:
        labels = {"kind": "financials", "outcome": outcome}
        return REGISTRY.get_sample_value("zixly_ingest_rows_total", labels) or 0.0

    before = {o: counted(o) for o in ("inserted", "updated", "unchanged", "rejected")}
    records = [financial(n) for n in range(3)]
    await post(ingest_client, "financials", token, envelope(records))
    await post(ingest_client, "financials", token, envelope(records))
    records[0]["revenue"] = "oops"
    await post(ingest_client, "financials", token, envelope(records))
    after = {o: counted(o) - before[o] for o in before}
    assert after == {"inserted": 3, "updated": 0, "unchanged": 3, "rejected": 3}
    exposed = (await ingest_client.get("/metrics")).text
    assert 'zixly_ingest_rows_total{kind="financials",outcome="inserted"}' in exposed


async def test_a_batch_that_cannot_finish_in_time_is_a_retryable_503(
    data_dir: Path,
    endpoints: Endpoints,
    services: Services,
    owner: asyncpg.Connection,
    world: World,
) -> None:
    tenant = await world.tenant("ingest-slow")
    token = await token_for(services, tenant.id)
    settings = make_settings(data_dir, ingest_statement_timeout_ms=200)
    blocker = await asyncpg.connect(plain_dsn(endpoints.migrations_database_url))
    try:
        async with (
            other_app(endpoints, settings, address="192.0.2.142") as (_, client),
            blocker.transaction(),
        ):
            # Another transaction holds the client's row: renaming it has to wait.
            await blocker.execute(
                "SELECT 1 FROM client_kpis WHERE tenant_id = $1 AND client_id = 'C-0' FOR UPDATE",
                tenant.id,
            )
            body = envelope([financial(0, client_name="Renamed while locked")])
            response = await post(client, "financials", token, body)
    finally:
        await blocker.close()
    assert response.status_code == 503
    assert response.json()["code"] == "UNAVAILABLE"
    assert response.json()["retryable"] is True
    assert await rows(owner, "financials", tenant.id) == 0
