"""Raising and resolving alerts, deduplicated in PostgreSQL, delivered through an outbox.

``raise_alert`` upserts the tenant's OPEN row for the key (a partial unique index makes the
upsert atomic under concurrency): a problem that persists only counts occurrences. A notice
is queued (one ``alert_deliveries`` row per deliverable channel) when the row was never
notified, or, if the tenant set a re-notify interval, when the last notice is older than it;
the row lock the upsert holds makes that decision once per raise. ``resolve`` closes the
OPEN row, and only a row that was notified queues a recovery notice: one, because a resolved
row is never resolved again. Raising the key afterwards opens a new row and a new notice.

Deliveries are sent after the queuing transaction commits, oldest first, under
``FOR UPDATE SKIP LOCKED`` (two workers never send the same one). A failure is recorded on the
delivery and the alert (``last_error``) and retried with back-off by the ``deliver_alerts``
job; the service and the job run as the staff role and filter by tenant explicitly.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, and_, func, insert, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from zixly.alerts.channels import Notice, NoticeKind, SmtpChannel, WebhookChannel
from zixly.alerts.config import SETTINGS, AlertConfig, AlertSettingsRepository, check_severity
from zixly.alerts.errors import AlertDeliveryError, AlertNotConfiguredError
from zixly.core.errors import ValidationError
from zixly.core.logging import get_logger
from zixly.db.models import Alert, AlertDelivery
from zixly.db.rows import AnyRow
from zixly.db.session import Database, Scope
from zixly.security.crypto import DecryptionError, Keyring

log = get_logger("zixly.alerts")

ALERTS = cast(Table, Alert.__table__)
DELIVERIES = cast(Table, AlertDelivery.__table__)
STAFF = Scope(tenant_id=None, staff=True)
MAX_ATTEMPTS = 10
BATCH_SIZE = 100


def delivery_backoff(attempts: int) -> float:
    """Seconds before the next try after ``attempts`` failures: 30, 60, 120... up to an hour."""
    return float(min(3600, 30 * 2 ** max(0, attempts - 1)))


@dataclass(frozen=True)
class DeliveryReport:
    sent: int = 0
    failed: int = 0

    def __add__(self, other: DeliveryReport) -> DeliveryReport:
        return DeliveryReport(self.sent + other.sent, self.failed + other.failed)

    def as_dict(self) -> dict[str, int]:
        return {"sent": self.sent, "failed": self.failed}


@dataclass(frozen=True)
class AlertOutcome:
    alert_id: uuid.UUID | None
    occurrences: int
    notified: bool
    delivery: DeliveryReport


class AlertService:
    def __init__(
        self,
        db: Database,
        keyring: Keyring,
        smtp: SmtpChannel,
        webhook: WebhookChannel,
        *,
        backoff: Callable[[int], float] = delivery_backoff,
        max_attempts: int = MAX_ATTEMPTS,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self.db = db
        self.settings = AlertSettingsRepository(keyring, webhook.targets)
        self.smtp = smtp
        self.webhook = webhook
        self.backoff = backoff
        self.max_attempts = max_attempts
        self.batch_size = batch_size

    async def raise_alert(
        self,
        tenant_id: uuid.UUID,
        key: str,
        severity: str,
        title: str,
        details: Mapping[str, Any] | None = None,
    ) -> AlertOutcome:
        check_severity(severity)
        if not key or not title:
            raise ValidationError("an alert needs a key and a title", field="key")
        async with self.db.transaction(STAFF) as session:
            values = {"severity": severity, "title": title, "details": dict(details or {})}
            upsert = pg_insert(ALERTS).values(tenant_id=tenant_id, key=key, **values)
            row = (
                await session.execute(
                    upsert.on_conflict_do_update(
                        index_elements=[ALERTS.c.tenant_id, ALERTS.c.key],
                        index_where=text("status = 'OPEN'"),
                        set_={
                            **values,
                            "occurrences": ALERTS.c.occurrences + 1,
                            "last_seen": func.now(),
                        },
                    ).returning(ALERTS.c.id, ALERTS.c.occurrences)
                )
            ).one()
            config = await self.settings.load(session, tenant_id)
            notified = False
            if config is not None and config.deliverable() and config.wants(severity):
                notified = await self._claim_notice(session, tenant_id, row.id, config)
                if notified:
                    await self._queue(session, tenant_id, row.id, "NOTICE", config)
        if notified:
            log.info("alert.raised", tenant_id=str(tenant_id), alert_key=key, severity=severity)
        report = await self.deliver_pending(tenant_id=tenant_id)
        return AlertOutcome(row.id, row.occurrences, notified, report)

    async def resolve(self, tenant_id: uuid.UUID, key: str) -> AlertOutcome:
        """Close the tenant's open alert for ``key``; a notified one gets one recovery notice."""
        async with self.db.transaction(STAFF) as session:
            row = (
                await session.execute(
                    update(ALERTS)
                    .where(
                        ALERTS.c.tenant_id == tenant_id,
                        ALERTS.c.key == key,
                        ALERTS.c.status == "OPEN",
                    )
                    .values(status="RESOLVED", resolved_at=func.now())
                    .returning(ALERTS.c.id, ALERTS.c.occurrences, ALERTS.c.notified_at)
                )
            ).first()
            if row is None:
                return AlertOutcome(None, 0, False, DeliveryReport())
            config = await self.settings.load(session, tenant_id)
            notified = bool(row.notified_at and config and config.deliverable())
            if notified and config is not None:
                await self._queue(session, tenant_id, row.id, "RECOVERY", config)
        report = await self.deliver_pending(tenant_id=tenant_id)
        return AlertOutcome(row.id, row.occurrences, notified, report)

    async def deliver_pending(self, tenant_id: uuid.UUID | None = None) -> DeliveryReport:
        """Send the due deliveries (of one tenant, or all), one batch; failures are recorded."""
        report = DeliveryReport()
        async with self.db.transaction(STAFF) as session:
            query = (
                select(
                    DELIVERIES.c.id,
                    DELIVERIES.c.tenant_id,
                    DELIVERIES.c.alert_id,
                    DELIVERIES.c.kind,
                    DELIVERIES.c.channel,
                    DELIVERIES.c.attempts,
                    ALERTS.c.key,
                    ALERTS.c.severity,
                    ALERTS.c.title,
                    ALERTS.c.details,
                    ALERTS.c.occurrences,
                    ALERTS.c.first_seen,
                    ALERTS.c.resolved_at,
                    SETTINGS.c.email_recipients,
                    SETTINGS.c.webhook_url_ciphertext,
                )
                .join(
                    ALERTS,
                    and_(
                        ALERTS.c.tenant_id == DELIVERIES.c.tenant_id,
                        ALERTS.c.id == DELIVERIES.c.alert_id,
                    ),
                )
                .outerjoin(SETTINGS, SETTINGS.c.tenant_id == DELIVERIES.c.tenant_id)
                .where(DELIVERIES.c.status == "PENDING", DELIVERIES.c.next_attempt_at <= func.now())
                .order_by(DELIVERIES.c.id)
                .limit(self.batch_size)
                .with_for_update(of=DELIVERIES, skip_locked=True)
            )
            if tenant_id is not None:
                query = query.where(DELIVERIES.c.tenant_id == tenant_id)
            for row in (await session.execute(query)).all():
                report += await self._deliver(session, row)
        return report

    async def next_due(self) -> datetime | None:
        """When the earliest pending delivery is due (for scheduling the retry job)."""
        async with self.db.transaction(STAFF) as session:
            due: datetime | None = await session.scalar(
                select(func.min(DELIVERIES.c.next_attempt_at)).where(
                    DELIVERIES.c.status == "PENDING"
                )
            )
            return due

    async def _claim_notice(
        self, session: AsyncSession, tenant_id: uuid.UUID, alert_id: uuid.UUID, config: AlertConfig
    ) -> bool:
        due: ColumnElement[bool] = ALERTS.c.notified_at.is_(None)
        if config.renotify_after is not None:
            due = or_(due, ALERTS.c.notified_at <= func.now() - config.renotify_after)
        claimed = await session.execute(
            update(ALERTS)
            .where(ALERTS.c.tenant_id == tenant_id, ALERTS.c.id == alert_id, due)
            .values(notified_at=func.now())
            .returning(ALERTS.c.id)
        )
        return claimed.first() is not None

    async def _queue(
        self,
        session: AsyncSession,
        tenant_id: uuid.UUID,
        alert_id: uuid.UUID,
        kind: NoticeKind,
        config: AlertConfig,
    ) -> None:
        await session.execute(
            insert(DELIVERIES),
            [
                {"tenant_id": tenant_id, "alert_id": alert_id, "kind": kind, "channel": channel}
                for channel in config.deliverable()
            ],
        )

    async def _deliver(self, session: AsyncSession, row: AnyRow) -> DeliveryReport:
        notice = Notice(
            kind=row.kind,
            tenant_id=row.tenant_id,
            key=row.key,
            severity=row.severity,
            title=row.title,
            occurrences=row.occurrences,
            first_seen=row.first_seen,
            resolved_at=row.resolved_at,
            details=row.details or {},
        )
        attempts = row.attempts + 1
        try:
            await self._send(row, notice)
        except Exception as exc:  # one delivery's failure never stops the batch
            if isinstance(exc, AlertDeliveryError):
                error = f"{exc.code}: {exc.message}"
            else:  # a bug, not the destination: recorded by type only (no URL or address)
                error = f"UNEXPECTED: {type(exc).__name__}"
                log.error("alert.delivery_crashed", delivery_id=row.id, error=type(exc).__name__)
            gave_up = attempts >= self.max_attempts
            await session.execute(
                update(DELIVERIES)
                .where(DELIVERIES.c.id == row.id)
                .values(
                    attempts=attempts,
                    status="FAILED" if gave_up else "PENDING",
                    last_error=error,
                    next_attempt_at=func.now() + timedelta(seconds=self.backoff(attempts)),
                )
            )
            await session.execute(
                update(ALERTS)
                .where(ALERTS.c.tenant_id == row.tenant_id, ALERTS.c.id == row.alert_id)
                .values(last_error=error)
            )
            log.warning(
                "alert.delivery_failed",
                tenant_id=str(row.tenant_id),
                delivery_id=row.id,
                channel=row.channel,
                kind=row.kind,
                attempts=attempts,
                gave_up=gave_up,
                error=error,
            )
            return DeliveryReport(failed=1)
        await session.execute(
            update(DELIVERIES)
            .where(DELIVERIES.c.id == row.id)
            .values(attempts=attempts, status="SENT", sent_at=func.now(), last_error=None)
        )
        log.info(
            "alert.delivered",
            tenant_id=str(row.tenant_id),
            delivery_id=row.id,
            channel=row.channel,
            kind=row.kind,
        )
        return DeliveryReport(sent=1)

    async def _send(self, row: AnyRow, notice: Notice) -> None:
        if row.channel == "email":
            await self.smtp.send(row.email_recipients or (), notice)
            return
        if row.webhook_url_ciphertext is None:
            raise AlertNotConfiguredError("no webhook URL", channel="webhook")
        try:
            url = self.settings.webhook_url(row.tenant_id, row.webhook_url_ciphertext)
        except DecryptionError as exc:
            raise AlertNotConfiguredError(
                "the webhook URL cannot be decrypted", channel="webhook"
            ) from exc
        await self.webhook.send(url, notice)
