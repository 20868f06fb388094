"""Two real n8n instances side by side as local processes: isolation, crash, restart, removal."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator

import httpx
import psutil
import pytest

from tests.provisioning.conftest import (
    Instance,
    launch,
    load_workflow,
    remove_all,
    renamed,
    wait_for_state,
)
from zixly.provisioning.n8n.bootstrap import bootstrap_instance
from zixly.provisioning.n8n.client import N8nClient
from zixly.provisioning.n8n.errors import N8nUnauthorizedError
from zixly.provisioning.runtimes.base import (
    SLUG_LABEL,
    TENANT_LABEL,
    InstanceRuntime,
    RuntimeState,
)
from zixly.provisioning.runtimes.process import ProcessRuntime

TEMPLATE = load_workflow("schedule-noop.json")


@pytest.fixture(scope="module")
async def pair(
    process_runtime: ProcessRuntime, n8n_http: httpx.AsyncClient
) -> AsyncIterator[tuple[Instance, Instance]]:
    try:
        a, b = await asyncio.gather(
            launch(process_runtime, n8n_http, "alpha", [renamed(TEMPLATE, "Alpha sync")]),
            launch(process_runtime, n8n_http, "bravo", [renamed(TEMPLATE, "Bravo sync")]),
        )
        yield a, b
    finally:
        await remove_all(process_runtime)


def group_of(pid: int) -> list[psutil.Process]:
    """Live members of process group ``pid`` (zombies are dead, just not reaped yet)."""
    return [p for p in psutil.process_iter() if _pgid(p.pid) == pid and _alive(p)]


def _alive(process: psutil.Process) -> bool:
    try:
        return bool(process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def test_process_runtime_implements_the_protocol(process_runtime: ProcessRuntime) -> None:
    assert isinstance(process_runtime, InstanceRuntime)


async def test_instances_have_their_own_port_folder_key_and_environment(
    process_runtime: ProcessRuntime, pair: tuple[Instance, Instance]
) -> None:
    a, b = pair
    status_a = await process_runtime.inspect(a.handle)
    status_b = await process_runtime.inspect(b.handle)
    assert status_a.state is status_b.state is RuntimeState.RUNNING
    assert status_a.url != status_b.url
    assert status_a.pid is not None and status_b.pid is not None
    assert status_a.url is not None

    env_a = psutil.Process(status_a.pid).environ()
    env_b = psutil.Process(status_b.pid).environ()
    assert env_a["N8N_ENCRYPTION_KEY"] == a.secrets.encryption_key
    assert env_b["N8N_ENCRYPTION_KEY"] == b.secrets.encryption_key
    assert a.secrets.encryption_key != b.secrets.encryption_key
    folder_a = process_runtime.instance_dir(a.handle.instance_id) / "user"
    assert env_a["N8N_USER_FOLDER"] == str(folder_a)
    assert env_b["N8N_USER_FOLDER"] == str(
        process_runtime.instance_dir(b.handle.instance_id) / "user"
    )
    assert (folder_a / ".n8n" / "database.sqlite").is_file()
    assert env_a["N8N_LISTEN_ADDRESS"] == "127.0.0.1"
    assert env_a["N8N_PORT"] == status_a.url.rsplit(":", 1)[1]
    assert env_a["N8N_RUNNERS_BROKER_PORT"] != env_b["N8N_RUNNERS_BROKER_PORT"]
    # A fresh environment: nothing of ours (e.g. pytest's own variables) leaks into n8n.
    assert "PYTEST_CURRENT_TEST" in os.environ
    assert "PYTEST_CURRENT_TEST" not in env_a
    assert env_a["N8N_BLOCK_ENV_ACCESS_IN_NODE"] == "true"

    # n8n runs its task runner as a child in the same process group.
    assert len(group_of(status_a.pid)) >= 2


async def test_each_instance_has_exactly_its_own_workflow_active(
    pair: tuple[Instance, Instance],
) -> None:
    a, b = pair
    for instance, name in ((a, "Alpha sync"), (b, "Bravo sync")):
        workflows = await instance.api.all_workflows()
        assert [(w["name"], w["active"]) for w in workflows] == [(name, True)]
        assert instance.boot.workflow_ids == {name: workflows[0]["id"]}
        assert instance.boot.created == [name]


async def test_the_api_key_of_one_instance_is_rejected_by_the_other(
    pair: tuple[Instance, Instance], n8n_http: httpx.AsyncClient
) -> None:
    a, b = pair
    intruder = N8nClient(b.url, n8n_http, api_key=a.secrets.api_key)
    with pytest.raises(N8nUnauthorizedError) as caught:
        await intruder.list_workflows()
    assert caught.value.status == 401
    assert a.secrets.api_key and a.secrets.api_key not in str(caught.value)


async def test_managed_instances_are_listed_with_tenant_labels_by_a_new_runtime(
    process_runtime: ProcessRuntime, pair: tuple[Instance, Instance]
) -> None:
    fresh = ProcessRuntime(process_runtime.root.parent)  # as after a control-plane restart
    handles = await fresh.list_managed()
    assert sorted((h.labels[TENANT_LABEL], h.labels[SLUG_LABEL]) for h in handles) == [
        ("tenant-alpha", "alpha"),
        ("tenant-bravo", "bravo"),
    ]
    for handle in handles:
        assert (await fresh.inspect(handle)).state is RuntimeState.RUNNING
    logs = await fresh.logs(pair[0].handle, tail=200)
    assert any("Editor is now accessible" in line for line in logs)


async def test_a_killed_instance_is_exited_and_restarts_with_its_data(
    process_runtime: ProcessRuntime, pair: tuple[Instance, Instance], n8n_http: httpx.AsyncClient
) -> None:
    a, b = pair
    before = await process_runtime.inspect(a.handle)
    assert before.pid is not None
    os.kill(before.pid, signal.SIGKILL)

    await wait_for_state(process_runtime, a.handle, RuntimeState.EXITED)
    exited = await process_runtime.inspect(a.handle)
    assert exited.exit_code == 128 + signal.SIGKILL
    # A runtime that did not start the process (control plane restarted) agrees.
    assert (await ProcessRuntime(process_runtime.root.parent).inspect(a.handle)).state is (
        RuntimeState.EXITED
    )
    assert (await process_runtime.inspect(b.handle)).state is RuntimeState.RUNNING

    restarted = await process_runtime.start(a.handle)
    assert restarted.state is RuntimeState.RUNNING and restarted.pid != before.pid
    assert group_of(before.pid) == []  # the orphaned task runner was cleaned up
    assert restarted.url is not None and restarted.url == before.url
    client = N8nClient(restarted.url, n8n_http)
    again = await bootstrap_instance(client, a.secrets, [renamed(TEMPLATE, "Alpha sync")])
    assert again.created == []
    assert again.workflow_ids == a.boot.workflow_ids
    assert again.api_key == a.secrets.api_key  # the stored key survived the crash
    workflows = await client.with_api_key(again.api_key).all_workflows()
    assert [(w["id"], w["active"]) for w in workflows] == [
        (a.boot.workflow_ids["Alpha sync"], True)
    ]


async def test_stop_then_remove_leaves_no_process_and_no_files(
    process_runtime: ProcessRuntime, pair: tuple[Instance, Instance]
) -> None:
    _, b = pair
    running = await process_runtime.inspect(b.handle)
    assert running.pid is not None
    members = group_of(running.pid)
    assert len(members) >= 2

    stopped = await process_runtime.stop(b.handle, grace=15)
    assert stopped.state is RuntimeState.STOPPED
    assert stopped.exit_code == 0  # n8n shut down cleanly on SIGTERM
    assert not [p for p in members if _alive(p)]
    assert await process_runtime.stop(b.handle) == stopped  # idempotent

    await process_runtime.remove(b.handle)
    assert (await process_runtime.inspect(b.handle)).state is RuntimeState.MISSING
    assert not process_runtime.instance_dir(b.handle.instance_id).exists()
    assert [h.instance_id for h in await process_runtime.list_managed()] == ["tenant-alpha"]
    await process_runtime.remove(b.handle)  # idempotent
