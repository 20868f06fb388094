"""The provisioning benchmark's results: the printed tables, the verdicts and the JSON file."""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.report import NOISY_CORES, machine_info

TARGET_RATIO = 1.5  # fully provisioned / bare cold start (median wall time), at most
SAMPLE_EVERY_S = 5.0  # tree RSS samples while an instance settles
KINDS = ("bare", "full")
PHASES = ("create", "start", "ready", "bootstrap", "verify")
_MB = 1024 * 1024

MEMORY_NOTES = {
    "RSS peak while settling": f"the highest tree RSS of the samples taken every "
    f"{SAMPLE_EVERY_S:g} s while the instance sat idle: n8n releases start-up memory some "
    "20-30 s after it was provisioned, so a short settle reads the higher figure",
    "tree RSS": "resident memory summed over the instance's processes (n8n and its task "
    "runner; for a container, as seen from the host), so pages they share are counted once "
    "per process",
    "tree PSS": "the same processes with shared pages split between their sharers: the fair "
    "sum of what the instance holds in RAM",
    "cgroup usage": "what the container's memory cgroup is charged (Docker API stats "
    "memory_stats.usage): the processes' memory plus the page cache of files the container "
    "read or wrote (n8n's modules, its SQLite database) and kernel memory; a cached page is "
    "charged to the cgroup that read it first, so image files an earlier container (or "
    "instance) already read may not count here",
    "cgroup working set": "cgroup usage minus inactive file cache (what `docker stats` shows); "
    "the cache figure comes from memory_stats.stats, else from the cgroup's memory.stat on "
    "the host (Podman's Docker-compatible API reports the usage only)",
}


@dataclass(frozen=True)
class Start:
    """One timed start of a fresh instance: ``bare`` (until ready) or ``full`` (provisioned)."""

    kind: str
    repetition: int
    seconds: float  # from create until ready (bare) / until every workflow is active (full)
    phases: dict[str, float]  # PHASES -> seconds, in order; bare starts stop after "ready"
    workflows_active: int
    n8n_cpu_s: float | None  # CPU of the instance's processes, when visible from here
    other_cores: float | None  # cores other processes kept busy meanwhile (machine noise)


@dataclass(frozen=True)
class Memory:
    """One provisioned instance's memory, ``settle_s`` after its workflows were active."""

    settle_s: float
    processes: int
    tree_rss: int | None
    tree_pss: int | None
    cgroup_usage: int | None = None
    cgroup_working_set: int | None = None
    working_set_source: str | None = None  # which cache figure was subtracted, and from where
    settling_rss: list[tuple[float, int]] = field(default_factory=list)  # (s idle, tree RSS)

    @property
    def settling_peak(self) -> int | None:
        return max((rss for _, rss in self.settling_rss), default=None)


def spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "runs": len(values),
    }


@dataclass
class RuntimeResult:
    runtime: str
    starts: list[Start] = field(default_factory=list)
    memory: Memory | None = None
    skipped: str | None = None  # why this runtime was not measured
    error: str | None = None  # why its measurement stopped early
    leftovers: list[str] = field(default_factory=list)  # what was still there after cleanup
    checked_gone: int = 0  # instance processes confirmed ended after cleanup

    def of(self, kind: str) -> list[Start]:
        return [start for start in self.starts if start.kind == kind]

    def wall(self, kind: str) -> dict[str, float] | None:
        return spread([start.seconds for start in self.of(kind)])

    def cpu(self, kind: str) -> dict[str, float] | None:
        return spread([s.n8n_cpu_s for s in self.of(kind) if s.n8n_cpu_s is not None])

    def phase_medians(self, kind: str) -> dict[str, float]:
        starts = self.of(kind)
        return {
            phase: round(statistics.median(values), 3)
            for phase in PHASES
            if (values := [s.phases[phase] for s in starts if phase in s.phases])
        }

    def ratio(self, of: str = "wall") -> float | None:
        """Median of the full starts over median of the bare ones (wall time or n8n CPU)."""
        pick = self.wall if of == "wall" else self.cpu
        bare, full = pick("bare"), pick("full")
        if not bare or not full or not bare["median"]:
            return None
        return round(full["median"] / bare["median"], 3)

    def overhead(self) -> float | None:
        """Median seconds a full start spends after ready (bootstrap and verify): the work
        provisioning adds, without the noise of n8n's own start."""
        extra = [
            s.phases.get("bootstrap", 0.0) + s.phases.get("verify", 0.0) for s in self.of("full")
        ]
        return round(statistics.median(extra), 3) if extra else None

    def to_json(self) -> dict[str, Any]:
        ratio = self.ratio()
        return {
            "runtime": self.runtime,
            "skipped": self.skipped,
            "error": self.error,
            "starts": [asdict(start) for start in self.starts],
            "wall_s": {kind: self.wall(kind) for kind in KINDS},
            "n8n_cpu_s": {kind: self.cpu(kind) for kind in KINDS},
            "phase_medians_s": {kind: self.phase_medians(kind) for kind in KINDS},
            "ratio_full_over_bare": ratio,
            "ratio_target": TARGET_RATIO,
            "ratio_ok": None if ratio is None else ratio <= TARGET_RATIO,
            "cpu_ratio_full_over_bare": self.ratio("cpu"),
            "provisioning_overhead_s": self.overhead(),
            "idle_memory": None if self.memory is None else asdict(self.memory),
            "cleanup": {"leftovers": self.leftovers, "processes_checked_gone": self.checked_gone},
        }


@dataclass
class Report:
    started_at: str
    config: dict[str, Any]
    templates: list[str]
    machine: dict[str, Any] = field(default_factory=machine_info)
    runtimes: list[RuntimeResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    loadavg_at_end: list[float] = field(default_factory=list)

    def finish(self) -> None:
        self.loadavg_at_end = [round(x, 2) for x in os.getloadavg()]

    def to_json(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "config": self.config,
            "templates": self.templates,
            "machine": {**self.machine, "loadavg_at_end": self.loadavg_at_end},
            "runtimes": [result.to_json() for result in self.runtimes],
            "memory_notes": MEMORY_NOTES,
            "notes": self.notes,
        }

    def write(self, directory: Path, stamp: str) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"provisioning-{stamp}.json"
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path


def _s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _mb(value: int | None) -> str:
    return "n/a" if value is None else f"{value / _MB:.0f}"


def print_report(report: Report, console: Console) -> None:
    m, c = report.machine, report.config
    console.print(
        f"\n[bold]Zixly provisioning benchmark[/] {report.started_at}\n"
        f"machine: nproc={m['nproc']} ({m['cpu_model'] or 'unknown CPU'}), load average "
        f"{' '.join(map(str, m['loadavg_at_start']))} at start, "
        f"{' '.join(map(str, report.loadavg_at_end))} at end\n"
        f"n8n {c['version']}: {c['repetitions']} repetition(s) of a bare and a fully "
        f"provisioned start per runtime{', after one unmeasured warm-up start' if c['warmup'] else ''}; "
        f"templates: {', '.join(report.templates) or 'none'}",
        soft_wrap=True,
    )
    measured = [r for r in report.runtimes if r.starts]
    if measured:
        console.print(_start_table(measured))
        console.print(_phase_table(measured))
    for result in report.runtimes:
        _print_verdict(result, console)
    with_memory = [r for r in report.runtimes if r.memory is not None]
    if with_memory:
        console.print(_memory_table(with_memory))
        for name, meaning in MEMORY_NOTES.items():
            console.print(f"  [bold]{name}[/]: {meaning}", soft_wrap=True)
    noisy = [
        f"{r.runtime} {s.kind} #{s.repetition + 1}"
        for r in measured
        for s in r.starts
        if (s.other_cores or 0.0) > NOISY_CORES
    ]
    if noisy:
        console.print(
            f"[yellow]other processes kept over {NOISY_CORES} cores busy during "
            f"{', '.join(noisy)}[/]: this machine was shared, so those times are noisy (n8n's "
            "own CPU seconds are the steadier figure)",
            soft_wrap=True,
        )
    for message in report.notes:
        console.print(f"[yellow]note:[/] {message}", soft_wrap=True)


def _start_table(results: list[RuntimeResult]) -> Table:
    table = Table(
        title="cold start: create until ready (bare) / until every workflow is active (full)",
        caption="n8n CPU s: CPU of the instance's processes; other cores: cores that other "
        "processes on this machine kept busy meanwhile (medians)",
    )
    table.add_column("runtime")
    table.add_column("start")
    for name in ("runs", "median s", "min s", "max s", "n8n CPU s", "other cores"):
        table.add_column(name, justify="right")
    for result in results:
        for kind in KINDS:
            wall, cpu = result.wall(kind), result.cpu(kind)
            if wall is None:
                continue
            others = [s.other_cores for s in result.of(kind) if s.other_cores is not None]
            table.add_row(
                result.runtime,
                kind,
                str(wall["runs"]),
                _s(wall["median"]),
                _s(wall["min"]),
                _s(wall["max"]),
                _s(cpu["median"] if cpu else None),
                _s(statistics.median(others) if others else None),
            )
    return table


def _phase_table(results: list[RuntimeResult]) -> Table:
    table = Table(title="median seconds per phase")
    table.add_column("runtime")
    table.add_column("start")
    for phase in PHASES:
        table.add_column(phase, justify="right")
    for result in results:
        for kind in KINDS:
            medians = result.phase_medians(kind)
            if medians:
                table.add_row(result.runtime, kind, *(_s(medians.get(p)) for p in PHASES))
    return table


def _memory_table(results: list[RuntimeResult]) -> Table:
    table = Table(title="idle memory of one provisioned instance (MB)")
    table.add_column("runtime")
    for name in (
        "settled s",
        "processes",
        "RSS peak while settling",
        "tree RSS",
        "tree PSS",
        "cgroup usage",
        "cgroup working set",
    ):
        table.add_column(name, justify="right")
    for result in results:
        memory = result.memory
        assert memory is not None
        table.add_row(
            result.runtime,
            f"{memory.settle_s:g}",
            str(memory.processes),
            _mb(memory.settling_peak),
            _mb(memory.tree_rss),
            _mb(memory.tree_pss),
            _mb(memory.cgroup_usage),
            _mb(memory.cgroup_working_set),
        )
    return table


def _print_verdict(result: RuntimeResult, console: Console) -> None:
    if result.skipped:
        console.print(f"[yellow]{result.runtime}: skipped[/]: {result.skipped}", soft_wrap=True)
    if result.error:
        console.print(f"[red]{result.runtime}: failed[/]: {result.error}", soft_wrap=True)
    ratio = result.ratio()
    if ratio is not None:
        verdict = "[green]HOLDS[/]" if ratio <= TARGET_RATIO else "[red]MISSED[/]"
        cpu, extra, bare = result.ratio("cpu"), result.overhead(), result.wall("bare")
        console.print(
            f"[bold]{result.runtime}[/]: full/bare {ratio:.2f}x by median wall time (target <= "
            f"{TARGET_RATIO}x: {verdict})"
            + ("" if cpu is None else f"; {cpu:.2f}x by n8n CPU seconds")
            + (
                ""
                if extra is None or not bare
                else f"; bootstrap + workflows after ready take {extra:.2f} s "
                f"({extra / bare['median']:.0%} of the bare median)"
            ),
            soft_wrap=True,
        )
    if result.leftovers:
        console.print(f"[red]{result.runtime}: left behind: {', '.join(result.leftovers)}[/]")
    elif result.starts or result.checked_gone:
        console.print(
            f"{result.runtime}: cleanup checked: no managed instance left, "
            f"{result.checked_gone} instance processes confirmed ended"
        )
