"""Provisioning benchmark: a tenant's n8n cold start, bare and fully provisioned, per runtime.

    python -m bench.provisioning [--quick] [--runtime process|docker|all] [--repetitions N]
                                 [--settle S] [--templates DIR] [--no-warmup]

For each runtime (local processes; containers through the Docker Engine API, a private
Podman service unless DOCKER_HOST is set) it times, on a fresh instance each time:

- bare: create + start until n8n is ready (``N8nClient.wait_ready``: readiness 200, the
  public API and the owner-setup route answer): the baseline;
- full: the same, then the headless bootstrap (owner, API key) and the template workflows
  created and activated, until the public API lists every one of them as active.

Bare and full alternate (their order flips every repetition) after one unmeasured warm-up
start, which pays for reading n8n's files from a cold disk cache. The last provisioned
instance is left idle for ``--settle`` seconds and its memory read: the process tree's RSS
and PSS (psutil) for both runtimes, and the memory cgroup (Docker API stats) for containers.
The tree's RSS is also sampled while it settles: n8n 1.123 gave back about 300 MB some 20-30 s
after it was provisioned here, hence a default settle of 45 s (``--quick``'s 5 s reads the
figure from before that).
Every instance is removed right after its measurement, and on Ctrl-C or an error; the end
checks that no managed instance, volume, network or instance process is left. Prints the
tables and the full/bare verdict, and writes bench/results/provisioning-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from secrets import token_hex
from typing import Any

import docker
import docker.errors
import httpx
import psutil
from rich.console import Console

from bench.procstat import machine_busy_s, snapshot, tree_cpu
from bench.provisioning_report import (
    SAMPLE_EVERY_S,
    Memory,
    Report,
    RuntimeResult,
    Start,
    print_report,
)
from zixly.provisioning.n8n.bootstrap import InstanceSecrets, bootstrap_instance
from zixly.provisioning.n8n.client import N8nClient
from zixly.provisioning.runtimes.base import (
    InstanceHandle,
    InstanceRuntime,
    InstanceSpec,
    RuntimeState,
)
from zixly.provisioning.runtimes.distributions import DEFAULT_N8N_VERSION, ensure_n8n
from zixly.provisioning.runtimes.docker import DEPLOYMENT_LABEL, DockerRuntime
from zixly.provisioning.runtimes.errors import NotInstalledError, RuntimeFailure
from zixly.provisioning.runtimes.images import image_tag
from zixly.provisioning.runtimes.podman import PodmanService, podman_available
from zixly.provisioning.runtimes.process import ProcessRuntime

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
# The test fixtures stand in until the n8n-workflows/ templates arrive (a later issue).
TEMPLATES_DIR = ROOT / "tests" / "provisioning" / "fixtures"
RUNTIMES = ("process", "docker")
PROBE_INTERVAL_S = 0.05  # readiness polling: finer than N8nClient's default, for timing


class BenchFailure(Exception):
    """A start that did not reach the state being timed."""


@dataclass(frozen=True)
class BenchConfig:
    repetitions: int = 3
    settle_s: float = 45.0  # past the release of start-up memory (see the module docstring)
    warmup: bool = True
    runtimes: tuple[str, ...] = RUNTIMES
    templates_dir: Path = TEMPLATES_DIR
    ready_within_s: float = 180.0
    version: str = DEFAULT_N8N_VERSION
    results_dir: Path = RESULTS_DIR


QUICK = BenchConfig(repetitions=1, settle_s=5.0)


@dataclass
class Target:
    """A runtime to measure (None: ``skipped`` says why), and the instance processes seen."""

    name: str
    runtime: InstanceRuntime | None
    skipped: str | None = None
    helper_pids: tuple[int, ...] = ()  # processes doing the runtime's work (Podman's service)
    seen: dict[int, float] = field(default_factory=dict)  # instance pid -> create time


def load_templates(directory: Path) -> list[dict[str, Any]]:
    templates = [json.loads(path.read_text()) for path in sorted(directory.glob("*.json"))]
    return [t for t in templates if isinstance(t, dict) and t.get("nodes")]


# --- one timed start ----------------------------------------------------------------------------


class _Stopwatch:
    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.phases[phase] = round(now - self._last, 3)
        self._last = now


class _CpuWindow:
    """CPU used meanwhile by the instance, by us (this process and the runtime's helpers), and
    by everything else on the machine, which is what makes a wall time noisy."""

    def __init__(self, helper_pids: Sequence[int]) -> None:
        self._helpers = tuple(helper_pids)
        self._busy = machine_busy_s()
        self._ours = self._our_cpu(snapshot())

    def _our_cpu(self, procs: Mapping[int, Any]) -> float:
        helpers = sum(tree_cpu(procs, pid) for pid in self._helpers)
        return time.process_time() + helpers

    def close(self, instance_pid: int | None, wall_s: float) -> tuple[float | None, float | None]:
        """(CPU seconds of the instance's process tree, cores other processes kept busy)."""
        procs = snapshot()
        busy = machine_busy_s()
        instance = tree_cpu(procs, instance_pid) if instance_pid in procs else None
        if instance is None:
            return None, None
        if busy is None or self._busy is None or wall_s <= 0:
            return round(instance, 3), None
        others = busy - self._busy - instance - (self._our_cpu(procs) - self._ours)
        return round(instance, 3), round(max(0.0, others / wall_s), 3)


async def measure_start(
    target: Target,
    http: httpx.AsyncClient,
    slug: str,
    templates: Sequence[Mapping[str, Any]] | None,
    *,
    repetition: int = 0,
    ready_within: float = 180.0,
    version: str = DEFAULT_N8N_VERSION,
    settle_s: float | None = None,
) -> tuple[Start, Memory | None]:
    """Time one fresh instance from create to ready (``templates`` None: bare) or to every
    template workflow active; with ``settle_s``, then read its idle memory. Always removed."""
    runtime = target.runtime
    assert runtime is not None
    owner = InstanceSecrets.generate(slug)
    spec = InstanceSpec(
        tenant_id=f"bench-{slug}",
        tenant_slug=slug,
        version=version,
        env=owner.instance_env(version),
    )
    cpu = _CpuWindow(target.helper_pids)
    clock = _Stopwatch()
    # Shielded: on Ctrl-C the create still finishes, so the finally below can undo it.
    creating = asyncio.ensure_future(runtime.create(spec))
    try:
        handle = await asyncio.shield(creating)
        clock.lap("create")
        status = await runtime.start(handle)
        clock.lap("start")
        target.seen.update(_tree_of(status.pid))
        if status.state is not RuntimeState.RUNNING or status.url is None:
            raise BenchFailure(f"not running after start ({status.state})")
        client = N8nClient(status.url, http, retry_interval=PROBE_INTERVAL_S, version=version)
        await client.wait_ready(ready_within)
        clock.lap("ready")
        active = 0
        if templates is not None:
            boot = await bootstrap_instance(client, owner, templates, ready_timeout=ready_within)
            clock.lap("bootstrap")
            active = await _until_active(client.with_api_key(boot.api_key), templates, ready_within)
            clock.lap("verify")
        wall = sum(clock.phases.values())
        pid = (await runtime.inspect(handle)).pid or status.pid
        instance_cpu, others = cpu.close(pid, wall)
        target.seen.update(_tree_of(pid))
        start = Start(
            kind="bare" if templates is None else "full",
            repetition=repetition,
            seconds=round(wall, 3),
            phases=clock.phases,
            workflows_active=active,
            n8n_cpu_s=instance_cpu,
            other_cores=others,
        )
        memory = None
        if settle_s is not None:
            memory = await settle(runtime, handle, settle_s)
            target.seen.update(_tree_of(pid))  # the task runner may have been restarted
        return start, memory
    except Exception as exc:
        tail = await _log_tail(runtime, creating)
        raise BenchFailure(f"{runtime.name} instance {slug}: {exc}{tail}") from exc
    finally:
        await _undo(runtime, creating)


async def _until_active(
    api: N8nClient, templates: Sequence[Mapping[str, Any]], within: float
) -> int:
    """Poll the public API until every template's workflow is listed as active."""
    wanted = {str(t["name"]) for t in templates}
    deadline = time.monotonic() + within
    while True:
        active = {str(w["name"]) for w in await api.all_workflows(active=True)}
        if wanted <= active:
            return len(wanted & active)
        if time.monotonic() > deadline:
            raise BenchFailure(f"workflows never became active: {sorted(wanted - active)}")
        await asyncio.sleep(PROBE_INTERVAL_S)


async def _log_tail(
    runtime: InstanceRuntime, creating: asyncio.Future[InstanceHandle], lines: int = 5
) -> str:
    if not creating.done() or creating.cancelled() or creating.exception() is not None:
        return ""
    try:
        tail = await runtime.logs(creating.result(), tail=lines)
    except Exception:
        return ""
    return "; n8n's last lines: " + " | ".join(tail) if tail else ""


async def _undo(runtime: InstanceRuntime, creating: asyncio.Future[InstanceHandle]) -> None:
    try:
        handle = await creating
    except Exception:
        return  # nothing was created; a partial create is swept at the end
    await runtime.remove(handle)


def _tree_of(pid: int | None) -> dict[int, float]:
    """pid -> create time of a process and its descendants (and a container's conmon)."""
    if pid is None:
        return {}
    try:
        root = psutil.Process(pid)
        members = [root, *root.children(recursive=True)]
        parent = root.parent()
        if parent is not None and parent.name() == "conmon":
            members.append(parent)
    except psutil.Error:
        return {}
    found = {}
    for process in members:
        with contextlib.suppress(psutil.Error):
            found[process.pid] = process.create_time()
    return found


# --- memory -------------------------------------------------------------------------------------

_INACTIVE_FILE = ("total_inactive_file", "inactive_file", "cache")  # cgroup v1, v2, old engines


async def settle(runtime: InstanceRuntime, handle: InstanceHandle, settle_s: float) -> Memory:
    """Leave the instance idle for ``settle_s``, sampling its tree's RSS; then read it all."""
    samples: list[tuple[float, int]] = []
    began = time.monotonic()
    while (elapsed := time.monotonic() - began) < settle_s:
        pid = await _running_pid(runtime, handle)
        samples.append((round(elapsed, 1), (await asyncio.to_thread(tree_memory, pid))[1]))
        await asyncio.sleep(min(SAMPLE_EVERY_S, settle_s - elapsed))
    return replace(await read_memory(runtime, handle, settle_s), settling_rss=samples)


async def _running_pid(runtime: InstanceRuntime, handle: InstanceHandle) -> int:
    status = await runtime.inspect(handle)
    if status.state is not RuntimeState.RUNNING or status.pid is None:
        raise BenchFailure(f"{handle.instance_id} stopped while idle ({status.state})")
    return status.pid


async def read_memory(runtime: InstanceRuntime, handle: InstanceHandle, settle_s: float) -> Memory:
    pid = await _running_pid(runtime, handle)
    processes, rss, pss = await asyncio.to_thread(tree_memory, pid)
    memory = Memory(settle_s=settle_s, processes=processes, tree_rss=rss, tree_pss=pss)
    if isinstance(runtime, DockerRuntime):
        usage, working_set, source = await asyncio.to_thread(
            cgroup_memory, runtime, handle.instance_id, pid
        )
        memory = replace(
            memory, cgroup_usage=usage, cgroup_working_set=working_set, working_set_source=source
        )
    return memory


def tree_memory(pid: int) -> tuple[int, int, int | None]:
    """(processes, summed RSS, summed PSS or None when smaps is unreadable) of a tree."""
    root = psutil.Process(pid)
    rss, pss, count = 0, 0, 0
    pss_known = True
    for process in [root, *root.children(recursive=True)]:
        try:
            rss += process.memory_info().rss
            count += 1
            pss += process.memory_full_info().pss
        except psutil.NoSuchProcess:
            continue
        except (psutil.AccessDenied, AttributeError):
            pss_known = False
    return count, rss, pss if pss_known else None


def cgroup_memory(
    runtime: DockerRuntime, name: str, pid: int
) -> tuple[int | None, int | None, str | None]:
    """(usage, usage minus inactive file cache, where that figure came from) of a container."""
    memory = runtime.client.containers.get(name).stats(stream=False).get("memory_stats") or {}
    usage = memory.get("usage")
    if not isinstance(usage, int):
        return None, None, None
    sources = (
        ("the Docker API's memory_stats.stats", memory.get("stats") or {}),
        ("the container cgroup's memory.stat on the host", host_memory_stat(pid)),
    )
    for origin, stats in sources:
        for key in _INACTIVE_FILE:
            value = stats.get(key)
            if isinstance(value, int) and value < usage:
                return usage, usage - value, f"{key} from {origin}"
    return usage, None, None


def host_memory_stat(pid: int) -> dict[str, int]:
    """memory.stat of the memory cgroup ``pid`` is in (cgroup v1, else v2), when readable."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return {}
    candidates: list[Path] = []
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            candidates.insert(0, Path("/sys/fs/cgroup/memory", path.lstrip("/"), "memory.stat"))
        elif hierarchy == "0" and not controllers:
            candidates.append(Path("/sys/fs/cgroup", path.lstrip("/"), "memory.stat"))
    for candidate in candidates:
        try:
            pairs = [line.split() for line in candidate.read_text().splitlines()]
        except OSError:
            continue
        return {key: int(value) for key, value in pairs if value.isdigit()}
    return {}


# --- runtimes, cleanup --------------------------------------------------------------------------


@contextlib.contextmanager
def open_targets(config: BenchConfig, workdir: Path) -> Iterator[list[Target]]:
    """The runtimes to measure, their data under ``workdir``; a private Podman service for the
    container runtime (stopped at the end) unless DOCKER_HOST names an engine."""
    with contextlib.ExitStack() as stack:
        found = []
        for name in config.runtimes:
            if name == "process":
                found.append(_process_target(config, workdir))
            else:
                found.append(_docker_target(config, workdir, stack))
        yield found


def _process_target(config: BenchConfig, workdir: Path) -> Target:
    try:
        ensure_n8n(config.version, install=False)
    except NotInstalledError:
        reason = f"n8n {config.version} is not installed: run `zixly n8n install`"
        return Target("process", None, skipped=reason)
    return Target("process", ProcessRuntime(workdir / "process"))


def _docker_target(config: BenchConfig, workdir: Path, stack: contextlib.ExitStack) -> Target:
    helpers: tuple[int, ...] = ()
    try:
        if os.environ.get("DOCKER_HOST"):
            client = docker.from_env(timeout=600)
        elif not podman_available():
            reason = (
                "podman is not installed and DOCKER_HOST is unset "
                "(install it with scripts/ci-setup-podman.sh)"
            )
            return Target("docker", None, skipped=reason)
        else:
            service = stack.enter_context(PodmanService(workdir / "podman"))
            client = service.client()
            helpers = tuple(pid for pid in (service.pid(),) if pid is not None)
        stack.callback(client.close)
        client.images.get(image_tag(config.version))
    except docker.errors.ImageNotFound:
        reason = f"image {image_tag(config.version)} is missing: run `zixly n8n image`"
        return Target("docker", None, skipped=reason)
    except (docker.errors.DockerException, RuntimeFailure) as exc:
        return Target("docker", None, skipped=f"no container engine: {exc}")
    run = token_hex(3)
    runtime = DockerRuntime(client, prefix=f"zb{run}-", deployment=f"bench-{run}")
    return Target("docker", runtime, helper_pids=helpers)


async def sweep(target: Target, *, within: float = 10.0) -> tuple[list[str], int]:
    """Remove whatever is left; then (what still exists, how many seen processes ended)."""
    runtime = target.runtime
    if runtime is None:
        return [], 0
    for handle in await runtime.list_managed():
        await runtime.remove(handle)
    left = [f"instance {handle.instance_id}" for handle in await runtime.list_managed()]
    if isinstance(runtime, DockerRuntime):
        left += await asyncio.to_thread(_engine_leftovers, runtime)
    deadline = time.monotonic() + within  # conmon ends a moment after its container
    while alive := [pid for pid, created in target.seen.items() if _alive(pid, created)]:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    left += [f"process {pid}" for pid in alive]
    return left, len(target.seen) - len(alive)


def _engine_leftovers(runtime: DockerRuntime) -> list[str]:
    """Volumes and networks of this run's deployment (a create that failed midway leaves them
    without a container, so ``list_managed`` does not show them): removed, then listed."""
    filters = {"label": f"{DEPLOYMENT_LABEL}={runtime.deployment}"}
    for item in [
        *runtime.client.volumes.list(filters=filters),
        *runtime.client.networks.list(filters=filters),
    ]:
        with contextlib.suppress(docker.errors.APIError):
            item.remove()
    volumes = [f"volume {v.name}" for v in runtime.client.volumes.list(filters=filters)]
    networks = [f"network {n.name}" for n in runtime.client.networks.list(filters=filters)]
    return volumes + networks


def _alive(pid: int, created: float) -> bool:
    try:
        process = psutil.Process(pid)
        same: bool = abs(process.create_time() - created) < 0.05
        return same and str(process.status()) != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# --- the run ------------------------------------------------------------------------------------


async def bench_runtime(
    target: Target,
    http: httpx.AsyncClient,
    config: BenchConfig,
    templates: Sequence[Mapping[str, Any]],
    console: Console,
) -> RuntimeResult:
    result = RuntimeResult(target.name, skipped=target.skipped)
    if target.runtime is None:
        return result
    common: dict[str, Any] = {"ready_within": config.ready_within_s, "version": config.version}
    try:
        if config.warmup:
            with console.status(f"{target.name}: warm-up start (not measured)"):
                await measure_start(target, http, "warmup", None, **common)
        for rep in range(config.repetitions):
            for kind in ("bare", "full") if rep % 2 == 0 else ("full", "bare"):
                settle = (
                    config.settle_s if kind == "full" and rep == config.repetitions - 1 else None
                )
                label = f"{target.name} {kind} #{rep + 1}"
                waits = "" if settle is None else f", then idle {settle:g} s for its memory"
                with console.status(f"{label}: starting a fresh instance{waits}"):
                    start, memory = await measure_start(
                        target,
                        http,
                        f"{kind}-{rep + 1}",
                        None if kind == "bare" else templates,
                        repetition=rep,
                        settle_s=settle,
                        **common,
                    )
                result.starts.append(start)
                result.memory = memory or result.memory
                console.print(
                    f"{label}: {start.seconds:.2f} s ({start.workflows_active} workflows active; "
                    f"n8n CPU {start.n8n_cpu_s if start.n8n_cpu_s is not None else 'n/a'} s)"
                )
    except Exception as exc:  # one runtime failing does not stop the other's measurement
        result.error = f"{type(exc).__name__}: {exc}"
        console.print(f"[red]{target.name} failed[/]: {result.error}", soft_wrap=True)
    finally:
        with console.status(f"{target.name}: removing what is left and checking"):
            result.leftovers, result.checked_gone = await sweep(target)
    return result


async def run_benchmark(config: BenchConfig, targets: list[Target], console: Console) -> Report:
    started = dt.datetime.now(dt.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    templates = load_templates(config.templates_dir)
    report = Report(
        started_at=started.isoformat(timespec="seconds"),
        config={
            **asdict(config),
            "templates_dir": str(config.templates_dir),
            "results_dir": str(config.results_dir),
        },
        templates=[str(t["name"]) for t in templates],
    )
    if config.templates_dir == TEMPLATES_DIR:
        report.notes.append(
            "the templates are the test fixtures (trivial schedule and webhook workflows); "
            "rerun with --templates n8n-workflows/... once the real templates exist"
        )
    report.notes.append(
        f"readiness is polled every {PROBE_INTERVAL_S * 1000:.0f} ms; the full start's ready "
        "phase is the same wait as the bare one, its bootstrap repeats that check (three quick "
        "requests) before owner setup, API key and workflows"
    )
    async with httpx.AsyncClient(timeout=30.0) as http:
        for target in targets:
            report.runtimes.append(await bench_runtime(target, http, config, templates, console))
    report.finish()
    print_report(report, console)
    path = report.write(config.results_dir, stamp)
    console.print(f"results: {path}", soft_wrap=True)
    return report


def build_parser() -> argparse.ArgumentParser:
    defaults, quick = BenchConfig(), QUICK
    parser = argparse.ArgumentParser(
        prog="python -m bench.provisioning", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{quick.repetitions} repetition, {quick.settle_s:g} s idle before reading memory",
    )
    parser.add_argument("--runtime", choices=(*RUNTIMES, "all"), default="all")
    parser.add_argument("--version", help=f"n8n version (default {defaults.version})")
    parser.add_argument("--repetitions", type=int, help=f"default {defaults.repetitions}")
    parser.add_argument(
        "--settle", type=float, help=f"idle seconds before reading memory ({defaults.settle_s:g})"
    )
    parser.add_argument("--templates", type=Path, help=f"workflow JSON files ({TEMPLATES_DIR})")
    parser.add_argument("--no-warmup", action="store_true", help="skip the unmeasured first start")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    return parser


def config_from(args: argparse.Namespace) -> BenchConfig:
    config = QUICK if args.quick else BenchConfig()
    chosen = {
        "repetitions": args.repetitions,
        "settle_s": args.settle,
        "templates_dir": args.templates,
        "results_dir": args.results_dir,
        "runtimes": RUNTIMES if args.runtime == "all" else (args.runtime,),
        "warmup": False if args.no_warmup else None,
        "version": args.version,
    }
    return replace(config, **{k: v for k, v in chosen.items() if v is not None})


def main(argv: Sequence[str] | None = None) -> int:
    config = config_from(build_parser().parse_args(argv))
    console = Console() if sys.stdout.isatty() else Console(width=140)  # tables stay whole
    workdir = Path(tempfile.mkdtemp(prefix="zixly-bench-provisioning-"))
    try:
        with open_targets(config, workdir) as targets, asyncio.Runner() as runner:
            report = runner.run(run_benchmark(config, targets, console))
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: the instances were removed")
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if any(r.error or r.leftovers for r in report.runtimes) else 0


if __name__ == "__main__":
    raise SystemExit(main())
