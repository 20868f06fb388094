"""The sync-health rules and the monitor's cursor (pure functions; the n8n side is in
tests/provisioning/test_sync_health.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from zixly.monitor.executions import (
    GAP_GRACE,
    HOLD_LIMIT,
    Execution,
    failure_message,
    next_cursor,
    safe_message,
)
from zixly.monitor.rules import (
    ACTIVE,
    DISABLED,
    ERROR,
    PENDING,
    STALE,
    IntegrationHealth,
    Run,
    assess,
    fold,
    sync_alert_severity,
)

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def health(status: str = ACTIVE, **kw: object) -> IntegrationHealth:
    values: dict[str, object] = {
        "id": uuid.uuid4(),
        "provider": "xero",
        "status": status,
        "last_sync_at": None,
        "consecutive_failures": 0,
        "last_failure_at": None,
        "last_error": None,
        "last_execution_id": None,
        "created_at": NOW - timedelta(days=1),
    }
    values.update(kw)
    return IntegrationHealth(**values)  # type: ignore[arg-type]


def ok(execution_id: int, minutes_ago: int = 0) -> Run:
    return Run(execution_id, True, NOW - timedelta(minutes=minutes_ago))


def bad(execution_id: int, error: str | None = None) -> Run:
    return Run(execution_id, False, NOW - timedelta(minutes=1), error)


def execution(execution_id: int, status: str = "success", started_ago: float = 600) -> Execution:
    started = NOW - timedelta(seconds=started_ago)
    return Execution(execution_id, "wf", status, "webhook", started, started)


# --- folding runs -------------------------------------------------------------------------------


def test_failures_make_an_integration_error_at_the_threshold() -> None:
    after, failures, successes = fold(
        health(), [bad(1), bad(2, "Node: boom")], error_after=3, needs_reconnect=False
    )
    assert (after.status, after.consecutive_failures, failures, successes) == (ACTIVE, 2, 2, 0)
    after, _, _ = fold(after, [bad(3)], error_after=3, needs_reconnect=False)
    assert (after.status, after.consecutive_failures) == (ERROR, 3)
    assert after.last_error == "Node: boom"  # the newest known message is kept
    assert after.last_execution_id == "3"


def test_a_success_recovers_and_keeps_the_failure_as_history() -> None:
    failing = health(ERROR, consecutive_failures=4, last_error="x", last_execution_id="4")
    after, _, successes = fold(failing, [ok(5, 2)], error_after=3, needs_reconnect=False)
    assert (after.status, after.consecutive_failures, successes) == (ACTIVE, 0, 1)
    assert after.last_sync_at == NOW - timedelta(minutes=2)
    assert after.last_error == "x"


def test_runs_already_seen_are_not_counted_again() -> None:
    once, _, _ = fold(health(), [bad(7), bad(8)], error_after=3, needs_reconnect=False)
    twice, failures, _ = fold(once, [bad(7), bad(8)], error_after=3, needs_reconnect=False)
    assert twice == once and failures == 0
    # in id order, whatever order they come in: the last one decides
    after, _, _ = fold(health(), [ok(10), bad(9)], error_after=1, needs_reconnect=False)
    assert (after.status, after.consecutive_failures, after.last_execution_id) == (ACTIVE, 0, "10")


@pytest.mark.parametrize("status", [PENDING, DISABLED])
def test_pending_and_disabled_keep_their_status(status: str) -> None:
    after, _, _ = fold(
        health(status), [bad(1), bad(2), bad(3)], error_after=3, needs_reconnect=False
    )
    assert (after.status, after.consecutive_failures) == (status, 3)
    after, _, _ = fold(after, [ok(4)], error_after=3, needs_reconnect=False)
    assert (after.status, after.consecutive_failures) == (status, 0)


def test_an_error_needing_reconnect_stays_error_after_a_success() -> None:
    refused = health(ERROR)
    after, _, _ = fold(refused, [ok(1)], error_after=3, needs_reconnect=True)
    assert (after.status, after.last_sync_at) == (ERROR, NOW)
    after, _, _ = fold(refused, [ok(1)], error_after=3, needs_reconnect=False)
    assert after.status == ACTIVE


def test_stale_after_twice_the_interval_without_a_success() -> None:
    synced = health(last_sync_at=NOW - timedelta(minutes=61))
    verdict = assess(synced, [], error_after=3, needs_reconnect=False, interval_minutes=30, now=NOW)
    assert (verdict.after.status, verdict.status_changed) == (STALE, True)
    fresh = assess(
        health(last_sync_at=NOW - timedelta(minutes=59)),
        [],
        error_after=3,
        needs_reconnect=False,
        interval_minutes=30,
        now=NOW,
    )
    assert fresh.after.status == ACTIVE
    never = health(created_at=NOW - timedelta(hours=3))
    assert (
        assess(
            never, [], error_after=3, needs_reconnect=False, interval_minutes=30, now=NOW
        ).after.status
        == STALE
    )
    unscheduled = assess(
        synced, [], error_after=3, needs_reconnect=False, interval_minutes=None, now=NOW
    )
    assert unscheduled.after.status == ACTIVE
    back = assess(
        verdict.after, [ok(3)], error_after=3, needs_reconnect=False, interval_minutes=30, now=NOW
    )
    assert (back.before.status, back.after.status) == (STALE, ACTIVE)


def test_sync_alert_severity_escalates() -> None:
    assert [sync_alert_severity(n, 3) for n in (3, 5, 6, 9)] == [
        "WARNING",
        "WARNING",
        "CRITICAL",
        "CRITICAL",
    ]


# --- the cursor ---------------------------------------------------------------------------------


def test_the_cursor_moves_to_the_newest_finished_run() -> None:
    listed = [execution(i) for i in (14, 13, 12, 11)]
    assert next_cursor(10, listed, {}, NOW) == 14
    assert next_cursor(10, [], {}, NOW) == 10
    assert next_cursor(None, [], {}, NOW) is None
    assert next_cursor(None, listed, {}, NOW) == 14


def test_the_cursor_stops_below_an_unfinished_run() -> None:
    listed = [execution(14), execution(12, "waiting"), execution(11)]
    assert next_cursor(10, listed, {13: NOW}, NOW) == 11
    assert next_cursor(10, [execution(14), execution(12)], {13: NOW}, NOW) == 12
    # a run older than the hold limit no longer holds it
    old = NOW - HOLD_LIMIT - timedelta(minutes=1)
    assert next_cursor(10, [execution(14), execution(12)], {13: old}, NOW) == 14


def test_a_fresh_gap_holds_the_cursor_an_old_one_does_not() -> None:
    fresh = [execution(14, started_ago=5), execution(12, started_ago=6)]
    assert next_cursor(10, fresh, {}, NOW) == 10  # 11 and 13 may still be finishing
    old = GAP_GRACE.total_seconds() + 60
    stale = [execution(14, started_ago=old), execution(12, started_ago=old)]
    assert next_cursor(10, stale, {}, NOW) == 14  # deleted long ago


# --- messages -----------------------------------------------------------------------------------


def test_messages_lose_anything_credential_like() -> None:
    token = "sk_live_" + "a1B2c3D4" * 5
    text = (
        f"401 from https://user:hunter2@api.xero.com: Authorization: Bearer {token} "
        f"ingest zik_{'Q' * 43} api_key=abc123 access_token: xyz {token}"
    )
    cleaned = safe_message(text)
    for secret in (token, "hunter2", "zik_", "abc123", "xyz"):
        assert secret not in cleaned, cleaned
    assert cleaned.startswith("401 from https://user:")
    assert len(safe_message("word " * 200)) == 300


def test_failure_message_names_the_node() -> None:
    execution = {
        "status": "error",
        "data": {
            "resultData": {
                "error": {"message": "Xero answered: 500", "node": {"name": "Fetch Xero report"}},
                "lastNodeExecuted": "Fetch Xero report",
            }
        },
    }
    assert failure_message(execution) == "Fetch Xero report: Xero answered: 500"
    assert failure_message({"status": "crashed", "data": None}) == "the run crashed"
    assert (
        failure_message({"status": "error", "data": {"resultData": {"lastNodeExecuted": "HTTP"}}})
        == "HTTP: the run failed"
    )
