"""The composition root: the one place that builds Zixly's long-lived objects from settings.

``Services.build`` makes the object graph (database engine and sessions, Redis clients, the
keyring, the HTTP client, token verification, the access guard, the job queue) and, on first
use, the instance runtime, the lifecycle, the reconciler, a tenant's n8n access, the alert
service and the OAuth connector. The ASGI app (``zixly.app``), the worker
(``zixly.workers.settings``), the CLI and the development stack each build one ``Services``
and hand it on; nothing else constructs these objects, and tests build the same graph with
their own settings. The GraphQL context carries this object, not the settings.

Building is cheap and touches nothing remote (engines and clients connect on first use), so a
process that never runs an instance operation never creates a runtime.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property

import httpx
from arq import ArqRedis
from redis.asyncio import Redis

from zixly.alerts.channels import SmtpChannel, WebhookChannel
from zixly.alerts.destinations import WebhookTargets
from zixly.alerts.service import AlertService
from zixly.core.queue import job_queue
from zixly.core.settings import Settings
from zixly.db.session import Database, create_engine
from zixly.domain.cursors import CursorCodec
from zixly.integrations.connect import IntegrationConnector
from zixly.provisioning.control import TenantN8n
from zixly.provisioning.lifecycle import InstanceLifecycle
from zixly.provisioning.reconciler import Reconciler
from zixly.provisioning.runtimes.base import InstanceRuntime
from zixly.security.authenticator import Authenticator
from zixly.security.crypto import Keyring
from zixly.security.guard import AccessGuard
from zixly.security.principal_events import PrincipalWatch
from zixly.security.tokens import load_signing_secret
from zixly.security.verifier import TokenVerifier

REDIS_TIMEOUT_SECONDS = 2.0


def build_runtime(settings: Settings) -> InstanceRuntime:
    """The runtime the settings name (``ZIXLY_N8N_RUNTIME``)."""
    if settings.n8n_runtime == "kubernetes":
        from zixly.provisioning.runtimes.kubernetes import from_settings

        return from_settings(settings)
    if settings.n8n_runtime == "docker":
        from zixly.provisioning.runtimes.docker import DockerRuntime
        from zixly.provisioning.runtimes.podman import docker_client

        # The engine from DOCKER_HOST (Docker, or Podman's API socket), else the local
        # Podman API service (`zixly podman start`).
        return DockerRuntime(docker_client())
    from zixly.provisioning.runtimes.process import ProcessRuntime

    return ProcessRuntime(settings.data_dir)


def build_alert_service(
    settings: Settings, db: Database, http: httpx.AsyncClient, keyring: Keyring
) -> AlertService:
    return AlertService(
        db,
        keyring,
        SmtpChannel.from_settings(settings),
        WebhookChannel(
            http,
            timeout=settings.alert_webhook_timeout_seconds,
            targets=WebhookTargets.from_settings(settings),
        ),
    )


def build_lifecycle(
    settings: Settings,
    db: Database,
    redis: Redis,
    http: httpx.AsyncClient,
    runtime: InstanceRuntime,
    keyring: Keyring,
    *,
    lock_wait: float = 0.0,
) -> InstanceLifecycle:
    return InstanceLifecycle(
        db,
        redis,
        runtime,
        keyring,
        http,
        version=settings.n8n_version,
        ready_timeout=settings.n8n_ready_timeout_seconds,
        lock_ttl=settings.job_lease_seconds,
        lock_wait=lock_wait,
        ingest_url=settings.ingest_base_url,
        provider_base_urls=settings.provider_base_urls,
    )


@dataclass
class Services:
    settings: Settings
    db: Database
    # Shared, pub/sub included (a connect timeout only: a socket timeout would also end idle
    # subscriptions).
    redis: Redis
    # Commands on a request's path (rate limits, editor sessions, OAuth states, job queue):
    # socket timeouts bound the wait, so a Redis that stopped answering gives a 503.
    redis_commands: Redis
    http: httpx.AsyncClient
    keyring: Keyring
    verifier: TokenVerifier
    authenticator: Authenticator
    cursors: CursorCodec
    guard: AccessGuard
    # Removals and role changes announced by any replica (closes this process's WebSockets).
    principal_watch: PrincipalWatch
    # How long an instance operation waits for the tenant's lock (the worker: one lease).
    lock_wait: float = 0.0
    given_runtime: InstanceRuntime | None = field(default=None, repr=False)

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        database_url: str,
        redis_url: str,
        runtime: InstanceRuntime | None = None,
        lock_wait: float = 0.0,
        http_timeout: float = 10.0,
        keyring: Keyring | None = None,
    ) -> Services:
        """``runtime``: one already running (tests, the demo); None builds the configured
        one on first use. ``keyring``: a caller's own (a test's), else from the settings."""
        secret = load_signing_secret(settings)
        db = Database(create_engine(database_url, settings), settings)
        redis = Redis.from_url(
            redis_url, decode_responses=False, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
        )
        # The rate limits and the other commands of a request get a client of their own
        # whose socket timeouts bound how long a request waits on a Redis that stopped
        # answering (the limits then fail open; the rest answer 503).
        commands = Redis.from_url(
            redis_url,
            decode_responses=False,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        )
        http = httpx.AsyncClient(timeout=httpx.Timeout(http_timeout))
        verifier = TokenVerifier(settings, secret, http)
        return cls(
            settings=settings,
            db=db,
            redis=redis,
            redis_commands=commands,
            http=http,
            keyring=keyring or Keyring.from_settings(settings),
            verifier=verifier,
            authenticator=Authenticator(settings, verifier, db),
            cursors=CursorCodec(secret),
            guard=AccessGuard(commands, settings),
            principal_watch=PrincipalWatch(redis),
            lock_wait=lock_wait,
            given_runtime=runtime,
        )

    @cached_property
    def queue(self) -> ArqRedis:
        """Enqueue jobs by name (JSON, the worker's codec)."""
        return job_queue(self.redis_commands)

    @cached_property
    def runtime(self) -> InstanceRuntime:
        return self.given_runtime or build_runtime(self.settings)

    @cached_property
    def lifecycle(self) -> InstanceLifecycle:
        return build_lifecycle(
            self.settings,
            self.db,
            self.redis_commands,
            self.http,
            self.runtime,
            self.keyring,
            lock_wait=self.lock_wait,
        )

    @cached_property
    def reconciler(self) -> Reconciler:
        # An in-flight row left alone for two leases has no live job (a running one renews
        # its lease and holds the tenant's lock; a queued one the reconciler may run first,
        # under that lock, never at the same time), e.g. a killed in-process CLI operation.
        settings = self.settings
        return Reconciler(
            self.lifecycle,
            retry_failed_after=timedelta(seconds=settings.reconcile_retry_failed_seconds),
            grace=timedelta(seconds=max(30.0, 2 * settings.job_lease_seconds)),
        )

    @cached_property
    def tenant_n8n(self) -> TenantN8n:
        return TenantN8n(self.db, self.keyring, self.http)

    @cached_property
    def alerts(self) -> AlertService:
        return build_alert_service(self.settings, self.db, self.http, self.keyring)

    @cached_property
    def connector(self) -> IntegrationConnector:
        return IntegrationConnector(
            self.db,
            self.redis_commands,  # socket timeouts: a stalled Redis is a 503, not a hang
            self.keyring,
            self.http,
            self.settings,
            alerts=self.alerts,
            queue=self.queue,
        )

    async def close(self) -> None:
        self.principal_watch.stop()
        await self.http.aclose()
        await self.redis.aclose()
        await self.guard.close()
        await self.db.dispose()
