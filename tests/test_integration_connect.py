"""Connecting and disconnecting providers over real HTTP: the API under uvicorn on a loopback
port, the provider sandbox under another, the real PostgreSQL and Redis.

A "browser" (an httpx client that follows redirects, with no JWT) goes from the authorize URL
that startIntegrationConnect returns to the sandbox's consent page, which redirects it to
Zixly's callback; what reaches the database, the job queue and the sandbox is then checked.
Provider behaviour (authorization code with PKCE S256, single-use codes, revocation
endpoints) follows each provider's OAuth documentation (zixly/integrations/registry.py).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import pytest

from tests.conftest import TenantFixture, World, free_port, gql, make_settings, serve_app
from zixly.app import create_app
from zixly.container import Services
from zixly.core.settings import Settings
from zixly.dev.sandbox.oauth import Fault, ProviderSandbox
from zixly.embedded.stack import Endpoints
from zixly.integrations.connect import STATE_PREFIX
from zixly.integrations.refresh import refresh_expiring_tokens
from zixly.integrations.sync import sync_job_id
from zixly.providers.oauth import InvalidGrantError, OAuthClient
from zixly.providers.registry import PROVIDERS, provider
from zixly.providers.tokens import integration_binding
from zixly.security.crypto import Keyring, Secret

CLIENT = ("zixly-app", "zixly-app-secret")
START = """
mutation($provider: String!, $shop: String) {
  startIntegrationConnect(provider: $provider, shop: $shop) {
    provider authorizeUrl state expiresAt
  }
}"""
DISCONNECT = """
mutation($provider: String!) {
  disconnectIntegration(provider: $provider) {
    provider status remoteRevocation credentialsUpdated
  }
}"""
INTEGRATIONS = "{ integrations { provider status expiresAt } }"


@dataclass
class Rig:
    sandbox: ProviderSandbox
    services: Services
    settings: Settings
    api: httpx.AsyncClient  # the API over HTTP
    browser: httpx.AsyncClient  # follows redirects, carries no token
    owner: asyncpg.Connection
    world: World

    @property
    def keyring(self) -> Keyring:
        return Keyring.from_settings(self.settings)

    async def start(
        self, tenant: TenantFixture, name: str = "xero", *, shop: str | None = None, **kw: Any
    ) -> dict[str, Any]:
        body = await gql(
            self.api,
            START,
            {"provider": name, "shop": shop},
            self.world.headers(kw.get("as_user", tenant.admin)),
        )
        if body.get("errors"):
            return body
        started: dict[str, Any] = body["data"]["startIntegrationConnect"]
        return started

    async def connect(
        self, tenant: TenantFixture, name: str = "xero", *, shop: str | None = None
    ) -> httpx.Response:
        started = await self.start(tenant, name, shop=shop)
        return await self.browser.get(started["authorizeUrl"])

    async def code_for(self, started: dict[str, Any]) -> tuple[str, str]:
        """Consent at the sandbox without following its redirect: (callback URL, code)."""
        response = await self.browser.get(started["authorizeUrl"], follow_redirects=False)
        assert response.status_code == 302
        location = response.headers["location"]
        return location.split("?")[0], parse_qs(urlsplit(location).query)["code"][0]

    async def row(self, tenant: TenantFixture, name: str = "xero") -> asyncpg.Record | None:
        return await self.owner.fetchrow(
            "SELECT * FROM integrations WHERE tenant_id = $1 AND provider = $2", tenant.id, name
        )

    async def audit(self, tenant: TenantFixture) -> list[tuple[str, dict[str, Any]]]:
        rows = await self.owner.fetch(
            "SELECT action, details FROM audit_log WHERE tenant_id = $1 "
            "AND action LIKE 'integration.%' ORDER BY id",
            tenant.id,
        )
        return [(r["action"], json.loads(r["details"])) for r in rows]

    async def job_queued(self, tenant: TenantFixture, name: str = "xero") -> bool:
        return bool(await self.services.redis.exists(f"arq:job:{sync_job_id(tenant.id, name)}"))

    async def drop_job(self, tenant: TenantFixture, name: str = "xero") -> None:
        job_id = sync_job_id(tenant.id, name)
        await self.services.redis.delete(f"arq:job:{job_id}")
        await self.services.redis.zrem("arq:queue", job_id)


@pytest.fixture(scope="module")
async def rig(
    endpoints: Endpoints, data_dir: Path, owner: asyncpg.Connection, settings: Settings
) -> AsyncIterator[Rig]:
    sandbox = ProviderSandbox(clients={name: CLIENT for name in PROVIDERS})
    port = free_port()
    async with serve_app(sandbox.app()) as sandbox_url:
        rig_settings = make_settings(
            data_dir,
            public_url=f"http://127.0.0.1:{port}",
            provider_base_urls={name: f"{sandbox_url}/{name}" for name in PROVIDERS},
            oauth_clients={
                name: {"client_id": CLIENT[0], "client_secret": CLIENT[1]} for name in PROVIDERS
            },
            oauth_timeout_seconds=2.0,
        )
        services = Services.build(
            rig_settings, database_url=endpoints.database_url, redis_url=endpoints.redis_url
        )
        try:
            async with (
                serve_app(create_app(services), port=port) as api_url,
                httpx.AsyncClient(base_url=api_url) as api,
                httpx.AsyncClient(follow_redirects=True) as browser,
            ):
                yield Rig(
                    sandbox, services, rig_settings, api, browser, owner, World(owner, settings)
                )
        finally:
            await services.close()


@pytest.fixture(autouse=True)
def _consenting(rig: Rig) -> None:
    rig.sandbox.consent = True
    rig.sandbox.faults.clear()


# --- connecting -----------------------------------------------------------------------------


async def test_a_full_connect_stores_sealed_tokens_and_queues_the_initial_sync(rig: Rig) -> None:
    tenant = await rig.world.tenant("connect", clients=0)
    started = await rig.start(tenant)
    url = urlsplit(started["authorizeUrl"])
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert url.path == "/xero/identity/connect/authorize"
    assert query["response_type"] == "code" and query["client_id"] == CLIENT[0]
    assert query["redirect_uri"] == f"{rig.settings.public_url}/oauth/xero/callback"
    assert query["scope"] == "offline_access accounting.reports.read accounting.transactions.read"
    assert query["state"] == started["state"] and len(started["state"]) >= 32
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    ttl = await rig.services.redis.ttl(STATE_PREFIX + started["state"])
    assert 590 <= ttl <= 600

    response = await rig.browser.get(started["authorizeUrl"])

    assert response.status_code == 200, response.text
    assert response.url.path == "/oauth/xero/callback"
    assert "xero connected" in response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    [(code, issued)] = [
        (c, i) for c, i in rig.sandbox.codes.items() if i.code_challenge == query["code_challenge"]
    ]
    assert issued.used and issued.redirect_uri == query["redirect_uri"]
    assert issued.refresh_token is not None
    assert code not in response.text and issued.refresh_token not in response.text

    row = await rig.row(tenant)
    assert row is not None and row["status"] == "ACTIVE"
    assert row["consecutive_failures"] == 0 and row["last_error"] is None
    assert json.loads(row["metadata"])["scope"] == query["scope"]
    # Ciphertext only, sealed to this row: it opens with the row's binding and no other.
    sealed = row["refresh_token_ciphertext"]
    assert sealed.startswith("v1.") and issued.refresh_token not in sealed
    opened = rig.keyring.decrypt(sealed, integration_binding(tenant.id, row["id"], "refresh_token"))
    assert opened.reveal() == issued.refresh_token
    with pytest.raises(Exception, match="authenticate"):
        rig.keyring.decrypt(sealed, integration_binding(tenant.id, uuid.uuid4(), "refresh_token"))
    with pytest.raises(Exception, match="authenticate"):
        rig.keyring.decrypt(sealed, integration_binding(tenant.id, row["id"], "access_token"))
    access = rig.keyring.decrypt(
        row["access_token_ciphertext"], integration_binding(tenant.id, row["id"], "access_token")
    )
    assert access.reveal().startswith("xero-at-")

    assert [a for a, _ in await rig.audit(tenant)] == ["integration.connected"]
    assert await rig.job_queued(tenant)
    raw = await rig.services.redis.get(f"arq:job:{sync_job_id(tenant.id, 'xero')}")
    assert raw is not None and json.loads(raw)["f"] == "sync_integration"
    assert json.loads(raw)["a"] == [str(tenant.id), "xero"]
    await rig.drop_job(tenant)

    listed = await gql(rig.api, INTEGRATIONS, headers=rig.world.headers(tenant.viewer))
    assert listed["data"]["integrations"][0]["status"] == "ACTIVE"


async def test_a_state_works_once(rig: Rig) -> None:
    tenant = await rig.world.tenant("replay", clients=0)
    started = await rig.start(tenant)
    callback, code = await rig.code_for(started)

    first = await rig.browser.get(callback, params={"code": code, "state": started["state"]})
    replayed = await rig.browser.get(callback, params={"code": code, "state": started["state"]})

    assert first.status_code == 200
    assert replayed.status_code == 400 and "invalid_state" in replayed.text
    assert [a for a, _ in await rig.audit(tenant)] == ["integration.connected"]
    await rig.drop_job(tenant)


async def test_concurrent_callbacks_with_one_state_connect_once(rig: Rig) -> None:
    tenant = await rig.world.tenant("race", clients=0)
    started = await rig.start(tenant)
    callback, code = await rig.code_for(started)
    params = {"code": code, "state": started["state"]}

    answers = await asyncio.gather(*(rig.browser.get(callback, params=params) for _ in range(8)))

    assert sorted(a.status_code for a in answers) == [200] + [400] * 7
    assert [a for a, _ in await rig.audit(tenant)] == ["integration.connected"]
    await rig.drop_job(tenant)


async def test_an_expired_or_unknown_state_is_refused(rig: Rig) -> None:
    tenant = await rig.world.tenant("expired", clients=0)
    started = await rig.start(tenant)
    callback, code = await rig.code_for(started)
    await rig.services.redis.pexpire(STATE_PREFIX + started["state"], 1)
    await asyncio.sleep(0.05)

    expired = await rig.browser.get(callback, params={"code": code, "state": started["state"]})
    unknown = await rig.browser.get(callback, params={"code": code, "state": "x" * 43})
    missing = await rig.browser.get(callback, params={"code": code})

    for answer in (expired, unknown, missing):
        assert answer.status_code == 400 and "invalid_state" in answer.text
    assert await rig.row(tenant) is None and not await rig.job_queued(tenant)


async def test_a_state_for_another_provider_is_refused_and_spent(rig: Rig) -> None:
    tenant = await rig.world.tenant("mismatch", clients=0)
    started = await rig.start(tenant, "xero")
    callback, code = await rig.code_for(started)
    params = {"code": code, "state": started["state"]}

    wrong = await rig.browser.get(callback.replace("/xero/", "/hubspot/"), params=params)
    right_after = await rig.browser.get(callback, params=params)

    assert wrong.status_code == 400 and "provider_mismatch" in wrong.text
    assert right_after.status_code == 400 and "invalid_state" in right_after.text
    assert await rig.row(tenant) is None and await rig.row(tenant, "hubspot") is None


async def test_access_denied_connects_nothing(rig: Rig) -> None:
    tenant = await rig.world.tenant("denied", clients=0)
    rig.sandbox.consent = False

    response = await rig.connect(tenant)

    assert response.status_code == 400
    assert "access_denied" in response.text and "Access was not granted" in response.text
    assert await rig.row(tenant) is None and not await rig.job_queued(tenant)


async def test_nothing_from_the_request_is_reflected(rig: Rig) -> None:
    tenant = await rig.world.tenant("reflect", clients=0)
    started = await rig.start(tenant)
    callback, _ = await rig.code_for(started)
    evil = '<script>alert("x")</script>'

    response = await rig.browser.get(callback, params={"state": started["state"], "error": evil})
    unknown = await rig.browser.get(callback.replace("/xero/", "/<b>x</b>/"))

    assert response.status_code == 400 and "provider_error" in response.text
    assert "<script>" not in response.text and "alert(" not in response.text
    assert response.headers["content-security-policy"] == "default-src 'none'"
    assert unknown.status_code == 404 and "<b>" not in unknown.text


async def test_a_stolen_code_does_not_work_with_another_connects_verifier(rig: Rig) -> None:
    """PKCE: a code injected into another connect (another tenant's state, so another
    verifier) is refused by the provider's token endpoint."""
    victim = await rig.world.tenant("victim", clients=0)
    attacker = await rig.world.tenant("attacker", clients=0)
    _, stolen = await rig.code_for(await rig.start(victim))
    theirs = await rig.start(attacker)
    callback = f"{rig.settings.public_url}/oauth/xero/callback"

    response = await rig.browser.get(callback, params={"code": stolen, "state": theirs["state"]})

    assert response.status_code == 400 and "invalid_grant" in response.text
    assert await rig.row(attacker) is None and await rig.row(victim) is None


async def test_the_sandbox_checks_the_pkce_verifier_and_the_redirect_uri(rig: Rig) -> None:
    oauth = OAuthClient(rig.services.http, rig.settings)
    xero = provider("xero")
    for wrong in ("verifier", "redirect_uri"):
        started = await rig.start(await rig.world.tenant("pkce", clients=0))
        callback, code = await rig.code_for(started)
        raw = await rig.services.redis.get(STATE_PREFIX + started["state"])
        verifier = Secret(json.loads(raw)["code_verifier"])
        with pytest.raises(InvalidGrantError):
            await oauth.exchange_code(
                xero,
                code,
                redirect_uri=callback + ("/x" if wrong == "redirect_uri" else ""),
                code_verifier=Secret("y" * 64) if wrong == "verifier" else verifier,
            )
        # The code was spent by the failed attempt: the right verifier no longer helps.
        with pytest.raises(InvalidGrantError):
            await oauth.exchange_code(xero, code, redirect_uri=callback, code_verifier=verifier)


async def test_the_state_decides_the_tenant_not_the_caller(rig: Rig) -> None:
    mine = await rig.world.tenant("mine", clients=0)
    other = await rig.world.tenant("other", clients=0)
    started = await rig.start(mine)
    await rig.start(other)  # another pending connect, for the other tenant
    callback, code = await rig.code_for(started)

    # The other tenant's admin completes my connect with their own JWT: it lands in mine.
    response = await rig.browser.get(
        callback,
        params={"code": code, "state": started["state"]},
        headers=rig.world.headers(other.admin),
    )

    assert response.status_code == 200
    assert (await rig.row(mine)) is not None and await rig.row(other) is None
    await rig.drop_job(mine)


@pytest.mark.parametrize("role", ["viewer", "editor"])
async def test_only_admins_start_or_disconnect(rig: Rig, role: str) -> None:
    tenant = await rig.world.tenant("roles", clients=0)
    headers = rig.world.headers(getattr(tenant, role))
    for query, variables in ((START, {"provider": "xero"}), (DISCONNECT, {"provider": "xero"})):
        body = await gql(rig.api, query, variables, headers)
        assert body["data"] is None
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert await rig.row(tenant) is None


async def test_an_admin_demoted_before_the_callback_connects_nothing(rig: Rig) -> None:
    tenant = await rig.world.tenant("demoted", clients=0)
    started = await rig.start(tenant)
    await rig.owner.execute(
        "UPDATE memberships SET role = 'VIEWER' WHERE tenant_id = $1 AND user_id = "
        "(SELECT id FROM users WHERE email = $2)",
        tenant.id,
        tenant.admin,
    )

    response = await rig.browser.get(started["authorizeUrl"])

    assert response.status_code == 403 and "forbidden" in response.text
    assert await rig.row(tenant) is None and not await rig.job_queued(tenant)


async def test_unknown_providers_and_bad_shops_are_refused(rig: Rig) -> None:
    tenant = await rig.world.tenant("inputs", clients=0)
    for name, shop in (
        ("dropbox", None),
        ("shopify", None),
        ("shopify", "Evil.Shop"),
        ("shopify", "-shop"),
        ("shopify", "a" * 61),
        ("shopify", "shop.evil.com/"),
        ("xero", "a-shop"),
    ):
        body = await rig.start(tenant, name, shop=shop)
        assert body["errors"][0]["extensions"]["code"] == "VALIDATION_ERROR", (name, shop)


async def test_shopify_connects_per_shop(rig: Rig) -> None:
    tenant = await rig.world.tenant("shop", clients=0)
    started = await rig.start(tenant, "shopify", shop="corner-store-2")
    query = parse_qs(urlsplit(started["authorizeUrl"]).query)
    assert query["scope"] == ["read_orders"]

    response = await rig.browser.get(started["authorizeUrl"])

    assert response.status_code == 200
    row = await rig.row(tenant, "shopify")
    assert row is not None and json.loads(row["metadata"])["shop"] == "corner-store-2"
    assert ("integration.connected", {"provider": "shopify", "shop": "corner-store-2"}) in (
        await rig.audit(tenant)
    )
    await rig.drop_job(tenant, "shopify")


async def test_a_failing_transaction_stores_nothing_and_queues_no_job(rig: Rig) -> None:
    tenant = await rig.world.tenant("rollback", clients=0)
    started = await rig.start(tenant)
    app_role = rig.settings.app_role
    # The audit insert is the transaction's last statement: it fails after the tokens were
    # written, inside the same transaction.
    await rig.owner.execute(f"REVOKE INSERT ON audit_log FROM {app_role}")
    try:
        response = await rig.browser.get(started["authorizeUrl"])
    finally:
        await rig.owner.execute(f"GRANT INSERT ON audit_log TO {app_role}")

    assert response.status_code == 500 and "internal_error" in response.text
    assert await rig.row(tenant) is None
    assert not await rig.job_queued(tenant)


async def test_the_return_url_gets_the_outcome(rig: Rig) -> None:
    tenant = await rig.world.tenant("return", clients=0)
    rig.settings.oauth_return_url = "https://app.zixly.test/integrations?tab=providers"
    try:
        started = await rig.start(tenant)
        callback, code = await rig.code_for(started)
        ok = await rig.browser.get(
            callback, params={"code": code, "state": started["state"]}, follow_redirects=False
        )
        again = await rig.browser.get(
            callback, params={"code": code, "state": started["state"]}, follow_redirects=False
        )
    finally:
        rig.settings.oauth_return_url = None
    assert ok.status_code == 303 and ok.headers["location"] == (
        "https://app.zixly.test/integrations?tab=providers&provider=xero&status=connected"
    )
    assert again.headers["location"].endswith("&provider=xero&status=failed&reason=invalid_state")
    await rig.drop_job(tenant)


# --- disconnecting --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["xero", "hubspot", "asana"])
async def test_disconnect_revokes_at_the_provider_and_forgets_the_tokens(
    rig: Rig, name: str
) -> None:
    tenant = await rig.world.tenant(f"off-{name}", clients=0)
    assert (await rig.connect(tenant, name)).status_code == 200
    await rig.drop_job(tenant, name)
    row = await rig.row(tenant, name)
    assert row is not None
    refresh = rig.keyring.decrypt(
        row["refresh_token_ciphertext"],
        integration_binding(tenant.id, row["id"], "refresh_token"),
    )

    body = await gql(rig.api, DISCONNECT, {"provider": name}, rig.world.headers(tenant.admin))

    assert body["data"]["disconnectIntegration"] == {
        "provider": name,
        "status": "DISABLED",
        "remoteRevocation": "REVOKED",
        "credentialsUpdated": 0,  # no n8n instance: skipped quietly
    }
    assert refresh.reveal() in rig.sandbox.revoked
    after = await rig.row(tenant, name)
    assert after is not None and after["status"] == "DISABLED"
    assert after["access_token_ciphertext"] is None and after["refresh_token_ciphertext"] is None
    # The grant is dead at the provider: the old refresh token no longer refreshes.
    with pytest.raises(InvalidGrantError):
        await OAuthClient(rig.services.http, rig.settings).refresh(provider(name), refresh)
    assert (await rig.audit(tenant))[-1] == (
        "integration.disconnected",
        {"provider": name, "remote_revocation": "REVOKED"},
    )


async def test_a_failed_revocation_still_forgets_the_tokens(rig: Rig) -> None:
    tenant = await rig.world.tenant("revoke-fails", clients=0)
    assert (await rig.connect(tenant)).status_code == 200
    await rig.drop_job(tenant)
    rig.sandbox.faults.append(Fault(status=503))

    body = await gql(rig.api, DISCONNECT, {"provider": "xero"}, rig.world.headers(tenant.admin))

    assert body["data"]["disconnectIntegration"]["remoteRevocation"] == "FAILED"
    after = await rig.row(tenant)
    assert after is not None and after["status"] == "DISABLED"
    assert after["access_token_ciphertext"] is None and after["refresh_token_ciphertext"] is None
    assert (await rig.audit(tenant))[-1] == (
        "integration.disconnected",
        {"provider": "xero", "remote_revocation": "FAILED", "revocation_error": "UNAVAILABLE"},
    )


async def test_shopify_has_no_revocation_and_unknown_integrations_are_not_found(
    rig: Rig,
) -> None:
    tenant = await rig.world.tenant("no-revoke", clients=0)
    headers = rig.world.headers(tenant.admin)
    missing = await gql(rig.api, DISCONNECT, {"provider": "xero"}, headers)
    assert missing["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert (await rig.connect(tenant, "shopify", shop="no-revoke")).status_code == 200
    await rig.drop_job(tenant, "shopify")

    body = await gql(rig.api, DISCONNECT, {"provider": "shopify"}, headers)

    assert body["data"]["disconnectIntegration"]["remoteRevocation"] == "UNSUPPORTED"
    after = await rig.row(tenant, "shopify")
    assert after is not None and after["refresh_token_ciphertext"] is None


# --- invalid_grant: ERROR and one alert; a reconnect resolves it ------------------------------


async def test_invalid_grant_ends_in_error_and_one_alert_until_reconnected(rig: Rig) -> None:
    tenant = await rig.world.tenant("reconnect", clients=0)
    assert (await rig.connect(tenant)).status_code == 200
    await rig.drop_job(tenant)
    row = await rig.row(tenant)
    assert row is not None
    refresh = rig.keyring.decrypt(
        row["refresh_token_ciphertext"], integration_binding(tenant.id, row["id"], "refresh_token")
    )
    rig.sandbox.used.add(refresh.reveal())  # spent elsewhere: the provider refuses it
    await rig.owner.execute(
        "UPDATE integrations SET expires_at = now() + interval '1 minute' WHERE id = $1",
        row["id"],
    )
    services = rig.services
    ctx: dict[str, Any] = {
        "settings": rig.settings,
        "db": services.db,
        "redis": services.redis,
        "http": services.http,
        "keyring": services.keyring,
        "alerts": services.alerts,
        "lifecycle": services.lifecycle,
    }

    first = await refresh_expiring_tokens(ctx)
    second = await refresh_expiring_tokens(ctx)

    # (Other modules' rows may be due too; this tenant's outcome is read from its own rows.)
    assert first.get("PROVIDER_INVALID_GRANT", 0) >= 1
    assert rig.sandbox.calls[refresh.reveal()] == 1  # ERROR is not refreshed again
    assert second.get("PROVIDER_INVALID_GRANT", 0) == 0
    assert (await rig.row(tenant))["status"] == "ERROR"  # type: ignore[index]
    alerts = await rig.owner.fetch(
        "SELECT key, severity, status, occurrences FROM alerts WHERE tenant_id = $1", tenant.id
    )
    assert [dict(a) for a in alerts] == [
        {
            "key": "integration:xero:auth",
            "severity": "CRITICAL",
            "status": "OPEN",
            "occurrences": 1,
        }
    ]

    assert (await rig.connect(tenant)).status_code == 200
    await rig.drop_job(tenant)

    assert (await rig.row(tenant))["status"] == "ACTIVE"  # type: ignore[index]
    status = await rig.owner.fetchval(
        "SELECT status FROM alerts WHERE tenant_id = $1 AND key = 'integration:xero:auth'",
        tenant.id,
    )
    assert status == "RESOLVED"


async def test_a_provider_without_an_oauth_app_cannot_be_started(rig: Rig) -> None:
    tenant = await rig.world.tenant("unconfigured", clients=0)
    client = rig.settings.oauth_clients.pop("myob")
    try:
        body = await rig.start(tenant, "myob")
    finally:
        rig.settings.oauth_clients["myob"] = client
    assert body["errors"][0]["extensions"] == {
        "code": "PROVIDER_NOT_CONFIGURED",
        "provider": "myob",
    }
