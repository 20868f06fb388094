"""The sync-health rules: an integration's runs, folded into its status (pure functions).

Runs are folded in execution-id order. A success records ``last_sync_at`` (when the run
stopped), clears the failure count and makes the integration ACTIVE, except one that is
PENDING or DISABLED (not connected, or switched off: a run does not change that) or ERROR
because the provider refused its grant (``needs_reconnect``: only reconnecting fixes it).
A failure counts; at ``error_after`` consecutive failures the integration is ERROR. The last
failure's message and time are kept as history when a later run succeeds.

A run the integration has already seen (id at or below its ``last_execution_id``) is
skipped, so reading the same executions twice (the cursor held back, two passes at once)
never counts a failure twice. An ACTIVE integration with no success within twice its
template's schedule interval is STALE; the next success makes it ACTIVE again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

ACTIVE, STALE, ERROR, PENDING, DISABLED = "ACTIVE", "STALE", "ERROR", "PENDING", "DISABLED"
UNMONITORED = frozenset({PENDING, DISABLED})  # runs are recorded, the status left alone
STALE_AFTER_INTERVALS = 2


@dataclass(frozen=True)
class IntegrationHealth:
    id: uuid.UUID
    provider: str
    status: str
    last_sync_at: datetime | None
    consecutive_failures: int
    last_failure_at: datetime | None
    last_error: str | None
    last_execution_id: str | None
    created_at: datetime

    def seen(self, execution_id: int) -> bool:
        try:
            return self.last_execution_id is not None and execution_id <= int(
                self.last_execution_id
            )
        except ValueError:  # not an n8n id: nothing recorded to compare with
            return False


@dataclass(frozen=True)
class Run:
    """One finished execution of a template feeding the integration."""

    execution_id: int
    succeeded: bool
    stopped_at: datetime
    error: str | None = None  # a failure's safe message (known for the newest failure only)


@dataclass(frozen=True)
class Verdict:
    before: IntegrationHealth
    after: IntegrationHealth
    failures: int  # failed runs folded in this time
    successes: int
    needs_reconnect: bool

    @property
    def status_changed(self) -> bool:
        return self.before.status != self.after.status

    @property
    def changed(self) -> bool:
        return self.before != self.after


def fold(
    health: IntegrationHealth, runs: Iterable[Run], *, error_after: int, needs_reconnect: bool
) -> tuple[IntegrationHealth, int, int]:
    """``health`` after ``runs``; with how many failures and successes were new."""
    failures = successes = 0
    for run in sorted(runs, key=lambda r: r.execution_id):
        if health.seen(run.execution_id):
            continue
        keep = health.status in UNMONITORED or (health.status == ERROR and needs_reconnect)
        if run.succeeded:
            successes += 1
            last = health.last_sync_at
            health = replace(
                health,
                status=health.status if keep else ACTIVE,
                last_sync_at=run.stopped_at if last is None else max(last, run.stopped_at),
                consecutive_failures=0,
            )
        else:
            failures += 1
            count = health.consecutive_failures + 1
            health = replace(
                health,
                status=ERROR if not keep and count >= error_after else health.status,
                consecutive_failures=count,
                last_failure_at=run.stopped_at,
                last_error=run.error or health.last_error,
            )
        health = replace(health, last_execution_id=str(run.execution_id))
    return health, failures, successes


def is_stale(health: IntegrationHealth, interval_minutes: int | None, now: datetime) -> bool:
    """ACTIVE, and no success within twice the schedule interval (since it was created, when
    it never synced)."""
    if health.status != ACTIVE or interval_minutes is None:
        return False
    since = health.last_sync_at or health.created_at
    return now - since > timedelta(minutes=STALE_AFTER_INTERVALS * interval_minutes)


def assess(
    health: IntegrationHealth,
    runs: Iterable[Run],
    *,
    error_after: int,
    needs_reconnect: bool,
    interval_minutes: int | None,
    now: datetime,
) -> Verdict:
    after, failures, successes = fold(
        health, runs, error_after=error_after, needs_reconnect=needs_reconnect
    )
    if is_stale(after, interval_minutes, now):
        after = replace(after, status=STALE)
    return Verdict(health, after, failures, successes, needs_reconnect)


def sync_alert_severity(consecutive_failures: int, error_after: int) -> str:
    """WARNING when an integration turns ERROR; CRITICAL once it has failed twice as long."""
    return "CRITICAL" if consecutive_failures >= 2 * error_after else "WARNING"
