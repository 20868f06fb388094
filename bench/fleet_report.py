"""What one fleet benchmark pass measured (``Pass``), the run's report with its growth ratios,
and how both are printed and saved (bench/results/fleet-<timestamp>.json)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


@dataclass
class Pass:
    tenants: int
    running: int
    stopped: int
    nodes: int
    wall_s: float
    cpu_s: float
    rss_before_mb: float
    rss_peak_mb: float
    tracemalloc_peak_mb: float | None
    server_reads: int  # GET + LIST in apiserver_request_total
    server_all: int  # every verb (controllers and KWOK included)
    client_calls: int  # requests lightkube's client sent
    server_by_call: dict[str, int]
    apiserver_cpu_s: float | None
    etcd_cpu_s: float | None
    counts: dict[str, int]
    register_s: float

    def per_tenant(self, value: float) -> float:
        return value / self.tenants if self.tenants else 0.0


@dataclass
class FleetReport:
    started_at: str
    config: dict[str, Any]
    passes: list[Pass] = field(default_factory=list)
    health_probe: str = ""
    machine: dict[str, Any] = field(default_factory=dict)

    def growth(self) -> dict[str, float | None]:
        if len(self.passes) < 2:
            return {}
        a, b = self.passes[0], self.passes[-1]

        def ratio(x: float | None, y: float | None) -> float | None:
            return round(y / x, 2) if x and y is not None else None

        return {
            "tenants": ratio(a.tenants, b.tenants),
            "wall_s": ratio(a.wall_s, b.wall_s),
            "cpu_s": ratio(a.cpu_s, b.cpu_s),
            "server_reads": ratio(a.server_reads, b.server_reads),
            "server_reads_per_tenant": ratio(
                a.per_tenant(a.server_reads), b.per_tenant(b.server_reads)
            ),
            "cpu_per_tenant": ratio(a.per_tenant(a.cpu_s), b.per_tenant(b.cpu_s)),
            "rss_peak_mb": ratio(a.rss_peak_mb, b.rss_peak_mb),
            "tracemalloc_peak_mb": ratio(a.tracemalloc_peak_mb, b.tracemalloc_peak_mb),
        }

    def write(self, directory: Path, stamp: str) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"fleet-{stamp}.json"
        body = {
            "started_at": self.started_at,
            "config": self.config,
            "health_probe": self.health_probe,
            "machine": self.machine,
            "passes": [asdict(p) for p in self.passes],
            "growth": self.growth(),
        }
        path.write_text(json.dumps(body, indent=2, default=str))
        return path


def print_report(report: FleetReport, console: Console) -> None:
    cost = Table(title="one reconciler pass over the fleet (kubernetes runtime, KWOK nodes): cost")
    for column in (
        "tenants",
        "running/stopped",
        "nodes",
        "pass s",
        "ms/tenant",
        "worker CPU s",
        "CPU ms/tenant",
        "RSS MB before",
        "RSS peak",
        "tracemalloc peak MB",
    ):
        cost.add_column(column, justify="right")
    calls = Table(title="API calls of the pass")
    for column in (
        "tenants",
        "server GET+LIST",
        "per tenant",
        "client requests",
        "per tenant",
        "all verbs (controllers too)",
        "apiserver CPU s",
        "etcd CPU s",
        "outcome",
    ):
        calls.add_column(column, justify="right")
    for p in report.passes:
        cost.add_row(
            str(p.tenants),
            f"{p.running}/{p.stopped}",
            str(p.nodes),
            f"{p.wall_s:.2f}",
            f"{1000 * p.per_tenant(p.wall_s):.1f}",
            f"{p.cpu_s:.2f}",
            f"{1000 * p.per_tenant(p.cpu_s):.1f}",
            f"{p.rss_before_mb:.0f}",
            f"{p.rss_peak_mb:.0f}",
            "n/a" if p.tracemalloc_peak_mb is None else f"{p.tracemalloc_peak_mb:.1f}",
        )
        calls.add_row(
            str(p.tenants),
            str(p.server_reads),
            f"{p.per_tenant(p.server_reads):.2f}",
            str(p.client_calls),
            f"{p.per_tenant(p.client_calls):.2f}",
            str(p.server_all),
            f"{p.apiserver_cpu_s}",
            f"{p.etcd_cpu_s}",
            " ".join(f"{k}={v}" for k, v in sorted(p.counts.items())),
        )
    console.print(cost)
    console.print(calls)
    for p in report.passes:
        top = ", ".join(f"{k}: {v}" for k, v in list(p.server_by_call.items())[:8])
        console.print(f"{p.tenants} tenants, apiserver_request_total delta: {top}", soft_wrap=True)
        console.print(f"{p.tenants} tenants registered in {p.register_s} s (not part of the pass)")
    growth = report.growth()
    if growth:
        console.print(
            "growth, last size vs first: " + ", ".join(f"{k} x{v}" for k, v in growth.items()),
            soft_wrap=True,
        )
    console.print(f"health probe: {report.health_probe}", soft_wrap=True)
    m = report.machine
    console.print(
        f"machine: {m.get('nproc')} cores, {m.get('platform')}, load {m.get('loadavg_at_start')}",
        soft_wrap=True,
    )
