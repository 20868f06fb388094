"""Connecting a provider (OAuth 2 authorization code with PKCE) and disconnecting it.

Start (an ADMIN, through GraphQL): a random ``state`` and a PKCE verifier are stored in Redis
for ``oauth_state_ttl_seconds``, bound to the tenant, the user, the provider, the redirect
URI and (Shopify) the shop; the browser is sent to the provider's authorize URL with the S256
challenge. Redis, not the database: a pending connect is short-lived, single-use and needs
no history, and ``GETDEL`` consumes it atomically, so a state works once even when the
callback is replayed concurrently.

Callback (the browser, no JWT): the state is consumed first, whatever happens next; it names
the tenant, so a state can only ever connect the tenant (and provider) it was issued for.
The user who started must still be an ADMIN of it. The code is exchanged with the verifier,
the tokens are stored encrypted (TokenStore.connect: ACTIVE, sync-health counters reset) with
an audit row in one tenant-scoped transaction; only after it commits is the reconnect alert
(``integration:<provider>:auth``) resolved and the initial sync job enqueued, so a job never
runs for a connection that was rolled back.

Disconnect (an ADMIN): under the integration's refresh lock (no refresh can rotate the token
meanwhile), the grant is revoked at the provider where it has an endpoint, then both tokens
are cleared and the row DISABLED with an audit row. A failed remote revocation does not keep
the tokens: they are cleared anyway and the failure is recorded (audit, log, the result), as
the user asked to disconnect and Zixly must not hold a grant it was told to drop. Then the
tenant's n8n credentials get ``not-connected``.
"""

from __future__ import annotations

import enum
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from urllib.parse import urlencode

import httpx
from arq import ArqRedis
from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import Table, select

from zixly.alerts.service import AlertService
from zixly.core.errors import NotFoundError, ValidationError, ZixlyError
from zixly.core.logging import get_logger
from zixly.core.settings import Settings
from zixly.db.models import Membership
from zixly.db.session import Database, Scope
from zixly.domain.audit import Actor, AuditEntry, write_audit
from zixly.integrations.refresh import LOCK_PREFIX, RefreshBusyError
from zixly.integrations.sync import SYNC_JOB, auth_alert_key, push_integration_token, sync_job_id
from zixly.providers.oauth import (
    InvalidGrantError,
    OAuthClient,
    ProviderError,
    ProviderRateLimitedError,
    ProviderUnavailableError,
)
from zixly.providers.registry import Provider, provider
from zixly.providers.tokens import StoredIntegration, TokenStore
from zixly.provisioning.credentials import CredentialDeps
from zixly.security.crypto import Keyring, Secret

log = get_logger("zixly.integrations.connect")

STATE_PREFIX = "zixly:oauth:state:"
SHOP_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")  # fullmatch: "$" would let a final "\n" by
SHOP_MAX_LENGTH = 60
_MEMBERSHIPS = cast(Table, Membership.__table__)
_ERROR_CODE = re.compile(r"[a-z_]{1,40}")  # fullmatch


def redirect_uri(settings: Settings, provider_name: str) -> str:
    return f"{settings.base_url.rstrip('/')}/oauth/{provider_name}/callback"


class ConnectFailure(enum.StrEnum):
    """Why a callback did not connect (shown to the user, and in the redirect)."""

    INVALID_STATE = "invalid_state"  # unknown, expired or already used
    PROVIDER_MISMATCH = "provider_mismatch"  # the state was issued for another provider
    ACCESS_DENIED = "access_denied"  # the user refused at the provider
    PROVIDER_ERROR = "provider_error"  # the provider redirected with another error
    INVALID_REQUEST = "invalid_request"  # no code, or a shop that is not the state's
    INVALID_GRANT = "invalid_grant"  # the provider refused the code (PKCE, reuse, expiry)
    PROVIDER_UNAVAILABLE = "provider_unavailable"  # timeout, 5xx, 429 at the token endpoint
    FORBIDDEN = "forbidden"  # the user is no longer an ADMIN of the tenant
    INTERNAL = "internal_error"  # Zixly failed (nothing was stored); start again
    UNAVAILABLE = "unavailable"  # Zixly's Redis or database is down; start again shortly


class OAuthConnectError(ZixlyError):
    code = "OAUTH_CONNECT_FAILED"
    http_status = 400

    def __init__(self, reason: ConnectFailure, message: str, **details: Any) -> None:
        super().__init__(message, reason=reason.value, **details)
        self.reason = reason


class ProviderNotConfiguredError(ZixlyError):
    """Zixly has no OAuth app registered with the provider (``ZIXLY_OAUTH_CLIENTS``)."""

    code = "PROVIDER_NOT_CONFIGURED"
    http_status = 409


class RemoteRevocation(enum.StrEnum):
    REVOKED = "REVOKED"
    UNSUPPORTED = "UNSUPPORTED"  # the provider has no revocation endpoint
    NOTHING_TO_REVOKE = "NOTHING_TO_REVOKE"  # no refresh token was stored
    FAILED = "FAILED"  # the provider failed; the tokens were cleared here regardless


@dataclass(frozen=True)
class PendingConnect:
    """What a state stands for while the user is at the provider."""

    tenant_id: uuid.UUID
    user_id: uuid.UUID
    provider: str
    redirect_uri: str
    shop: str | None
    code_verifier: Secret
    expires_at: datetime

    def dumps(self) -> str:
        return json.dumps(
            {
                "tenant_id": str(self.tenant_id),
                "user_id": str(self.user_id),
                "provider": self.provider,
                "redirect_uri": self.redirect_uri,
                "shop": self.shop,
                "code_verifier": self.code_verifier.reveal(),
                "expires_at": self.expires_at.isoformat(),
            }
        )

    @classmethod
    def loads(cls, raw: str | bytes) -> PendingConnect:
        data = json.loads(raw)
        return cls(
            tenant_id=uuid.UUID(data["tenant_id"]),
            user_id=uuid.UUID(data["user_id"]),
            provider=str(data["provider"]),
            redirect_uri=str(data["redirect_uri"]),
            shop=data.get("shop"),
            code_verifier=Secret(str(data["code_verifier"])),
            expires_at=datetime.fromisoformat(data["expires_at"]),
        )


@dataclass(frozen=True)
class ConnectStart:
    provider: str
    authorize_url: str
    state: str
    expires_at: datetime


@dataclass(frozen=True)
class Connected:
    tenant_id: uuid.UUID
    provider: str
    integration_id: uuid.UUID
    sync_enqueued: bool


@dataclass(frozen=True)
class Disconnected:
    provider: str
    status: str
    remote_revocation: RemoteRevocation
    credentials_updated: int | None  # None: the push to n8n failed (logged)


class StateStore:
    """Pending connects in Redis, each readable exactly once."""

    def __init__(self, redis: Redis, ttl: timedelta) -> None:
        self.redis = redis
        self.ttl = ttl

    async def put(self, state: str, pending: PendingConnect) -> None:
        await self.redis.set(STATE_PREFIX + state, pending.dumps(), ex=self.ttl, nx=True)

    async def take(self, state: str) -> PendingConnect | None:
        raw = await self.redis.getdel(STATE_PREFIX + state)
        return PendingConnect.loads(raw) if raw is not None else None


def checked_shop(spec: Provider, shop: str | None) -> str | None:
    """A shop name where the provider's host needs one (Shopify), strictly validated."""
    if "{shop}" not in spec.base_url:
        if shop is not None:
            raise ValidationError(f"{spec.name} takes no shop", field="shop")
        return None
    if shop is None:
        raise ValidationError(f"{spec.name} needs the shop's name", field="shop")
    if len(shop) > SHOP_MAX_LENGTH or not SHOP_NAME.fullmatch(shop):
        raise ValidationError(
            "shop must be the store's name: lower-case letters, digits and hyphens",
            field="shop",
        )
    return shop


class IntegrationConnector:
    def __init__(
        self,
        db: Database,
        redis: Redis,
        keyring: Keyring,
        http: httpx.AsyncClient,
        settings: Settings,
        *,
        alerts: AlertService | None = None,
        queue: ArqRedis | None = None,
    ) -> None:
        self.db = db
        self.redis = redis
        self.store = TokenStore(keyring)
        self.keyring = keyring
        self.oauth = OAuthClient(http, settings)
        self.http = http
        self.settings = settings
        self.states = StateStore(redis, timedelta(seconds=settings.oauth_state_ttl_seconds))
        self.alerts = alerts
        self.queue = queue

    # --- start --------------------------------------------------------------------------------
    async def start(
        self, tenant_id: uuid.UUID, user_id: uuid.UUID, provider_name: str, shop: str | None
    ) -> ConnectStart:
        spec = provider(provider_name)
        client = self.settings.oauth_clients.get(spec.name)
        if client is None:
            raise ProviderNotConfiguredError(
                f"Zixly has no OAuth app for {spec.name}", provider=spec.name
            )
        shop = checked_shop(spec, shop)
        state = generate_token(43)
        verifier = Secret(generate_token(64))  # RFC 7636: 43-128 unreserved characters
        expires_at = datetime.now(UTC) + self.states.ttl
        callback = redirect_uri(self.settings, spec.name)
        pending = PendingConnect(
            tenant_id, user_id, spec.name, callback, shop, verifier, expires_at
        )
        await self.states.put(state, pending)
        params = {
            "response_type": "code",
            "client_id": client.client_id,
            "redirect_uri": callback,
            "scope": spec.scope_separator.join(spec.scopes),
            "state": state,
            "code_challenge": create_s256_code_challenge(verifier.reveal()),
            "code_challenge_method": "S256",
        }
        url_params = {"shop": shop} if shop else {}
        authorize = f"{spec.authorize_url(self.settings, **url_params)}?{urlencode(params)}"
        log.info(
            "integration.connect.started",
            tenant_id=str(tenant_id),
            user_id=str(user_id),
            provider=spec.name,
        )
        return ConnectStart(spec.name, authorize, state, expires_at)

    # --- callback ------------------------------------------------------------------------------
    async def complete(
        self, provider_name: str, query: Mapping[str, str], *, request_id: str | None = None
    ) -> Connected:
        """Finish a connect from the provider's redirect; raises OAuthConnectError."""
        state = query.get("state") or ""
        pending = await self.states.take(state) if state else None
        if pending is None:
            raise OAuthConnectError(
                ConnectFailure.INVALID_STATE, "this link is unknown, expired or already used"
            )
        where = {"tenant_id": str(pending.tenant_id), "provider": pending.provider}
        if pending.provider != provider_name:
            log.warning("integration.connect.provider_mismatch", **where, callback=provider_name)
            raise OAuthConnectError(
                ConnectFailure.PROVIDER_MISMATCH, "the link was issued for another provider"
            )
        spec = provider(pending.provider)
        error = query.get("error")
        if error is not None:
            reported = error if _ERROR_CODE.fullmatch(error) else "unknown"
            log.info("integration.connect.refused", **where, error=reported)
            if reported == "access_denied":
                raise OAuthConnectError(
                    ConnectFailure.ACCESS_DENIED, "access was not granted at the provider"
                )
            raise OAuthConnectError(
                ConnectFailure.PROVIDER_ERROR, "the provider reported an error", error=reported
            )
        code = query.get("code")
        shop = query.get("shop")
        if not code or (
            shop is not None and shop not in (pending.shop, f"{pending.shop}.myshopify.com")
        ):
            raise OAuthConnectError(
                ConnectFailure.INVALID_REQUEST, "the provider's answer is incomplete"
            )
        url_params = {"shop": pending.shop} if pending.shop else {}
        try:
            tokens = await self.oauth.exchange_code(
                spec,
                code,
                redirect_uri=pending.redirect_uri,
                code_verifier=pending.code_verifier,
                **url_params,
            )
        except InvalidGrantError as exc:
            log.warning("integration.connect.invalid_grant", **where)
            raise OAuthConnectError(
                ConnectFailure.INVALID_GRANT, "the provider refused the authorization code"
            ) from exc
        except (ProviderUnavailableError, ProviderRateLimitedError) as exc:
            log.warning("integration.connect.unavailable", **where, code=exc.code)
            raise OAuthConnectError(
                ConnectFailure.PROVIDER_UNAVAILABLE, "the provider could not be reached; try again"
            ) from exc
        except ProviderError as exc:
            log.warning("integration.connect.provider_error", **where, code=exc.code)
            raise OAuthConnectError(
                ConnectFailure.PROVIDER_ERROR, "the provider did not issue tokens"
            ) from exc

        scope = Scope(tenant_id=pending.tenant_id, user_id=pending.user_id)
        async with self.db.transaction(scope) as session:
            role = (
                await session.execute(
                    select(_MEMBERSHIPS.c.role).where(
                        _MEMBERSHIPS.c.tenant_id == pending.tenant_id,
                        _MEMBERSHIPS.c.user_id == pending.user_id,
                    )
                )
            ).scalar_one_or_none()
            if role != "ADMIN":
                raise OAuthConnectError(
                    ConnectFailure.FORBIDDEN, "only a tenant ADMIN can connect providers"
                )
            metadata: dict[str, Any] = {"connected_at": datetime.now(UTC).isoformat()}
            if pending.shop:
                metadata["shop"] = pending.shop
            if tokens.scope:
                metadata["scope"] = tokens.scope
            stored = await self.store.connect(
                session,
                pending.tenant_id,
                spec.name,
                access_token=tokens.access_token,
                refresh_token=tokens.refresh_token,
                expires_at=datetime.now(UTC) + tokens.expires_in,
                metadata=metadata,
            )
            actor = Actor(pending.tenant_id, pending.user_id, request_id)
            details = {"provider": spec.name, **({"shop": pending.shop} if pending.shop else {})}
            entry = AuditEntry("integration.connected", "integration", str(stored.id), details)
            await write_audit(session, actor, entry)
        log.info("integration.connected", **where, integration_id=str(stored.id))
        await self._resolve_auth_alert(pending.tenant_id, spec.name)
        enqueued = await self._enqueue_sync(pending.tenant_id, spec.name)
        return Connected(pending.tenant_id, spec.name, stored.id, enqueued)

    async def _resolve_auth_alert(self, tenant_id: uuid.UUID, provider_name: str) -> None:
        if self.alerts is None:
            return
        try:
            await self.alerts.resolve(tenant_id, auth_alert_key(provider_name))
        except Exception as exc:  # the connection stands; the alert can be closed later
            log.error(
                "integration.alert_not_resolved",
                tenant_id=str(tenant_id),
                provider=provider_name,
                error=type(exc).__name__,
            )

    async def _enqueue_sync(self, tenant_id: uuid.UUID, provider_name: str) -> bool:
        """The initial sync (credentials pushed, the provider's workflows run once)."""
        if self.queue is None:
            return False
        try:
            job = await self.queue.enqueue_job(
                SYNC_JOB,
                str(tenant_id),
                provider_name,
                _job_id=sync_job_id(tenant_id, provider_name),
            )
        except RedisError as exc:  # connected regardless; the next refresh pushes the token
            log.error(
                "integration.sync.not_enqueued",
                tenant_id=str(tenant_id),
                provider=provider_name,
                error=type(exc).__name__,
            )
            return False
        return job is not None

    # --- disconnect ----------------------------------------------------------------------------
    async def disconnect(self, actor: Actor, provider_name: str) -> Disconnected:
        spec = provider(provider_name)
        tenant_id = actor.tenant_id
        if tenant_id is None:
            raise ValidationError("disconnecting needs a tenant")
        scope = Scope(tenant_id=tenant_id, user_id=actor.user_id)
        async with self.db.transaction(scope) as session:
            found = await self.store.find(session, tenant_id, spec.name)
        if found is None:
            raise NotFoundError(f"{spec.name} is not connected", provider=spec.name)
        lock = self.redis.lock(
            f"{LOCK_PREFIX}{found.id}",
            timeout=self.settings.oauth_timeout_seconds * 2 + 10,
            blocking_timeout=self.settings.oauth_timeout_seconds + 5,
        )
        if not await lock.acquire():
            raise RefreshBusyError("the integration is being refreshed; try again shortly")
        try:
            async with self.db.transaction(scope) as session:
                current = await self.store.load(session, found.id)
            revocation, failure = await self._revoke(spec, current)
            async with self.db.transaction(scope) as session:
                current = await self.store.load(session, found.id, for_update=True)
                await self.store.clear(session, current)
                details: dict[str, Any] = {
                    "provider": spec.name,
                    "remote_revocation": revocation.value,
                }
                if failure is not None:
                    details["revocation_error"] = failure
                entry = AuditEntry(
                    "integration.disconnected", "integration", str(found.id), details
                )
                await write_audit(session, actor, entry)
        finally:
            try:
                await lock.release()
            except Exception:  # expired: the write already happened
                log.warning("integration.disconnect.lock_expired", integration_id=str(found.id))
        log.info(
            "integration.disconnected",
            tenant_id=str(tenant_id),
            provider=spec.name,
            remote_revocation=revocation.value,
        )
        await self._resolve_auth_alert(tenant_id, spec.name)  # nothing left to reconnect
        deps = CredentialDeps(self.db, self.keyring, self.http, retry_for=1.0)
        pushed = await push_integration_token(deps, self.redis, tenant_id, spec.name)
        return Disconnected(spec.name, "DISABLED", revocation, pushed)

    async def _revoke(
        self, spec: Provider, stored: StoredIntegration
    ) -> tuple[RemoteRevocation, str | None]:
        if spec.revocation_path is None:
            return RemoteRevocation.UNSUPPORTED, None
        if stored.refresh_token is None:
            return RemoteRevocation.NOTHING_TO_REVOKE, None
        shop = stored.metadata.get("shop")
        params = {"shop": str(shop)} if shop else {}
        try:
            await self.oauth.revoke(spec, stored.refresh_token, **params)
        except ZixlyError as exc:
            log.warning(
                "integration.revocation_failed",
                tenant_id=str(stored.tenant_id),
                provider=spec.name,
                code=exc.code,
                action="the tokens are cleared here; revoke the app's access at the provider",
            )
            return RemoteRevocation.FAILED, exc.code
        return RemoteRevocation.REVOKED, None
