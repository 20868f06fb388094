"""Process-runtime bookkeeping that needs no running n8n: specs, ports, pid checks, errors."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from zixly.n8n_nodes.export import PACKAGE_DIR as NODES_PACKAGE_DIR
from zixly.provisioning.n8n.versions import SUPPORTED_N8N_VERSIONS
from zixly.provisioning.n8n.versions import instance_env as version_env
from zixly.provisioning.runtimes.base import InstanceHandle, InstanceSpec, RuntimeState
from zixly.provisioning.runtimes.distributions import N8nDistribution, ensure_n8n
from zixly.provisioning.runtimes.errors import (
    InstanceNotFoundError,
    NotInstalledError,
    RuntimeFailure,
)
from zixly.provisioning.runtimes.process import ProcessRuntime, instance_env

SPEC = InstanceSpec(
    tenant_id="tenant-1",
    tenant_slug="one",
    version="1.123.81",
    env={"N8N_ENCRYPTION_KEY": "key-one-" + "k" * 24},
)


@pytest.fixture
def runtime(tmp_path: Path) -> ProcessRuntime:
    empty_cache = tmp_path / "no-n8n-here"
    return ProcessRuntime(
        tmp_path, distribution=lambda v: ensure_n8n(v, install=False, cache_dir=empty_cache)
    )


async def test_create_is_idempotent_and_keeps_secrets_private(runtime: ProcessRuntime) -> None:
    handle = await runtime.create(SPEC)
    assert await runtime.create(SPEC) == handle
    assert handle.labels == {
        "zixly.tenant": "tenant-1",
        "zixly.tenant-slug": "one",
        "zixly.n8n-version": "1.123.81",
    }
    spec_file = runtime.instance_dir("tenant-1") / "spec.json"
    assert stat.S_IMODE(spec_file.stat().st_mode) == 0o600
    assert "key-one" not in repr(SPEC)
    other = await runtime.create(replace(SPEC, tenant_id="tenant-2", tenant_slug="two"))
    ports = [
        json.loads((runtime.instance_dir(h.instance_id) / "spec.json").read_text())
        for h in (handle, other)
    ]
    assert len({p["port"] for p in ports} | {p["broker_port"] for p in ports}) == 4
    assert (await runtime.inspect(handle)).state is RuntimeState.STOPPED
    assert [h.instance_id for h in await runtime.list_managed()] == ["tenant-1", "tenant-2"]


async def test_a_spec_needs_its_own_encryption_key_and_a_safe_id(runtime: ProcessRuntime) -> None:
    with pytest.raises(RuntimeFailure, match="N8N_ENCRYPTION_KEY"):
        await runtime.create(replace(SPEC, env={}))
    with pytest.raises(RuntimeFailure, match="directory name"):
        await runtime.create(replace(SPEC, tenant_id="../escape"))


async def test_unknown_instances_are_missing(runtime: ProcessRuntime) -> None:
    ghost = InstanceHandle(runtime="process", instance_id="ghost", tenant_id="ghost")
    assert (await runtime.inspect(ghost)).state is RuntimeState.MISSING
    with pytest.raises(InstanceNotFoundError):
        await runtime.start(ghost)
    with pytest.raises(InstanceNotFoundError):
        await runtime.logs(ghost)
    await runtime.remove(ghost)  # nothing to do
    with pytest.raises(InstanceNotFoundError):
        await runtime.inspect(replace(ghost, runtime="docker"))


async def test_starting_a_version_that_is_not_installed_fails_typed(
    runtime: ProcessRuntime,
) -> None:
    handle = await runtime.create(SPEC)
    with pytest.raises(NotInstalledError):
        await runtime.start(handle)
    assert (await runtime.inspect(handle)).state is RuntimeState.STOPPED


async def test_a_recycled_pid_is_not_taken_for_the_instance(runtime: ProcessRuntime) -> None:
    handle = await runtime.create(SPEC)
    me = psutil.Process(os.getpid())
    state = {
        "pid": me.pid,
        "create_time": me.create_time(),
        "n8n_bin": "/opt/n8n/bin/n8n",  # this pid runs Python, not that n8n
        "dist_root": "/opt/n8n",
        "version": "1.123.81",
        "port": 5678,
        "started_at": "2026-11-27T00:00:00+00:00",
        "stopped": False,
        "exit_code": None,
    }
    state_file = runtime.instance_dir("tenant-1") / "state.json"
    state_file.write_text(json.dumps(state))
    status = await runtime.inspect(handle)
    assert status.state is RuntimeState.EXITED and status.exit_code is None

    # Same command line but another create time: a different process under a reused pid.
    state.update(n8n_bin=me.cmdline()[0], create_time=me.create_time() - 1000)
    state_file.write_text(json.dumps(state))
    assert (await runtime.inspect(handle)).state is RuntimeState.EXITED

    state.update(create_time=me.create_time())  # really "that" process: running
    state_file.write_text(json.dumps(state))
    assert (await runtime.inspect(handle)).state is RuntimeState.RUNNING


@pytest.mark.parametrize("version", SUPPORTED_N8N_VERSIONS)
def test_the_runtime_owns_address_ports_and_folder_in_the_environment(
    tmp_path: Path, version: str
) -> None:
    dist = N8nDistribution(
        node_bin=tmp_path / "node" / "bin" / "node",
        n8n_bin=tmp_path / "n8n",
        version=version,
        root=tmp_path,
    )
    spec = {
        "version": version,
        "port": 5701,
        "broker_port": 5702,
        "user_folder": "/data/t1/user",
        "memory_mb": 1024,
        "env": {
            "N8N_ENCRYPTION_KEY": "k1",
            "N8N_LISTEN_ADDRESS": "0.0.0.0",  # a spec cannot open the instance to the network
            "DB_SQLITE_POOL_SIZE": "4",  # but may change a default
        },
    }
    env = instance_env(spec, dist)
    webhook = "N8N_WEBHOOK_URL" if version.startswith("2.") else "WEBHOOK_URL"
    assert env["N8N_LISTEN_ADDRESS"] == "127.0.0.1"
    assert env["N8N_PORT"] == "5701" and env["N8N_RUNNERS_BROKER_PORT"] == "5702"
    assert env[webhook] == "http://127.0.0.1:5701/"
    assert env["N8N_USER_FOLDER"] == env["HOME"] == "/data/t1/user"
    assert env["N8N_ENCRYPTION_KEY"] == "k1"
    assert env["DB_SQLITE_POOL_SIZE"] == "4"
    assert env["N8N_BLOCK_ENV_ACCESS_IN_NODE"] == "true"
    assert env["NODE_OPTIONS"] == "--max-old-space-size=768"
    assert env["PATH"].split(os.pathsep)[0] == str(tmp_path / "node" / "bin")
    assert set(env) - set(version_env(version, user_folder="/data/t1/user")) == {
        "LANG",
        "NODE_OPTIONS",
        "N8N_ENCRYPTION_KEY",
        "PATH",
        "HOME",
        "N8N_USER_FOLDER",
        "N8N_LISTEN_ADDRESS",
        "N8N_HOST",
        "N8N_PORT",
        "N8N_PROTOCOL",
        webhook,
        "N8N_RUNNERS_BROKER_LISTEN_ADDRESS",
        "N8N_RUNNERS_BROKER_PORT",
        "N8N_CUSTOM_EXTENSIONS",
    }
    if version.startswith("2."):  # file nodes are held to the instance's files/ folder
        assert env["N8N_RESTRICT_FILE_ACCESS_TO"] == "/data/t1/user/files"
    # Zixly's community nodes load in every instance (zixly/n8n_nodes/package)
    assert env["N8N_CUSTOM_EXTENSIONS"] == str(NODES_PACKAGE_DIR)
    assert (NODES_PACKAGE_DIR / "package.json").is_file()
    extra = instance_env({**spec, "env": {"N8N_CUSTOM_EXTENSIONS": "/opt/more"}}, dist)
    assert extra["N8N_CUSTOM_EXTENSIONS"] == f"{NODES_PACKAGE_DIR};/opt/more"
