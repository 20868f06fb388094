"""Provider and ingest tokens pushed into a real n8n instance's credentials, in place.

One tenant instance (process runtime) gets the bundled heartbeat template and a test template
(tests/provisioning/fixtures/provider-token) whose webhook makes n8n call a capture server
with the ``integration:xero`` credential: what arrives there is what n8n really holds. n8n
blanks password fields when a credential is read back, so the value is proven by use and the
identity (same id, newer updatedAt) by reading it back as the owner.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import World, free_port, gql, make_settings, serve_app
from tests.provisioning.conftest import FIXTURES
from tests.provisioning.instance_support import (
    LifecycleEnv,
    run_queued_jobs,
)
from tests.test_integration_connect import CLIENT, START
from zixly.app import create_app
from zixly.container import Services
from zixly.core.settings import Settings
from zixly.dev.sandbox.oauth import ProviderSandbox
from zixly.embedded.stack import Endpoints
from zixly.integrations.refresh import TokenRefresher
from zixly.integrations.sync import (
    PENDING_PUSHES,
    push_integration_token,
    retry_pending_pushes,
    sync_integration,
    token_pusher,
)
from zixly.providers.oauth import OAuthClient
from zixly.providers.tokens import STAFF, TokenStore
from zixly.provisioning.credentials import CredentialDeps, push_credentials
from zixly.provisioning.instances import ActualState
from zixly.provisioning.lifecycle import InstanceLifecycle
from zixly.provisioning.n8n.client import N8nClient
from zixly.provisioning.templates import (
    bundled_manifest,
    deploy_templates,
    load_manifest,
    tenant_values,
    with_integration_tokens,
)
from zixly.security.crypto import Secret

HEARTBEAT = "manifest:zixly-heartbeat"
TEST_DIR = FIXTURES / "provider-token"
TEST_MANIFEST = load_manifest(TEST_DIR)
TEST_SPEC = TEST_MANIFEST.templates[0]
PROVIDER_CREDENTIAL = "Xero access token (Zixly test)"


@dataclass
class Capture:
    """Records the requests n8n sends (path and Authorization header)."""

    url: str
    received: list[tuple[str, str | None]] = field(default_factory=list)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def next(self, path: str, after: int) -> str | None:
        """The Authorization of the first request to ``path`` after the first ``after``."""
        async with asyncio.timeout(30):
            async with self.arrived:
                while True:
                    for seen, auth in self.received[after:]:
                        if seen == path:
                            return auth
                    await self.arrived.wait()


@pytest.fixture(scope="module")
async def capture() -> AsyncIterator[Capture]:
    port = free_port()
    found = Capture(url=f"http://127.0.0.1:{port}")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        async with found.arrived:
            found.received.append((scope["path"], headers.get("authorization")))
            found.arrived.notify_all()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async with serve_app(app, port=port):
        yield found


def lifecycle(env: LifecycleEnv, capture: Capture) -> InstanceLifecycle:
    return env.lifecycle(ingest_url=f"{capture.url}/ingest")


@dataclass
class Tenant:
    id: uuid.UUID
    url: str
    client: N8nClient
    http: httpx.AsyncClient
    cookie: str
    deps: CredentialDeps  # the test manifest

    async def credential(self) -> dict[str, Any]:
        [found] = [
            c
            for c in await self.client.list_credentials(self.cookie)
            if c["name"] == PROVIDER_CREDENTIAL
        ]
        return await self.client.get_credential(self.cookie, str(found["id"]), include_data=True)


async def store_tokens(
    env: LifecycleEnv, tenant_id: uuid.UUID, access: str, refresh: str | None = None
) -> None:
    async with env.db.transaction(STAFF) as session:
        await TokenStore(env.keyring).connect(
            session,
            tenant_id,
            "xero",
            access_token=Secret(access),
            refresh_token=Secret(refresh) if refresh else None,
            expires_at=datetime.now(UTC) + timedelta(minutes=30),
            metadata={},
        )


@pytest.fixture(scope="module")
async def tenant(env: LifecycleEnv, capture: Capture) -> Tenant:
    tenant_id = await env.tenant("push")
    managed = lifecycle(env, capture)
    row = await managed.provision(tenant_id, templates=[HEARTBEAT])
    assert row.actual_state is ActualState.RUNNING and row.url is not None
    await store_tokens(env, tenant_id, "xero-at-first")
    owner = managed.secrets.for_bootstrap(row)
    client = N8nClient(row.url, env.http, version=row.version)
    cookie = await client.login(owner.owner_email, owner.owner_password)
    api = (await env.api(tenant_id)).with_session(cookie)  # activation waits until live
    # The test template, deployed as the lifecycle deploys manifest templates.
    async with env.db.transaction(STAFF) as session:
        values = await tenant_values(session, tenant_id)
        values = await with_integration_tokens(session, values, env.keyring)
    values = replace(values, settings={"capture_url": capture.url})
    [workflow] = await deploy_templates(api, cookie, [TEST_SPEC], values, TEST_DIR)
    created = await api.create_workflow(workflow)
    await api.activate_workflow(str(created["id"]))
    await env.owner.execute(
        "UPDATE n8n_instances SET templates = templates || $2::jsonb WHERE tenant_id = $1",
        tenant_id,
        json.dumps([TEST_SPEC.ref]),
    )
    deps = CredentialDeps(
        env.db, env.keyring, env.http, manifest=TEST_MANIFEST, templates_dir=TEST_DIR
    )
    return Tenant(tenant_id, row.url, client, env.http, cookie, deps)


async def run_provider_workflow(tenant: Tenant, capture: Capture) -> str | None:
    seen = len(capture.received)
    response = await tenant.http.post(f"{tenant.url}/webhook/{TEST_SPEC.id}")
    assert response.status_code == 200, response.text
    return await capture.next("/provider", seen)


async def test_deploy_renders_the_current_access_token(tenant: Tenant, capture: Capture) -> None:
    assert await run_provider_workflow(tenant, capture) == "Bearer xero-at-first"


async def test_a_push_updates_the_credential_in_place(
    env: LifecycleEnv, tenant: Tenant, capture: Capture
) -> None:
    before = await tenant.credential()

    updated = await push_credentials(tenant.deps, tenant.id, {"integration:xero": "xero-at-second"})

    assert updated == 1
    after = await tenant.credential()
    assert after["id"] == before["id"] and after["type"] == "httpHeaderAuth"
    assert after["name"] == PROVIDER_CREDENTIAL
    assert after["data"]["name"] == "Authorization"
    assert "xero-at" not in json.dumps(after)  # n8n never shows the value back
    assert after["updatedAt"] > before["updatedAt"]
    assert await run_provider_workflow(tenant, capture) == "Bearer xero-at-second"
    # The workflow still points at the same credential.
    api = await env.api(tenant.id)
    [listed] = await api.all_workflows(name=TEST_SPEC.name)
    node = (await api.get_workflow(str(listed["id"])))["nodes"][1]
    assert node["credentials"]["httpHeaderAuth"]["id"] == before["id"]


async def test_the_ingest_token_is_pushed_into_the_heartbeat_credential(
    env: LifecycleEnv, tenant: Tenant, capture: Capture
) -> None:
    heartbeat = bundled_manifest().get("zixly-heartbeat")
    [source] = [p.source for p in heartbeat.placeholders if p.name == "INGEST_TOKEN"]
    token = "zik_" + "h1" * 20 + "abc"
    bundled = CredentialDeps(env.db, env.keyring, env.http)

    assert await push_credentials(bundled, tenant.id, {source: token}) == 1

    seen = len(capture.received)
    response = await env.http.post(f"{tenant.url}/webhook/zixly-heartbeat")
    assert response.status_code == 200
    assert await capture.next("/ingest/heartbeat", seen) == f"Bearer {token}"


async def test_nothing_to_push_without_a_running_instance(env: LifecycleEnv) -> None:
    lonely = await env.tenant("no-instance")
    deps = CredentialDeps(env.db, env.keyring, env.http)
    assert await push_credentials(deps, lonely, {"integration:xero": "x"}) == 0


async def test_a_refresh_pushes_the_new_token_and_a_failed_push_is_retried(
    env: LifecycleEnv, tenant: Tenant, capture: Capture, data_dir: Path
) -> None:
    held = await run_provider_workflow(tenant, capture)  # what n8n holds now
    sandbox = ProviderSandbox()
    async with serve_app(sandbox.app()) as sandbox_url:
        settings = make_settings(data_dir, provider_base_urls={"xero": f"{sandbox_url}/xero"})
        await store_tokens(env, tenant.id, "xero-at-third", sandbox.grant("xero"))
        await env.owner.execute(
            "UPDATE integrations SET expires_at = now() WHERE tenant_id = $1", tenant.id
        )
        unreachable = replace(tenant.deps, retry_for=0.2)
        refresher = TokenRefresher(
            env.db,
            env.redis,
            TokenStore(env.keyring),
            OAuthClient(env.http, settings),
            on_refreshed=token_pusher(unreachable, env.redis),
        )
        integration_id = await env.owner.fetchval(
            "SELECT id FROM integrations WHERE tenant_id = $1", tenant.id
        )
        # n8n unreachable from here: the refresh stands, the push waits for the next run.
        await env.owner.execute(
            "UPDATE n8n_instances SET url = $2 WHERE tenant_id = $1",
            tenant.id,
            f"http://127.0.0.1:{free_port()}",
        )
        try:
            assert await refresher.refresh_integration(integration_id) == "refreshed"
        finally:
            await env.owner.execute(
                "UPDATE n8n_instances SET url = $2 WHERE tenant_id = $1", tenant.id, tenant.url
            )
    async with env.db.transaction(STAFF) as session:
        stored = await TokenStore(env.keyring).load(session, integration_id)
    assert stored.access_token is not None
    new = stored.access_token.reveal()
    assert new.startswith("xero-at-") and new != "xero-at-third"
    member = f"{tenant.id}:xero".encode()
    assert await env.redis.sismember(PENDING_PUSHES, member)
    assert await run_provider_workflow(tenant, capture) == held

    await retry_pending_pushes(tenant.deps, env.redis)

    assert not await env.redis.sismember(PENDING_PUSHES, member)
    assert await run_provider_workflow(tenant, capture) == f"Bearer {new}"


async def test_the_sync_job_pushes_and_runs_the_providers_templates(
    env: LifecycleEnv, tenant: Tenant, capture: Capture
) -> None:
    await store_tokens(env, tenant.id, "xero-at-synced")
    seen = len(capture.received)
    ctx: dict[str, Any] = {"redis": env.redis, "credential_deps": tenant.deps}

    result = await sync_integration(ctx, str(tenant.id), "xero")

    assert result["credentials_updated"] == 1
    assert result["triggered"] == [TEST_SPEC.id] and result["failed"] == []
    assert await capture.next("/provider", seen) == "Bearer xero-at-synced"

    # Unreachable: reported in the result, nothing raised.
    await env.owner.execute(
        "UPDATE n8n_instances SET url = $2 WHERE tenant_id = $1",
        tenant.id,
        f"http://127.0.0.1:{free_port()}",
    )
    try:
        down = await sync_integration(
            {"redis": env.redis, "credential_deps": replace(tenant.deps, retry_for=0.2)},
            str(tenant.id),
            "xero",
        )
    finally:
        await env.owner.execute(
            "UPDATE n8n_instances SET url = $2 WHERE tenant_id = $1", tenant.id, tenant.url
        )
        await env.redis.srem(PENDING_PUSHES, f"{tenant.id}:xero")
    assert down["credentials_updated"] is None
    assert down["skipped"] == "the credentials could not be pushed"


async def test_a_disconnected_integration_pushes_not_connected(
    env: LifecycleEnv, tenant: Tenant, capture: Capture
) -> None:
    async with env.db.transaction(STAFF) as session:
        store = TokenStore(env.keyring)
        stored = await store.find(session, tenant.id, "xero")
        assert stored is not None
        await store.clear(session, stored)

    assert await push_integration_token(tenant.deps, env.redis, tenant.id, "xero") == 1

    assert await run_provider_workflow(tenant, capture) == "Bearer not-connected"
    result = await sync_integration(
        {"redis": env.redis, "credential_deps": tenant.deps}, str(tenant.id), "xero"
    )
    assert result["skipped"] == "integration is DISABLED" and result["triggered"] == []


async def test_connect_then_the_queued_sync_job_puts_the_new_token_to_work(
    env: LifecycleEnv,
    tenant: Tenant,
    capture: Capture,
    data_dir: Path,
    endpoints: Endpoints,
) -> None:
    """End to end: an ADMIN connects Xero over HTTP, a real arq worker runs the job the
    callback queued, and n8n calls out with the token the provider issued."""
    sandbox = ProviderSandbox(clients={"xero": CLIENT})
    port = free_port()
    async with serve_app(sandbox.app()) as sandbox_url:
        settings = make_settings(
            data_dir,
            public_url=f"http://127.0.0.1:{port}",
            provider_base_urls={"xero": f"{sandbox_url}/xero"},
            oauth_clients={"xero": {"client_id": CLIENT[0], "client_secret": CLIENT[1]}},
            encryption_keys=env.keys,  # the instance's keyring: one keyring, as in production
        )
        services = Services.build(
            settings, database_url=endpoints.database_url, redis_url=endpoints.redis_url
        )
        try:
            async with (
                serve_app(create_app(services), port=port) as api_url,
                httpx.AsyncClient(base_url=api_url) as api,
                httpx.AsyncClient(follow_redirects=True) as browser,
            ):
                slug = await env.owner.fetchval("SELECT slug FROM tenants WHERE id = $1", tenant.id)
                admin = World(env.owner, env.settings).headers(f"admin@{slug}.test")
                body = await gql(api, START, {"provider": "xero"}, admin)
                started = body["data"]["startIntegrationConnect"]
                assert (await browser.get(started["authorizeUrl"])).status_code == 200
                seen = len(capture.received)
                complete, failed = await run_jobs(settings, endpoints, env, tenant.deps)
        finally:
            await services.close()
    assert (complete, failed) == (1, 0)
    async with env.db.transaction(STAFF) as session:
        stored = await TokenStore(env.keyring).find(session, tenant.id, "xero")
    assert stored is not None and stored.status == "ACTIVE" and stored.access_token is not None
    assert stored.access_token.reveal() in sandbox.access_tokens
    assert await capture.next("/provider", seen) == f"Bearer {stored.access_token.reveal()}"


async def run_jobs(
    settings: Settings, endpoints: Endpoints, env: LifecycleEnv, deps: CredentialDeps
) -> tuple[int, int]:
    """Every queued job, in an in-process burst worker (the real WorkerSettings)."""
    # the test template's manifest
    return await run_queued_jobs(settings, endpoints, env.runtime, credential_deps=deps)
