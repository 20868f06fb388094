"""Fixtures for real n8n instances run as local processes.

Tests that need n8n are skipped (with the reason) when the pinned version is not installed,
or fail if ``ZIXLY_REQUIRE_N8N`` is set; CI installs it first with ``zixly n8n install``.
Instances are module-scoped: an n8n start costs about 5 s, so each module starts its instances
once and removes them at its end.

The suite runs against the default n8n (``DEFAULT_N8N_VERSION``, 2.x);
``ZIXLY_TEST_N8N_VERSION=1.123.81`` runs it against another installed version. The
``n8n_legacy`` tests (test_legacy_n8n.py) always use the legacy line (1.123.x).
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import docker
import httpx
import pytest

from zixly.container import Services
from zixly.core.settings import Settings
from zixly.provisioning.n8n.bootstrap import BootstrapResult, InstanceSecrets, bootstrap_instance
from zixly.provisioning.n8n.client import N8nClient
from zixly.provisioning.runtimes.base import (
    InstanceHandle,
    InstanceRuntime,
    InstanceSpec,
    RuntimeState,
)
from zixly.provisioning.runtimes.distributions import (
    DEFAULT_N8N_VERSION,
    N8nDistribution,
    ensure_n8n,
)
from zixly.provisioning.runtimes.errors import NotInstalledError
from zixly.provisioning.runtimes.images import ImageResult, ensure_n8n_image
from zixly.provisioning.runtimes.podman import PodmanService, podman_available
from zixly.provisioning.runtimes.process import ProcessRuntime

if TYPE_CHECKING:
    from tests.provisioning.instance_support import LifecycleEnv

FIXTURES = Path(__file__).parent / "fixtures"
N8N_VERSION = os.environ.get("ZIXLY_TEST_N8N_VERSION") or DEFAULT_N8N_VERSION
READY_WITHIN = 120.0


def load_workflow(name: str, **overrides: Any) -> dict[str, Any]:
    workflow: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    workflow.update(overrides)
    return workflow


def renamed(workflow: dict[str, Any], name: str) -> dict[str, Any]:
    return {**copy.deepcopy(workflow), "name": name}


def installed(version: str) -> N8nDistribution:
    """The installed n8n ``version``; else skip (or fail, with ``ZIXLY_REQUIRE_N8N``)."""
    try:
        return ensure_n8n(version, install=False)
    except NotInstalledError:
        reason = f"n8n {version} is not installed: run `zixly n8n install --version {version}`"
        if os.environ.get("ZIXLY_REQUIRE_N8N"):  # CI: a missing install is a failure
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def n8n_dist() -> N8nDistribution:
    return installed(N8N_VERSION)


@pytest.fixture(scope="module")
def process_runtime(
    tmp_path_factory: pytest.TempPathFactory, n8n_dist: N8nDistribution
) -> ProcessRuntime:
    return ProcessRuntime(tmp_path_factory.mktemp("n8n-data"))


@pytest.fixture(scope="module")
async def n8n_http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30.0) as http:
        yield http


@dataclass
class Instance:
    """One running, bootstrapped tenant instance."""

    handle: InstanceHandle
    secrets: InstanceSecrets
    url: str
    client: N8nClient  # unauthenticated (cookie calls)
    api: N8nClient  # with the bootstrap's API key and the owner's session
    boot: BootstrapResult

    async def last_execution(self) -> dict[str, Any]:
        """The newest execution, with its run data (``data.resultData``)."""
        (last,) = (await self.api.list_executions(limit=1)).items
        return await self.api.get_execution(str(last["id"]), include_data=True)


async def launch(
    runtime: InstanceRuntime,
    http: httpx.AsyncClient,
    slug: str,
    templates: list[dict[str, Any]],
    *,
    version: str = N8N_VERSION,
) -> Instance:
    secrets = InstanceSecrets.generate(slug)
    spec = InstanceSpec(
        tenant_id=f"tenant-{slug}",
        tenant_slug=slug,
        version=version,
        env=secrets.instance_env(version),
    )
    handle = await runtime.create(spec)
    status = await runtime.start(handle)
    assert status.state is RuntimeState.RUNNING and status.url is not None
    client = N8nClient(status.url, http, version=version)
    boot = await bootstrap_instance(client, secrets, templates, ready_timeout=READY_WITHIN)
    secrets = replace(secrets, api_key=boot.api_key)
    # With the owner's session, activations wait until a 2.x publish is live.
    cookie = await client.login(secrets.owner_email, secrets.owner_password)
    api = client.with_api_key(boot.api_key).with_session(cookie)
    return Instance(handle, secrets, status.url, client, api, boot)


async def remove_all(runtime: InstanceRuntime) -> None:
    for handle in await runtime.list_managed():
        await runtime.remove(handle)


async def wait_for_state(
    runtime: InstanceRuntime, handle: InstanceHandle, state: RuntimeState, within: float = 15.0
) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while (await runtime.inspect(handle)).state is not state:
        assert asyncio.get_running_loop().time() < deadline, f"never reached {state}"
        await asyncio.sleep(0.1)


# --- containers (the docker runtime) ------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[docker.DockerClient]:
    """The engine from DOCKER_HOST, else a private Podman API service for this session.

    Without podman the container tests are skipped, or fail when ``ZIXLY_REQUIRE_PODMAN`` is
    set (CI installs it first with scripts/ci-setup-podman.sh).
    """
    if os.environ.get("DOCKER_HOST"):
        client = docker.from_env(timeout=600)
        yield client
        client.close()
        return
    if not podman_available():
        reason = "podman is not installed: run scripts/ci-setup-podman.sh (or set DOCKER_HOST)"
        if os.environ.get("ZIXLY_REQUIRE_PODMAN"):
            pytest.fail(reason)
        pytest.skip(reason)
    with PodmanService(tmp_path_factory.mktemp("podman")) as service:
        client = service.client()
        yield client
        client.close()


@pytest.fixture(scope="session")
def n8n_image(docker_engine: docker.DockerClient, n8n_dist: N8nDistribution) -> ImageResult:
    """localhost/zixly/n8n:<version>; built here (about 2 min) unless `zixly n8n image` ran."""
    return ensure_n8n_image(docker_engine, N8N_VERSION)


@pytest.fixture(scope="module")
async def env(
    services: Services,
    process_runtime: ProcessRuntime,
    n8n_http: httpx.AsyncClient,
    owner: asyncpg.Connection,
    settings: Settings,
) -> AsyncIterator[LifecycleEnv]:
    """A module's lifecycle environment over the module's process runtime (instances and
    their rows are removed when the module ends). A module may override it."""
    from tests.provisioning.instance_support import lifecycle_env

    async with lifecycle_env(services, process_runtime, n8n_http, owner, settings) as built:
        yield built
