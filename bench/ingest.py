"""Ingest benchmark: bulk financial rows through the real endpoint vs row-by-row inserts.

    python -m bench.ingest [--quick] [--rows N] [--batch B] [--concurrency C] [--data-dir DIR]

Starts the embedded PostgreSQL and Redis (in --data-dir), creates a tenant with an ingest
token, serves the real Zixly app with uvicorn on loopback in its own process, and posts N
financial rows (default 100,000) to ``POST /ingest/v1/financials`` in batches of B records,
C requests at a time. Then the same batches again (a replay: every row unchanged). The
baseline, in the same run and the same database, writes the same rows for a second tenant
the naive way: one ``INSERT ... ON CONFLICT DO UPDATE`` per row (one round trip each; one
transaction per batch, C connections at a time), straight through asyncpg as the
application role: no HTTP, JSON or validation, so it is the cheapest a row-by-row write can
be. A second baseline posts the first 5,000 rows (a rate needs no more) one record per request
to the same endpoint for a third tenant: what a workflow that does not batch (an n8n HTTP
Request node sends one request per item by default) costs. Request bodies are encoded before
the clock starts.

Prints rows/s for each, the ratios, the targets (endpoint >= 50,000 rows/s and >= 10 x the
baseline, against each baseline) as HOLDS/MISSED, CPU seconds by process group and the machine; writes
bench/results/ingest-<timestamp>.json. The bench tenants are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import secrets
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from rich.console import Console
from rich.table import Table

from bench import harness
from bench.harness import on_embedded_stack
from bench.procstat import MACHINE, CpuGroups, parent_of
from bench.report import machine_info
from bench.servers import running_servers
from zixly.core.logging import configure_logging
from zixly.core.settings import Settings
from zixly.db.session import Database, create_engine
from zixly.dev.seed import ensure_tenant
from zixly.embedded.stack import Endpoints
from zixly.ingest.instance_tokens import issue_instance_token

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_DATA_DIR = Path.home() / ".cache" / "zixly" / "bench-ingest"
TARGET_ROWS_PER_S = 50_000.0
TARGET_RATIO = 10.0
SLUG_PREFIX = "bench-ingest-"
START = dt.date(2020, 1, 1)

BASELINE_SQL = """
INSERT INTO financials AS t (
    tenant_id, client_kpi_id, record_date, revenue, expenses, net_profit, cash_flow, currency,
    external_id, source_system, source_workflow_id, source_execution_id, ingested_at)
VALUES ($1, (SELECT id FROM client_kpis WHERE tenant_id = $1 AND client_id = $2),
    $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, now())
ON CONFLICT ON CONSTRAINT financials_natural_key DO UPDATE SET
    revenue = excluded.revenue, expenses = excluded.expenses, net_profit = excluded.net_profit,
    cash_flow = excluded.cash_flow, currency = excluded.currency,
    external_id = excluded.external_id, source_workflow_id = excluded.source_workflow_id,
    source_execution_id = excluded.source_execution_id, ingested_at = excluded.ingested_at
WHERE (t.revenue, t.expenses, t.net_profit, t.cash_flow, t.currency, t.external_id)
    IS DISTINCT FROM (excluded.revenue, excluded.expenses, excluded.net_profit,
        excluded.cash_flow, excluded.currency, excluded.external_id)
"""
BASELINE_CLIENT_SQL = (
    "INSERT INTO client_kpis (tenant_id, client_id, client_name) VALUES ($1, $2, $3) "
    "ON CONFLICT (tenant_id, client_id) DO UPDATE SET client_name = excluded.client_name"
)


@dataclass(frozen=True)
class IngestConfig:
    rows: int = 100_000
    batch: int = 10_000
    clients: int = 100
    concurrency: int = 2
    # Rows of the second baseline (one request per record: what an n8n HTTP Request node
    # does per item unless it batches); a rate needs far fewer rows than the bulk runs.
    per_record_rows: int = 5_000
    results_dir: Path = RESULTS_DIR


QUICK = IngestConfig(rows=20_000, batch=5_000, per_record_rows=1_000)


@dataclass
class Run:
    name: str
    rows: int
    seconds: float
    requests: int
    outcome: dict[str, int]
    cpu_s: dict[str, float] = field(default_factory=dict)
    request_ms: list[float] = field(default_factory=list)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_row(self) -> float | None:
        """CPU the work itself used (server or client, and PostgreSQL) per row: what the
        run costs whatever else the machine is doing."""
        spent = sum(v for k, v in self.cpu_s.items() if k in ("server", "postgres", "client"))
        return 1e6 * spent / self.rows if self.rows and spent else None

    def to_json(self) -> dict[str, Any]:
        ordered = sorted(self.request_ms)
        return {
            "name": self.name,
            "rows": self.rows,
            "seconds": round(self.seconds, 4),
            "rows_per_s": round(self.rows_per_s, 1),
            "requests": self.requests,
            "outcome": self.outcome,
            "cpu_s": {k: round(v, 3) for k, v in self.cpu_s.items()},
            "cpu_us_per_row": None
            if self.cpu_us_per_row is None
            else round(self.cpu_us_per_row, 2),
            "request_ms": {
                "p50": round(ordered[len(ordered) // 2], 1) if ordered else None,
                "max": round(ordered[-1], 1) if ordered else None,
            },
        }


@dataclass
class IngestReport:
    started_at: str
    config: dict[str, Any]
    machine: dict[str, Any] = field(default_factory=machine_info)
    runs: dict[str, Run] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def verdicts(self) -> dict[str, Any]:
        endpoint, baseline = self.runs.get("endpoint"), self.runs.get("baseline")
        if endpoint is None or baseline is None:
            return {}
        ratio = endpoint.rows_per_s / baseline.rows_per_s if baseline.rows_per_s else 0.0
        costs = (endpoint.cpu_us_per_row, baseline.cpu_us_per_row)
        per_record = self.runs.get("per_record")
        extra: dict[str, Any] = {}
        if per_record is not None and per_record.rows_per_s:
            per_record_ratio = endpoint.rows_per_s / per_record.rows_per_s
            extra = {
                "per_record_rows_per_s": round(per_record.rows_per_s, 1),
                "per_record_ratio": round(per_record_ratio, 2),
                "per_record_ratio_ok": per_record_ratio >= TARGET_RATIO,
            }
        return {
            **extra,
            "cpu_ratio": round(costs[1] / costs[0], 2) if costs[0] and costs[1] else None,
            "endpoint_rows_per_s": round(endpoint.rows_per_s, 1),
            "baseline_rows_per_s": round(baseline.rows_per_s, 1),
            "ratio": round(ratio, 2),
            "rows_per_s_target": TARGET_ROWS_PER_S,
            "rows_per_s_ok": endpoint.rows_per_s >= TARGET_ROWS_PER_S,
            "ratio_target": TARGET_RATIO,
            "ratio_ok": ratio >= TARGET_RATIO,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "config": self.config,
            "machine": self.machine,
            "runs": [run.to_json() for run in self.runs.values()],
            "verdicts": self.verdicts(),
            "notes": self.notes,
        }

    def write(self, directory: Path, stamp: str) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"ingest-{stamp}.json"
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path


# --- the data -----------------------------------------------------------------------------------


def records(config: IngestConfig) -> list[dict[str, Any]]:
    """``rows`` daily records spread over ``clients`` clients (amounts vary, all valid)."""
    found: list[dict[str, Any]] = []
    days = -(-config.rows // config.clients)
    for day in range(days):
        date = (START + dt.timedelta(days=day)).isoformat()
        for client in range(config.clients):
            if len(found) == config.rows:
                return found
            revenue = Decimal(10_000 + (day * 37 + client * 101) % 5_000) + Decimal("0.45")
            expenses = Decimal(4_000 + (day * 53 + client * 17) % 3_000) + Decimal("0.20")
            found.append(
                {
                    "client_id": f"CL-{client:04d}",
                    "client_name": f"Bench client {client}",
                    "record_date": date,
                    "revenue": str(revenue),
                    "expenses": str(expenses),
                    "net_profit": str(revenue - expenses),
                    "currency": "AUD",
                    "external_id": f"bench-{client}-{day}",
                }
            )
    return found


def bodies(config: IngestConfig, rows: list[dict[str, Any]]) -> list[bytes]:
    return [
        json.dumps(
            {
                "workflow_id": "bench",
                "execution_id": str(n),
                "source_system": "bench",
                "records": rows[start : start + config.batch],
            },
            separators=(",", ":"),
        ).encode()
        for n, start in enumerate(range(0, len(rows), config.batch))
    ]


# --- the runs -----------------------------------------------------------------------------------


async def post_all(
    base_url: str, token: str, payloads: list[bytes], concurrency: int, cpu: CpuGroups
) -> Run:
    queue = list(enumerate(payloads))
    outcome = {"inserted": 0, "updated": 0, "unchanged": 0, "received": 0}
    latencies: list[float] = []
    failures: list[str] = []
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=base_url, timeout=httpx.Timeout(300.0), limits=limits
    ) as client:

        async def worker() -> None:
            while queue:
                _, payload = queue.pop(0)
                started = time.perf_counter()
                response = await client.post(
                    "/ingest/v1/financials", content=payload, headers=headers
                )
                latencies.append(1000 * (time.perf_counter() - started))
                if response.status_code != 200:
                    failures.append(f"{response.status_code}: {response.text[:300]}")
                    continue
                for key in outcome:
                    outcome[key] += int(response.json()[key])

        await client.post("/ingest/v1/heartbeat", headers=headers)  # connection warm
        before, started = _cpu(cpu), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds, after = time.perf_counter() - started, _cpu(cpu)
    if failures:
        raise RuntimeError(f"{len(failures)} ingest request(s) failed; first: {failures[0]}")
    return Run(
        "endpoint",
        outcome["received"],
        seconds,
        len(payloads),
        {k: v for k, v in outcome.items() if k != "received"},
        {k: after[k] - before[k] for k in after if k in before},
        latencies,
    )


def _baseline_rows(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (
            r["client_id"],
            dt.date.fromisoformat(r["record_date"]),
            Decimal(r["revenue"]),
            Decimal(r["expenses"]),
            Decimal(r["net_profit"]),
            Decimal(r["net_profit"]),
            r["currency"],
            r["external_id"],
        )
        for r in rows
    ]


async def row_by_row(
    app_dsn: str,
    tenant_id: uuid.UUID,
    config: IngestConfig,
    rows: list[dict[str, Any]],
    cpu: CpuGroups,
) -> Run:
    """The baseline: each row its own INSERT ... ON CONFLICT, one transaction per batch."""
    values = _baseline_rows(rows)
    batches = [values[i : i + config.batch] for i in range(0, len(values), config.batch)]
    clients = {(r["client_id"], r["client_name"]) for r in rows}
    pool = await asyncpg.create_pool(
        app_dsn, min_size=config.concurrency, max_size=config.concurrency
    )
    written = 0
    try:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
            for client_id, name in sorted(clients):
                await conn.execute(BASELINE_CLIENT_SQL, tenant_id, client_id, name)

        async def worker(queue: list[tuple[int, list[tuple[Any, ...]]]]) -> None:
            nonlocal written
            async with pool.acquire() as conn:
                statement = await conn.prepare(BASELINE_SQL)
                while queue:
                    n, batch = queue.pop(0)
                    async with conn.transaction():
                        await conn.execute(
                            "SELECT set_config('app.tenant_id', $1, true)", str(tenant_id)
                        )
                        for row in batch:
                            await statement.fetch(tenant_id, *row, "bench", "bench", str(n))
                    written += len(batch)

        queue = list(enumerate(batches))
        before, started = _cpu(cpu), time.perf_counter()
        await asyncio.gather(*(worker(queue) for _ in range(config.concurrency)))
        seconds, after = time.perf_counter() - started, _cpu(cpu)
    finally:
        await pool.close()
    return Run(
        "baseline",
        written,
        seconds,
        len(batches),
        {"written": written},
        {k: after[k] - before[k] for k in after if k in before},
    )


def _cpu(groups: CpuGroups) -> dict[str, float]:
    return {"client": time.process_time(), **groups.sample()}


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def _issue_token(endpoints: Endpoints, tenant_id: uuid.UUID) -> str:
    settings = Settings()
    db = Database(create_engine(endpoints.database_url, settings), settings)
    try:
        return (await issue_instance_token(db, tenant_id)).reveal()
    finally:
        await db.dispose()


async def _count(owner: asyncpg.Connection, tenant_id: uuid.UUID) -> int:
    return int(
        await owner.fetchval("SELECT count(*) FROM financials WHERE tenant_id = $1", tenant_id)
    )


async def run_benchmark(
    config: IngestConfig, endpoints: Endpoints, console: Console
) -> IngestReport:
    started = dt.datetime.now(dt.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    report = IngestReport(
        started_at=started.isoformat(timespec="seconds"),
        config={**asdict(config), "results_dir": str(config.results_dir)},
    )
    owner = await asyncpg.connect(_dsn(endpoints.migrations_database_url))
    label = f"{stamp.lower()}-{secrets.token_hex(3)}"
    try:
        endpoint_tenant = await ensure_tenant(owner, f"{SLUG_PREFIX}{label}", "Bench ingest")
        baseline_tenant = await ensure_tenant(owner, f"{SLUG_PREFIX}{label}-b", "Bench baseline")
        per_record_tenant = await ensure_tenant(
            owner, f"{SLUG_PREFIX}{label}-r", "Bench per-record requests"
        )
        token = await _issue_token(endpoints, endpoint_tenant)
        per_record_token = await _issue_token(endpoints, per_record_tenant)
        rows = records(config)
        payloads = bodies(config, rows)
        mib = sum(len(p) for p in payloads) / 2**20
        console.print(
            f"{len(rows):,} rows in {len(payloads)} request(s) of up to {config.batch:,} "
            f"records ({mib:.1f} MiB of JSON), {config.concurrency} at a time"
        )
        postmaster = parent_of(await owner.fetchval("SELECT pg_backend_pid()"))
        env = {
            "ZIXLY_DATABASE_URL": endpoints.database_url,
            "ZIXLY_MIGRATIONS_DATABASE_URL": endpoints.migrations_database_url,
            "ZIXLY_REDIS_URL": endpoints.redis_url,
            "ZIXLY_JWT_SECRET": secrets.token_urlsafe(48),
            "ZIXLY_INGEST_RATE_LIMIT_PER_MINUTE": str(10**9),
            "ZIXLY_INGEST_MAX_RECORDS": str(max(config.batch, 10_000)),
            "ZIXLY_LOG_LEVEL": "WARNING",
            "ZIXLY_LOG_JSON": "true",
        }
        log_dir = config.results_dir / f"ingest-{stamp}-logs"
        with running_servers(["zixly"], env, log_dir) as servers:
            server = servers["zixly"]
            roots = {"server": server.process.pid}
            if postmaster is not None:
                roots["postgres"] = postmaster
            cpu = CpuGroups(roots)
            with console.status("endpoint: posting every batch"):
                first = await post_all(server.base_url, token, payloads, config.concurrency, cpu)
            report.runs["endpoint"] = first
            _line(console, first)
            with console.status("endpoint: the same batches again (all unchanged)"):
                replay = await post_all(server.base_url, token, payloads, config.concurrency, cpu)
            replay.name = "replay"
            report.runs["replay"] = replay
            _line(console, replay)
            singles = bodies(replace(config, batch=1), rows[: config.per_record_rows])
            with console.status(f"baseline: {len(singles):,} rows, one request per record"):
                per_record = await post_all(
                    server.base_url, per_record_token, singles, config.concurrency, cpu
                )
            per_record.name = "per-record"
            report.runs["per_record"] = per_record
            _line(console, per_record)
        shutil.rmtree(log_dir, ignore_errors=True)
        with console.status("baseline: one INSERT ... ON CONFLICT per row"):
            baseline = await row_by_row(
                _dsn(endpoints.database_url),
                baseline_tenant,
                config,
                rows,
                CpuGroups({"postgres": postmaster} if postmaster is not None else {}),
            )
        report.runs["baseline"] = baseline
        _line(console, baseline)
        stored = (await _count(owner, endpoint_tenant), await _count(owner, baseline_tenant))
        if stored != (len(rows), len(rows)):
            report.notes.append(f"stored rows {stored} differ from {len(rows)} sent")
        singles_stored = await _count(owner, per_record_tenant)
        if singles_stored != min(config.per_record_rows, len(rows)):
            report.notes.append(f"per-record requests stored {singles_stored} rows")
        if first.outcome != {"inserted": len(rows), "updated": 0, "unchanged": 0}:
            report.notes.append(f"first pass outcome {first.outcome}")
        if replay.outcome != {"inserted": 0, "updated": 0, "unchanged": len(rows)}:
            report.notes.append(f"replay outcome {replay.outcome}")
    finally:
        await owner.execute("DELETE FROM tenants WHERE slug LIKE $1", f"{SLUG_PREFIX}{label}%")
        await owner.close()
    print_report(report, console)
    path = report.write(config.results_dir, stamp)
    console.print(f"results: {path}")
    return report


def _line(console: Console, run: Run) -> None:
    console.print(
        f"{run.name}: {run.rows:,} rows in {run.seconds:.2f} s = {run.rows_per_s:,.0f} rows/s "
        f"{run.outcome}"
    )


def print_report(report: IngestReport, console: Console) -> None:
    c = report.config
    table = Table(
        title=f"ingest: {c['rows']:,} financial rows, batches of {c['batch']:,}, "
        f"{c['concurrency']} concurrent"
    )
    for name in (
        "run",
        "rows/s",
        "seconds",
        "requests",
        "outcome",
        "CPU s (server/postgres/client)",
        "CPU µs/row",
    ):
        table.add_column(name, justify="left" if name in ("run", "outcome") else "right")
    labels = {
        "endpoint": "endpoint, new rows (HTTP, set-based)",
        "replay": "endpoint, replay (all unchanged)",
        "baseline": "baseline, row by row (asyncpg)",
        "per_record": "baseline, one request per record (HTTP, same endpoint)",
    }
    for key, run in report.runs.items():
        cpu = "/".join(
            f"{run.cpu_s[g]:.1f}" if g in run.cpu_s else "-"
            for g in ("server", "postgres", "client")
        )
        table.add_row(
            labels.get(key, key),
            f"{run.rows_per_s:,.0f}",
            f"{run.seconds:.2f}",
            str(run.requests),
            ", ".join(f"{k} {v:,}" for k, v in run.outcome.items()),
            cpu,
            "-" if run.cpu_us_per_row is None else f"{run.cpu_us_per_row:.1f}",
        )
    console.print(table)
    verdicts = report.verdicts()
    if verdicts:

        def mark(ok: bool) -> str:
            return "[green]HOLDS[/]" if ok else "[red]MISSED[/]"

        console.print(
            f"target endpoint >= {TARGET_ROWS_PER_S:,.0f} rows/s: "
            f"{verdicts['endpoint_rows_per_s']:,.0f} rows/s {mark(verdicts['rows_per_s_ok'])}"
        )
        console.print(
            f"target endpoint >= {TARGET_RATIO:g} x row-by-row: {verdicts['ratio']:.1f} x "
            f"{mark(verdicts['ratio_ok'])}"
        )
        if "per_record_ratio" in verdicts:
            console.print(
                f"target endpoint >= {TARGET_RATIO:g} x one request per record: "
                f"{verdicts['per_record_ratio']:.1f} x {mark(verdicts['per_record_ratio_ok'])}"
            )
        if verdicts["cpu_ratio"] is not None:
            console.print(
                f"CPU per row, row-by-row / endpoint: {verdicts['cpu_ratio']:.1f} x (the "
                "comparison that does not depend on what else the machine runs)"
            )
    m = report.machine
    busy = (
        {k: round(v, 1) for k, v in report.runs["endpoint"].cpu_s.items()}
        if "endpoint" in report.runs
        else {}
    )
    console.print(
        f"machine: {m['cpu_model'] or 'unknown CPU'}, {m['nproc']} usable core(s), "
        f"{m['platform']}, Python {m['python']}, load {m['loadavg_at_start']}"
        + (f"; machine busy s during the first pass: {busy.get(MACHINE)}" if busy else "")
    )
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}", soft_wrap=True)


async def _main(config: IngestConfig, data_dir: Path, console: Console) -> IngestReport:
    return await on_embedded_stack(
        data_dir, console, lambda endpoints: run_benchmark(config, endpoints, console)
    )


def build_parser() -> argparse.ArgumentParser:
    defaults = IngestConfig()
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="small sizes for development")
    parser.add_argument("--rows", type=int, help=f"financial rows in total ({defaults.rows:,})")
    parser.add_argument("--batch", type=int, help=f"records per request ({defaults.batch:,})")
    parser.add_argument(
        "--clients", type=int, help=f"clients the rows spread over ({defaults.clients})"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        help=f"requests (and baseline connections) at a time ({defaults.concurrency})",
    )
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    return parser


def config_from(args: argparse.Namespace) -> IngestConfig:
    config = QUICK if args.quick else IngestConfig()
    chosen = {
        "rows": args.rows,
        "batch": args.batch,
        "clients": args.clients,
        "concurrency": args.concurrency,
        "results_dir": args.results_dir,
    }
    return replace(config, **{k: v for k, v in chosen.items() if v is not None})


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging("WARNING", json=True)
    console = harness.console()
    try:
        report = harness.run(_main(config_from(args), args.data_dir, console))
    except KeyboardInterrupt:
        return harness.interrupted(console, "the server")
    return 0 if not report.notes else 1


if __name__ == "__main__":
    raise SystemExit(main())
