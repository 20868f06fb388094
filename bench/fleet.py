"""Fleet benchmark: the real reconciler over N tenants on a real Kubernetes control plane.

    python -m bench.fleet [--quick] [--sizes 100,1000] [--stopped-share 0.25]

Starts the tests' control plane (``tests/kube.py``: etcd, kube-apiserver, controller
manager, scheduler, KWOK), enough KWOK nodes for the tenants' requests, and the embedded
PostgreSQL + Redis. For each size (cumulative: 100, then 900 more for 1,000) it registers
tenants as the lifecycle leaves them: the tenant and its instance row (secrets sealed, step
DONE, the runtime's handle and URL), the objects applied through ``KubernetesRuntime.create``
(the lifecycle's own ``_create``: the same spec and env), scaled to 1 for the running ones,
whose pods KWOK then marks Running. Then it times one full pass of
``zixly.provisioning.reconciler.Reconciler`` (the worker's settings: concurrency 4):

- wall time; the worker's CPU (this process's process time; the reconciler runs here) and its
  RSS (peak while the pass runs, sampled) and, in a second pass, the tracemalloc peak;
- API calls per tenant: ``apiserver_request_total`` from the API server's own ``/metrics``
  before and after (GET and LIST; the controllers' watches and KWOK's status writes are the
  other verbs), and the client's own count (an httpx event hook on lightkube's client);
- the API server's and etcd's CPU meanwhile.

KWOK pods run no n8n. A running tenant's URL is a closed loopback port, so the reconciler's
readiness probe is refused at once and recorded (``last_health``, UNHEALTHY in the counts):
the full per-tenant cost of a running instance without waiting on timeouts. Stopped tenants
(``--stopped-share``) are inspected only. Prints a table and the growth ratios (last size vs
first) and writes bench/results/fleet-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import math
import os
import platform
import shutil
import socket
import ssl
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
from lightkube import AsyncClient, KubeConfig
from lightkube.resources.core_v1 import Node, PersistentVolume, Pod
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis
from rich.console import Console

import zixly.provisioning.runtimes.kube_objects as objects
from bench.fleet_report import FleetReport, Pass, print_report
from bench.harness import console as make_console
from bench.harness import interrupted, on_embedded_stack, run
from bench.procstat import snapshot, tree_cpu
from tests import kube
from zixly.container import build_lifecycle
from zixly.core.settings import Settings
from zixly.db.session import Database, create_engine
from zixly.embedded.stack import Endpoints
from zixly.provisioning.instances import ActualState, DesiredState, InstanceRepository, Step
from zixly.provisioning.lifecycle import InstanceLifecycle
from zixly.provisioning.operations import STAFF
from zixly.provisioning.reconciler import Reconciler
from zixly.provisioning.runtimes.kubernetes import FIELD_MANAGER, KubernetesRuntime
from zixly.provisioning.secrets import SecretField
from zixly.security.crypto import Keyring, key_entry

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
SLUG_PREFIX = "fleet-bench-"
STORAGE_CLASS = "zixly-fleet"
NODE_PREFIX = "kwok-fleet-"
NODE_CPUS = 64  # what infra/k8s/testenv/kwok-stages.yaml gives a KWOK node
RSS_SAMPLE_S = 0.02
QUIET_WINDOW_S = 2.0
QUIET_READS = 2  # GET/LIST a window may see before the pass (the metrics read's own)
READ_VERBS = ("GET", "LIST")


@dataclass(frozen=True)
class FleetConfig:
    sizes: tuple[int, ...] = (100, 1000)
    stopped_share: float = 0.25  # desired STOPPED (inspected only); the rest run
    concurrency: int = 4  # the reconciler's, as the worker builds it (zixly.container)
    register_concurrency: int = 12
    tracemalloc: bool = True
    pods_within_s: float = 600.0
    results_dir: Path = RESULTS_DIR


QUICK = FleetConfig(sizes=(4, 12), register_concurrency=4)


# --- the API server's own count -----------------------------------------------------------------


class ServerMetrics:
    """``apiserver_request_total`` read from ``/metrics`` with the administrator's certificate."""

    def __init__(self, env: kube.KubeTestEnv) -> None:
        context = ssl.create_default_context(cafile=str(env.ca))
        pki = env.folder / "pki"
        context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        self._http = httpx.AsyncClient(base_url=env.server, verify=context, timeout=30.0)

    async def requests(self) -> Counter[str]:
        text = (await self._http.get("/metrics")).text
        found: Counter[str] = Counter()
        for family in text_string_to_metric_families(text):
            if family.name != "apiserver_request":
                continue
            for sample in family.samples:
                if sample.name != "apiserver_request_total":
                    continue
                labels = sample.labels
                key = f"{labels.get('verb')} {labels.get('resource')}"
                if labels.get("subresource"):
                    key += f"/{labels['subresource']}"
                found[key] += int(sample.value)
        return found

    async def close(self) -> None:
        await self._http.aclose()


class ClientCount:
    """Requests a lightkube client sends (an event hook on its httpx client)."""

    def __init__(self, client: AsyncClient) -> None:
        self.calls = 0
        # lightkube keeps its httpx client inside its generic client; no public hook exists.
        client._client._client.event_hooks["request"].append(self._count)

    async def _count(self, _request: Any) -> None:
        self.calls += 1


class RssPeak:
    """The process's peak RSS while the block runs, sampled in a thread."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self.before = self.peak = self._process.memory_info().rss
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(RSS_SAMPLE_S):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


# --- the fleet ----------------------------------------------------------------------------------


@dataclass
class Fleet:
    env: kube.KubeTestEnv
    admin: AsyncClient
    runtime: KubernetesRuntime
    lifecycle: InstanceLifecycle
    owner: asyncpg.Pool
    closed_port: int
    nodes: int = 0
    running: int = 0
    stopped: int = 0

    @property
    def tenants(self) -> int:
        return self.running + self.stopped

    async def ensure_nodes(self, tenants: int) -> None:
        """Room for every tenant's CPU request (the default plan's, 1 CPU) plus a spare."""
        cpus = (
            objects.DEFAULT_CPUS
            if self.lifecycle.limits.cpus is None
            else self.lifecycle.limits.cpus
        )
        wanted = max(2, math.ceil(tenants * cpus / (NODE_CPUS * 0.9)) + 1)
        while self.nodes < wanted:
            await kube.add_kwok_node(self.admin, f"{NODE_PREFIX}{self.nodes:03d}")
            self.nodes += 1

    async def register(self, count: int, config: FleetConfig) -> float:
        began = time.perf_counter()
        start = self.tenants
        slots = asyncio.Semaphore(config.register_concurrency)

        async def one(index: int) -> None:
            # Spread evenly: tenant i is stopped when the share's running total steps up.
            share = config.stopped_share
            stopped = math.floor((index + 1) * share) > math.floor(index * share)
            async with slots:
                await self._tenant(index, stopped=stopped)

        await asyncio.gather(*(one(i) for i in range(start, start + count)))
        await self._wait_pods(config.pods_within_s)
        return time.perf_counter() - began

    async def quiet(self, metrics: ServerMetrics, within: float = 180.0) -> float:
        """Wait until the controllers are done with the new tenants (the namespace's
        ServiceAccount and ConfigMap, the ReplicaSets' status): so few reads a second that
        the pass's count is the reconciler's. Returns the seconds waited."""
        began = time.monotonic()
        last = _reads(await metrics.requests())
        while time.monotonic() - began < within:
            await asyncio.sleep(QUIET_WINDOW_S)
            now = _reads(await metrics.requests())
            if now - last <= QUIET_READS:
                break
            last = now
        return time.monotonic() - began

    async def _tenant(self, index: int, *, stopped: bool) -> None:
        slug = f"{SLUG_PREFIX}{index:04d}"
        tenant_id = uuid.UUID(
            str(
                await self.owner.fetchval(
                    "INSERT INTO tenants (slug, name) VALUES ($1, $2) RETURNING id",
                    slug,
                    f"Fleet tenant {index}",
                )
            )
        )
        await kube.static_volume(
            self.admin,
            STORAGE_CLASS,
            f"pv-{slug}",
            (self.runtime.layout.namespace(slug), objects.CLAIM),
            size=self.runtime.layout.storage,
            reclaim="Delete",
        )
        life = self.lifecycle
        desired = DesiredState.STOPPED if stopped else DesiredState.RUNNING
        async with life.db.transaction(STAFF) as session:
            repo = InstanceRepository(session)
            row = await repo.insert(
                tenant_id,
                runtime=life.runtime.name,
                version=life.version,
                templates=[],
                desired=desired,
            )
            assert row is not None
            sealed = life.secrets.generate(tenant_id, slug)
            api_key = life.secrets.seal(tenant_id, SecretField.API_KEY, uuid.uuid4().hex)
            row = await repo.update(
                row, step=Step.SECRETS, api_key_ciphertext=api_key, **sealed.columns()
            )
        # The lifecycle's own create step: the same spec, env and stored handle.
        row, handle = await life._create(row)
        status = (
            await self.runtime.start(handle) if not stopped else await self.runtime.inspect(handle)
        )
        url = f"http://127.0.0.1:{self.closed_port}/{handle.instance_id}"
        async with life.db.transaction(STAFF) as session:
            fresh = await InstanceRepository(session).get(tenant_id)
            assert fresh is not None
            await InstanceRepository(session).update(
                fresh,
                step=Step.DONE,
                actual_state=ActualState.STOPPED if stopped else ActualState.RUNNING,
                url=url,
                editor_url=f"{url}/",
                last_health={"ok": True, "state": status.state.value, "url": url},
            )
        if stopped:
            self.stopped += 1
        else:
            self.running += 1

    async def _wait_pods(self, within: float) -> None:
        deadline = time.monotonic() + within
        labels = dict(self.runtime.layout.owned())
        while True:
            running = 0
            async for pod in self.admin.list(Pod, namespace="*", labels=labels):
                if pod.status is not None and pod.status.phase == "Running":
                    running += 1
            if running >= self.running:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {running} of {self.running} pods Running")
            await asyncio.sleep(1.0)


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _reads(requests: Counter[str]) -> int:
    return sum(v for k, v in requests.items() if k.split(" ")[0] in READ_VERBS)


def _cpu_of(pid: int) -> float:
    return tree_cpu(snapshot(), pid)


async def measure(
    fleet: Fleet, config: FleetConfig, metrics: ServerMetrics, count: ClientCount, register_s: float
) -> Pass:
    reconciler = Reconciler(fleet.lifecycle, concurrency=config.concurrency)
    api_pid = fleet.env.processes["kube-apiserver"].pid
    etcd_pid = fleet.env.processes["etcd"].pid
    before = await metrics.requests()
    calls = count.calls
    api0, etcd0 = _cpu_of(api_pid), _cpu_of(etcd_pid)
    with RssPeak() as rss:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        report = await reconciler.run()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    api1, etcd1 = _cpu_of(api_pid), _cpu_of(etcd_pid)
    client_calls = count.calls - calls
    after = await metrics.requests()
    delta = {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0) > 0}
    reads = _reads(Counter(delta))
    peak_traced = None
    if config.tracemalloc:
        tracemalloc.start()
        try:
            await reconciler.run()
            peak_traced = tracemalloc.get_traced_memory()[1] / 2**20
        finally:
            tracemalloc.stop()
    return Pass(
        tenants=fleet.tenants,
        running=fleet.running,
        stopped=fleet.stopped,
        nodes=fleet.nodes,
        wall_s=round(wall, 3),
        cpu_s=round(cpu, 3),
        rss_before_mb=round(rss.before / 2**20, 1),
        rss_peak_mb=round(rss.peak / 2**20, 1),
        tracemalloc_peak_mb=round(peak_traced, 1) if peak_traced is not None else None,
        server_reads=reads,
        server_all=sum(delta.values()),
        client_calls=client_calls,
        server_by_call=dict(sorted(delta.items(), key=lambda kv: -kv[1])),
        apiserver_cpu_s=round(api1 - api0, 3),
        etcd_cpu_s=round(etcd1 - etcd0, 3),
        counts=dict(report.counts),
        register_s=round(register_s, 1),
    )


async def _clean_rows(owner: asyncpg.Pool) -> None:
    tenants = "SELECT id FROM tenants WHERE slug LIKE $1"
    await owner.execute(
        f"DELETE FROM n8n_instances WHERE tenant_id IN ({tenants})", f"{SLUG_PREFIX}%"
    )
    await owner.execute("DELETE FROM tenants WHERE slug LIKE $1", f"{SLUG_PREFIX}%")


async def _clean_cluster(admin: AsyncClient, runtime: KubernetesRuntime) -> None:
    for handle in await runtime.list_managed():
        await runtime.remove(handle)
    async for volume in admin.list(PersistentVolume):
        name = volume.metadata.name if volume.metadata else None
        if name and name.startswith(f"pv-{SLUG_PREFIX}"):
            await admin.delete(PersistentVolume, name)
    async for node in admin.list(Node):
        name = node.metadata.name if node.metadata else None
        if name and name.startswith(NODE_PREFIX):
            await admin.delete(Node, name)


async def run_benchmark(
    config: FleetConfig,
    endpoints: Endpoints,
    env: kube.KubeTestEnv,
    console: Console,
    *,
    clean_cluster: bool = False,
) -> FleetReport:
    """Measure on a running control plane and stack; the fleet's rows and tenants are
    deleted at the end, and with ``clean_cluster`` (a shared control plane) its namespaces,
    volumes and nodes too."""
    started = dt.datetime.now(dt.UTC)
    report = FleetReport(
        started_at=started.isoformat(timespec="seconds"),
        config={**asdict(config), "results_dir": str(config.results_dir)},
        machine={
            "nproc": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_at_start": os.getloadavg(),
        },
    )
    settings = Settings()
    db = Database(create_engine(endpoints.database_url, settings), settings)
    redis = Redis.from_url(endpoints.redis_url)
    http = httpx.AsyncClient(timeout=httpx.Timeout(10.0))
    owner = await asyncpg.create_pool(
        endpoints.migrations_database_url.replace("postgresql+asyncpg://", "postgresql://"),
        min_size=1,
        max_size=4,
    )
    config_file = KubeConfig.from_file(env.kubeconfig)
    admin = AsyncClient(config=config_file, field_manager="zixly-bench")
    client = AsyncClient(config=config_file, field_manager=FIELD_MANAGER)
    metrics = ServerMetrics(env)
    try:
        layout = objects.ClusterLayout(
            prefix="zf-", deployment="fleet", storage_class=STORAGE_CLASS
        )
        runtime = KubernetesRuntime(client, layout)
        keyring = Keyring.parse(key_entry("fleet", os.urandom(32)))
        lifecycle = build_lifecycle(settings, db, redis, http, runtime, keyring)
        fleet = Fleet(env, admin, runtime, lifecycle, owner, _closed_port())
        report.health_probe = (
            "KWOK pods run no n8n: a running tenant's URL is a closed loopback port "
            f"(127.0.0.1:{fleet.closed_port}), so the reconciler's readiness probe is refused at "
            "once and recorded in last_health (counted 'unhealthy'); stopped tenants are "
            "inspected only ('ok')"
        )
        count = ClientCount(client)
        await kube.local_storage_class(admin, STORAGE_CLASS)
        for size in config.sizes:
            more = size - fleet.tenants
            with console.status(
                f"registering {more} tenants (to {size}) and waiting for their pods"
            ):
                await fleet.ensure_nodes(size)
                register_s = await fleet.register(more, config)
            with console.status("waiting for the controllers to settle"):
                await fleet.quiet(metrics)
            with console.status(f"reconciling {size} tenants"):
                result = await measure(fleet, config, metrics, count, register_s)
            report.passes.append(result)
            console.print(
                f"{size} tenants: pass {result.wall_s:.2f} s, {result.per_tenant(result.server_reads):.2f} API reads per tenant, worker CPU {result.cpu_s:.2f} s"
            )
    finally:
        with console.status("removing the fleet"):
            if clean_cluster:
                await _clean_cluster(admin, runtime)
            await _clean_rows(owner)
            await metrics.close()
            await client.close()
            await admin.close()
            await owner.close()
            await http.aclose()
            await redis.aclose()
            await db.dispose()
    print_report(report, console)
    path = report.write(config.results_dir, started.strftime("%Y%m%dT%H%M%SZ"))
    console.print(f"results: {path}", soft_wrap=True)
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fleet", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help=f"sizes {QUICK.sizes} (a smoke test)")
    parser.add_argument(
        "--sizes", help="comma-separated tenant counts, ascending (default 100,1000)"
    )
    parser.add_argument(
        "--stopped-share", type=float, help="share of tenants desired STOPPED (0.25)"
    )
    parser.add_argument(
        "--no-tracemalloc", action="store_true", help="skip the second, traced pass"
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    return parser


def config_from(args: argparse.Namespace) -> FleetConfig:
    config = QUICK if args.quick else FleetConfig()
    chosen: dict[str, Any] = {"results_dir": args.results_dir, "stopped_share": args.stopped_share}
    if args.sizes:
        chosen["sizes"] = tuple(sorted(int(s) for s in args.sizes.split(",")))
    if args.no_tracemalloc:
        chosen["tracemalloc"] = False
    return replace(config, **{k: v for k, v in chosen.items() if v is not None})


def main(argv: Sequence[str] | None = None) -> int:
    config = config_from(build_parser().parse_args(argv))
    console = make_console()
    missing = kube.missing_binaries()
    if missing:
        console.print(
            f"[red]the control plane is not built[/] ({', '.join(missing)}): run scripts/ci-setup-kube.sh"
        )
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="zixly-bench-fleet-"))
    try:
        with console.status("starting the Kubernetes control plane"):
            env = kube.KubeTestEnv(workdir / "kube")
            env.start()
        try:
            run(
                on_embedded_stack(
                    workdir / "stack", console, lambda e: run_benchmark(config, e, env, console)
                )
            )
        finally:
            env.stop()
    except KeyboardInterrupt:
        return interrupted(console, "the control plane")
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
