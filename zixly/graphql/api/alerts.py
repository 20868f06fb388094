"""The tenant's alerts (members) and where they are sent (ADMIN); logic in zixly.domain.alerts."""

from __future__ import annotations

import datetime as dt
import enum

import strawberry

from zixly.alerts.config import AlertSettingsRepository
from zixly.alerts.destinations import WebhookTargets
from zixly.domain.alerts import (
    AlertSettingsAdmin,
    AlertSettingsView,
    AlertView,
    WebhookChange,
    tenant_alerts,
)
from zixly.domain.audit import Actor
from zixly.graphql.context import Context, Info
from zixly.graphql.relay import page_size
from zixly.security.principal import Role


@strawberry.enum
class AlertSeverity(enum.Enum):
    INFO = "INFO"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"


@strawberry.enum
class AlertChannel(enum.Enum):
    EMAIL = "email"
    WEBHOOK = "webhook"


@strawberry.enum
class AlertStatus(enum.Enum):
    OPEN = "OPEN"
    RESOLVED = "RESOLVED"


@strawberry.type(description="Where the tenant's alerts go. The webhook URL is never returned.")
class AlertSettings:
    email_recipients: list[str]
    webhook_configured: bool = strawberry.field(
        description="Whether a webhook URL is stored (it is write-only)."
    )
    channels: list[AlertChannel]
    min_severity: AlertSeverity = strawberry.field(
        description="Alerts below this severity are recorded but not sent."
    )
    renotify_after_seconds: int | None = strawberry.field(
        description="Send an alert that stays open again after this long (null: once)."
    )

    @classmethod
    def from_view(cls, view: AlertSettingsView) -> AlertSettings:
        return cls(
            email_recipients=list(view.email_recipients),
            webhook_configured=view.webhook_configured,
            channels=[AlertChannel(c) for c in view.channels],
            min_severity=AlertSeverity(view.min_severity),
            renotify_after_seconds=view.renotify_after_seconds,
        )


@strawberry.input(description="The tenant's alert settings (replaces them).")
class AlertSettingsInput:
    email_recipients: list[str]
    webhook_url: str | None = strawberry.field(
        default=strawberry.UNSET,
        description="Write-only. Omitted: keep the stored URL; null: remove it. https to a "
        "public address only (localhost only where the server allows it, for development).",
    )
    channels: list[AlertChannel] = strawberry.field(
        default_factory=lambda: [AlertChannel.EMAIL, AlertChannel.WEBHOOK]
    )
    min_severity: AlertSeverity = AlertSeverity.WARNING
    renotify_after_seconds: int | None = None

    def webhook(self) -> WebhookChange:
        if self.webhook_url is strawberry.UNSET:
            return WebhookChange.keep()
        if self.webhook_url is None:
            return WebhookChange.clear()
        return WebhookChange.set(self.webhook_url)


@strawberry.type(description="A problem Zixly noticed: one open alert per key at a time.")
class Alert:
    key: str = strawberry.field(description="e.g. integration:xero:sync, instance:unreachable")
    severity: AlertSeverity
    title: str
    status: AlertStatus
    occurrences: int = strawberry.field(description="How often it was seen while open.")
    first_seen: dt.datetime
    last_seen: dt.datetime
    resolved_at: dt.datetime | None

    @classmethod
    def from_view(cls, view: AlertView) -> Alert:
        return cls(
            key=view.key,
            severity=AlertSeverity(view.severity),
            title=view.title,
            status=AlertStatus(view.status),
            occurrences=view.occurrences,
            first_seen=view.first_seen,
            last_seen=view.last_seen,
            resolved_at=view.resolved_at,
        )


def _repository(ctx: Context) -> AlertSettingsRepository:
    services = ctx.services
    return AlertSettingsRepository(
        services.keyring, WebhookTargets.from_settings(services.settings)
    )


@strawberry.type
class AlertQuery:
    @strawberry.field(description="The tenant's alerts, most recently seen first.")
    async def alerts(
        self, info: Info, status: AlertStatus | None = None, first: int | None = None
    ) -> list[Alert]:
        ctx = info.context
        tenant_id = ctx.tenant()
        limit = page_size(ctx, first)
        async with ctx.session() as session:
            views = await tenant_alerts(
                session, tenant_id, status=status.value if status else None, limit=limit
            )
        return [Alert.from_view(v) for v in views]

    @strawberry.field(description="Where the tenant's alerts are sent (ADMIN).")
    async def alert_settings(self, info: Info) -> AlertSettings:
        ctx = info.context
        tenant_id = ctx.tenant(Role.ADMIN)
        async with ctx.session() as session:
            view = await AlertSettingsAdmin(session, _repository(ctx), tenant_id).get()
        return AlertSettings.from_view(view)


@strawberry.type
class AlertMutation:
    @strawberry.mutation(description="Replace where the tenant's alerts are sent (ADMIN).")
    async def update_alert_settings(self, info: Info, input: AlertSettingsInput) -> AlertSettings:
        ctx = info.context
        tenant_id = ctx.tenant(Role.ADMIN)
        async with ctx.session() as session:
            view = await AlertSettingsAdmin(session, _repository(ctx), tenant_id).update(
                Actor.of(ctx.principal, ctx.request_id),
                email_recipients=input.email_recipients,
                webhook=input.webhook(),
                channels=[c.value for c in input.channels],
                min_severity=input.min_severity.value,
                renotify_after_seconds=input.renotify_after_seconds,
            )
        return AlertSettings.from_view(view)
