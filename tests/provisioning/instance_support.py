"""Helpers shared by the instance lifecycle and reconciler tests (real n8n, PostgreSQL, Redis)."""

from __future__ import annotations

import contextlib
import os
import uuid
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
from arq import create_pool
from arq.connections import RedisSettings
from arq.worker import create_worker

from tests.conftest import World
from tests.provisioning.conftest import FIXTURES, N8N_VERSION, READY_WITHIN
from zixly.container import Services
from zixly.core.queue import deserialize, serialize
from zixly.core.settings import Settings
from zixly.db.session import Database
from zixly.embedded.stack import Endpoints
from zixly.provisioning.instances import InstanceRepository, InstanceRow, Step
from zixly.provisioning.lifecycle import InstanceLifecycle
from zixly.provisioning.n8n.client import N8nClient
from zixly.provisioning.operations import STAFF, StepHook
from zixly.provisioning.reconciler import Reconciler
from zixly.provisioning.runtimes.base import TENANT_LABEL, InstanceRuntime
from zixly.provisioning.runtimes.process import ProcessRuntime
from zixly.provisioning.secrets import InstanceSecretBox, SecretField
from zixly.security.crypto import Keyring, key_entry
from zixly.workers.settings import WorkerSettings

SCHEDULE = str(FIXTURES / "schedule-noop.json")
WEBHOOK = str(FIXTURES / "webhook-noop.json")
SCHEDULE_NAME = "Zixly test: hourly no-op"
WEBHOOK_NAME = "Zixly test: webhook no-op"


class Killed(BaseException):
    """Stands in for the worker dying mid-job: not an ``Exception``, so nothing records it."""


def kill_after(step: Step) -> StepHook:
    async def hook(_tenant_id: uuid.UUID, done: Step) -> None:
        if done is step:
            raise Killed(step.value)

    return hook


def fresh_keys() -> str:
    return key_entry("test1", os.urandom(32))


@dataclass
class LifecycleEnv:
    db: Database
    redis: Any
    runtime: ProcessRuntime
    http: httpx.AsyncClient
    keyring: Keyring
    owner: asyncpg.Connection
    settings: Settings
    keys: str  # the keyring as ZIXLY_ENCRYPTION_KEYS takes it (for a worker's settings)
    tenants: list[uuid.UUID] = field(default_factory=list)

    def lifecycle(
        self,
        *,
        runtime: InstanceRuntime | None = None,
        on_step: StepHook | None = None,
        **options: Any,
    ) -> InstanceLifecycle:
        """A lifecycle over this environment; ``options`` (ingest_url, provider_base_urls,
        ...) go to ``InstanceLifecycle`` as they are."""
        return InstanceLifecycle(
            self.db,
            self.redis,
            runtime or self.runtime,
            self.keyring,
            self.http,
            version=N8N_VERSION,
            ready_timeout=READY_WITHIN,
            on_step=on_step,
            **options,
        )

    def reconciler(self, *, retry_failed_after: timedelta = timedelta(0)) -> Reconciler:
        return Reconciler(
            self.lifecycle(), retry_failed_after=retry_failed_after, grace=timedelta(0)
        )

    async def tenant(self, label: str) -> uuid.UUID:
        created = await World(self.owner, self.settings).tenant(label, clients=0)
        self.tenants.append(created.id)
        return created.id

    async def row(self, tenant_id: uuid.UUID) -> InstanceRow:
        async with self.db.transaction(STAFF) as session:
            row = await InstanceRepository(session).get(tenant_id)
        assert row is not None
        return row

    async def events(self, tenant_id: uuid.UUID) -> list[tuple[str, str | None, str]]:
        async with self.db.transaction(STAFF) as session:
            records = await InstanceRepository(session).events(tenant_id)
        return [(r.kind.value, r.step.value if r.step else None, r.message) for r in records]

    async def api(self, tenant_id: uuid.UUID) -> N8nClient:
        """The instance's public API with its stored (decrypted) key."""
        row = await self.row(tenant_id)
        key = InstanceSecretBox(self.keyring).open(row, SecretField.API_KEY)
        assert key is not None and row.url is not None
        return N8nClient(row.url, self.http, api_key=key.reveal(), version=row.version)

    async def workflows(self, tenant_id: uuid.UUID) -> list[tuple[str, bool]]:
        listed = await (await self.api(tenant_id)).all_workflows()
        return sorted((str(w["name"]), bool(w["active"])) for w in listed)

    async def instances_of(self, tenant_id: uuid.UUID) -> list[str]:
        return [
            h.instance_id
            for h in await self.runtime.list_managed()
            if h.labels.get(TENANT_LABEL) == str(tenant_id)
        ]

    async def cleanup(self) -> None:
        for handle in await self.runtime.list_managed():
            await self.runtime.remove(handle)
        # Rows must go before their tenants can (ON DELETE RESTRICT); other modules'
        # reconcilers must not find rows whose instances lived in this module's data dir.
        await self.owner.execute(
            "DELETE FROM n8n_instances WHERE tenant_id = ANY($1::uuid[])", self.tenants
        )


@contextlib.asynccontextmanager
async def lifecycle_env(
    services: Services,
    runtime: ProcessRuntime,
    http: httpx.AsyncClient,
    owner: asyncpg.Connection,
    settings: Settings,
) -> AsyncIterator[LifecycleEnv]:
    keys = fresh_keys()
    env = LifecycleEnv(
        db=services.db,
        redis=services.redis,
        runtime=runtime,
        http=http,
        keyring=Keyring.parse(keys),
        owner=owner,
        settings=settings,
        keys=keys,
    )
    try:
        yield env
    finally:
        await env.cleanup()


async def run_queued_jobs(
    settings: Settings, endpoints: Endpoints, runtime: InstanceRuntime, **ctx: Any
) -> tuple[int, int]:
    """Run every queued job in an in-process arq burst worker (the real ``WorkerSettings``,
    crons off); returns (complete, failed). ``ctx`` adds to the worker's context."""
    pool = await create_pool(
        RedisSettings.from_dsn(endpoints.redis_url),
        job_serializer=serialize,
        job_deserializer=deserialize,
    )
    running = create_worker(
        WorkerSettings,  # type: ignore[arg-type]
        redis_pool=pool,
        burst=True,
        handle_signals=False,
        poll_delay=0.1,
        cron_jobs=[],
        ctx={
            "settings": settings,
            "database_url": endpoints.database_url,
            "runtime": runtime,
            **ctx,
        },
    )
    try:
        await running.main()
    finally:
        with warnings.catch_warnings():  # arq closes its pool with redis-py's old close()
            warnings.filterwarnings("ignore", "Call to deprecated close", DeprecationWarning)
            await running.close()
    return running.jobs_complete, running.jobs_failed


def webhook_split_workflow(
    name: str, path: str, field: str, node: dict[str, Any]
) -> dict[str, Any]:
    """A workflow ``Webhook -> Split Out -> node``: the webhook answers with every item the
    last node returned; ``field`` (e.g. ``body.items``) holds the array to split into items;
    ``node`` (its name, type, parameters...) gets an id and its position here."""
    last = {**node, "id": str(uuid.uuid4()), "position": [440, 0]}
    return {
        "name": name,
        "nodes": [
            {
                "parameters": {
                    "httpMethod": "POST",
                    "path": path,
                    "responseMode": "lastNode",
                    "responseData": "allEntries",
                    "options": {},
                },
                "id": str(uuid.uuid4()),
                "name": "Webhook",
                "type": "n8n-nodes-base.webhook",
                "typeVersion": 2,
                "position": [0, 0],
                "webhookId": str(uuid.uuid4()),
            },
            {
                "parameters": {"fieldToSplitOut": field, "options": {}},
                "id": str(uuid.uuid4()),
                "name": "Items",
                "type": "n8n-nodes-base.splitOut",
                "typeVersion": 1,
                "position": [220, 0],
            },
            last,
        ],
        "connections": {
            "Webhook": {"main": [[{"node": "Items", "type": "main", "index": 0}]]},
            "Items": {"main": [[{"node": last["name"], "type": "main", "index": 0}]]},
        },
        "settings": {"executionOrder": "v1"},
    }
