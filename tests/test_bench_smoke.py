"""The API benchmark (bench/) at minuscule sizes, so it cannot rot. No timing is asserted."""

from __future__ import annotations

import datetime as dt
import io
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from rich.console import Console

from bench.api import BenchConfig, run_benchmark
from bench.baseline import create_app as create_baseline
from bench.dataset import EMAIL_DOMAIN, SLUG_PREFIX, START, Layout, ensure_dataset
from bench.loadgen import send
from bench.scenarios import Workload, all_scenarios
from tests.conftest import JWT_SECRET, plain_dsn
from zixly.core.settings import Settings
from zixly.embedded.stack import Endpoints
from zixly.security.tokens import mint_token

TENANTS, ROWS = 2, 6000  # 3000 a tenant: three clients, so several rows share each date


@pytest.fixture
async def bench_owner(owner: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    """The owner connection; the bench tenants and users are removed afterwards."""
    yield owner
    await owner.execute("DELETE FROM tenants WHERE slug LIKE $1", SLUG_PREFIX + "%")
    await owner.execute("DELETE FROM users WHERE email LIKE $1", "%." + EMAIL_DOMAIN)


def quiet() -> Console:
    return Console(file=io.StringIO(), width=160)


def the_only_result(directory: Path) -> dict[str, Any]:
    [written] = list(directory.glob("api-*.json"))
    loaded: dict[str, Any] = json.loads(written.read_text())
    return loaded


async def test_seeding_matches_the_layout_and_is_reused(
    endpoints: Endpoints, bench_owner: asyncpg.Connection
) -> None:
    owner_dsn = plain_dsn(endpoints.migrations_database_url)
    layout = Layout(tenants=3, rows=2200)  # 734 + 733 + 733 rows
    first = await ensure_dataset(owner_dsn, layout, quiet())
    counted = await bench_owner.fetch(
        "SELECT t.slug, count(f.id) AS n, min(f.record_date) AS lo, max(f.record_date) AS hi "
        "FROM tenants t LEFT JOIN financials f ON f.tenant_id = t.id "
        "WHERE t.slug LIKE 'bench-%' GROUP BY t.slug ORDER BY t.slug"
    )
    assert [(r["slug"], r["n"], r["lo"], r["hi"]) for r in counted] == [
        ("bench-v1-3x2200-0000", 734, START, START + dt.timedelta(days=733)),
        ("bench-v1-3x2200-0001", 733, START, START + dt.timedelta(days=732)),
        ("bench-v1-3x2200-0002", 733, START, START + dt.timedelta(days=732)),
    ]
    assert first.reused is False
    assert [t.email for t in first.tenants] == [
        "viewer-0000@v1-3x2200.bench.zixly.test",
        "viewer-0001@v1-3x2200.bench.zixly.test",
        "viewer-0002@v1-3x2200.bench.zixly.test",
    ]
    # The expected row count of a window (what responses are checked against) agrees with SQL.
    tenant = first.tenants[0]
    for start, end in ((START, START), (dt.date(2024, 12, 1), dt.date(2025, 3, 1))):
        in_sql = await bench_owner.fetchval(
            "SELECT count(*) FROM financials WHERE tenant_id = $1 "
            "AND record_date BETWEEN $2 AND $3",
            tenant.id,
            start,
            end,
        )
        assert tenant.rows_between(start, end) == in_sql
    assert tenant.rows_between(START, START) == 1
    # Its 734 days end on 2025-01-03, so the window holds 2024-12-01 .. 2025-01-03.
    assert tenant.rows_between(dt.date(2024, 12, 1), dt.date(2025, 3, 1)) == 31 + 3

    again = await ensure_dataset(owner_dsn, layout, quiet())
    assert again.reused is True
    assert [t.id for t in again.tenants] == [t.id for t in first.tenants]

    # Another size lives beside it; an incomplete data set (an interrupted seeding) is redone.
    other = await ensure_dataset(owner_dsn, Layout(tenants=1, rows=10), quiet())
    assert other.reused is False
    await bench_owner.execute(
        "DELETE FROM financials WHERE tenant_id = $1 AND record_date > $2", tenant.id, START
    )
    redone = await ensure_dataset(owner_dsn, layout, quiet())
    assert redone.reused is False
    per_layout = await bench_owner.fetch(
        "SELECT split_part(t.slug, '-', 3) AS layout, count(f.id) AS n "
        "FROM financials f JOIN tenants t ON t.id = f.tenant_id "
        "WHERE t.slug LIKE 'bench-%' GROUP BY 1 ORDER BY 1"
    )
    assert [(r["layout"], r["n"]) for r in per_layout] == [("1x10", 10), ("3x2200", 2200)]


async def test_one_short_measurement_of_both_servers(
    endpoints: Endpoints, bench_owner: asyncpg.Connection, tmp_path: Path
) -> None:
    config = BenchConfig(
        tenants=TENANTS,
        rows=ROWS,
        duration_s=0.3,
        warmup_s=0.1,
        concurrency=2,
        results_dir=tmp_path,
    )
    report = await run_benchmark(config, endpoints, quiet())

    runs = {(run.scenario, run.server): run.measurement for run in report.runs}
    assert sorted(runs) == [
        ("financials", "GraphQL"),
        ("financials", "baseline"),
        ("summary", "GraphQL"),
        ("summary", "baseline"),
    ]
    for key, measurement in runs.items():
        assert measurement.ok > 0, key
        assert dict(measurement.failures) == {}, key
    saved = the_only_result(tmp_path)
    assert saved["dataset"] | {"seconds": 0} == {
        "tenants": TENANTS,
        "rows": ROWS,
        "reused": False,
        "seconds": 0,
        "page_window_days": 250,
    }
    assert [(r["scenario"], r["server"]) for r in saved["results"]] == list(runs)
    assert [c["scenario"] for c in saved["comparisons"]] == ["financials", "summary"]
    assert saved["machine"]["nproc"] >= 1


async def test_the_baseline_answers_what_graphql_answers(
    endpoints: Endpoints,
    bench_owner: asyncpg.Connection,
    client: httpx.AsyncClient,
    settings: Settings,
) -> None:
    """The comparison is only fair while both return the same rows and periods."""
    dataset = await ensure_dataset(
        plain_dsn(endpoints.migrations_database_url), Layout(TENANTS, ROWS), quiet()
    )
    tokens = {
        t.id: mint_token(
            settings, JWT_SECRET.encode(), email=t.email, subject=t.user_id, tenant=t.slug
        )
        for t in dataset.tenants
    }
    financials, summary = all_scenarios(Workload(dataset.tenants, tokens))
    app = create_baseline(plain_dsn(endpoints.database_url), pool_size=2, statement_timeout_ms=5000)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://baseline") as baseline,
    ):
        for seed in range(8):
            call = financials.graphql(random.Random(seed))
            graphql = (await send(client, call)).json()["data"]["financials"]
            plain = (await send(baseline, financials.baseline(random.Random(seed)))).json()
            assert [edge["node"] for edge in graphql["edges"]] == plain["rows"]
            assert graphql["pageInfo"]["hasNextPage"] == plain["hasNextPage"]

            call = summary.graphql(random.Random(seed))
            periods = (await send(client, call)).json()["data"]["financialSummary"]
            plain = (await send(baseline, summary.baseline(random.Random(seed)))).json()
            assert periods == plain["periods"]
            assert sum(p["recordCount"] for p in periods) > 0
