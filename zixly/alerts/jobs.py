"""The ``deliver_alerts`` arq job: send due deliveries, then schedule itself for the next."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from zixly.alerts.channels import SmtpChannel, WebhookChannel
from zixly.alerts.destinations import WebhookTargets
from zixly.alerts.service import AlertService
from zixly.core.settings import Settings
from zixly.db.session import Database
from zixly.security.crypto import Keyring

DELIVER_JOB = "deliver_alerts"


def build_alert_service(settings: Settings, db: Database, http: httpx.AsyncClient) -> AlertService:
    return AlertService(
        db,
        Keyring.from_settings(settings),
        SmtpChannel.from_settings(settings),
        WebhookChannel(
            http,
            timeout=settings.alert_webhook_timeout_seconds,
            targets=WebhookTargets.from_settings(settings),
        ),
    )


async def schedule_delivery(redis: Any, when: datetime) -> None:
    """One job per due second: arq skips a job id that is already queued."""
    await redis.enqueue_job(
        DELIVER_JOB, _job_id=f"{DELIVER_JOB}:{int(when.timestamp())}", _defer_until=when
    )


async def deliver_alerts(ctx: dict[str, Any]) -> dict[str, int]:
    service: AlertService | None = ctx.get("alerts")
    if service is None:
        service = ctx["alerts"] = build_alert_service(ctx["settings"], ctx["db"], ctx["http"])
    report = await service.deliver_pending()
    due = await service.next_due()
    if due is not None:
        await schedule_delivery(ctx["redis"], due)
    return report.as_dict()
