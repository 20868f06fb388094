"""Provider tokens into the tenant's n8n, the initial sync after a connect, reconnect alerts.

``push_integration_token`` writes the integration's current access token (or
``not-connected``) into the tenant's n8n credentials (zixly.provisioning.credentials). It
runs after the token was committed, never inside the transaction, and a failed push never
touches the stored token: the failure is logged and the integration is remembered in a Redis
set that the refresh cron drains on its next run (``retry_pending_pushes``), so n8n catches
up within minutes rather than at the next refresh.

``sync_integration`` (the arq job a connect enqueues after its commit) pushes the token and
then runs, once and now, every deployed template that reads from the provider, through its
on-demand webhook ``POST {instance}/webhook/zixly-<template id>``. An unreachable instance is
logged and reported in the job's result; the templates' schedules sync later anyway.

``invalid_grant_alert`` is the refresher's hook: a refresh token the provider refused ends
in ERROR (the refresher's doing) plus one CRITICAL ``integration:<provider>:auth`` alert,
deduplicated by the alert service; a new connect resolves it.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, cast

import httpx
from redis.asyncio import Redis
from redis.exceptions import RedisError

from zixly.alerts.service import AlertService
from zixly.core.errors import ZixlyError
from zixly.core.logging import get_logger
from zixly.providers.tokens import STAFF, StoredIntegration, TokenStore
from zixly.provisioning.credentials import (
    PUSHABLE,
    CredentialDeps,
    integration_source,
    push_credentials,
)
from zixly.provisioning.instances import InstanceRepository
from zixly.provisioning.n8n.errors import N8nError
from zixly.provisioning.templates import NOT_CONNECTED, template_id, webhook_path
from zixly.security.crypto import Secret

log = get_logger("zixly.integrations.sync")

SYNC_JOB = "sync_integration"
PENDING_PUSHES = "zixly:credentials:push-pending"  # members: "<tenant id>:<provider>"
SYNCABLE = ("ACTIVE", "STALE")
WEBHOOK_TIMEOUT_SECONDS = 10.0
Hook = Callable[[StoredIntegration], Awaitable[None]]  # the refresher's hooks


def auth_alert_key(provider_name: str) -> str:
    """The alert raised on invalid_grant (reconnect needed) and resolved by a connect."""
    return f"integration:{provider_name}:auth"


def sync_job_id(tenant_id: uuid.UUID, provider_name: str) -> str:
    return f"{SYNC_JOB}:{tenant_id}:{provider_name}"


async def current_token(
    deps: CredentialDeps, tenant_id: uuid.UUID, provider_name: str
) -> tuple[str | None, Secret | None]:
    """The integration's status and access token (None, None: no such integration)."""
    store = TokenStore(deps.keyring)
    async with deps.db.transaction(STAFF) as session:
        found = await store.find(session, tenant_id, provider_name)
    if found is None:
        return None, None
    return found.status, found.access_token


async def push_integration_token(
    deps: CredentialDeps, redis: Redis, tenant_id: uuid.UUID, provider_name: str
) -> int | None:
    """Push the stored access token (or ``not-connected``) into the tenant's n8n; the number
    of credentials updated, or None when the push failed (logged, and queued for retry)."""
    member = f"{tenant_id}:{provider_name}"
    try:
        _, token = await current_token(deps, tenant_id, provider_name)
        value = token.reveal() if token is not None else NOT_CONNECTED
        updated = await push_credentials(
            deps, tenant_id, {integration_source(provider_name): value}
        )
    except (N8nError, ZixlyError) as exc:
        log.warning(
            "credentials.push.failed",
            tenant_id=str(tenant_id),
            provider=provider_name,
            code=exc.code,
            action="retried by the next refresh run",
        )
        await _remember(redis, member)
        return None
    try:
        await cast("Awaitable[int]", redis.srem(PENDING_PUSHES, member))
    except RedisError:
        pass  # a retry later pushes the same (current) value again: harmless
    return updated


async def _remember(redis: Redis, member: str) -> None:
    try:
        await cast("Awaitable[int]", redis.sadd(PENDING_PUSHES, member))
    except RedisError as exc:
        log.error("credentials.push.not_queued", member=member, error=type(exc).__name__)


async def retry_pending_pushes(deps: CredentialDeps, redis: Redis) -> dict[str, int]:
    """Push again what failed before (the refresh cron calls this first)."""
    counts = {"retried": 0, "still_failing": 0}
    for raw in await cast("Awaitable[set[bytes]]", redis.smembers(PENDING_PUSHES)):
        member = raw.decode() if isinstance(raw, bytes) else str(raw)
        tenant, _, provider_name = member.partition(":")
        try:
            tenant_id = uuid.UUID(tenant)
        except ValueError:
            await cast("Awaitable[int]", redis.srem(PENDING_PUSHES, member))
            continue
        result = await push_integration_token(deps, redis, tenant_id, provider_name)
        counts["retried" if result is not None else "still_failing"] += 1
    return counts


def invalid_grant_alert(alerts: AlertService) -> Hook:
    """The refresher's ``on_invalid_grant`` hook: one CRITICAL reconnect alert."""

    async def hook(stored: StoredIntegration) -> None:
        await alerts.raise_alert(
            stored.tenant_id,
            auth_alert_key(stored.provider),
            "CRITICAL",
            f"{stored.provider} refused Zixly's access: reconnect it",
            {"provider": stored.provider, "integration_id": str(stored.id)},
        )

    return hook


def token_pusher(deps: CredentialDeps, redis: Redis) -> Hook:
    """The refresher's ``on_refreshed`` hook: the new access token into n8n."""

    async def hook(stored: StoredIntegration) -> None:
        await push_integration_token(deps, redis, stored.tenant_id, stored.provider)

    return hook


def worker_deps(ctx: dict[str, Any]) -> CredentialDeps:
    """The push's dependencies from an arq ``ctx`` (``credential_deps`` when given)."""
    deps: CredentialDeps | None = ctx.get("credential_deps")
    return deps if deps is not None else CredentialDeps.of(ctx["lifecycle"])


def alert_service(ctx: dict[str, Any]) -> AlertService:
    service: AlertService = ctx["alerts"]  # the worker's (zixly.container)
    return service


async def trigger_templates(
    deps: CredentialDeps, tenant_id: uuid.UUID, provider_name: str
) -> dict[str, Any]:
    """Run each deployed template that reads from the provider once, now, through its
    on-demand webhook (manifest contract: path ``zixly-<template id>``)."""
    async with deps.db.transaction(STAFF) as session:
        row = await InstanceRepository(session).get(tenant_id)
    if row is None or row.actual_state not in PUSHABLE or row.url is None:
        return {"triggered": [], "failed": [], "skipped": "no running instance"}
    known = {spec.id: spec for spec in deps.templates().templates}
    chosen = [known[i] for i in map(template_id, row.templates) if i is not None and i in known]
    triggered: list[str] = []
    failed: list[str] = []
    for spec in chosen:
        if spec.provider != provider_name:
            continue
        url = f"{row.url.rstrip('/')}/webhook/{webhook_path(spec)}"
        try:
            response = await deps.http.post(url, json={}, timeout=WEBHOOK_TIMEOUT_SECONDS)
        except httpx.HTTPError as exc:
            log.warning(
                "integration.sync.unreachable",
                tenant_id=str(tenant_id),
                template=spec.id,
                error=type(exc).__name__,
            )
            failed.append(spec.id)
            continue
        if response.status_code >= 300:
            log.warning(
                "integration.sync.trigger_failed",
                tenant_id=str(tenant_id),
                template=spec.id,
                status=response.status_code,
            )
            failed.append(spec.id)
        else:
            triggered.append(spec.id)
    return {"triggered": triggered, "failed": failed}


async def sync_integration(ctx: dict[str, Any], tenant_id: str, provider: str) -> dict[str, Any]:
    """The initial sync after a connect: push the token, then run the provider's templates."""
    tenant = uuid.UUID(tenant_id)
    deps = worker_deps(ctx)
    result: dict[str, Any] = {"tenant_id": tenant_id, "provider": provider}
    status, _ = await current_token(deps, tenant, provider)
    updated = await push_integration_token(deps, ctx["redis"], tenant, provider)
    result["credentials_updated"] = updated
    if status not in SYNCABLE:
        result.update(triggered=[], failed=[], skipped=f"integration is {status or 'absent'}")
        return result
    if updated is None:
        result.update(triggered=[], failed=[], skipped="the credentials could not be pushed")
        return result
    result.update(await trigger_templates(deps, tenant, provider))
    log.info("integration.synced", **result)
    return result
