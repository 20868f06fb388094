"""n8n 1.123.x still works for the tenants that run it (marker ``n8n_legacy``).

The rest of the suite runs against the default line (2.x). This module keeps the legacy
line exercised on the process runtime, through the whole lifecycle: a tenant provisioned
with 1.123.81 beside one on the default (the owner set up through ``/rest/owner/setup``
on 1.x, from the environment on 2.x), its template loaded and active, its webhook run, and
a restart keeps the version the instance recorded (nothing moves it to 2.x silently).
``pytest -m n8n_legacy`` runs only this.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import psutil
import pytest

from tests.provisioning.conftest import N8N_VERSION, installed, load_workflow
from tests.provisioning.instance_support import WEBHOOK, WEBHOOK_NAME, LifecycleEnv
from zixly.provisioning.instances import ActualState
from zixly.provisioning.n8n.versions import LEGACY_N8N_VERSION
from zixly.provisioning.operations import handle_of
from zixly.provisioning.runtimes.base import VERSION_LABEL

pytestmark = pytest.mark.n8n_legacy
HOOK_PATH = load_workflow("webhook-noop.json")["nodes"][0]["parameters"]["path"]


@pytest.fixture(scope="module")
async def tenants(env: LifecycleEnv) -> AsyncIterator[dict[str, uuid.UUID]]:
    """One tenant on 1.123.x and one on the default line, provisioned side by side."""
    installed(LEGACY_N8N_VERSION)
    installed(N8N_VERSION)
    lifecycle = env.lifecycle()
    made = {
        v: await env.tenant(f"line-{v.split('.')[0]}") for v in (LEGACY_N8N_VERSION, N8N_VERSION)
    }
    await asyncio.gather(
        *(lifecycle.provision(t, version=v, templates=[WEBHOOK]) for v, t in made.items())
    )
    yield made


@pytest.mark.parametrize("version", [LEGACY_N8N_VERSION, N8N_VERSION])
async def test_each_line_provisions_loads_its_template_and_runs_its_webhook(
    env: LifecycleEnv, tenants: dict[str, uuid.UUID], version: str
) -> None:
    tenant = tenants[version]
    row = await env.row(tenant)
    assert (row.actual_state, row.version, row.last_error) == (ActualState.RUNNING, version, None)
    handle = handle_of(row)
    assert handle is not None and handle.labels[VERSION_LABEL] == version
    status = await env.runtime.inspect(handle)
    assert status.pid is not None
    environ = psutil.Process(status.pid).environ()
    if version == LEGACY_N8N_VERSION:  # 1.x: the owner was set up over HTTP, as before
        assert "N8N_INSTANCE_OWNER_MANAGED_BY_ENV" not in environ
        assert environ["N8N_RUNNERS_ENABLED"] == "true"
    else:  # 2.x: n8n took the owner from the environment (a bcrypt hash, never the password)
        assert environ["N8N_INSTANCE_OWNER_MANAGED_BY_ENV"] == "true"
        assert environ["N8N_INSTANCE_OWNER_EMAIL"] == row.owner_email
        assert environ["N8N_INSTANCE_OWNER_PASSWORD_HASH"].startswith("$2b$")
        assert environ["N8N_RUNNERS_MODE"] == "internal"
    assert await env.workflows(tenant) == [(WEBHOOK_NAME, True)]

    api = await env.api(tenant)
    before = len((await api.list_executions(limit=100)).items)
    response = await env.http.post(f"{row.url}/webhook/{HOOK_PATH}", json={"line": version})
    assert response.status_code == 200, response.text
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        runs = (await api.list_executions(limit=100)).items
        if len(runs) > before and runs[0].get("status") == "success":
            break
        assert asyncio.get_running_loop().time() < deadline, runs[:1]
        await asyncio.sleep(0.2)


async def test_a_restart_keeps_the_version_the_instance_recorded(
    env: LifecycleEnv, tenants: dict[str, uuid.UUID]
) -> None:
    tenant = tenants[LEGACY_N8N_VERSION]
    assert env.lifecycle().version == N8N_VERSION != LEGACY_N8N_VERSION  # new tenants: 2.x
    row = await env.lifecycle().restart(tenant)
    assert (row.actual_state, row.version) == (ActualState.RUNNING, LEGACY_N8N_VERSION)
    handle = handle_of(row)
    assert handle is not None and handle.labels[VERSION_LABEL] == LEGACY_N8N_VERSION
    assert await env.workflows(tenant) == [(WEBHOOK_NAME, True)]
    response = await env.http.post(f"{row.url}/webhook/{HOOK_PATH}", json={})
    assert response.status_code == 200, response.text
