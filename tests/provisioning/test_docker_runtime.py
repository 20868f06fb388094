"""Two real n8n containers side by side through the Docker Engine API (Podman here).

Isolation (container, network, volume, key), crash and restart with the data kept,
clean stop, removal of everything, and what ``list_managed`` counts as managed.
Secrets are compared by fingerprint, so a failing assertion never prints one.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import docker
import docker.errors
import httpx
import pytest

from tests.provisioning.conftest import (
    N8N_VERSION,
    Instance,
    launch,
    load_workflow,
    remove_all,
    renamed,
    wait_for_state,
)
from zixly.provisioning.n8n.bootstrap import bootstrap_instance
from zixly.provisioning.n8n.client import AUTH_COOKIE, N8nClient
from zixly.provisioning.runtimes.base import (
    SLUG_LABEL,
    TENANT_LABEL,
    InstanceHandle,
    InstanceRuntime,
    InstanceSpec,
    ResourceLimits,
    RuntimeState,
)
from zixly.provisioning.runtimes.distributions import N8nDistribution
from zixly.provisioning.runtimes.docker import (
    DEPLOYMENT_LABEL,
    MANAGED_LABEL,
    DockerRuntime,
)
from zixly.provisioning.runtimes.errors import InstanceNotFoundError, RuntimeFailure
from zixly.provisioning.runtimes.images import (
    INPUTS_LABEL,
    ImageResult,
    ensure_n8n_image,
    input_hash,
    node_version_of,
)

TEMPLATE = load_workflow("schedule-noop.json")
KEY = "N8N_ENCRYPTION_KEY"


def fingerprint(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:16]


@pytest.fixture(scope="module")
def docker_runtime(docker_engine: docker.DockerClient, n8n_image: ImageResult) -> DockerRuntime:
    # A prefix and deployment of its own: nothing else on the engine is touched or listed.
    run = secrets.token_hex(3)
    return DockerRuntime(docker_engine, prefix=f"zt{run}-", deployment=f"test-{run}")


@pytest.fixture(scope="module")
async def pair(
    docker_runtime: DockerRuntime, n8n_http: httpx.AsyncClient
) -> AsyncIterator[tuple[Instance, Instance]]:
    try:
        a, b = await asyncio.gather(
            launch(docker_runtime, n8n_http, "alpha", [renamed(TEMPLATE, "Alpha sync")]),
            launch(docker_runtime, n8n_http, "bravo", [renamed(TEMPLATE, "Bravo sync")]),
        )
        yield a, b
    finally:
        await remove_all(docker_runtime)


@pytest.fixture
def stray(docker_runtime: DockerRuntime) -> Iterator[Any]:
    """A container from the same image, named like ours, without our labels."""
    container = docker_runtime.client.containers.create(
        f"localhost/zixly/n8n:{N8N_VERSION}",
        ["node", "--version"],
        name=docker_runtime.container_name("stray"),
    )
    yield container
    container.remove(force=True)


def env_of(container: Any) -> dict[str, str]:
    return dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])


def probe(target: str) -> list[str]:
    """argv: a node one-liner printing what a GET of ``target`` (host:port) got."""
    host, port = target.rsplit(":", 1)
    script = (
        f"require('http').get({{host:'{host}',port:{port},path:'/healthz/readiness',"
        "timeout:3000},r=>{console.log('STATUS',r.statusCode);process.exit(0)})"
        ".on('timeout',()=>{console.log('TIMEOUT');process.exit(2)})"
        ".on('error',e=>{console.log('ERROR',e.code);process.exit(1)})"
    )
    return ["node", "-e", script]


def test_docker_runtime_implements_the_protocol(docker_runtime: DockerRuntime) -> None:
    assert isinstance(docker_runtime, InstanceRuntime)


def test_the_local_image_is_cached_by_its_inputs(
    docker_engine: docker.DockerClient, n8n_image: ImageResult, n8n_dist: N8nDistribution
) -> None:
    again = ensure_n8n_image(docker_engine, N8N_VERSION)
    assert again.built is False
    assert again.image_id == n8n_image.image_id
    image = docker_engine.images.get(n8n_image.tag)
    assert image.labels[INPUTS_LABEL] == input_hash(n8n_dist, node_version_of(n8n_dist))
    config = image.attrs["Config"]
    assert config["User"] == "1000:1000"
    assert "5678/tcp" in config["ExposedPorts"]
    assert config["Cmd"] == ["node", "/opt/n8n/node_modules/n8n/bin/n8n", "start"]


async def test_each_tenant_has_its_own_container_network_volume_and_key(
    docker_runtime: DockerRuntime,
    pair: tuple[Instance, Instance],
    n8n_http: httpx.AsyncClient,
) -> None:
    a, b = pair
    client = docker_runtime.client
    ca = client.containers.get(a.handle.instance_id)
    cb = client.containers.get(b.handle.instance_id)
    assert ca.name == docker_runtime.container_name("alpha")
    assert ca.id != cb.id
    for container, slug in ((ca, "alpha"), (cb, "bravo")):
        assert list(container.attrs["NetworkSettings"]["Networks"]) == [
            docker_runtime.network_name(slug)
        ]
        assert [(m["Name"], m["Destination"]) for m in container.attrs["Mounts"]] == [
            (docker_runtime.volume_name(slug), "/home/node/.n8n")
        ]
        bindings = container.attrs["HostConfig"]["PortBindings"]["5678/tcp"]
        assert [binding["HostIp"] for binding in bindings] == ["127.0.0.1"]
        assert container.labels[MANAGED_LABEL] == "true"
        assert container.labels[TENANT_LABEL] == f"tenant-{slug}"
        assert container.labels[SLUG_LABEL] == slug

    env_a, env_b = env_of(ca), env_of(cb)
    assert fingerprint(env_a[KEY]) == fingerprint(a.secrets.encryption_key)
    assert fingerprint(env_b[KEY]) == fingerprint(b.secrets.encryption_key)
    assert fingerprint(a.secrets.encryption_key) != fingerprint(b.secrets.encryption_key)
    for container, instance in ((ca, a), (cb, b)):
        assert not any(instance.secrets.encryption_key in v for v in container.labels.values())
    assert env_a["N8N_BLOCK_ENV_ACCESS_IN_NODE"] == "true"
    assert env_a["N8N_USER_FOLDER"] == "/home/node"

    # Each answers on its own loopback port; n8n wrote its database into its own volume.
    assert a.url != b.url
    for instance in (a, b):
        assert instance.url.startswith("http://127.0.0.1:")
        response = await n8n_http.get(f"{instance.url}/healthz/readiness")
        assert response.status_code == 200
    # Podman runs healthchecks from systemd timers (none here): "starting" until they run.
    assert await docker_runtime.health(a.handle) in ("starting", "healthy")
    listing = ca.exec_run(["ls", "/home/node/.n8n"], user="1000").output.decode().split()
    assert "database.sqlite" in listing
    assert ca.exec_run(["id", "-u"]).output.decode().strip() == "1000"


async def test_a_tenant_cannot_reach_the_other_tenants_container(
    docker_runtime: DockerRuntime, pair: tuple[Instance, Instance]
) -> None:
    a, b = pair
    ca = docker_runtime.client.containers.get(a.handle.instance_id)
    cb = docker_runtime.client.containers.get(b.handle.instance_id)
    ip_a = ca.attrs["NetworkSettings"]["Networks"][docker_runtime.network_name("alpha")][
        "IPAddress"
    ]
    own = ca.exec_run(probe(f"{ip_a}:5678")).output.decode()
    assert own.split()[:2] == ["STATUS", "200"]  # the probe works...
    other = cb.exec_run(probe(f"{ip_a}:5678")).output.decode()
    assert other.split()[0] in ("TIMEOUT", "ERROR")  # ...but not across tenant networks


async def test_each_instance_has_exactly_its_own_workflow_active(
    pair: tuple[Instance, Instance],
) -> None:
    a, b = pair
    for instance, name in ((a, "Alpha sync"), (b, "Bravo sync")):
        workflows = await instance.api.all_workflows()
        assert [(w["name"], w["active"]) for w in workflows] == [(name, True)]
        assert instance.boot.workflow_ids == {name: workflows[0]["id"]}


async def test_the_image_loads_the_zixly_community_nodes(
    pair: tuple[Instance, Instance], n8n_http: httpx.AsyncClient, n8n_image: ImageResult
) -> None:
    """The nodes package is baked into the image and n8n in the container loads it."""
    alpha, _ = pair
    cookie = await alpha.client.login(alpha.secrets.owner_email, alpha.secrets.owner_password)
    response = await n8n_http.get(
        f"{alpha.url}/types/nodes.json", headers={"Cookie": f"{AUTH_COOKIE}={cookie}"}
    )
    assert response.status_code == 200
    names = {node["name"] for node in response.json()}
    assert {"CUSTOM.zixlyAuRules", "CUSTOM.zixlyIngest"} <= names
    schema = await alpha.api.get_credential_schema("zixlyIngestApi")
    assert {"url", "token"} <= set(schema["properties"])


async def test_only_labelled_containers_are_managed(
    docker_runtime: DockerRuntime, pair: tuple[Instance, Instance], stray: Any
) -> None:
    assert stray.name.startswith(docker_runtime.container_name(""))
    fresh = DockerRuntime(  # as after a control-plane restart
        docker_runtime.client, prefix=docker_runtime.prefix, deployment=docker_runtime.deployment
    )
    handles = await fresh.list_managed()
    assert [(h.instance_id, h.tenant_id, h.labels[SLUG_LABEL]) for h in handles] == [
        (docker_runtime.container_name("alpha"), "tenant-alpha", "alpha"),
        (docker_runtime.container_name("bravo"), "tenant-bravo", "bravo"),
    ]
    assert all(h.labels[DEPLOYMENT_LABEL] == docker_runtime.deployment for h in handles)
    # Another deployment on the same engine sees none of them.
    assert (
        await DockerRuntime(docker_runtime.client, prefix="zixly-", deployment="x").list_managed()
        == []
    )
    logs = await fresh.logs(pair[0].handle, tail=200)
    assert any("Editor is now accessible" in line for line in logs)


async def test_a_killed_container_is_exited_and_restarts_with_its_data(
    docker_runtime: DockerRuntime, pair: tuple[Instance, Instance], n8n_http: httpx.AsyncClient
) -> None:
    a, b = pair
    before = await docker_runtime.inspect(a.handle)
    assert before.state is RuntimeState.RUNNING and before.pid
    docker_runtime.client.containers.get(a.handle.instance_id).kill()  # from outside

    await wait_for_state(docker_runtime, a.handle, RuntimeState.EXITED)
    exited = await docker_runtime.inspect(a.handle)
    assert exited.exit_code == 137
    assert exited.container_id == before.container_id
    assert (await docker_runtime.inspect(b.handle)).state is RuntimeState.RUNNING
    await asyncio.sleep(1.0)  # on-failure does not restart a container killed through the API
    assert (await docker_runtime.inspect(a.handle)).state is RuntimeState.EXITED

    restarted = await docker_runtime.start(a.handle)
    assert restarted.state is RuntimeState.RUNNING
    assert restarted.url == before.url
    assert restarted.started_at is not None and before.started_at is not None
    assert restarted.started_at > before.started_at
    client = N8nClient(str(restarted.url), n8n_http)
    again = await bootstrap_instance(client, a.secrets, [renamed(TEMPLATE, "Alpha sync")])
    assert again.created == []
    assert again.workflow_ids == a.boot.workflow_ids
    assert fingerprint(again.api_key) == fingerprint(str(a.secrets.api_key))
    workflows = await client.with_api_key(again.api_key).all_workflows()
    assert [(w["id"], w["active"]) for w in workflows] == [
        (a.boot.workflow_ids["Alpha sync"], True)
    ]


async def test_stop_is_clean_and_remove_leaves_nothing(
    docker_runtime: DockerRuntime, pair: tuple[Instance, Instance]
) -> None:
    _, b = pair
    stopped = await docker_runtime.stop(b.handle, grace=15)
    assert stopped.state is RuntimeState.STOPPED
    assert stopped.exit_code == 0  # tini passed SIGTERM on; n8n shut down cleanly
    assert await docker_runtime.stop(b.handle) == stopped  # idempotent

    await docker_runtime.remove(b.handle)
    client = docker_runtime.client
    assert (await docker_runtime.inspect(b.handle)).state is RuntimeState.MISSING
    with pytest.raises(docker.errors.NotFound):
        client.containers.get(b.handle.instance_id)
    with pytest.raises(docker.errors.NotFound):
        client.networks.get(docker_runtime.network_name("bravo"))
    with pytest.raises(docker.errors.NotFound):
        client.volumes.get(docker_runtime.volume_name("bravo"))
    assert [h.instance_id for h in await docker_runtime.list_managed()] == [
        docker_runtime.container_name("alpha")
    ]
    await docker_runtime.remove(b.handle)  # idempotent
    with pytest.raises(InstanceNotFoundError):
        await docker_runtime.logs(b.handle)


async def test_remove_keeping_data_then_create_again_finds_the_workflows(
    docker_runtime: DockerRuntime, pair: tuple[Instance, Instance], n8n_http: httpx.AsyncClient
) -> None:
    a, _ = pair
    await docker_runtime.remove(a.handle, keep_data=True)
    assert (await docker_runtime.inspect(a.handle)).state is RuntimeState.MISSING
    docker_runtime.client.volumes.get(docker_runtime.volume_name("alpha"))  # still there

    spec = InstanceSpec(
        tenant_id="tenant-alpha",
        tenant_slug="alpha",
        version=N8N_VERSION,
        env={KEY: a.secrets.encryption_key},
    )
    handle = await docker_runtime.create(spec)
    assert handle.instance_id == a.handle.instance_id
    status = await docker_runtime.start(handle)
    assert status.url is not None
    api = N8nClient(status.url, n8n_http, api_key=a.secrets.api_key, retry_for=60)
    await api.wait_ready(120)
    workflows = await api.all_workflows()
    assert [(w["id"], w["active"]) for w in workflows] == [
        (a.boot.workflow_ids["Alpha sync"], True)
    ]


async def test_create_applies_limits_and_replaces_a_container_whose_spec_changed(
    docker_runtime: DockerRuntime,
) -> None:
    client = docker_runtime.client
    spec = InstanceSpec(
        tenant_id="tenant-charlie",
        tenant_slug="charlie",
        version=N8N_VERSION,
        env={KEY: secrets.token_urlsafe(32), "GENERIC_TIMEZONE": "Australia/Sydney"},
        limits=ResourceLimits(memory_mb=512, cpus=0.5),
    )
    handle = await docker_runtime.create(spec)
    try:
        assert (await docker_runtime.inspect(handle)).state is RuntimeState.STOPPED
        container = client.containers.get(handle.instance_id)
        host = container.attrs["HostConfig"]
        assert host["Memory"] == 512 * 1024 * 1024
        assert host["NanoCpus"] == 500_000_000
        assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
        assert {u["Name"].lower().removeprefix("rlimit_"): u["Hard"] for u in host["Ulimits"]} == {
            "nofile": 4096,
            "nproc": 4096,
        }
        assert env_of(container)["GENERIC_TIMEZONE"] == "Australia/Sydney"
        port = host["PortBindings"]["5678/tcp"][0]["HostPort"]

        assert (await docker_runtime.create(spec)).instance_id == handle.instance_id
        assert client.containers.get(handle.instance_id).id == container.id  # same spec: no-op

        changed = InstanceSpec(
            tenant_id=spec.tenant_id,
            tenant_slug=spec.tenant_slug,
            version=spec.version,
            env={**spec.env, "GENERIC_TIMEZONE": "Australia/Perth"},
            limits=ResourceLimits(memory_mb=768, cpus=0.5),
        )
        await docker_runtime.create(changed)
        replaced = client.containers.get(handle.instance_id)
        assert replaced.id != container.id
        assert replaced.attrs["HostConfig"]["Memory"] == 768 * 1024 * 1024
        assert env_of(replaced)["GENERIC_TIMEZONE"] == "Australia/Perth"
        assert replaced.attrs["HostConfig"]["PortBindings"]["5678/tcp"][0]["HostPort"] == port
        assert [m["Name"] for m in replaced.attrs["Mounts"]] == [
            docker_runtime.volume_name("charlie")
        ]
    finally:
        await docker_runtime.remove(handle)


async def test_engine_and_image_problems_are_typed_errors(docker_runtime: DockerRuntime) -> None:
    spec = InstanceSpec(
        tenant_id="tenant-delta", tenant_slug="delta", version="0.0.1", env={KEY: "k" * 32}
    )
    with pytest.raises(RuntimeFailure, match=r"zixly n8n image --version 0\.0\.1"):
        await docker_runtime.create(spec)
    assert (await docker_runtime.inspect(_handle(docker_runtime, "delta"))).state is (
        RuntimeState.MISSING
    )
    with pytest.raises(InstanceNotFoundError):
        await docker_runtime.start(_handle(docker_runtime, "delta"))
    with pytest.raises(InstanceNotFoundError):
        await docker_runtime.inspect(InstanceHandle("process", "x", "t"))

    # Nothing listens on port 1 (tcp: the SDK's unix transport leaks the socket on failure).
    nowhere = docker.DockerClient(base_url="tcp://127.0.0.1:1", version="1.41", timeout=5)
    offline = DockerRuntime(nowhere, prefix=docker_runtime.prefix)
    with pytest.raises(RuntimeFailure, match="does not answer") as caught:
        await offline.list_managed()
    assert isinstance(caught.value.__cause__, Exception)
    nowhere.close()


def _handle(runtime: DockerRuntime, slug: str) -> InstanceHandle:
    return InstanceHandle(runtime.name, runtime.container_name(slug), f"tenant-{slug}")
