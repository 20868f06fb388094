"""Compare what the database wants with what the runtime runs, and repair the difference.

One pass:

1. list the runtime's managed instances (before reading the rows: an instance is created
   only after its row is committed, so every instance in this list has its row in the
   later read, and a brand-new tenant is never mistaken for an orphan);
2. for each instance row, decide from (desired state, actual state, step, what the runtime
   reports) what to do — ``plan`` is a pure function — and do it through the lifecycle,
   under the tenant's lock (a tenant whose lock is held is being worked on: skipped);
3. remove runtime instances labelled as ours that no live row owns (orphans), after
   checking again under that tenant's lock.

What cannot be repaired ends FAILED with the reason (the lifecycle records it); a FAILED
instance is retried once its last attempt is ``retry_failed_after`` old, not every pass.
"""

from __future__ import annotations

import asyncio
import enum
import uuid
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from zixly.core.logging import get_logger
from zixly.provisioning.instances import (
    ActualState,
    ConcurrentChangeError,
    DesiredState,
    InstanceRepository,
    InstanceRow,
)
from zixly.provisioning.lifecycle import InstanceLifecycle
from zixly.provisioning.operations import STAFF, InstanceBusyError, describe, handle_of
from zixly.provisioning.runtimes.base import InstanceHandle, RuntimeState

log = get_logger("zixly.provisioning.reconciler")
# States an operation passes through; a row in one of them was left by a job that died.
_IN_FLIGHT = (
    ActualState.PENDING,
    ActualState.PROVISIONING,
    ActualState.UPGRADING,
    ActualState.DEPROVISIONING,
)


class Action(enum.StrEnum):
    OK = "ok"
    UNHEALTHY = "unhealthy"  # the process runs but n8n does not answer: recorded, not touched
    RESUME_PROVISIONING = "resumed_provisioning"
    RESUME_UPGRADE = "resumed_upgrade"
    RESUME_DEPROVISIONING = "resumed_deprovisioning"
    RESTART = "restarted"
    STOP = "stopped"
    CONVERGE = "converged"  # the actual state lagged the desired one without runtime drift
    RECENT = "recent"  # changed moments ago: its job is probably still queued
    BACKING_OFF = "backing_off"  # FAILED, retried later
    BUSY = "busy"  # another operation holds the tenant's lock
    FAILED = "failed"  # a repair was tried and failed (the row is FAILED with the reason)
    ORPHAN_REMOVED = "orphans_removed"
    OTHER_RUNTIME = "other_runtime"


REPAIRS = (
    Action.RESUME_PROVISIONING,
    Action.RESUME_UPGRADE,
    Action.RESUME_DEPROVISIONING,
    Action.RESTART,
    Action.STOP,
    Action.CONVERGE,
)


def plan(
    row: InstanceRow,
    observed: RuntimeState,
    *,
    now: datetime,
    retry_failed_after: timedelta,
    grace: timedelta,
) -> Action:
    """What one instance needs, from its row and what the runtime reports."""
    if row.actual_state is ActualState.DEPROVISIONED:
        return Action.OK  # anything the runtime still runs for it is an orphan
    if row.actual_state is ActualState.FAILED and now - row.updated_at < retry_failed_after:
        return Action.BACKING_OFF
    desired = row.desired_state
    if desired is DesiredState.ABSENT:
        action = Action.RESUME_DEPROVISIONING
    elif desired in (DesiredState.STOPPED, DesiredState.SUSPENDED):
        if observed is RuntimeState.RUNNING:
            return Action.STOP  # drift: act at once
        action = Action.OK if row.actual_state.value == desired.value else Action.CONVERGE
    elif not row.provisioned:
        action = Action.RESUME_PROVISIONING
    elif row.target_version and row.target_version != row.version:
        action = Action.RESUME_UPGRADE
    elif observed is not RuntimeState.RUNNING:
        return Action.RESTART  # drift: act at once
    else:
        action = Action.OK if row.actual_state is ActualState.RUNNING else Action.CONVERGE
    if action is not Action.OK and row.actual_state is not ActualState.FAILED:
        in_flight = row.actual_state in _IN_FLIGHT or action is Action.CONVERGE
        if in_flight and now - row.updated_at < grace:
            return Action.RECENT
    return action


@dataclass
class ReconcileReport:
    counts: Counter[str] = field(default_factory=Counter)
    actions: list[tuple[str, str]] = field(default_factory=list)  # (tenant or instance, action)

    def add(self, subject: str, action: Action) -> None:
        self.counts[action.value] += 1
        if action is not Action.OK:
            self.actions.append((subject, action.value))

    def as_dict(self) -> dict[str, Any]:
        return {"counts": dict(sorted(self.counts.items())), "actions": self.actions}


class Reconciler:
    def __init__(
        self,
        lifecycle: InstanceLifecycle,
        *,
        retry_failed_after: timedelta = timedelta(minutes=5),
        grace: timedelta = timedelta(minutes=2),
        concurrency: int = 4,
        probe_timeout: float = 5.0,
    ) -> None:
        self.lifecycle = lifecycle
        self.runtime = lifecycle.runtime
        self.retry_failed_after = retry_failed_after
        self.grace = grace
        self.probe_timeout = probe_timeout
        self._slots = asyncio.Semaphore(concurrency)

    async def run(self, *, only: Collection[uuid.UUID] | None = None) -> ReconcileReport:
        """One pass; ``only`` limits the row pass to these tenants (orphans are always
        looked for among the runtime's instances)."""
        report = ReconcileReport()
        managed = await self.runtime.list_managed()
        async with self.lifecycle.db.transaction(STAFF) as session:
            rows = await InstanceRepository(session).all()
        listed = {handle.tenant_id: handle for handle in managed}
        now = datetime.now(UTC)
        chosen = [row for row in rows if only is None or row.tenant_id in set(only)]
        results = await asyncio.gather(
            *(self._reconcile(row, listed.get(str(row.tenant_id)), now) for row in chosen)
        )
        for row, action in zip(chosen, results, strict=True):
            report.add(str(row.tenant_id), action)
        owned = {str(r.tenant_id) for r in rows if r.actual_state is not ActualState.DEPROVISIONED}
        for handle in managed:
            if handle.tenant_id not in owned and await self._remove_orphan(handle):
                report.add(handle.instance_id, Action.ORPHAN_REMOVED)
        log.info("reconcile.done", **report.as_dict()["counts"])
        return report

    async def _reconcile(
        self, row: InstanceRow, listed: InstanceHandle | None, now: datetime
    ) -> Action:
        if row.runtime != self.runtime.name:
            return Action.OTHER_RUNTIME
        async with self._slots:
            handle = handle_of(row) or listed
            observed = (
                (await self.runtime.inspect(handle)).state if handle else RuntimeState.MISSING
            )
            action = plan(
                row,
                observed,
                now=now,
                retry_failed_after=self.retry_failed_after,
                grace=self.grace,
            )
            if action is Action.OK and observed is RuntimeState.RUNNING and row.url:
                return await self._probe(row)
            if action not in REPAIRS:
                return action
            reason = f"reconciler: {action.value} (desired {row.desired_state.value}, " + (
                f"actual {row.actual_state.value}, runtime {observed.value})"
            )
            try:
                await self.lifecycle.converge(row.tenant_id, reason=reason)
            except (InstanceBusyError, ConcurrentChangeError):
                return Action.BUSY
            except Exception as exc:  # recorded on the row (FAILED, last_error) by the lifecycle
                log.warning(
                    "reconcile.repair_failed", tenant_id=str(row.tenant_id), error=describe(exc)
                )
                return Action.FAILED
            return action

    async def _probe(self, row: InstanceRow) -> Action:
        """Readiness of a running instance, recorded in ``last_health``."""
        assert row.url is not None
        try:
            response = await self.lifecycle.http.get(
                f"{row.url}/healthz/readiness", timeout=self.probe_timeout
            )
            health: dict[str, Any] = {
                "ok": response.status_code == 200,
                "status": response.status_code,
            }
        except httpx.HTTPError as exc:
            health = {"ok": False, "error": type(exc).__name__}
        async with self.lifecycle.db.transaction(STAFF) as session:
            await InstanceRepository(session).record_health(row.tenant_id, health)
        return Action.OK if health["ok"] else Action.UNHEALTHY

    async def _remove_orphan(self, handle: InstanceHandle) -> bool:
        try:
            tenant_id = uuid.UUID(handle.tenant_id)
        except ValueError:
            tenant_id = None
        try:
            if tenant_id is None:
                await self.runtime.remove(handle)
                return True
            async with self.lifecycle.lock(tenant_id, wait=0):
                async with self.lifecycle.db.transaction(STAFF) as session:
                    row = await InstanceRepository(session).get(tenant_id)
                if row is not None and row.actual_state is not ActualState.DEPROVISIONED:
                    return False  # claimed meanwhile
                await self.runtime.remove(handle)
        except InstanceBusyError:
            return False
        log.warning("reconcile.orphan_removed", instance_id=handle.instance_id)
        return True
