"""The persisted instance lifecycle with real n8n processes, PostgreSQL and Redis.

Two tenants share the module: ``alpha`` is provisioned through a real arq worker (jobs
enqueued twice, run once), ``bravo`` directly through the lifecycle. The tests that change
alpha run in file order and end with its deprovisioning.
"""

from __future__ import annotations

import json
import uuid
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import pytest
from arq import Retry, create_pool
from arq.connections import RedisSettings
from arq.jobs import Job
from arq.worker import create_worker

from tests.conftest import make_settings, plain_dsn
from tests.provisioning.conftest import READY_WITHIN
from tests.provisioning.instance_support import (
    N8N_VERSION,
    SCHEDULE,
    SCHEDULE_NAME,
    WEBHOOK,
    WEBHOOK_NAME,
    LifecycleEnv,
    lifecycle_env,
)
from zixly.container import Services
from zixly.core.errors import ConflictError, NotFoundError, ValidationError
from zixly.core.queue import deserialize, serialize
from zixly.core.settings import Settings
from zixly.embedded.stack import Endpoints
from zixly.provisioning import enqueue, jobs
from zixly.provisioning.instance_events import channel
from zixly.provisioning.instances import ActualState, DesiredState, Step
from zixly.provisioning.n8n.errors import N8nUnavailableError
from zixly.provisioning.operations import InstanceBusyError, Operation, handle_of
from zixly.provisioning.preconditions import VersionUnavailableError
from zixly.provisioning.runtimes.base import VERSION_LABEL, RuntimeState
from zixly.provisioning.runtimes.distributions import N8nDistribution
from zixly.provisioning.runtimes.errors import InstanceNotFoundError, RuntimeFailure
from zixly.provisioning.runtimes.process import ProcessRuntime, installed_only
from zixly.provisioning.secrets import InstanceSecretBox, SecretField, binding
from zixly.security.crypto import CIPHERTEXT, DecryptionError
from zixly.workers.settings import WorkerSettings

BROKEN = f"{N8N_VERSION}-broken"  # an "n8n" that exits at once
ALIAS = f"{N8N_VERSION}-next"  # the real n8n under another version name: a healthy upgrade
PROVISION_EVENTS = [
    ("REQUESTED", None, "provision requested"),
    ("TRANSITION", None, "provisioning"),
    *[
        ("STEP", step, f"step {step} done")
        for step in ("SECRETS", "CREATED", "STARTED", "READY", "BOOTSTRAPPED", "TEMPLATES")
    ],
    ("TRANSITION", "DONE", "provisioned"),
]


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory, n8n_dist: N8nDistribution) -> ProcessRuntime:
    """A process runtime that also knows a broken build and an alias of the real one."""
    data = tmp_path_factory.mktemp("lifecycle")
    script = data / "broken-n8n.js"
    script.write_text("process.stderr.write('this n8n build is broken\\n'); process.exit(3);\n")
    broken = N8nDistribution(node_bin=n8n_dist.node_bin, n8n_bin=script, version=BROKEN, root=data)

    def resolve(version: str) -> N8nDistribution:
        if version == BROKEN:
            return broken
        if version == ALIAS:
            return replace(n8n_dist, version=ALIAS)
        return installed_only(version)

    return ProcessRuntime(data, distribution=resolve)


@pytest.fixture(scope="module")
async def env(
    services: Services,
    runtime: ProcessRuntime,
    n8n_http: httpx.AsyncClient,
    owner: asyncpg.Connection,
    settings: Settings,
) -> AsyncIterator[LifecycleEnv]:
    async with lifecycle_env(services, runtime, n8n_http, owner, settings) as built:
        yield built


@dataclass
class WorkerRun:
    tenant_id: uuid.UUID
    enqueued: list[Job | None]
    complete: int
    failed: int
    messages: list[dict[str, Any]]


@pytest.fixture(scope="module")
async def alpha(env: LifecycleEnv, endpoints: Endpoints) -> WorkerRun:
    """Provisioned by a real arq worker (WorkerSettings), the provision job enqueued twice."""
    tenant = await env.tenant("alpha")
    worker_settings = make_settings(
        env.runtime.root.parent,
        encryption_keys=env.keys,
        n8n_ready_timeout_seconds=READY_WITHIN,
    )
    queue = f"zixly:test-queue:{uuid.uuid4().hex}"
    pool = await create_pool(
        RedisSettings.from_dsn(endpoints.redis_url),
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name=queue,
    )
    pubsub = env.redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(channel(tenant))
    try:
        enqueued = [
            await enqueue.enqueue(pool, Operation.PROVISION, tenant, templates=[SCHEDULE])
            for _ in range(2)
        ]
        worker = create_worker(
            WorkerSettings,  # type: ignore[arg-type]
            redis_pool=pool,
            queue_name=queue,
            burst=True,
            handle_signals=False,
            poll_delay=0.1,
            cron_jobs=[],
            ctx={
                "settings": worker_settings,
                "database_url": endpoints.database_url,
                "runtime": env.runtime,  # the module's (it stops what it started)
            },
        )
        try:
            await worker.main()
        finally:
            with warnings.catch_warnings():  # arq closes its pool with redis-py's old close()
                warnings.filterwarnings("ignore", "Call to deprecated close", DeprecationWarning)
                await worker.close()
        messages = []
        quiet = 0  # (a None is also what a skipped subscribe confirmation reads as)
        while quiet < 3:
            raw = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.3)
            quiet = quiet + 1 if raw is None else 0
            if raw is not None:
                messages.append(json.loads(raw["data"]))
    finally:
        await pubsub.aclose()
    return WorkerRun(tenant, enqueued, worker.jobs_complete, worker.jobs_failed, messages)


@pytest.fixture(scope="module")
async def bravo(env: LifecycleEnv) -> uuid.UUID:
    """Provisioned directly through the lifecycle, without templates."""
    tenant = await env.tenant("bravo")
    row = await env.lifecycle().provision(tenant)
    assert row.actual_state is ActualState.RUNNING
    return tenant


# --- provisioning ------------------------------------------------------------------------------


async def test_the_worker_provisions_once_end_to_end(env: LifecycleEnv, alpha: WorkerRun) -> None:
    first, second = alpha.enqueued
    assert first is not None and first.job_id == f"provision:{alpha.tenant_id}"
    assert second is None  # the same deterministic id while queued: not enqueued again
    assert (alpha.complete, alpha.failed) == (1, 0)

    row = await env.row(alpha.tenant_id)
    assert (row.desired_state, row.actual_state, row.step) == (
        DesiredState.RUNNING,
        ActualState.RUNNING,
        Step.DONE,
    )
    assert (row.runtime, row.version, row.last_error) == ("process", N8N_VERSION, None)
    assert row.templates == [SCHEDULE]
    status = await env.runtime.inspect(handle_of(row))  # type: ignore[arg-type]
    assert status.state is RuntimeState.RUNNING and status.url == row.url
    assert row.editor_url == f"{row.url}/"
    assert row.last_health is not None and row.last_health["ok"] is True
    assert await env.instances_of(alpha.tenant_id) == [str(alpha.tenant_id)]
    assert await env.workflows(alpha.tenant_id) == [(SCHEDULE_NAME, True)]

    assert await env.events(alpha.tenant_id) == PROVISION_EVENTS
    published = [(m["kind"], m["step"], m["message"]) for m in alpha.messages]
    assert published == PROVISION_EVENTS
    assert {m["tenant_id"] for m in alpha.messages} == {str(alpha.tenant_id)}
    assert alpha.messages[-1]["details"] == {
        "actual_state": "RUNNING",
        "desired_state": "RUNNING",
        "from": "PROVISIONING",
        "to": "RUNNING",
    }


async def test_secrets_are_stored_as_bound_ciphertext_only(
    env: LifecycleEnv, alpha: WorkerRun, n8n_http: httpx.AsyncClient
) -> None:
    raw = await env.owner.fetchrow(
        "SELECT i.*, i::text AS whole FROM n8n_instances i WHERE tenant_id = $1", alpha.tenant_id
    )
    assert raw is not None
    box = InstanceSecretBox(env.keyring)
    row = await env.row(alpha.tenant_id)
    plaintexts = {}
    for field in SecretField:
        stored = raw[field.column]
        assert CIPHERTEXT.match(stored) and stored.split(".")[1] == "test1"
        secret = box.open(row, field)
        assert secret is not None
        plaintexts[field] = secret.reveal()
        assert plaintexts[field] not in raw["whole"]
    events = await env.owner.fetchval(
        "SELECT string_agg(e::text, ' ') FROM instance_events e WHERE tenant_id = $1",
        alpha.tenant_id,
    )
    assert not any(p in events for p in plaintexts.values())

    # They are the live secrets: n8n runs with the key, the owner logs in, the key is accepted.
    status = await env.runtime.inspect(handle_of(row))  # type: ignore[arg-type]
    assert status.pid is not None
    environ = psutil.Process(status.pid).environ()
    assert environ["N8N_ENCRYPTION_KEY"] == plaintexts[SecretField.ENCRYPTION_KEY]
    assert row.owner_email is not None
    client = (await env.api(alpha.tenant_id)).with_api_key(plaintexts[SecretField.API_KEY])
    assert await client.login(row.owner_email, plaintexts[SecretField.OWNER_PASSWORD])
    assert len(await client.all_workflows()) == 1

    # Copied to another field, the value does not decrypt.
    with pytest.raises(DecryptionError):
        env.keyring.decrypt(
            raw["api_key_ciphertext"], binding(alpha.tenant_id, SecretField.OWNER_PASSWORD)
        )


async def test_two_tenants_never_share_secrets(
    env: LifecycleEnv, alpha: WorkerRun, bravo: uuid.UUID
) -> None:
    box = InstanceSecretBox(env.keyring)
    a, b = await env.row(alpha.tenant_id), await env.row(bravo)
    for field in SecretField:
        secret_a, secret_b = box.open(a, field), box.open(b, field)
        assert secret_a is not None and secret_b is not None
        assert secret_a.reveal() != secret_b.reveal()
        # bravo's row holding alpha's ciphertext would not decrypt as bravo's secret
        with pytest.raises(DecryptionError):
            env.keyring.decrypt(getattr(a, field.column), binding(bravo, field))
    assert a.owner_email != b.owner_email
    assert a.url != b.url
    assert await env.workflows(bravo) == []  # provisioned without templates


async def test_the_app_role_reads_its_own_instance_without_secrets(
    env: LifecycleEnv, alpha: WorkerRun, bravo: uuid.UUID, endpoints: Endpoints
) -> None:
    conn = await asyncpg.connect(plain_dsn(endpoints.database_url))
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(bravo))
            seen = await conn.fetch("SELECT tenant_id, actual_state FROM n8n_instances")
            assert [(r["tenant_id"], r["actual_state"]) for r in seen] == [(bravo, "RUNNING")]
            tenants = await conn.fetch("SELECT DISTINCT tenant_id FROM instance_events")
            assert [r["tenant_id"] for r in tenants] == [bravo]
        for statement in (
            "SELECT api_key_ciphertext FROM n8n_instances",
            "SELECT * FROM n8n_instances",
            "UPDATE n8n_instances SET desired_state = 'STOPPED'",
            "INSERT INTO instance_events (tenant_id, kind, message) "
            f"VALUES ('{bravo}', 'STEP', 'forged')",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with conn.transaction():
                    await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(bravo))
                    await conn.execute(statement)
    finally:
        await conn.close()


# --- operations ----------------------------------------------------------------------------------


async def test_stop_start_suspend_resume_and_restart(env: LifecycleEnv, bravo: uuid.UUID) -> None:
    lifecycle = env.lifecycle()
    handle = handle_of(await env.row(bravo))
    assert handle is not None

    async def states() -> tuple[str, str, str]:
        row = await env.row(bravo)
        observed = (await env.runtime.inspect(handle)).state
        return row.desired_state.value, row.actual_state.value, observed.value

    await lifecycle.stop(bravo)
    assert await states() == ("STOPPED", "STOPPED", "STOPPED")
    await lifecycle.start(bravo)
    assert await states() == ("RUNNING", "RUNNING", "RUNNING")
    await lifecycle.suspend(bravo)
    assert await states() == ("SUSPENDED", "SUSPENDED", "STOPPED")
    with pytest.raises(ConflictError, match="desired state is SUSPENDED"):
        await lifecycle.start(bravo)  # a billing hold is left only by resume
    with pytest.raises(ConflictError):
        await lifecycle.stop(bravo)
    await lifecycle.resume(bravo)
    assert await states() == ("RUNNING", "RUNNING", "RUNNING")
    before = (await env.runtime.inspect(handle)).pid
    await lifecycle.restart(bravo)
    after = await env.runtime.inspect(handle)
    assert after.state is RuntimeState.RUNNING and after.pid != before
    assert await env.api(bravo)  # still answering with the stored key
    await (await env.api(bravo)).all_workflows()

    transitions = [message for kind, _, message in await env.events(bravo) if kind == "TRANSITION"][
        -4:
    ]
    assert transitions == ["stopped", "running", "suspended", "running"]


async def test_deploy_templates_adds_and_activates_without_duplicates(
    env: LifecycleEnv, alpha: WorkerRun
) -> None:
    lifecycle = env.lifecycle()
    row = await lifecycle.deploy_templates(alpha.tenant_id, [WEBHOOK])
    assert row.templates == [SCHEDULE, WEBHOOK]
    again = await lifecycle.deploy_templates(alpha.tenant_id, [Path(WEBHOOK)])
    assert again.templates == [SCHEDULE, WEBHOOK]
    assert await env.workflows(alpha.tenant_id) == [(SCHEDULE_NAME, True), (WEBHOOK_NAME, True)]
    deployed = [
        message for kind, step, message in await env.events(alpha.tenant_id) if step == "TEMPLATES"
    ]
    assert deployed[-2:] == ["templates deployed", "templates deployed"]
    details = await env.owner.fetch(
        "SELECT details FROM instance_events WHERE tenant_id = $1 AND message = "
        "'templates deployed' ORDER BY id",
        alpha.tenant_id,
    )
    assert [json.loads(d["details"])["created"] for d in details] == [[WEBHOOK_NAME], []]
    # The webhook workflow is live.
    response = await env.http.post(f"{row.url}/webhook/zixly-test-hook", json={"ping": 1})
    assert response.status_code == 200


async def test_failed_upgrades_roll_back_to_the_old_version_with_data_kept(
    env: LifecycleEnv, alpha: WorkerRun
) -> None:
    lifecycle = env.lifecycle()
    before = await (await env.api(alpha.tenant_id)).all_workflows()
    handle = handle_of(await env.row(alpha.tenant_id))
    assert handle is not None
    for version, reason in ((BROKEN, "exited"),):
        row = await lifecycle.upgrade(alpha.tenant_id, version)
        assert (row.actual_state, row.version, row.target_version) == (
            ActualState.RUNNING,
            N8N_VERSION,
            None,
        )
        assert row.last_error is not None
        assert row.last_error.startswith(
            f"upgrade to {version} failed (rolled back to {N8N_VERSION})"
        )
        assert reason in row.last_error
        status = await env.runtime.inspect(handle)
        assert status.state is RuntimeState.RUNNING
        labels = {h.instance_id: h.labels for h in await env.runtime.list_managed()}
        assert labels[handle.instance_id][VERSION_LABEL] == N8N_VERSION
        after = await (await env.api(alpha.tenant_id)).all_workflows()
        assert [(w["id"], w["name"], w["active"]) for w in after] == [
            (w["id"], w["name"], w["active"]) for w in before
        ]
    logs = await env.runtime.logs(handle, tail=400)
    assert "this n8n build is broken" in logs  # the broken build did run
    messages = [m for _, _, m in await env.events(alpha.tenant_id)]
    assert f"upgrading {N8N_VERSION} -> {BROKEN}" in messages
    assert messages.count(f"rolled back to {N8N_VERSION}") == 1


async def test_upgrade_to_a_version_not_installed_is_refused_before_anything_stops(
    env: LifecycleEnv, alpha: WorkerRun
) -> None:
    """Checked at the request (a typed error, nothing recorded) and again when the job runs
    (a request older than the runtime's state): the instance keeps running untouched."""
    lifecycle = env.lifecycle()
    current = await env.row(alpha.tenant_id)
    handle = handle_of(current)
    assert handle is not None
    before = await env.runtime.inspect(handle)
    events = len(await env.events(alpha.tenant_id))
    with pytest.raises(VersionUnavailableError) as raised:
        await lifecycle.upgrade(alpha.tenant_id, "9.9.9")
    assert raised.value.code == "N8N_VERSION_UNAVAILABLE"
    assert raised.value.details["field"] == "version"
    assert len(await env.events(alpha.tenant_id)) == events  # nothing was requested

    await env.owner.execute(  # as if requested while 9.9.9 was still installed
        "UPDATE n8n_instances SET target_version = '9.9.9' WHERE tenant_id = $1", alpha.tenant_id
    )
    row = await lifecycle.converge(alpha.tenant_id)
    assert (row.actual_state, row.version, row.target_version) == (
        ActualState.RUNNING,
        current.version,
        None,
    )
    assert row.last_error is not None
    assert row.last_error.startswith(f"upgrade to 9.9.9 refused, still running {current.version}")
    after = await env.runtime.inspect(handle)
    assert (after.state, after.pid, after.started_at) == (
        RuntimeState.RUNNING,
        before.pid,
        before.started_at,
    )
    messages = [m for _, _, m in await env.events(alpha.tenant_id)][events:]
    assert not [m for m in messages if m.startswith("upgrading")]


async def test_upgrade_to_a_healthy_version_switches_and_keeps_data(
    env: LifecycleEnv, alpha: WorkerRun
) -> None:
    before = await env.workflows(alpha.tenant_id)
    row = await env.lifecycle().upgrade(alpha.tenant_id, ALIAS)
    assert (row.actual_state, row.version, row.target_version, row.last_error) == (
        ActualState.RUNNING,
        ALIAS,
        None,
        None,
    )
    handle = handle_of(row)
    assert handle is not None
    labels = {h.instance_id: h.labels for h in await env.runtime.list_managed()}
    assert labels[handle.instance_id][VERSION_LABEL] == ALIAS
    assert await env.workflows(alpha.tenant_id) == before
    assert (await env.events(alpha.tenant_id))[-1] == ("TRANSITION", None, f"upgraded to {ALIAS}")
    # Asking for the version it runs is not an upgrade.
    again = await env.lifecycle().upgrade(alpha.tenant_id, ALIAS)
    assert again.lock_version == row.lock_version + 1  # only the health record was written


async def test_deprovision_exports_the_workflows_then_removes_the_instance(
    env: LifecycleEnv, alpha: WorkerRun, bravo: uuid.UUID
) -> None:
    api = await env.api(alpha.tenant_id)
    live = {str(w["id"]): w for w in await api.all_workflows()}
    handle = handle_of(await env.row(alpha.tenant_id))
    assert handle is not None and len(live) == 2

    row = await env.lifecycle().deprovision(alpha.tenant_id)
    assert (row.desired_state, row.actual_state, row.step) == (
        DesiredState.ABSENT,
        ActualState.DEPROVISIONED,
        Step.REMOVED,
    )
    assert row.encryption_key_ciphertext is None and row.api_key_ciphertext is None
    assert row.owner_password_ciphertext is None and row.runtime_handle is None
    assert (await env.runtime.inspect(handle)).state is RuntimeState.MISSING
    assert not env.runtime.instance_dir(handle.instance_id).exists()
    assert await env.instances_of(alpha.tenant_id) == []

    exports = await env.owner.fetch(
        "SELECT reason, bundle FROM workflow_exports WHERE tenant_id = $1", alpha.tenant_id
    )
    assert [e["reason"] for e in exports] == ["DEPROVISION"]
    bundle = json.loads(exports[0]["bundle"])
    assert bundle["format"] == "zixly.n8n-bundle" and bundle["n8nVersion"] == ALIAS
    exported = {str(w["id"]): w for w in bundle["workflows"]}
    assert exported.keys() == live.keys()
    for workflow_id, workflow in exported.items():
        assert workflow["name"] == live[workflow_id]["name"]
        assert workflow["nodes"] == live[workflow_id]["nodes"]
        assert workflow["connections"] == live[workflow_id]["connections"]
    events = await env.events(alpha.tenant_id)
    tail = [(kind, step) for kind, step, _ in events][-4:]
    assert tail == [
        ("TRANSITION", None),
        ("EXPORT", "EXPORTED"),
        ("STEP", "REMOVED"),
        ("TRANSITION", None),
    ]
    # n8n itself takes the export back: import one into bravo's instance.
    imported = await (await env.api(bravo)).create_workflow(bundle["workflows"][0])
    assert imported["name"] == bundle["workflows"][0]["name"]
    # Deprovisioned is final until provisioned again; repeating is a no-op.
    assert (await env.lifecycle().deprovision(alpha.tenant_id)).lock_version == row.lock_version
    with pytest.raises(ConflictError):
        await env.lifecycle().start(alpha.tenant_id)


# --- requests that are refused before any work ----------------------------------------------------


async def test_requests_are_validated_before_anything_runs(
    env: LifecycleEnv, bravo: uuid.UUID, tmp_path: Path
) -> None:
    lifecycle = env.lifecycle()
    with pytest.raises(NotFoundError):
        await lifecycle.provision(uuid.uuid4())  # no such tenant
    with pytest.raises(NotFoundError):
        await lifecycle.start(uuid.uuid4())  # no instance
    with pytest.raises(ValidationError) as bad_version:
        await lifecycle.upgrade(bravo, "latest; rm -rf /")
    assert bad_version.value.extensions["field"] == "version"
    with pytest.raises(ValidationError, match="readable JSON"):
        await lifecycle.deploy_templates(bravo, [tmp_path / "missing.json"])
    with pytest.raises(ValidationError, match="unique"):
        await lifecycle.deploy_templates(bravo, [SCHEDULE, {"name": SCHEDULE_NAME, "nodes": []}])
    with pytest.raises(ValidationError, match="needs a name"):
        await lifecycle.deploy_templates(bravo, [{"nodes": []}])
    pending = await env.tenant("pending")
    await lifecycle.request(pending, Operation.PROVISION)  # recorded, not run
    with pytest.raises(ConflictError, match="still being provisioned"):
        await lifecycle.upgrade(pending, ALIAS)
    row = await lifecycle.deprovision(pending)  # nothing was created: nothing to export
    assert row.actual_state is ActualState.DEPROVISIONED
    bundle = await env.owner.fetchval(
        "SELECT bundle FROM workflow_exports WHERE tenant_id = $1", pending
    )
    assert json.loads(bundle)["workflows"] == []


# --- jobs and the worker's configuration -----------------------------------------------------------


async def test_a_busy_instance_makes_the_job_retry_with_backoff(
    env: LifecycleEnv, bravo: uuid.UUID
) -> None:
    lifecycle = env.lifecycle()
    async with lifecycle.lock(bravo):
        with pytest.raises(Retry) as retried:
            await jobs.start_instance({"lifecycle": lifecycle, "job_try": 1}, str(bravo))
        assert retried.value.defer_score == 5_000
        with pytest.raises(InstanceBusyError):  # out of tries: the job fails
            await jobs.start_instance(
                {"lifecycle": lifecycle, "job_try": jobs.MAX_TRIES}, str(bravo)
            )
    result = await jobs.start_instance({"lifecycle": lifecycle, "job_try": 1}, str(bravo))
    assert result == {
        "tenant_id": str(bravo),
        "desired_state": "RUNNING",
        "actual_state": "RUNNING",
        "step": "DONE",
        "version": N8N_VERSION,
        "last_error": None,
    }


def test_backoff_and_transient_errors() -> None:
    assert [jobs.backoff(n) for n in (1, 2, 3, 7, 20)] == [5, 10, 20, 300, 300]
    assert jobs.is_transient(InstanceBusyError("busy"))
    assert jobs.is_transient(N8nUnavailableError("down"))
    assert jobs.is_transient(RuntimeFailure("lock held"))
    assert jobs.is_transient(TimeoutError())
    assert not jobs.is_transient(InstanceNotFoundError("gone"))
    assert not jobs.is_transient(ValidationError("bad"))
    assert not jobs.is_transient(ConflictError("suspended"))


def test_job_ids_are_deterministic() -> None:
    tenant = uuid.UUID(int=7)
    assert enqueue.job_id(Operation.PROVISION, tenant) == f"provision:{tenant}"
    assert enqueue.job_id(Operation.UPGRADE, tenant, "1.2.3") == f"upgrade:{tenant}:1.2.3"
    assert enqueue.templates_digest([SCHEDULE]) == enqueue.templates_digest([SCHEDULE])
    assert enqueue.templates_digest([SCHEDULE]) != enqueue.templates_digest([WEBHOOK])


def test_jobs_travel_as_json_and_failures_as_type_and_safe_message() -> None:
    payload = {"f": "provision_instance", "a": [str(uuid.UUID(int=1))], "k": {"templates": []}}
    assert deserialize(serialize(payload)) == payload
    failed = deserialize(serialize({"r": NotFoundError("no instance"), "s": False}))
    assert failed == {"r": {"error": "NotFoundError", "message": "no instance"}, "s": False}
    unexpected = deserialize(serialize({"r": KeyError("a secret value")}))
    assert unexpected == {"r": {"error": "KeyError", "message": ""}}
    with pytest.raises(TypeError):
        serialize({"r": object()})


def test_worker_settings_are_explicit() -> None:
    names = {f.name for f in WorkerSettings.functions}
    assert names == {job.__name__ for job in jobs.JOBS.values()} | {
        "rotate_encryption_keys",
        "deliver_alerts",
        "sync_integration",
    }
    assert all(
        f.keep_result_s == 0 and f.max_tries == jobs.MAX_TRIES for f in WorkerSettings.functions
    )
    crons = {c.name: c for c in WorkerSettings.cron_jobs}
    assert set(crons) == {
        "reconcile_instances",
        "refresh_expiring_tokens",
        "deliver_alerts_sweep",
        "monitor_sync_health",
        "purge_final_exports",
    }
    assert all(c.unique for c in crons.values())
    cron_job = crons["reconcile_instances"]
    runs = []
    moment = datetime(2026, 11, 28, 9, 30, 17)
    for _ in range(3):
        cron_job.calculate_next(moment)
        assert cron_job.next_run is not None
        runs.append(cron_job.next_run)
        moment = cron_job.next_run
    assert [r.strftime("%H:%M:%S") for r in runs] == ["09:31:00", "09:32:00", "09:33:00"]
    assert WorkerSettings.job_serializer is serialize
    assert WorkerSettings.job_deserializer is deserialize
