"""The ``deliver_alerts`` arq job: send due deliveries, then schedule itself for the next."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from zixly.alerts.service import AlertService

DELIVER_JOB = "deliver_alerts"


async def schedule_delivery(redis: Any, when: datetime) -> None:
    """One job per due second: arq skips a job id that is already queued."""
    await redis.enqueue_job(
        DELIVER_JOB, _job_id=f"{DELIVER_JOB}:{int(when.timestamp())}", _defer_until=when
    )


async def deliver_alerts(ctx: dict[str, Any]) -> dict[str, int]:
    service: AlertService = ctx["alerts"]  # the worker's (zixly.container)
    report = await service.deliver_pending()
    due = await service.next_due()
    if due is not None:
        await schedule_delivery(ctx["redis"], due)
    return report.as_dict()
