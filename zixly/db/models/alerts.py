"""Alert settings, alerts and their deliveries (migration 0003)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from zixly.db.models.base import Base, created, pk, tenant_fk

ALERT_SEVERITIES = ("INFO", "WARNING", "CRITICAL")
ALERT_CHANNELS = ("email", "webhook")


class AlertSettings(Base):
    """Where a tenant's alerts go. The webhook URL carries a token: ciphertext only."""

    __tablename__ = "alert_settings"
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    email_recipients: Mapped[list[str]] = mapped_column(
        ARRAY(Text), nullable=False, server_default=text("'{}'::text[]")
    )
    webhook_url_ciphertext: Mapped[str | None] = mapped_column(Text)
    channels: Mapped[list[str]] = mapped_column(
        ARRAY(Text), nullable=False, server_default=text("'{email,webhook}'::text[]")
    )
    min_severity: Mapped[str] = mapped_column(
        Text, nullable=False, server_default=text("'WARNING'")
    )
    renotify_after_seconds: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = created()
    updated_at: Mapped[dt.datetime] = created()
    __table_args__ = (
        CheckConstraint(
            "channels <@ ARRAY['email', 'webhook']::text[]", name="alert_settings_channels"
        ),
        CheckConstraint(
            "min_severity IN ('INFO', 'WARNING', 'CRITICAL')", name="alert_settings_min_severity"
        ),
        CheckConstraint(
            "renotify_after_seconds IS NULL OR renotify_after_seconds > 0",
            name="alert_settings_renotify_positive",
        ),
        CheckConstraint(
            r"webhook_url_ciphertext IS NULL OR webhook_url_ciphertext ~ '^v1\.[A-Za-z0-9_-]+\.'",
            name="alert_settings_webhook_url_is_ciphertext",
        ),
    )


class Alert(Base):
    """A problem of a tenant: at most one OPEN row per key, counted while it persists."""

    __tablename__ = "alerts"
    id: Mapped[uuid.UUID] = pk()
    tenant_id: Mapped[uuid.UUID] = tenant_fk()
    key: Mapped[str] = mapped_column(Text, nullable=False)
    severity: Mapped[str] = mapped_column(Text, nullable=False)
    title: Mapped[str] = mapped_column(Text, nullable=False)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'OPEN'"))
    occurrences: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))
    first_seen: Mapped[dt.datetime] = created()
    last_seen: Mapped[dt.datetime] = created()
    notified_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    __table_args__ = (
        UniqueConstraint("tenant_id", "id", name="alerts_tenant_id_id_key"),
        CheckConstraint("severity IN ('INFO', 'WARNING', 'CRITICAL')", name="alerts_severity"),
        CheckConstraint("status IN ('OPEN', 'RESOLVED')", name="alerts_status"),
        Index(
            "alerts_open_key",
            "tenant_id",
            "key",
            unique=True,
            postgresql_where=text("status = 'OPEN'"),
        ),
        Index("alerts_tenant_first_seen_idx", "tenant_id", "first_seen"),
    )


class AlertDelivery(Base):
    """The outbox: one notice (or recovery notice) on one channel, retried until sent."""

    __tablename__ = "alert_deliveries"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    tenant_id: Mapped[uuid.UUID] = tenant_fk()
    alert_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    channel: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'PENDING'"))
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    next_attempt_at: Mapped[dt.datetime] = created()
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = created()
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "alert_id"],
            ["alerts.tenant_id", "alerts.id"],
            ondelete="CASCADE",
            name="alert_deliveries_alert_fkey",
        ),
        CheckConstraint("kind IN ('NOTICE', 'RECOVERY')", name="alert_deliveries_kind"),
        CheckConstraint("channel IN ('email', 'webhook')", name="alert_deliveries_channel"),
        CheckConstraint("status IN ('PENDING', 'SENT', 'FAILED')", name="alert_deliveries_status"),
        Index("alert_deliveries_tenant_alert_idx", "tenant_id", "alert_id"),
        Index(
            "alert_deliveries_pending_idx",
            "next_attempt_at",
            postgresql_where=text("status = 'PENDING'"),
        ),
    )
