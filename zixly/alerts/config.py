"""A tenant's alert settings: recipients, the (encrypted) webhook URL, channels, threshold."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import cast

from sqlalchemy import Table, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from zixly.alerts.destinations import WebhookTargets
from zixly.core.errors import ValidationError
from zixly.db.models import ALERT_CHANNELS, ALERT_SEVERITIES, AlertSettings
from zixly.security.crypto import Binding, Keyring, Secret

SETTINGS = cast(Table, AlertSettings.__table__)
# Matched whole ("$" would let a final "\n" by); no control character or lone surrogate (a
# header's line break, or text PostgreSQL cannot store).
_EMAIL_PART = r"[^@\s,<>\x00-\x1f\x7f-\x9f\ud800-\udfff]+"
_EMAIL = re.compile(f"{_EMAIL_PART}@{_EMAIL_PART}")


def severity_rank(severity: str) -> int:
    return ALERT_SEVERITIES.index(severity)


def check_severity(severity: str, field: str = "severity") -> str:
    if severity not in ALERT_SEVERITIES:
        raise ValidationError(f"severity must be one of {', '.join(ALERT_SEVERITIES)}", field=field)
    return severity


def webhook_binding(tenant_id: uuid.UUID) -> Binding:
    """The settings row's key is the tenant id, so the row part is the tenant id too."""
    return Binding(str(tenant_id), "alert_settings", str(tenant_id), "webhook_url")


@dataclass(frozen=True)
class AlertConfig:
    tenant_id: uuid.UUID
    email_recipients: tuple[str, ...]
    webhook_url_ciphertext: str | None
    channels: frozenset[str]
    min_severity: str
    renotify_after: timedelta | None

    def deliverable(self) -> tuple[str, ...]:
        """The enabled channels that have somewhere to deliver to, in a stable order."""
        ready = {
            "email": bool(self.email_recipients),
            "webhook": self.webhook_url_ciphertext is not None,
        }
        return tuple(c for c in ALERT_CHANNELS if c in self.channels and ready[c])

    def wants(self, severity: str) -> bool:
        return severity_rank(severity) >= severity_rank(self.min_severity)


class AlertSettingsRepository:
    """``targets``: where a webhook URL may point (zixly.alerts.destinations)."""

    def __init__(self, keyring: Keyring, targets: WebhookTargets | None = None) -> None:
        self.keyring = keyring
        self.targets = targets or WebhookTargets()

    async def load(self, session: AsyncSession, tenant_id: uuid.UUID) -> AlertConfig | None:
        row = (
            await session.execute(select(SETTINGS).where(SETTINGS.c.tenant_id == tenant_id))
        ).first()
        if row is None:
            return None
        seconds = row.renotify_after_seconds
        return AlertConfig(
            tenant_id=tenant_id,
            email_recipients=tuple(row.email_recipients),
            webhook_url_ciphertext=row.webhook_url_ciphertext,
            channels=frozenset(row.channels),
            min_severity=row.min_severity,
            renotify_after=timedelta(seconds=seconds) if seconds else None,
        )

    async def save(
        self,
        session: AsyncSession,
        tenant_id: uuid.UUID,
        *,
        email_recipients: Sequence[str] = (),
        webhook_url: Secret | None = None,
        channels: Iterable[str] = ALERT_CHANNELS,
        min_severity: str = "WARNING",
        renotify_after_seconds: int | None = None,
        keep_webhook_url: bool = False,
    ) -> None:
        """Create or replace the tenant's settings (the caller's transaction commits);
        ``keep_webhook_url`` (with no ``webhook_url``) leaves the stored URL as it is."""
        recipients = [_check_email(address) for address in email_recipients]
        enabled = sorted(set(channels))
        if not set(enabled) <= set(ALERT_CHANNELS):
            raise ValidationError("unknown alert channel", field="channels")
        check_severity(min_severity, "minSeverity")
        if renotify_after_seconds is not None and renotify_after_seconds <= 0:
            raise ValidationError("must be positive", field="renotifyAfterSeconds")
        ciphertext = None
        if webhook_url is not None:
            self.targets.check(webhook_url)
            ciphertext = self.keyring.encrypt(webhook_url, webhook_binding(tenant_id))
        values = {
            "email_recipients": recipients,
            "webhook_url_ciphertext": ciphertext,
            "channels": enabled,
            "min_severity": min_severity,
            "renotify_after_seconds": renotify_after_seconds,
        }
        replaced = dict(values)
        if keep_webhook_url and webhook_url is None:
            del replaced["webhook_url_ciphertext"]
        statement = pg_insert(SETTINGS).values(tenant_id=tenant_id, **values)
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=[SETTINGS.c.tenant_id], set_={**replaced, "updated_at": func.now()}
            )
        )

    def webhook_url(self, tenant_id: uuid.UUID, ciphertext: str) -> Secret:
        return self.keyring.decrypt(ciphertext, webhook_binding(tenant_id))


def _check_email(address: str) -> str:
    if not _EMAIL.fullmatch(address):
        raise ValidationError("not an email address", field="emailRecipients")
    return address
