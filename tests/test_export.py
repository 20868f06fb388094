from __future__ import annotations

import csv
import datetime as dt
import io
import uuid
from decimal import Decimal

import asyncpg
import httpx
from starlette.types import ASGIApp, Message

from tests.conftest import LogLines, TenantFixture, World, app_with_broken_data_path
from zixly.app import create_app
from zixly.container import Services
from zixly.dev.seed import copy_financials, ensure_client

URL = "/export/financials.csv"
HEADER = [
    "record_date",
    "client_id",
    "client_name",
    "revenue",
    "expenses",
    "net_profit",
    "cash_flow",
    "currency",
    "source_system",
]
D = dt.date.fromisoformat


def record(
    tenant_id: uuid.UUID,
    client: uuid.UUID,
    day: str,
    revenue: str,
    expenses: str,
    cash: str,
    source: str = "xero",
    currency: str = "AUD",
) -> tuple[object, ...]:
    net = Decimal(revenue) - Decimal(expenses)
    return (
        tenant_id,
        client,
        D(day),
        Decimal(revenue),
        Decimal(expenses),
        net,
        Decimal(cash),
        currency,
        source,
    )


def parse(response: httpx.Response) -> list[list[str]]:
    return list(csv.reader(io.StringIO(response.text)))


async def arrange(world: World, owner: asyncpg.Connection) -> tuple[TenantFixture, uuid.UUID]:
    """A tenant with a plain client and one whose source-system text is hostile."""
    tenant = await world.tenant("exp", clients=0)
    plain = await ensure_client(owner, tenant.id, "C-1", 'Acme, "Quoted" Pty', "retail")
    hostile = await ensure_client(owner, tenant.id, "=cmd|' /C calc'!A0", "+Evil", "retail")
    await copy_financials(
        owner,
        [
            record(tenant.id, plain, "2023-12-31", "1.00", "1.00", "0.00"),  # before the range
            record(tenant.id, plain, "2024-01-01", "1200.50", "1000.25", "150.00"),
            record(tenant.id, plain, "2024-01-02", "980.00", "992.50", "-40.10"),
            record(tenant.id, plain, "2024-01-02", "700.00", "600.00", "90.00", source="myob"),
            record(tenant.id, hostile, "2024-01-03", "10.00", "5.00", "5.00", source="@import"),
            record(tenant.id, plain, "2024-01-04", "2.00", "1.00", "1.00"),  # after the range
        ],
    )
    # Another tenant's records on the same days must never appear.
    other = await world.tenant("exp-other", clients=1)
    await copy_financials(
        owner, [record(other.id, other.client_ids[0], "2024-01-02", "999.00", "1.00", "1.00")]
    )
    return tenant, plain


PLAIN = ["C-1", 'Acme, "Quoted" Pty']
EXPECTED = [
    HEADER,
    ["2024-01-01", *PLAIN, "1200.50", "1000.25", "200.25", "150.00", "AUD", "xero"],
    # Same day and client: ordered by source system.
    ["2024-01-02", *PLAIN, "700.00", "600.00", "100.00", "90.00", "AUD", "myob"],
    ["2024-01-02", *PLAIN, "980.00", "992.50", "-12.50", "-40.10", "AUD", "xero"],
    # Text starting with = + - @ gets a leading apostrophe; the negative amounts above do not.
    [
        "2024-01-03",
        "'=cmd|' /C calc'!A0",
        "'+Evil",
        "10.00",
        "5.00",
        "5.00",
        "5.00",
        "AUD",
        "'@import",
    ],
]


async def test_export_streams_the_tenants_rows_in_the_range(
    client: httpx.AsyncClient, world: World, owner: asyncpg.Connection
) -> None:
    tenant, _ = await arrange(world, owner)
    response = await client.get(
        URL,
        params={"start": "2024-01-01", "end": "2024-01-03"},
        headers=world.headers(tenant.viewer),
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert (
        response.headers["content-disposition"]
        == 'attachment; filename="financials_2024-01-01_2024-01-03.csv"'
    )
    assert response.headers["x-ratelimit-limit"] == "100000"
    assert parse(response) == EXPECTED


async def test_export_filters_by_client(
    client: httpx.AsyncClient, world: World, owner: asyncpg.Connection
) -> None:
    tenant, plain = await arrange(world, owner)
    response = await client.get(
        URL,
        params={"start": "2024-01-01", "end": "2024-01-31", "clientId": str(plain)},
        headers=world.headers(tenant.viewer),
    )
    assert response.status_code == 200, response.text
    assert parse(response) == [
        HEADER,
        EXPECTED[1],
        EXPECTED[2],
        EXPECTED[3],
        ["2024-01-04", *PLAIN, "2.00", "1.00", "1.00", "1.00", "AUD", "xero"],
    ]


async def test_another_tenants_client_id_exports_nothing(
    client: httpx.AsyncClient, world: World, owner: asyncpg.Connection
) -> None:
    _, plain = await arrange(world, owner)
    intruder = await world.tenant("exp-intruder")
    response = await client.get(
        URL,
        params={"start": "2024-01-01", "end": "2024-01-31", "clientId": str(plain)},
        headers=world.headers(intruder.admin),
    )
    assert response.status_code == 200
    assert parse(response) == [HEADER]


async def test_empty_range_is_just_the_header(client: httpx.AsyncClient, world: World) -> None:
    tenant = await world.tenant("exp-empty")
    response = await client.get(
        URL,
        params={"start": "2020-01-01", "end": "2020-01-02"},
        headers=world.headers(tenant.viewer),
    )
    assert response.status_code == 200
    assert response.text == ",".join(HEADER) + "\r\n"


async def asgi_get(
    app: ASGIApp, path: str, query: str, headers: dict[str, str]
) -> tuple[int, list[bytes]]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, [m["body"] for m in sent if m["type"] == "http.response.body"]


async def test_large_export_streams_in_batches(
    services: Services, world: World, owner: asyncpg.Connection
) -> None:
    tenant = await world.tenant("exp-big", clients=3)
    start = D("2022-01-01")
    days = 900
    rows: list[tuple[object, ...]] = []
    for n, client_kpi_id in enumerate(tenant.client_ids):
        for offset in range(days):
            revenue = Decimal(100 + offset) + Decimal(n) / 100
            rows.append(
                (
                    tenant.id,
                    client_kpi_id,
                    start + dt.timedelta(days=offset),
                    revenue,
                    Decimal("50.00"),
                    revenue - Decimal("50.00"),
                    Decimal("1.00"),
                    "AUD",
                    "xero",
                )
            )
    await copy_financials(owner, rows)
    end = start + dt.timedelta(days=days - 1)
    # httpx's ASGITransport buffers bodies, so talk ASGI directly to see the chunks.
    status, chunks = await asgi_get(
        create_app(services),
        URL,
        f"start={start.isoformat()}&end={end.isoformat()}",
        world.headers(tenant.viewer),
    )
    assert status == 200
    lines = list(csv.reader(io.StringIO(b"".join(chunks).decode())))
    assert lines[0] == HEADER
    assert len(lines) == 1 + 3 * days
    # Ordered by date, then the client's external id (C-0, C-1, C-2).
    assert lines[1][:4] == ["2022-01-01", "C-0", f"Client 0 of {tenant.slug}", "100.00"]
    assert lines[2][:4] == ["2022-01-01", "C-1", f"Client 1 of {tenant.slug}", "100.01"]
    assert lines[-1][:4] == [end.isoformat(), "C-2", f"Client 2 of {tenant.slug}", "999.02"]
    # 2700 rows read 1000 at a time from the cursor: three body chunks, not one buffer.
    assert [chunk.count(b"\r\n") for chunk in chunks if chunk] == [1 + 1000, 1000, 700]


async def test_export_validation_errors(client: httpx.AsyncClient, world: World) -> None:
    tenant = await world.tenant("exp-bad")
    headers = world.headers(tenant.viewer)
    cases = [
        (
            {"start": "2024-02-01", "end": "2024-01-01"},
            "range end 2024-01-01 is before its start 2024-02-01",
            "range",
        ),
        (
            {"start": "2020-01-01", "end": "2024-01-01"},
            "range covers 1462 days; the most one query may cover is 1099",
            "range",
        ),
        (
            {"start": "2024-02-30", "end": "2024-03-01"},
            "start is not a valid date (YYYY-MM-DD)",
            "start",
        ),
        ({"start": "2024-01-01", "end": "20240301"}, "end is not a valid date (YYYY-MM-DD)", "end"),
        ({"start": "2024-01-01"}, "end is required (YYYY-MM-DD)", "end"),
        (
            {"start": "2024-01-01", "end": "2024-01-02", "clientId": "nope"},
            "clientId is not a valid id",
            "clientId",
        ),
    ]
    for params, message, field in cases:
        response = await client.get(URL, params=params, headers=headers)
        assert response.status_code == 400, params
        error = response.json()["errors"][0]
        assert error["message"] == message
        assert error["extensions"]["code"] == "VALIDATION_ERROR"
        assert error["extensions"]["field"] == field
        assert error["extensions"]["requestId"] == response.headers["x-request-id"]


async def test_export_needs_a_token_and_a_tenant(client: httpx.AsyncClient, world: World) -> None:
    params = {"start": "2024-01-01", "end": "2024-01-02"}
    response = await client.get(URL, params=params)
    assert response.status_code == 401
    assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"

    staff = await world.staff()  # staff without a tenant has no tenant data to export
    response = await client.get(URL, params=params, headers=world.headers(staff))
    assert response.status_code == 403
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "FORBIDDEN"
    assert error["message"].startswith("this operation needs a tenant")


async def test_a_failing_query_is_a_masked_json_error(
    services: Services, owner: asyncpg.Connection, world: World, logs: LogLines
) -> None:
    tenant = await world.tenant("exp-broken")
    async with app_with_broken_data_path(services, owner) as client:
        response = await client.get(
            URL,
            params={"start": "2024-01-01", "end": "2024-01-02"},
            headers=world.headers(tenant.viewer),
        )
    assert response.status_code == 500
    request_id = response.headers["x-request-id"]
    assert response.json() == {
        "errors": [
            {
                "message": f"Unexpected error (request id {request_id}).",
                "extensions": {"code": "INTERNAL", "requestId": request_id},
            }
        ]
    }
    (line,) = logs.events("export.failed")
    assert line["request_id"] == request_id
    assert line["tenant_id"] == str(tenant.id)
    assert "permission denied for table" in line["error"]
