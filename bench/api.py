"""API benchmark: GraphQL ``financials`` and ``financialSummary`` against a plain baseline.

    python -m bench.api [--quick] [--tenants N] [--rows M] [--duration S] [--data-dir DIR]

Starts the embedded PostgreSQL and Redis (data kept in --data-dir, so a second run with the
same sizes reuses the seeded rows), seeds N tenants sharing M financial rows, runs the real
Zixly app and the baseline (bench/baseline.py) in their own uvicorn processes and measures
each scenario on both with C concurrent clients. Prints a table and the target verdicts,
and writes everything to bench/results/api-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import secrets
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg
from pydantic import SecretStr
from redis.asyncio import Redis
from rich.console import Console

from bench import harness
from bench.dataset import Dataset, Layout, ensure_dataset
from bench.harness import on_embedded_stack
from bench.loadgen import Sampler, client_factory, measure, send
from bench.procstat import CpuGroups, parent_of
from bench.report import Report, Run, print_report
from bench.scenarios import Workload, all_scenarios
from bench.servers import KINDS, Server, running_servers
from zixly.core.settings import Settings
from zixly.embedded.stack import Endpoints
from zixly.security.tokens import mint_token

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_DATA_DIR = Path.home() / ".cache" / "zixly" / "bench-api"
LABELS = {"zixly": "GraphQL", "baseline": "baseline"}


@dataclass(frozen=True)
class BenchConfig:
    tenants: int = 100
    rows: int = 1_000_000
    duration_s: float = 10.0
    warmup_s: float = 2.0
    concurrency: int = 50
    seed: int = 1127
    results_dir: Path = RESULTS_DIR


QUICK = BenchConfig(tenants=10, rows=50_000, duration_s=3.0, warmup_s=1.0)


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


def _server_env(endpoints: Endpoints, secret: str) -> dict[str, str]:
    return {
        "ZIXLY_DATABASE_URL": endpoints.database_url,
        "ZIXLY_MIGRATIONS_DATABASE_URL": endpoints.migrations_database_url,
        "ZIXLY_REDIS_URL": endpoints.redis_url,
        "ZIXLY_JWT_SECRET": secret,
        "ZIXLY_RATE_LIMIT_PER_MINUTE": str(10**9),  # measure the limiter's cost, not its limit
        "ZIXLY_LOG_LEVEL": "WARNING",
        "ZIXLY_LOG_JSON": "true",
        # The benchmark asks the schema which fields this build serves (off in production).
        "ZIXLY_GRAPHQL_INTROSPECTION": "true",
    }


def _tokens(dataset: Dataset, secret: str) -> dict[Any, str]:
    settings = Settings(jwt_secret=SecretStr(secret))
    return {
        tenant.id: mint_token(
            settings,
            secret.encode(),
            email=tenant.email,
            subject=tenant.user_id,
            tenant=tenant.slug,
            ttl_seconds=6 * 3600,
        )
        for tenant in dataset.tenants
    }


async def _query_fields(server: Server, workload: Workload) -> set[str]:
    """The names of the served schema's Query fields (what this build of Zixly offers)."""
    async with client_factory(server.base_url)() as client:
        response = await client.post(
            "/graphql",
            json={"query": '{ __type(name: "Query") { fields { name } } }'},
            headers=workload.bearer(workload.tenants[0]),
        )
    response.raise_for_status()
    return {f["name"] for f in response.json()["data"]["__type"]["fields"]}


async def _probe(server: Server, sample: Sampler, seed: int) -> str | None:
    """One request before measuring, so a scenario the server cannot answer is skipped."""
    call = sample(random.Random(seed))
    async with client_factory(server.base_url)() as client:
        return call.check(await send(client, call))


def _log_events(log_dir: Path) -> dict[str, str]:
    """Per server with output: its log lines counted by structlog event (or first words)."""
    found: dict[str, str] = {}
    for log in sorted(log_dir.glob("*.log")):
        events: Counter[str] = Counter()
        for line in log.read_text(errors="replace").splitlines():
            try:
                events[str(json.loads(line)["event"])] += 1
            except (ValueError, KeyError, TypeError):
                events[line[:60]] += 1
        if events:
            found[log.stem] = ", ".join(f"{n} x {event}" for event, n in events.most_common(5))
    return found


async def _postmaster_pid(dsn: str) -> int | None:
    conn = await asyncpg.connect(dsn)
    try:
        return parent_of(await conn.fetchval("SELECT pg_backend_pid()"))
    finally:
        await conn.close()


async def _redis_pid(endpoints: Endpoints) -> int | None:
    redis = Redis.from_url(endpoints.redis_url)
    try:
        info = await redis.info("server")
    finally:
        await redis.aclose()
    return int(info["process_id"]) if "process_id" in info else None


async def run_benchmark(config: BenchConfig, endpoints: Endpoints, console: Console) -> Report:
    """Seed (or reuse) the data, start both servers, measure every scenario on each."""
    started = dt.datetime.now(dt.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    owner_dsn = _dsn(endpoints.migrations_database_url)
    dataset = await ensure_dataset(owner_dsn, Layout(config.tenants, config.rows), console)
    postmaster = await _postmaster_pid(owner_dsn)
    secret = secrets.token_urlsafe(48)
    workload = Workload(dataset.tenants, _tokens(dataset, secret))
    report = Report(
        started_at=started.isoformat(timespec="seconds"),
        config={**asdict(config), "results_dir": str(config.results_dir)},
        dataset={
            "tenants": config.tenants,
            "rows": config.rows,
            "reused": dataset.reused,
            "seconds": round(dataset.seed_seconds, 2),
            "page_window_days": workload.page_window_days,
        },
    )
    log_dir = config.results_dir / f"api-{stamp}-logs"
    console.print("starting the Zixly and baseline servers")
    with running_servers(KINDS, _server_env(endpoints, secret), log_dir) as servers:
        await _measure_all(
            config, servers, workload, postmaster, await _redis_pid(endpoints), report, console
        )
    logged = _log_events(log_dir)
    if logged:
        report.notes += [f"the {kind} server logged {events}" for kind, events in logged.items()]
        report.notes.append(f"server logs: {log_dir}")
    else:
        shutil.rmtree(log_dir)
    print_report(report, console)
    path = report.write(config.results_dir, stamp)
    console.print(f"results: {path}")
    return report


async def _measure_all(
    config: BenchConfig,
    servers: dict[str, Server],
    workload: Workload,
    postmaster: int | None,
    redis_pid: int | None,
    report: Report,
    console: Console,
) -> None:
    fields = await _query_fields(servers["zixly"], workload)
    shared = {"redis": redis_pid, "postgres": postmaster}
    for scenario in all_scenarios(workload):
        if scenario.needs_field not in fields:
            message = (
                f"{scenario.name}: the schema has no Query.{scenario.needs_field} yet "
                "(zixly/graphql/api/analytics.py); run again once it is merged"
            )
            console.print(f"[yellow]skipping[/] {message}")
            report.notes.append(message)
            continue
        samplers = {"zixly": scenario.graphql, "baseline": scenario.baseline}
        problems = {
            kind: await _probe(servers[kind], samplers[kind], config.seed) for kind in KINDS
        }
        if any(problems.values()):
            message = f"{scenario.name}: a probe request failed: {problems}"
            console.print(f"[yellow]skipping[/] {message}")
            report.notes.append(message)
            continue
        for kind in KINDS:
            roots = {"server": servers[kind].process.pid, **shared}
            cpu = CpuGroups({k: v for k, v in roots.items() if v is not None})
            with console.status(
                f"{scenario.name} on {LABELS[kind]}: {config.warmup_s:g} s warm-up, "
                f"{config.duration_s:g} s measured, {config.concurrency} clients"
            ):
                measurement = await measure(
                    client_factory(servers[kind].base_url),
                    samplers[kind],
                    concurrency=config.concurrency,
                    warmup_s=config.warmup_s,
                    duration_s=config.duration_s,
                    seed=config.seed,
                    cpu=cpu,
                )
            report.runs.append(Run(scenario.name, scenario.description, LABELS[kind], measurement))
            console.print(
                f"{scenario.name} on {LABELS[kind]}: {measurement.throughput:.1f} req/s, "
                f"p95 {measurement.latency(95):.1f} ms, {measurement.requests - measurement.ok} "
                "failed"
            )


async def _main(config: BenchConfig, data_dir: Path, console: Console) -> Report:
    return await on_embedded_stack(
        data_dir, console, lambda endpoints: run_benchmark(config, endpoints, console)
    )


def build_parser() -> argparse.ArgumentParser:
    defaults = BenchConfig()
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for development")
    parser.add_argument("--tenants", type=int, help=f"default {defaults.tenants}")
    parser.add_argument("--rows", type=int, help=f"financial rows in total ({defaults.rows:,})")
    parser.add_argument(
        "--duration", type=float, help=f"seconds measured per run ({defaults.duration_s:g})"
    )
    parser.add_argument(
        "--warmup", type=float, help=f"seconds of warm-up per run ({defaults.warmup_s:g})"
    )
    parser.add_argument(
        "--concurrency", type=int, help=f"concurrent clients ({defaults.concurrency})"
    )
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    return parser


def config_from(args: argparse.Namespace) -> BenchConfig:
    config = QUICK if args.quick else BenchConfig()
    chosen = {
        "tenants": args.tenants,
        "rows": args.rows,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "concurrency": args.concurrency,
        "results_dir": args.results_dir,
    }
    return replace(config, **{k: v for k, v in chosen.items() if v is not None})


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = harness.console()
    try:
        report = harness.run(_main(config_from(args), args.data_dir, console))
    except KeyboardInterrupt:
        return harness.interrupted(console, "the servers")
    return 1 if any(run.measurement.failures for run in report.runs) else 0


if __name__ == "__main__":
    raise SystemExit(main())
