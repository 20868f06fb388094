"""A tenant's alerts and alert settings, as seen by API callers.

Runs in the caller's tenant session: row-level security limits every statement to the
caller's tenant, and the statements name it too. The webhook URL is write-only: it carries
its token in the path, so callers learn only whether one is configured, never the URL (not
even its ciphertext). Changing the settings is audited without the URL or the recipients.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from zixly.alerts.config import AlertConfig, AlertSettingsRepository
from zixly.core.errors import ValidationError
from zixly.db.models import ALERT_CHANNELS, Alert
from zixly.domain.audit import Actor, AuditEntry, write_audit
from zixly.security.crypto import Secret

ALERTS = Alert.__table__
MAX_RECIPIENTS = 20
MAX_WEBHOOK_URL_LENGTH = 2048
DEFAULT_SEVERITY = "WARNING"


@dataclass(frozen=True)
class AlertSettingsView:
    email_recipients: tuple[str, ...]
    webhook_configured: bool
    channels: tuple[str, ...]
    min_severity: str
    renotify_after_seconds: int | None

    @classmethod
    def of(cls, config: AlertConfig | None) -> AlertSettingsView:
        """``None`` (never saved): the defaults the alert service would apply."""
        if config is None:
            return cls((), False, ALERT_CHANNELS, DEFAULT_SEVERITY, None)
        renotify = config.renotify_after
        return cls(
            email_recipients=config.email_recipients,
            webhook_configured=config.webhook_url_ciphertext is not None,
            channels=tuple(c for c in ALERT_CHANNELS if c in config.channels),
            min_severity=config.min_severity,
            renotify_after_seconds=int(renotify.total_seconds()) if renotify else None,
        )


@dataclass(frozen=True)
class WebhookChange:
    """Keep the stored URL, set a new one, or remove it."""

    action: str  # "keep" | "set" | "clear"
    url: Secret | None = None

    @classmethod
    def keep(cls) -> WebhookChange:
        return cls("keep")

    @classmethod
    def clear(cls) -> WebhookChange:
        return cls("clear")

    @classmethod
    def set(cls, url: str) -> WebhookChange:
        url = url.strip()
        if not url or len(url) > MAX_WEBHOOK_URL_LENGTH:
            raise ValidationError(
                f"the webhook URL must be 1 to {MAX_WEBHOOK_URL_LENGTH} characters",
                field="webhookUrl",
            )
        return cls("set", Secret(url))


class AlertSettingsAdmin:
    """Reading and replacing the tenant's settings (the resolver checks ADMIN)."""

    def __init__(
        self, session: AsyncSession, repository: AlertSettingsRepository, tenant_id: uuid.UUID
    ) -> None:
        self.session = session
        self.repository = repository
        self.tenant_id = tenant_id

    async def get(self) -> AlertSettingsView:
        return AlertSettingsView.of(await self.repository.load(self.session, self.tenant_id))

    async def update(
        self,
        actor: Actor,
        *,
        email_recipients: Sequence[str],
        webhook: WebhookChange,
        channels: Sequence[str],
        min_severity: str,
        renotify_after_seconds: int | None,
    ) -> AlertSettingsView:
        recipients = list(dict.fromkeys(a.strip().lower() for a in email_recipients))
        if len(recipients) > MAX_RECIPIENTS:
            raise ValidationError(
                f"at most {MAX_RECIPIENTS} email recipients", field="emailRecipients"
            )
        await self.repository.save(
            self.session,
            self.tenant_id,
            email_recipients=recipients,
            webhook_url=webhook.url,
            channels=channels,
            min_severity=min_severity,
            renotify_after_seconds=renotify_after_seconds,
            keep_webhook_url=webhook.action == "keep",
        )
        view = await self.get()
        await write_audit(
            self.session,
            actor,
            AuditEntry(
                action="alert_settings.update",
                target_type="alert_settings",
                target_id=str(self.tenant_id),
                details={
                    "recipients": len(view.email_recipients),
                    "webhook": webhook.action,
                    "channels": list(view.channels),
                    "min_severity": view.min_severity,
                    "renotify_after_seconds": view.renotify_after_seconds,
                },
            ),
        )
        return view


@dataclass(frozen=True)
class AlertView:
    key: str
    severity: str
    title: str
    status: str
    occurrences: int
    first_seen: datetime
    last_seen: datetime
    resolved_at: datetime | None


async def tenant_alerts(
    session: AsyncSession, tenant_id: uuid.UUID, *, status: str | None, limit: int
) -> list[AlertView]:
    """The tenant's alerts, most recently seen first (``status``: OPEN or RESOLVED)."""
    c = ALERTS.c
    query = (
        select(
            c.key,
            c.severity,
            c.title,
            c.status,
            c.occurrences,
            c.first_seen,
            c.last_seen,
            c.resolved_at,
        )
        .where(c.tenant_id == tenant_id)
        .order_by(c.last_seen.desc(), c.id)
        .limit(limit)
    )
    if status is not None:
        query = query.where(c.status == status)
    return [AlertView(**row._mapping) for row in (await session.execute(query)).all()]
