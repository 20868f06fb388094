"""The ``monitor_sync_health`` arq cron job: one sync-health pass, its counts as the result."""

from __future__ import annotations

from typing import Any

from zixly.monitor.monitor import SyncHealthMonitor

MONITOR_JOB = "monitor_sync_health"
MONITOR_TIMEOUT_SECONDS = 600


async def monitor_sync_health(ctx: dict[str, Any]) -> dict[str, int]:
    """ctx from ``zixly.workers.settings.startup``; the monitor (and the alert service it shares
    with ``deliver_alerts``) is built once per worker."""
    monitor: SyncHealthMonitor | None = ctx.get("sync_monitor")
    if monitor is None:
        monitor = ctx["sync_monitor"] = SyncHealthMonitor.from_settings(
            ctx["settings"],
            ctx["db"],
            ctx["redis"],
            ctx["tenant_n8n"],
            ctx["alerts"],
            pass_lock_seconds=MONITOR_TIMEOUT_SECONDS,
        )
    return (await monitor.run()).as_dict()
