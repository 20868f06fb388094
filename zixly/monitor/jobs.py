"""The ``monitor_sync_health`` arq cron job: one sync-health pass, its counts as the result.

The monitor is imported when the job first runs, not with this module: the worker imports
this module, and the monitor reaches tenant instances through ``zixly.provisioning.control``,
which imports the worker (for its job serializer).
"""

from __future__ import annotations

from typing import Any

MONITOR_JOB = "monitor_sync_health"
MONITOR_TIMEOUT_SECONDS = 600


async def monitor_sync_health(ctx: dict[str, Any]) -> dict[str, int]:
    """ctx from ``zixly.workers.settings.startup``; the monitor (and the alert service it shares with
    ``deliver_alerts``) is built once per worker."""
    from zixly.alerts.jobs import build_alert_service
    from zixly.monitor.monitor import SyncHealthMonitor

    monitor: SyncHealthMonitor | None = ctx.get("sync_monitor")
    if monitor is None:
        settings = ctx["settings"]
        alerts = ctx.get("alerts")
        if alerts is None:
            alerts = ctx["alerts"] = build_alert_service(settings, ctx["db"], ctx["http"])
        monitor = ctx["sync_monitor"] = SyncHealthMonitor.from_settings(
            settings,
            ctx["db"],
            ctx["redis"],
            ctx["http"],
            alerts=alerts,
            pass_lock_seconds=MONITOR_TIMEOUT_SECONDS,
        )
    return (await monitor.run()).as_dict()
