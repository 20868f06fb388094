"""A job whose worker is killed is taken up by another worker within seconds of its lease.

Real arq worker processes (the real ``WorkerSettings``, crons off) run a provision job; the
first is SIGKILLed mid-step (n8n started, waiting for it to become ready), then two more are
started at once. The job must complete, resumed from the recorded step, run by exactly one
of them, within a few seconds of the lease running out (before the lease, arq left such a
job alone for its whole timeout plus ten seconds: fifteen minutes).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from arq import create_pool
from arq.connections import RedisSettings

from tests.provisioning.conftest import READY_WITHIN
from tests.provisioning.instance_support import SCHEDULE, SCHEDULE_NAME, LifecycleEnv
from zixly.core.queue import deserialize, serialize
from zixly.embedded.stack import Endpoints
from zixly.provisioning import enqueue
from zixly.provisioning.instances import ActualState, Step
from zixly.provisioning.operations import Operation

ROOT = Path(__file__).resolve().parents[2]
LEASE = 5.0
TAKEN_UP_WITHIN = 4.0  # seconds after the lease ran out (the workers poll every 0.2 s)


class Workers:
    """Worker processes started by the test (ended by their own pid only)."""

    def __init__(self, environ: dict[str, str], logs: Path) -> None:
        self.environ = environ
        self.logs = logs
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.provisioning.worker_process"],
            cwd=ROOT,
            env=self.environ,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.started:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def workers(env: LifecycleEnv, endpoints: Endpoints, tmp_path: Path) -> Iterator[Workers]:
    queue = f"zixly:test-queue:{uuid.uuid4().hex}"
    environ = {
        **os.environ,
        "ZIXLY_DATA_DIR": str(env.runtime.root.parent),  # the module's process runtime
        "ZIXLY_DATABASE_URL": endpoints.database_url,
        "ZIXLY_MIGRATIONS_DATABASE_URL": endpoints.migrations_database_url,
        "ZIXLY_REDIS_URL": endpoints.redis_url,
        "ZIXLY_ENCRYPTION_KEYS": env.keys,
        "ZIXLY_N8N_READY_TIMEOUT_SECONDS": str(READY_WITHIN),
        "ZIXLY_JOB_LEASE_SECONDS": str(LEASE),
        "ZIXLY_TEST_QUEUE": queue,
    }
    built = Workers(environ, tmp_path)
    yield built
    built.stop_all()


async def _wait_for(condition: object, within: float) -> None:
    deadline = time.monotonic() + within
    while not await condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_a_killed_workers_job_is_resumed_by_one_other_worker_within_seconds(
    env: LifecycleEnv, endpoints: Endpoints, workers: Workers
) -> None:
    tenant = await env.tenant("lease")
    pool = await create_pool(
        RedisSettings.from_dsn(endpoints.redis_url),
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name=workers.environ["ZIXLY_TEST_QUEUE"],
    )
    try:
        await enqueue.enqueue(pool, Operation.PROVISION, tenant, templates=[SCHEDULE])
    finally:
        await pool.aclose()
    first = workers.start("first")

    async def started() -> bool:
        return ("STEP", "STARTED", "step STARTED done") in await env.events(tenant)

    await _wait_for(started, READY_WITHIN)
    first.send_signal(signal.SIGKILL)  # mid-step: waiting for n8n to become ready
    killed_at = time.time()
    first.wait()
    for name in ("second", "third"):
        workers.start(name)

    async def done() -> bool:
        row = await env.row(tenant)
        return row.actual_state is ActualState.RUNNING and row.step is Step.DONE

    await _wait_for(done, LEASE + READY_WITHIN)
    done_at = time.time()

    retried = await env.owner.fetch(
        "SELECT at, message FROM instance_events WHERE tenant_id = $1 AND kind = 'REPAIR' "
        "ORDER BY id",
        tenant,
    )
    # Exactly one other worker took the job up, as its second try, after the recorded step.
    assert [r["message"] for r in retried] == ["job retried (try 2); resuming after step STARTED"]
    taken_up = retried[0]["at"].timestamp() - killed_at
    print(
        f"\nlease {LEASE:.0f}s: job taken up {taken_up:.2f}s after the kill "
        f"({taken_up - LEASE:+.2f}s after the lease ran out), provisioned "
        f"{done_at - killed_at:.2f}s after the kill"
    )
    assert taken_up <= LEASE + TAKEN_UP_WITHIN
    events = await env.events(tenant)
    steps = [message for kind, _, message in events if kind == "STEP"]
    assert len(steps) == len(set(steps))  # no step was done twice (no double execution)
    assert [m for _, _, m in events].count("provisioned") == 1
    assert await env.workflows(tenant) == [(SCHEDULE_NAME, True)]
