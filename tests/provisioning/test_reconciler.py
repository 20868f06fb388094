"""The reconciler repairs drift between the instance rows and the runtime (real n8n processes).

Jobs are "killed" after each provisioning step (a ``BaseException`` from a step hook, which
nothing records, like a worker dying); the reconciler then finishes the work. Each tenant of
this module is deprovisioned at the end of its test, so later passes see only live rows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import uuid
from datetime import UTC, datetime, timedelta

import psutil
import pytest

from tests.conftest import make_settings
from tests.provisioning.conftest import wait_for_state
from tests.provisioning.instance_support import (
    N8N_VERSION,
    SCHEDULE,
    SCHEDULE_NAME,
    Killed,
    LifecycleEnv,
    kill_after,
)
from zixly.cli.main import build_parser
from zixly.embedded.stack import Endpoints
from zixly.provisioning.instances import (
    PROVISION_STEPS,
    ActualState,
    DesiredState,
    InstanceRow,
    Step,
)
from zixly.provisioning.operations import Operation, handle_of
from zixly.provisioning.reconciler import Action, ReconcileReport, plan
from zixly.provisioning.runtimes.base import InstanceSpec, RuntimeState
from zixly.provisioning.runtimes.errors import NotInstalledError
from zixly.provisioning.secrets import InstanceSecretBox, SecretField
from zixly.workers.settings import reconcile_once

STEP_EVENTS = ["SECRETS", "CREATED", "STARTED", "READY", "BOOTSTRAPPED", "TEMPLATES"]


@pytest.fixture(scope="module")
async def steady(env: LifecycleEnv) -> uuid.UUID:
    tenant = await env.tenant("steady")
    await env.lifecycle().provision(tenant, templates=[SCHEDULE])
    return tenant


def repairs(report: ReconcileReport) -> dict[str, int]:
    return dict(report.counts)


def gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


# --- killed jobs are finished ------------------------------------------------------------------


@pytest.mark.parametrize("step", PROVISION_STEPS, ids=[s.value for s in PROVISION_STEPS])
async def test_provisioning_killed_after_any_step_is_finished_by_the_reconciler(
    env: LifecycleEnv, step: Step
) -> None:
    tenant = await env.tenant(f"killed-{step.value.lower()}")
    killer = env.lifecycle(on_step=kill_after(step))
    try:
        with pytest.raises(Killed):
            await killer.provision(tenant, templates=[SCHEDULE])
        killed = await env.row(tenant)
        done = step is Step.DONE
        assert killed.step is step
        assert killed.actual_state is (ActualState.RUNNING if done else ActualState.PROVISIONING)
        assert killed.last_error is None  # a dead job records nothing

        report = await env.reconciler().run(only=[tenant])
        assert repairs(report) == ({"ok": 1} if done else {"resumed_provisioning": 1})

        row = await env.row(tenant)
        assert (row.actual_state, row.step, row.last_error) == (
            ActualState.RUNNING,
            Step.DONE,
            None,
        )
        # The secrets made before the kill are the ones in use (never generated twice).
        assert row.encryption_key_ciphertext == killed.encryption_key_ciphertext
        assert row.owner_password_ciphertext == killed.owner_password_ciphertext
        assert await env.instances_of(tenant) == [str(tenant)]  # one instance, no orphan
        assert await env.workflows(tenant) == [(SCHEDULE_NAME, True)]  # not created twice
        events = await env.events(tenant)
        assert [s for kind, s, _ in events if kind == "STEP"] == STEP_EVENTS
        assert [m for kind, _, m in events if kind == "REPAIR"] == (
            []
            if done
            else [
                "reconciler: resumed_provisioning (desired RUNNING, actual PROVISIONING, "
                f"runtime {_runtime_state_after(step)})"
            ]
        )
    finally:
        await env.lifecycle().deprovision(tenant)
    assert await env.instances_of(tenant) == []


def _runtime_state_after(step: Step) -> str:
    if step in (Step.SECRETS,):
        return "MISSING"
    if step is Step.CREATED:
        return "STOPPED"
    return "RUNNING"


async def test_a_failing_step_is_recorded_without_secrets_and_retried_after_the_back_off(
    env: LifecycleEnv,
) -> None:
    tenant = await env.tenant("flaky")
    leaked: list[str] = []

    async def leaky_failure(tenant_id: uuid.UUID, done: Step) -> None:
        if done is Step.BOOTSTRAPPED:
            row = await env.row(tenant_id)
            password = InstanceSecretBox(env.keyring).open(row, SecretField.OWNER_PASSWORD)
            assert password is not None
            leaked.append(password.reveal())
            raise RuntimeError(f"owner password is {password.reveal()}")

    try:
        with pytest.raises(RuntimeError):
            await env.lifecycle(on_step=leaky_failure).provision(tenant, templates=[SCHEDULE])
        failed = await env.row(tenant)
        assert failed.actual_state is ActualState.FAILED
        assert failed.last_error == "step BOOTSTRAPPED failed: RuntimeError"
        everything = await env.owner.fetchval(
            "SELECT string_agg(e::text, ' ') || (SELECT i::text FROM n8n_instances i "
            "WHERE tenant_id = $1) FROM instance_events e WHERE tenant_id = $1",
            tenant,
        )
        assert leaked and leaked[0] not in everything
        assert ("ERROR", "BOOTSTRAPPED", "step BOOTSTRAPPED failed: RuntimeError") in (
            await env.events(tenant)
        )

        waiting = await env.reconciler(retry_failed_after=timedelta(hours=1)).run(only=[tenant])
        assert repairs(waiting) == {"backing_off": 1}
        assert (await env.row(tenant)).actual_state is ActualState.FAILED

        retried = await env.reconciler().run(only=[tenant])
        assert repairs(retried) == {"resumed_provisioning": 1}
        row = await env.row(tenant)
        assert (row.actual_state, row.step, row.last_error) == (
            ActualState.RUNNING,
            Step.DONE,
            None,
        )
        assert await env.workflows(tenant) == [(SCHEDULE_NAME, True)]
    finally:
        await env.lifecycle().deprovision(tenant)


async def test_what_cannot_be_repaired_stays_failed_with_the_reason(env: LifecycleEnv) -> None:
    tenant = await env.tenant("unfixable")
    try:
        with pytest.raises(NotInstalledError):
            await env.lifecycle().provision(tenant, version="9.9.9")
        row = await env.row(tenant)
        assert (row.actual_state, row.step) == (ActualState.FAILED, Step.CREATED)
        assert row.last_error is not None
        assert row.last_error.startswith(
            "step STARTED failed: N8N_NOT_INSTALLED: n8n 9.9.9 is not installed"
        )
        report = await env.reconciler().run(only=[tenant])
        assert repairs(report) == {"failed": 1}
        again = await env.row(tenant)
        assert again.actual_state is ActualState.FAILED and again.last_error == row.last_error
        assert await env.instances_of(tenant) == [str(tenant)]  # kept: it is not an orphan
    finally:
        await env.lifecycle().deprovision(tenant)


# --- drift of a running instance ---------------------------------------------------------------


async def test_an_instance_killed_from_outside_is_restarted_once_no_one_holds_its_lock(
    env: LifecycleEnv, steady: uuid.UUID
) -> None:
    row = await env.row(steady)
    handle = handle_of(row)
    assert handle is not None
    before = await env.runtime.inspect(handle)
    assert before.state is RuntimeState.RUNNING and before.pid is not None
    os.kill(before.pid, signal.SIGKILL)
    await wait_for_state(env.runtime, handle, RuntimeState.EXITED)

    # A worker that died holding the tenant's lock: left alone until the lock lapses.
    stale = env.redis.lock(f"zixly:instances:lock:{steady}", timeout=1.0, thread_local=False)
    assert await stale.acquire(blocking=False)
    assert repairs(await env.reconciler().run(only=[steady])) == {"busy": 1}
    assert (await env.runtime.inspect(handle)).state is RuntimeState.EXITED
    await asyncio.sleep(1.1)

    assert repairs(await env.reconciler().run(only=[steady])) == {"restarted": 1}
    after = await env.runtime.inspect(handle)
    assert after.state is RuntimeState.RUNNING and after.pid != before.pid
    assert gone(before.pid)
    assert await env.workflows(steady) == [(SCHEDULE_NAME, True)]
    assert (await env.row(steady)).actual_state is ActualState.RUNNING
    repair = [m for kind, _, m in await env.events(steady) if kind == "REPAIR"][-1]
    assert repair == "reconciler: restarted (desired RUNNING, actual RUNNING, runtime EXITED)"

    healthy = await env.reconciler().run(only=[steady])
    assert repairs(healthy) == {"ok": 1}
    health = (await env.row(steady)).last_health
    assert health == {"ok": True, "status": 200}


async def test_desired_stop_and_start_are_carried_out_when_their_jobs_never_ran(
    env: LifecycleEnv, steady: uuid.UUID
) -> None:
    lifecycle = env.lifecycle()
    handle = handle_of(await env.row(steady))
    assert handle is not None
    await lifecycle.request(steady, Operation.STOP)  # recorded; its job never ran
    assert repairs(await env.reconciler().run(only=[steady])) == {"stopped": 1}
    assert (await env.runtime.inspect(handle)).state is RuntimeState.STOPPED
    assert (await env.row(steady)).actual_state is ActualState.STOPPED
    assert repairs(await env.reconciler().run(only=[steady])) == {"ok": 1}

    await lifecycle.request(steady, Operation.START)
    assert repairs(await env.reconciler().run(only=[steady])) == {"restarted": 1}
    assert (await env.runtime.inspect(handle)).state is RuntimeState.RUNNING
    assert (await env.row(steady)).actual_state is ActualState.RUNNING


async def test_orphans_are_removed_and_owned_instances_kept(
    env: LifecycleEnv, steady: uuid.UUID
) -> None:
    no_row = await env.tenant("no-instance-row")  # a real tenant, but no instance row
    ghosts = [
        await env.runtime.create(
            InstanceSpec(
                tenant_id=tenant_id,
                tenant_slug="ghost",
                version=N8N_VERSION,
                env={"N8N_ENCRYPTION_KEY": "ghost-key-" + "g" * 24},
            )
        )
        for tenant_id in (str(uuid.uuid4()), str(no_row))
    ]
    started = await env.runtime.start(ghosts[0])
    assert started.pid is not None

    report = await env.reconciler().run(only=[steady])
    assert repairs(report) == {"ok": 1, "orphans_removed": 2}
    assert sorted(subject for subject, _ in report.actions) == sorted(g.instance_id for g in ghosts)
    assert [h.instance_id for h in await env.runtime.list_managed()] == [str(steady)]
    for ghost in ghosts:
        assert (await env.runtime.inspect(ghost)).state is RuntimeState.MISSING
    assert gone(started.pid)
    assert (await env.runtime.inspect(handle_of(await env.row(steady)))).state is (  # type: ignore[arg-type]
        RuntimeState.RUNNING
    )


async def test_the_reconcile_command_runs_one_pass(
    env: LifecycleEnv, steady: uuid.UUID, endpoints: Endpoints
) -> None:
    settings = make_settings(
        env.runtime.root.parent,
        database_url=endpoints.database_url,
        migrations_database_url=endpoints.migrations_database_url,
        redis_url=endpoints.redis_url,
        encryption_keys=env.keys,
        log_level="WARNING",
    )
    args = build_parser().parse_args(["reconcile", "--tenant", str(steady)])
    assert args.tenant == [str(steady)]
    # Its own event loop, connections and runtime object, as from the command line.
    report = await asyncio.to_thread(reconcile_once, settings, [str(steady)])
    assert report == {"counts": {"ok": 1}, "actions": []}


# --- the decision table --------------------------------------------------------------------------

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
BASE = InstanceRow(
    tenant_id=uuid.UUID(int=1),
    desired_state=DesiredState.RUNNING,
    actual_state=ActualState.RUNNING,
    step=Step.DONE,
    runtime="process",
    runtime_handle={"runtime": "process", "instance_id": "x", "tenant_id": "x", "labels": {}},
    version=N8N_VERSION,
    target_version=None,
    url="http://127.0.0.1:1",
    editor_url=None,
    templates=[],
    last_health=None,
    last_health_at=None,
    last_error=None,
    encryption_key_ciphertext=None,
    owner_password_ciphertext=None,
    api_key_ciphertext=None,
    owner_email=None,
    lock_version=3,
    created_at=NOW - timedelta(days=1),
    updated_at=NOW - timedelta(hours=1),
)
R, S, P, A = DesiredState.RUNNING, DesiredState.STOPPED, DesiredState.SUSPENDED, DesiredState.ABSENT
RUN, STOP, EXIT, MISS = (
    RuntimeState.RUNNING,
    RuntimeState.STOPPED,
    RuntimeState.EXITED,
    RuntimeState.MISSING,
)


@pytest.mark.parametrize(
    ("changes", "observed", "expected"),
    [
        ({}, RUN, Action.OK),
        ({}, EXIT, Action.RESTART),
        ({}, MISS, Action.RESTART),
        ({}, STOP, Action.RESTART),
        ({"actual_state": ActualState.STOPPED}, RUN, Action.CONVERGE),
        ({"desired_state": S}, RUN, Action.STOP),
        ({"desired_state": P}, RUN, Action.STOP),
        ({"desired_state": S, "actual_state": ActualState.STOPPED}, STOP, Action.OK),
        ({"desired_state": P, "actual_state": ActualState.RUNNING}, EXIT, Action.CONVERGE),
        (
            {"step": Step.READY, "actual_state": ActualState.PROVISIONING},
            RUN,
            Action.RESUME_PROVISIONING,
        ),
        ({"step": None, "actual_state": ActualState.PENDING}, MISS, Action.RESUME_PROVISIONING),
        (
            {"target_version": "9.9.9", "actual_state": ActualState.UPGRADING},
            STOP,
            Action.RESUME_UPGRADE,
        ),
        (
            {"desired_state": A, "actual_state": ActualState.DEPROVISIONING},
            RUN,
            Action.RESUME_DEPROVISIONING,
        ),
        (
            {"desired_state": A, "actual_state": ActualState.DEPROVISIONED, "step": Step.REMOVED},
            MISS,
            Action.OK,
        ),
        (
            {"actual_state": ActualState.FAILED, "updated_at": NOW - timedelta(minutes=1)},
            EXIT,
            Action.BACKING_OFF,
        ),
        (
            {"actual_state": ActualState.FAILED, "updated_at": NOW - timedelta(minutes=6)},
            EXIT,
            Action.RESTART,
        ),
        (
            {
                "actual_state": ActualState.FAILED,
                "step": Step.STARTED,
                "updated_at": NOW - timedelta(minutes=6),
            },
            MISS,
            Action.RESUME_PROVISIONING,
        ),
        # changed a moment ago: its own job is probably about to run
        (
            {
                "step": Step.SECRETS,
                "actual_state": ActualState.PROVISIONING,
                "updated_at": NOW - timedelta(seconds=5),
            },
            MISS,
            Action.RECENT,
        ),
        (
            {"actual_state": ActualState.STOPPED, "updated_at": NOW - timedelta(seconds=5)},
            RUN,
            Action.RECENT,
        ),
        # drift is repaired at once, however recent the row
        ({"updated_at": NOW - timedelta(seconds=5)}, EXIT, Action.RESTART),
        ({"desired_state": S, "updated_at": NOW - timedelta(seconds=5)}, RUN, Action.STOP),
    ],
)
def test_plan(changes: dict[str, object], observed: RuntimeState, expected: Action) -> None:
    row = dataclasses.replace(BASE, **changes)  # type: ignore[arg-type]
    action = plan(
        row,
        observed,
        now=NOW,
        retry_failed_after=timedelta(minutes=5),
        grace=timedelta(minutes=2),
    )
    assert action is expected


def test_report_counts_every_action_and_lists_the_repairs() -> None:
    report = ReconcileReport()
    report.add("a", Action.OK)
    report.add("b", Action.RESTART)
    report.add("c", Action.RESTART)
    report.add("ghost", Action.ORPHAN_REMOVED)
    assert report.as_dict() == {
        "counts": {"ok": 1, "orphans_removed": 1, "restarted": 2},
        "actions": [("b", "restarted"), ("c", "restarted"), ("ghost", "orphans_removed")],
    }
