"""One sync-health pass over every running tenant instance (the ``monitor_sync_health`` job).

For each instance whose actual state is RUNNING, at most ``concurrency`` at a time and each
within ``timeout`` seconds: read the executions finished since the instance's cursor
(``zixly.monitor.executions``), map each to the integration it feeds (its workflow's name is
a manifest template's fixed name; the template names the integration), fold them into the
integrations' health (``zixly.monitor.rules``) and write the integrations and the instance's
cursor in one transaction. Runs of workflows that feed no integration (the heartbeat, a
tenant's own workflows) and runs started by hand in the editor are skipped.

After the commit, every status change is published as a sync event (the ``syncEvents``
subscription) and alerts are raised or resolved: ``integration:<provider>:sync`` when
failures make an integration ERROR (resolved, with one recovery notice, by the next
success), ``integration:<provider>:stale``, and ``instance:unreachable`` for an instance that
does not answer (resolved when it answers again). One instance failing in any way is
recorded for it and never stops the pass over the others.

The instance's API key is the one stored for it, opened through ``TenantN8n`` (the same path
the API's tenant operations take); it never leaves that object.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import LockError, RedisError

from zixly.alerts.service import AlertService
from zixly.core.errors import ZixlyError
from zixly.core.events import SyncEventBus
from zixly.core.logging import get_logger
from zixly.core.settings import Settings
from zixly.db.session import Database, Scope
from zixly.monitor import store
from zixly.monitor.executions import Batch, failure_messages, read_since
from zixly.monitor.rules import ACTIVE, ERROR, STALE, Run, Verdict, assess, sync_alert_severity
from zixly.provisioning.control import TenantN8n
from zixly.provisioning.operations import describe
from zixly.provisioning.templates import Manifest, TemplateSpec, bundled_manifest

log = get_logger("zixly.monitor")
STAFF = Scope(tenant_id=None, staff=True)
UNREACHABLE_KEY = "instance:unreachable"
PASS_LOCK = "zixly:monitor:pass"  # noqa: S105 - a Redis key
MANUAL_MODE = "manual"  # someone trying a workflow in the editor: not a sync

Clock = Callable[[], datetime]


def sync_key(provider: str) -> str:
    return f"integration:{provider}:sync"


def stale_key(provider: str) -> str:
    return f"integration:{provider}:stale"


def auth_key(provider: str) -> str:
    return f"integration:{provider}:auth"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class InstanceOutcome:
    tenant_id: uuid.UUID
    reachable: bool
    executions: int = 0
    changes: list[tuple[str, str, str]] = field(default_factory=list)  # provider, from, to
    error: str | None = None


@dataclass
class MonitorReport:
    outcomes: list[InstanceOutcome] = field(default_factory=list)
    failed: int = 0  # instances whose pass itself failed (logged), not unreachable ones
    skipped: bool = False  # another pass held the lock

    def as_dict(self) -> dict[str, int]:
        return {
            "instances": len(self.outcomes) + self.failed,
            "checked": sum(o.reachable for o in self.outcomes),
            "unreachable": sum(not o.reachable for o in self.outcomes),
            "failed": self.failed,
            "executions": sum(o.executions for o in self.outcomes),
            "status_changes": sum(len(o.changes) for o in self.outcomes),
            "skipped": int(self.skipped),
        }


@dataclass(frozen=True)
class _Reading:
    """What the n8n side of one instance's check found."""

    batch: Batch
    runs: dict[str, list[Run]]  # provider -> its template runs, by id
    intervals: dict[str, int | None]  # provider -> its shortest template interval (minutes)


class SyncHealthMonitor:
    def __init__(
        self,
        db: Database,
        redis: Redis,
        instances: TenantN8n,
        alerts: AlertService,
        *,
        manifest: Manifest | None = None,
        concurrency: int = 4,
        timeout: float = 20.0,
        error_after: int = 3,
        clock: Clock = _now,
        pass_lock_seconds: float = 900.0,
    ) -> None:
        self.db = db
        self.redis = redis
        self.events = SyncEventBus(redis)
        self.instances = instances
        self.alerts = alerts
        self._manifest = manifest
        self.concurrency = concurrency
        self.timeout = timeout
        self.error_after = error_after
        self.clock = clock
        self.pass_lock_seconds = pass_lock_seconds

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        db: Database,
        redis: Redis,
        instances: TenantN8n,
        alerts: AlertService,
        **kwargs: Any,
    ) -> SyncHealthMonitor:
        return cls(
            db,
            redis,
            instances,
            alerts,
            concurrency=settings.monitor_concurrency,
            timeout=settings.monitor_timeout_seconds,
            error_after=settings.sync_error_after_failures,
            **kwargs,
        )

    def templates(self) -> dict[str, TemplateSpec]:
        """Workflow name -> the manifest template that feeds an integration. Read once per
        pass, before any instance: a manifest that does not load fails the pass, it does
        not make every instance look broken."""
        manifest = self._manifest or bundled_manifest()
        return {spec.name: spec for spec in manifest.templates if spec.provider}

    # --- the pass ------------------------------------------------------------------------------
    async def run(self, *, only: Collection[uuid.UUID] | None = None) -> MonitorReport:
        """One pass (skipped when another pass holds the lock); ``only`` limits it to these
        tenants' instances."""
        lock = self.redis.lock(PASS_LOCK, timeout=self.pass_lock_seconds, blocking=False)
        if not await lock.acquire():
            log.info("monitor.skipped", reason="another pass is running")
            return MonitorReport(skipped=True)
        try:
            return await self._pass(only)
        finally:
            try:
                await lock.release()
            except (LockError, RedisError):
                log.warning("monitor.lock_lost")

    async def _pass(self, only: Collection[uuid.UUID] | None) -> MonitorReport:
        templates = self.templates()
        async with self.db.transaction(STAFF) as session:
            targets = await store.running_instances(session, only)
        gate = asyncio.Semaphore(self.concurrency)
        report = MonitorReport()

        async def one(target: store.Target) -> None:
            async with gate:
                try:
                    report.outcomes.append(await self.check(target, templates))
                except Exception as exc:  # this instance only; the pass goes on
                    report.failed += 1
                    log.error(
                        "monitor.instance_failed",
                        tenant_id=str(target.tenant_id),
                        error=describe(exc),
                    )

        await asyncio.gather(*(one(t) for t in targets))
        log.info("monitor.done", **report.as_dict())
        return report

    async def check(
        self, target: store.Target, templates: Mapping[str, TemplateSpec] | None = None
    ) -> InstanceOutcome:
        """Read one instance and record what its runs say (or that it did not answer)."""
        templates = self.templates() if templates is None else templates
        now = self.clock()
        try:
            async with asyncio.timeout(self.timeout):
                reading = await self._read(target, templates, now)
        except TimeoutError:
            reason = f"no answer within {self.timeout:g}s"
            return await self._unreachable(target, now, reason, "TIMEOUT")
        except Exception as exc:  # unreachable, refused, not running, a bad answer...
            code = exc.code if isinstance(exc, ZixlyError) else "ERROR"
            return await self._unreachable(target, now, describe(exc), code)
        return await self._record(target, reading, now)

    # --- n8n ------------------------------------------------------------------------------------
    async def _read(
        self, target: store.Target, templates: Mapping[str, TemplateSpec], now: datetime
    ) -> _Reading:
        api, _ = await self.instances.client(target.tenant_id)
        batch = await read_since(api, target.cursor, now)
        feeds = _feeds(await api.all_workflows(), templates)
        runs: dict[str, list[Run]] = defaultdict(list)
        newest_failure: dict[str, int] = {}
        for execution in batch.executions:
            spec = feeds.get(execution.workflow_id)
            if spec is None or execution.mode == MANUAL_MODE:
                continue
            if not (execution.succeeded or execution.failed):
                continue  # canceled, unknown: says nothing about the integration
            stopped = execution.stopped_at or execution.started_at or now
            runs[spec.integration].append(Run(execution.id, execution.succeeded, stopped))
            if execution.failed:
                newest_failure[spec.integration] = execution.id
        messages = await failure_messages(api, newest_failure.values())
        for provider_runs in runs.values():
            provider_runs[:] = [
                Run(r.execution_id, r.succeeded, r.stopped_at, messages.get(r.execution_id))
                for r in provider_runs
            ]
        periods: dict[str, list[int]] = defaultdict(list)
        for spec in feeds.values():
            periods[spec.integration] += [spec.interval_minutes] if spec.interval_minutes else []
        intervals = {provider: min(p) if p else None for provider, p in periods.items()}
        if batch.truncated:
            log.warning("monitor.truncated", tenant_id=str(target.tenant_id))
        return _Reading(batch, dict(runs), intervals)

    # --- the database -------------------------------------------------------------------------
    async def _record(
        self, target: store.Target, reading: _Reading, now: datetime
    ) -> InstanceOutcome:
        tenant_id = target.tenant_id
        providers = set(reading.intervals)
        verdicts: list[Verdict] = []
        async with self.db.transaction(STAFF) as session:
            rows = await store.integrations_for_update(session, tenant_id, providers)
            reconnect = await store.open_alert_keys(
                session, tenant_id, [auth_key(r.provider) for r in rows]
            )
            for health in rows:
                verdict = assess(
                    health,
                    reading.runs.get(health.provider, []),
                    error_after=self.error_after,
                    needs_reconnect=auth_key(health.provider) in reconnect,
                    interval_minutes=reading.intervals.get(health.provider),
                    now=now,
                )
                await store.save_health(session, tenant_id, verdict.after, now)
                verdicts.append(verdict)
            await store.save_pass(session, tenant_id, checked_at=now, cursor=reading.batch.cursor)
        outcome = InstanceOutcome(tenant_id, True, executions=len(reading.batch.executions))
        for verdict in verdicts:
            if verdict.status_changed:
                outcome.changes.append(
                    (verdict.after.provider, verdict.before.status, verdict.after.status)
                )
                await self._publish(tenant_id, verdict, now)
            await self._alert(tenant_id, verdict)
        if target.error is not None:
            await self._guarded(self.alerts.resolve(tenant_id, UNREACHABLE_KEY), tenant_id)
        return outcome

    async def _unreachable(
        self, target: store.Target, now: datetime, reason: str, code: str
    ) -> InstanceOutcome:
        """Recorded on the instance (``reason``: for staff, it may name n8n's address); the
        tenant's alert says only the kind of failure (``code``)."""
        log.warning("monitor.unreachable", tenant_id=str(target.tenant_id), error=reason)
        async with self.db.transaction(STAFF) as session:
            await store.save_pass(session, target.tenant_id, checked_at=now, error=reason)
        await self._guarded(
            self.alerts.raise_alert(
                target.tenant_id,
                UNREACHABLE_KEY,
                "CRITICAL",
                "Your n8n instance is not answering: integrations are not being checked",
                {"reason": code},
            ),
            target.tenant_id,
        )
        return InstanceOutcome(target.tenant_id, False, error=reason)

    # --- after the commit: events and alerts ------------------------------------------------
    async def _publish(self, tenant_id: uuid.UUID, verdict: Verdict, now: datetime) -> None:
        after = verdict.after
        try:
            await self.events.publish(
                tenant_id,
                {
                    "provider": after.provider,
                    "status": after.status,
                    "occurred_at": now,
                    "message": _event_message(verdict),
                },
            )
        except Exception as exc:  # the rows are written; a missed event is not a failed pass
            log.warning(
                "monitor.event_not_published", tenant_id=str(tenant_id), error=describe(exc)
            )

    async def _alert(self, tenant_id: uuid.UUID, verdict: Verdict) -> None:
        before, after = verdict.before, verdict.after
        provider = after.provider
        if (
            after.status == ERROR
            and verdict.failures
            and not verdict.needs_reconnect
            and before.status in (ACTIVE, STALE, ERROR)
        ):
            await self._guarded(
                self.alerts.raise_alert(
                    tenant_id,
                    sync_key(provider),
                    sync_alert_severity(after.consecutive_failures, self.error_after),
                    f"{provider.capitalize()} sync is failing",
                    {
                        "provider": provider,
                        "consecutive_failures": after.consecutive_failures,
                        "last_error": after.last_error,
                    },
                ),
                tenant_id,
            )
        if before.consecutive_failures and not after.consecutive_failures:
            await self._guarded(self.alerts.resolve(tenant_id, sync_key(provider)), tenant_id)
        if after.status == STALE and before.status != STALE:
            await self._guarded(
                self.alerts.raise_alert(
                    tenant_id,
                    stale_key(provider),
                    "WARNING",
                    f"{provider.capitalize()} has not synced recently",
                    {
                        "provider": provider,
                        "last_sync_at": (
                            after.last_sync_at.isoformat() if after.last_sync_at else None
                        ),
                    },
                ),
                tenant_id,
            )
        if before.status == STALE and after.status != STALE:
            await self._guarded(self.alerts.resolve(tenant_id, stale_key(provider)), tenant_id)

    async def _guarded(self, call: Awaitable[Any], tenant_id: uuid.UUID) -> None:
        try:
            await call
        except Exception as exc:  # an alert that could not be recorded must not undo the pass
            log.error("monitor.alert_failed", tenant_id=str(tenant_id), error=describe(exc))


def _feeds(
    workflows: list[dict[str, Any]], templates: Mapping[str, TemplateSpec]
) -> dict[str, TemplateSpec]:
    """workflow id -> the template it is (matched by its fixed name)."""
    return {
        str(w.get("id")): templates[str(w.get("name"))]
        for w in workflows
        if str(w.get("name")) in templates
    }


def _event_message(verdict: Verdict) -> str:
    after = verdict.after
    if after.status == ERROR and verdict.needs_reconnect:
        return "the provider refused access: reconnect the integration"
    if after.status == ERROR:
        detail = f": {after.last_error}" if after.last_error else ""
        return f"{after.consecutive_failures} consecutive failed runs{detail}"
    if after.status == STALE:
        since = after.last_sync_at.isoformat() if after.last_sync_at else "never"
        return f"no successful run recently (last success: {since})"
    if after.status == ACTIVE and after.last_sync_at is not None:
        return f"synced at {after.last_sync_at.isoformat()}"
    return f"status {after.status}"
