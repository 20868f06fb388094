"""The benchmark's results: the printed table, the target verdicts and the JSON file."""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.loadgen import Measurement
from bench.procstat import MACHINE

TARGET_RATIO = 0.5  # GraphQL throughput / baseline throughput, at least
TARGET_P95_MS = 50.0  # GraphQL p95 latency, below
CPU_GROUPS = ("client", "server", "postgres", "redis")
CLIENT_BUSY_CORES = 0.8  # above this (or a laggy loop) the load generator may be the limit
CLIENT_LAG_MS = 10.0
NOISY_CORES = 0.25  # CPU used by processes outside the run, above which we warn


@dataclass(frozen=True)
class Run:
    scenario: str
    description: str
    server: str  # "GraphQL" or "baseline"
    measurement: Measurement

    def client_limited(self) -> bool:
        m = self.measurement
        busy = m.cpu_s.get("client", 0.0) / m.duration_s
        lag = m.summary()["client_loop_lag_ms"]["p95"]
        return busy > CLIENT_BUSY_CORES or lag > CLIENT_LAG_MS

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "description": self.description,
            "server": self.server,
            **self.measurement.summary(),
        }


@dataclass
class Report:
    started_at: str
    config: dict[str, Any]
    dataset: dict[str, Any]
    machine: dict[str, Any] = field(default_factory=lambda: machine_info())
    runs: list[Run] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def comparisons(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        by_key = {(run.scenario, run.server): run.measurement for run in self.runs}
        for scenario in dict.fromkeys(run.scenario for run in self.runs):
            graphql, baseline = (
                by_key.get((scenario, "GraphQL")),
                by_key.get((scenario, "baseline")),
            )
            if graphql is None or baseline is None:
                continue
            ratio = graphql.throughput / baseline.throughput if baseline.throughput else 0.0
            p95 = graphql.latency(95)
            cpu = (graphql.cpu_ms_per_request("server"), baseline.cpu_ms_per_request("server"))
            found.append(
                {
                    "scenario": scenario,
                    "throughput_ratio": round(ratio, 3),
                    "throughput_ratio_target": TARGET_RATIO,
                    "throughput_ratio_ok": ratio >= TARGET_RATIO,
                    "graphql_p95_ms": round(p95, 2),
                    "graphql_p95_target_ms": TARGET_P95_MS,
                    "graphql_p95_ok": p95 < TARGET_P95_MS,
                    "failures": graphql.requests - graphql.ok + baseline.requests - baseline.ok,
                    # CPU per request hardly depends on what else ran: the steadier comparison.
                    "server_cpu_ms_per_request": {
                        "graphql": None if cpu[0] is None else round(cpu[0], 3),
                        "baseline": None if cpu[1] is None else round(cpu[1], 3),
                    },
                }
            )
        return found

    def to_json(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "config": self.config,
            "dataset": self.dataset,
            "machine": self.machine,
            "results": [run.to_json() for run in self.runs],
            "comparisons": self.comparisons(),
            "notes": self.notes,
        }

    def write(self, directory: Path, stamp: str) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"api-{stamp}.json"
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as handle:
            model = next((ln.split(":", 1)[1].strip() for ln in handle if "model name" in ln), "")
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "nproc": usable,
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def print_report(report: Report, console: Console) -> None:
    m, c = report.machine, report.config
    console.print(
        f"\n[bold]Zixly API benchmark[/] {report.started_at}\n"
        f"machine: nproc={m['nproc']} ({m['cpu_model'] or 'unknown CPU'}), Python {m['python']}, "
        f"load average at start {' '.join(map(str, m['loadavg_at_start']))}\n"
        f"data: {report.dataset['tenants']} tenants, {report.dataset['rows']:,} financial rows "
        f"({'reused' if report.dataset['reused'] else 'seeded'} in "
        f"{report.dataset['seconds']:.1f} s)\n"
        f"load: {c['concurrency']} concurrent clients, {c['warmup_s']:g} s warm-up + "
        f"{c['duration_s']:g} s measured per run"
    )
    console.print(_latency_table(report.runs))
    console.print(_cpu_table(report.runs))
    for comparison in report.comparisons():
        _print_verdict(comparison, console)
    clients = c["concurrency"]
    console.print(
        f"note: with {clients} closed-loop clients, mean latency = {clients} / throughput "
        f"(Little's law), so p95 < {TARGET_P95_MS:g} ms needs well over "
        f"{clients / (TARGET_P95_MS / 1000):,.0f} req/s from one server process"
    )
    limited = [f"{run.scenario}/{run.server}" for run in report.runs if run.client_limited()]
    console.print(
        f"load generator: [yellow]may have limited {', '.join(limited)}[/] (over "
        f"{CLIENT_BUSY_CORES} cores busy or loop lag p95 over {CLIENT_LAG_MS:g} ms)"
        if limited
        else "load generator: not the bottleneck in any run (under "
        f"{CLIENT_BUSY_CORES} cores busy and loop lag p95 under {CLIENT_LAG_MS:g} ms)"
    )
    for run in report.runs:
        for reason, count in run.measurement.failures.most_common(3):
            console.print(f"[red]{run.scenario}/{run.server}: {count} x {reason}[/]")
    noisy = [run for run in report.runs if (run.measurement.other_cores or 0.0) > NOISY_CORES]
    if noisy:
        console.print(
            f"[yellow]other processes used over {NOISY_CORES} cores during "
            f"{', '.join(f'{r.scenario}/{r.server}' for r in noisy)}[/]: this machine was "
            "shared, so those numbers are noisy"
        )
    for message in report.notes:
        console.print(f"[yellow]note:[/] {message}", soft_wrap=True)


def _latency_table(runs: list[Run]) -> Table:
    table = Table(title="throughput and latency of successful requests")
    table.add_column("scenario")
    table.add_column("server")
    for name in ("req/s", "p50 ms", "p95 ms", "p99 ms", "ok", "failed", "conc."):
        table.add_column(name, justify="right")
    for run in runs:
        r = run.measurement
        table.add_row(
            run.scenario,
            run.server,
            f"{r.throughput:.1f}",
            _ms(r.latency(50)),
            _ms(r.latency(95)),
            _ms(r.latency(99)),
            str(r.ok),
            str(r.requests - r.ok),
            f"{r.achieved_concurrency:.1f}",
        )
    return table


def _cpu_table(runs: list[Run]) -> Table:
    table = Table(
        title="CPU ms per request by process; cores busy (ours, other processes'); load generator"
    )
    table.add_column("scenario")
    table.add_column("server")
    for name in (*CPU_GROUPS, "cores", "other cores", "client cores", "loop lag p95 ms"):
        table.add_column(name, justify="right")
    for run in runs:
        r = run.measurement
        lag = r.summary()["client_loop_lag_ms"]["p95"]
        table.add_row(
            run.scenario,
            run.server,
            *(_ms(r.cpu_ms_per_request(group)) for group in CPU_GROUPS),
            f"{sum(v for k, v in r.cpu_s.items() if k != MACHINE) / r.duration_s:.2f}",
            "n/a" if r.other_cores is None else f"{r.other_cores:.2f}",
            f"{r.cpu_s.get('client', 0.0) / r.duration_s:.2f}",
            f"{lag:.1f}",
        )
    return table


def _print_verdict(comparison: dict[str, Any], console: Console) -> None:
    def verdict(ok: bool) -> str:
        return "[green]HOLDS[/]" if ok else "[red]MISSED[/]"

    console.print(
        f"[bold]{comparison['scenario']}[/]: GraphQL/baseline throughput "
        f"{comparison['throughput_ratio']:.2f}x (target >= {TARGET_RATIO}x: "
        f"{verdict(comparison['throughput_ratio_ok'])}); GraphQL p95 "
        f"{comparison['graphql_p95_ms']:.1f} ms (target < {TARGET_P95_MS:g} ms: "
        f"{verdict(comparison['graphql_p95_ok'])})"
    )
    graphql, baseline = comparison["server_cpu_ms_per_request"].values()
    if graphql is not None and baseline:
        console.print(
            f"  server CPU per request: GraphQL {graphql:.1f} ms, baseline {baseline:.1f} ms "
            f"({graphql / baseline:.1f}x)"
        )
