"""Tables, as SQLAlchemy 2 models.

The migrations in ``zixly/migrations`` are the source of truth for DDL (they also hold
the row-level-security policies); ``tests/test_migrations.py`` fails when these models
drift from what the migrations create.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

EMBEDDING_DIMENSIONS = 384
ROLES = ("ADMIN", "EDITOR", "VIEWER")
INTEGRATION_STATUSES = ("PENDING", "ACTIVE", "STALE", "ERROR", "DISABLED")


class Base(DeclarativeBase):
    pass


def _pk() -> Mapped[uuid.UUID]:
    return mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=func.gen_random_uuid()
    )


def _created() -> Mapped[dt.datetime]:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


def _tenant_fk() -> Mapped[uuid.UUID]:
    return mapped_column(
        UUID(as_uuid=True), ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    )


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[uuid.UUID] = _pk()
    slug: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    industry: Mapped[str | None] = mapped_column(Text)
    plan: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'standard'"))
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _created()
    __table_args__ = (
        CheckConstraint(r"slug ~ '^[a-z0-9][a-z0-9-]{1,62}$'", name="tenants_slug_format"),
    )


class User(Base):
    __tablename__ = "users"
    id: Mapped[uuid.UUID] = _pk()
    email: Mapped[str] = mapped_column(Text, nullable=False)
    display_name: Mapped[str | None] = mapped_column(Text)
    is_staff: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _created()
    __table_args__ = (
        Index("users_email_key", func.lower(email), unique=True),
        CheckConstraint("email ~ '^[^@\\s]+@[^@\\s]+$'", name="users_email_format"),
    )


class Membership(Base):
    """A user's role in one tenant."""

    __tablename__ = "memberships"
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _created()
    __table_args__ = (
        CheckConstraint("role IN ('ADMIN', 'EDITOR', 'VIEWER')", name="memberships_role"),
        Index("memberships_user_id_idx", "user_id"),
    )


class ClientKpi(Base):
    __tablename__ = "client_kpis"
    id: Mapped[uuid.UUID] = _pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    client_id: Mapped[str] = mapped_column(Text, nullable=False)
    client_name: Mapped[str] = mapped_column(Text, nullable=False)
    industry: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _created()
    __table_args__ = (
        UniqueConstraint("tenant_id", "client_id", name="client_kpis_tenant_client_key"),
        UniqueConstraint("tenant_id", "id", name="client_kpis_tenant_id_id_key"),
        Index("client_kpis_tenant_name_idx", "tenant_id", "client_name"),
    )


def _client_fk(table: str) -> ForeignKeyConstraint:
    return ForeignKeyConstraint(
        ["tenant_id", "client_kpi_id"],
        ["client_kpis.tenant_id", "client_kpis.id"],
        ondelete="CASCADE",
        name=f"{table}_client_fkey",
    )


class Financial(Base):
    __tablename__ = "financials"
    id: Mapped[uuid.UUID] = _pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    client_kpi_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    record_date: Mapped[dt.date] = mapped_column(Date, nullable=False)
    revenue: Mapped[Decimal] = mapped_column(Numeric(14, 2), nullable=False)
    expenses: Mapped[Decimal] = mapped_column(Numeric(14, 2), nullable=False)
    net_profit: Mapped[Decimal] = mapped_column(Numeric(14, 2), nullable=False)
    cash_flow: Mapped[Decimal] = mapped_column(Numeric(14, 2), nullable=False)
    currency: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'AUD'"))
    source_system: Mapped[str] = mapped_column(
        Text, nullable=False, server_default=text("'manual'")
    )
    external_id: Mapped[str | None] = mapped_column(Text)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONB)
    source_workflow_id: Mapped[str | None] = mapped_column(Text)
    source_execution_id: Mapped[str | None] = mapped_column(Text)
    ingested_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = _created()
    __table_args__ = (
        _client_fk("financials"),
        UniqueConstraint(
            "tenant_id",
            "client_kpi_id",
            "record_date",
            "source_system",
            name="financials_natural_key",
        ),
        Index("financials_tenant_date_idx", "tenant_id", "record_date"),
        Index("financials_tenant_client_date_idx", "tenant_id", "client_kpi_id", "record_date"),
        CheckConstraint("currency ~ '^[A-Z]{3}$'", name="financials_currency"),
    )


class LeadEvent(Base):
    __tablename__ = "lead_events"
    id: Mapped[uuid.UUID] = _pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    client_kpi_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    event_date: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    lead_id: Mapped[str] = mapped_column(Text, nullable=False)
    stage: Mapped[str] = mapped_column(Text, nullable=False)
    value: Mapped[Decimal | None] = mapped_column(Numeric(14, 2))
    status: Mapped[str] = mapped_column(Text, nullable=False)
    source_system: Mapped[str] = mapped_column(
        Text, nullable=False, server_default=text("'manual'")
    )
    external_id: Mapped[str | None] = mapped_column(Text)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONB)
    source_workflow_id: Mapped[str | None] = mapped_column(Text)
    source_execution_id: Mapped[str | None] = mapped_column(Text)
    ingested_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = _created()
    __table_args__ = (
        _client_fk("lead_events"),
        UniqueConstraint(
            "tenant_id",
            "client_kpi_id",
            "source_system",
            "lead_id",
            "stage",
            "event_date",
            name="lead_events_natural_key",
        ),
        Index("lead_events_tenant_client_date_idx", "tenant_id", "client_kpi_id", "event_date"),
        Index("lead_events_tenant_lead_idx", "tenant_id", "lead_id"),
        Index("lead_events_tenant_stage_status_idx", "tenant_id", "stage", "status"),
    )


class CustomMetric(Base):
    __tablename__ = "custom_metrics"
    id: Mapped[uuid.UUID] = _pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    client_kpi_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    metric_name: Mapped[str] = mapped_column(Text, nullable=False)
    metric_value: Mapped[Decimal] = mapped_column(Numeric(14, 4), nullable=False)
    unit: Mapped[str | None] = mapped_column(Text)
    record_date: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    source_system: Mapped[str] = mapped_column(
        Text, nullable=False, server_default=text("'manual'")
    )
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONB)
    embedding: Mapped[Any | None] = mapped_column(Vector(EMBEDDING_DIMENSIONS))
    source_workflow_id: Mapped[str | None] = mapped_column(Text)
    source_execution_id: Mapped[str | None] = mapped_column(Text)
    ingested_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = _created()
    __table_args__ = (
        _client_fk("custom_metrics"),
        UniqueConstraint(
            "tenant_id",
            "client_kpi_id",
            "metric_name",
            "record_date",
            "source_system",
            name="custom_metrics_natural_key",
        ),
        Index(
            "custom_metrics_tenant_client_name_date_idx",
            "tenant_id",
            "client_kpi_id",
            "metric_name",
            "record_date",
        ),
        Index("custom_metrics_tenant_name_date_idx", "tenant_id", "metric_name", "record_date"),
        Index(
            "custom_metrics_embedding_hnsw_idx",
            "embedding",
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "vector_cosine_ops"},
        ),
    )


class Integration(Base):
    """A tenant's connection to a provider. Token columns hold AES-GCM ciphertext only."""

    __tablename__ = "integrations"
    id: Mapped[uuid.UUID] = _pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    provider: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'PENDING'"))
    access_token_ciphertext: Mapped[str | None] = mapped_column(Text)
    refresh_token_ciphertext: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONB)
    last_sync_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    consecutive_failures: Mapped[int] = mapped_column(
        Integer, nullable=False, server_default=text("0")
    )
    last_checked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_failure_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    last_execution_id: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _created()
    __table_args__ = (
        UniqueConstraint("tenant_id", "provider", name="integrations_tenant_provider_key"),
        CheckConstraint(
            "status IN ('PENDING', 'ACTIVE', 'STALE', 'ERROR', 'DISABLED')",
            name="integrations_status",
        ),
        CheckConstraint(
            r"access_token_ciphertext IS NULL OR access_token_ciphertext ~ '^v1\.[A-Za-z0-9_-]+\.'",
            name="integrations_access_token_is_ciphertext",
        ),
        CheckConstraint(
            r"refresh_token_ciphertext IS NULL OR refresh_token_ciphertext ~ '^v1\.[A-Za-z0-9_-]+\.'",
            name="integrations_refresh_token_is_ciphertext",
        ),
        CheckConstraint(
            "consecutive_failures >= 0", name="integrations_consecutive_failures_nonnegative"
        ),
    )


class AuditLog(Base):
    """Append-only: the application role may insert and read, never update or delete."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    # No foreign key: the audit trail outlives the tenants and users it mentions.
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    actor_user_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    action: Mapped[str] = mapped_column(Text, nullable=False)
    target_type: Mapped[str | None] = mapped_column(Text)
    target_id: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    request_id: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _created()
    __table_args__ = (Index("audit_log_tenant_created_idx", "tenant_id", "created_at"),)


TENANT_SCOPED_TABLES = (
    "memberships",
    "client_kpis",
    "financials",
    "lead_events",
    "custom_metrics",
    "integrations",
    "audit_log",
)


# --- tenant n8n instances (migration 0002) ------------------------------------------------------

DESIRED_STATES = ("RUNNING", "STOPPED", "SUSPENDED", "ABSENT")
ACTUAL_STATES = (
    "PENDING",
    "PROVISIONING",
    "RUNNING",
    "STOPPED",
    "SUSPENDED",
    "UPGRADING",
    "DEPROVISIONING",
    "DEPROVISIONED",
    "FAILED",
)


class N8nInstance(Base):
    """A tenant's n8n instance: desired vs actual state; secrets as ciphertext only."""

    __tablename__ = "n8n_instances"
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("tenants.id", ondelete="RESTRICT"), primary_key=True
    )
    desired_state: Mapped[str] = mapped_column(
        Text, nullable=False, server_default=text("'RUNNING'")
    )
    actual_state: Mapped[str] = mapped_column(
        Text, nullable=False, server_default=text("'PENDING'")
    )
    step: Mapped[str | None] = mapped_column(Text)
    runtime: Mapped[str] = mapped_column(Text, nullable=False)
    runtime_handle: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    version: Mapped[str] = mapped_column(Text, nullable=False)
    target_version: Mapped[str | None] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(Text)
    editor_url: Mapped[str | None] = mapped_column(Text)
    templates: Mapped[list[Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'[]'::jsonb")
    )
    last_health: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    last_health_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    encryption_key_ciphertext: Mapped[str | None] = mapped_column(Text)
    owner_password_ciphertext: Mapped[str | None] = mapped_column(Text)
    api_key_ciphertext: Mapped[str | None] = mapped_column(Text)
    owner_email: Mapped[str | None] = mapped_column(Text)
    monitor_cursor: Mapped[int | None] = mapped_column(BigInteger)
    monitor_checked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    monitor_error: Mapped[str | None] = mapped_column(Text)
    # template workflow name -> {workflow_id, template, deployed} (migration 0005)
    template_fingerprints: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    lock_version: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _created()
    __table_args__ = (
        CheckConstraint(
            "desired_state IN ('RUNNING', 'STOPPED', 'SUSPENDED', 'ABSENT')",
            name="n8n_instances_desired_state",
        ),
        CheckConstraint(
            "actual_state IN ('PENDING', 'PROVISIONING', 'RUNNING', 'STOPPED', 'SUSPENDED', "
            "'UPGRADING', 'DEPROVISIONING', 'DEPROVISIONED', 'FAILED')",
            name="n8n_instances_actual_state",
        ),
        CheckConstraint(
            "step IS NULL OR step IN ('SECRETS', 'CREATED', 'STARTED', 'READY', "
            "'BOOTSTRAPPED', 'TEMPLATES', 'DONE', 'EXPORTED', 'REMOVED')",
            name="n8n_instances_step",
        ),
        CheckConstraint(
            "runtime IN ('process', 'docker', 'kubernetes')", name="n8n_instances_runtime"
        ),
        CheckConstraint(
            "jsonb_typeof(templates) = 'array'", name="n8n_instances_templates_is_array"
        ),
        CheckConstraint(
            "jsonb_typeof(template_fingerprints) = 'object'",
            name="n8n_instances_template_fingerprints_is_object",
        ),
        *(
            CheckConstraint(
                rf"{column} IS NULL OR {column} ~ '^v1\.[A-Za-z0-9_-]+\.'",
                name=f"n8n_instances_{column.removesuffix('_ciphertext')}_is_ciphertext",
            )
            for column in (
                "encryption_key_ciphertext",
                "owner_password_ciphertext",
                "api_key_ciphertext",
            )
        ),
        Index("n8n_instances_desired_actual_idx", "desired_state", "actual_state"),
    )


class InstanceEvent(Base):
    """Progress history of a tenant's instance (also published on Redis)."""

    __tablename__ = "instance_events"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.clock_timestamp()
    )
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    step: Mapped[str | None] = mapped_column(Text)
    message: Mapped[str] = mapped_column(Text, nullable=False)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    __table_args__ = (
        CheckConstraint(
            "kind IN ('REQUESTED', 'TRANSITION', 'STEP', 'HEALTH', 'ERROR', 'EXPORT', 'REPAIR')",
            name="instance_events_kind",
        ),
        Index("instance_events_tenant_id_idx", "tenant_id", "id"),
    )


class WorkflowExport(Base):
    """A tenant's workflows as n8n exports them (kept when the instance is removed)."""

    __tablename__ = "workflow_exports"
    id: Mapped[uuid.UUID] = _pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    created_at: Mapped[dt.datetime] = _created()
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    bundle: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    __table_args__ = (
        CheckConstraint("reason IN ('DEPROVISION', 'MANUAL')", name="workflow_exports_reason"),
        Index("workflow_exports_tenant_created_idx", "tenant_id", "created_at"),
    )


# --- alerts (migration 0003) --------------------------------------------------------------------

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
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _created()
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
    id: Mapped[uuid.UUID] = _pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    key: Mapped[str] = mapped_column(Text, nullable=False)
    severity: Mapped[str] = mapped_column(Text, nullable=False)
    title: Mapped[str] = mapped_column(Text, nullable=False)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'OPEN'"))
    occurrences: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))
    first_seen: Mapped[dt.datetime] = _created()
    last_seen: Mapped[dt.datetime] = _created()
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
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    alert_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    channel: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'PENDING'"))
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    next_attempt_at: Mapped[dt.datetime] = _created()
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _created()
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


# --- ingest tokens (migration 0004) -------------------------------------------------------------


class IngestToken(Base):
    """A token a tenant's workflows present to the ingest endpoint: its SHA-256 only."""

    __tablename__ = "ingest_tokens"
    id: Mapped[uuid.UUID] = _pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    name: Mapped[str] = mapped_column(Text, nullable=False)
    prefix: Mapped[str] = mapped_column(Text, nullable=False)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    created_at: Mapped[dt.datetime] = _created()
    last_used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    __table_args__ = (
        UniqueConstraint("tenant_id", "id", name="ingest_tokens_tenant_id_id_key"),
        UniqueConstraint("token_hash", name="ingest_tokens_token_hash_key"),
        CheckConstraint("octet_length(token_hash) = 32", name="ingest_tokens_hash_is_sha256"),
        CheckConstraint("char_length(name) BETWEEN 1 AND 100", name="ingest_tokens_name_length"),
        Index(
            "ingest_tokens_tenant_name_live",
            "tenant_id",
            "name",
            unique=True,
            postgresql_where=text("revoked_at IS NULL"),
        ),
    )


def _user_fk() -> Any:
    return mapped_column(UUID(as_uuid=True), ForeignKey("users.id", ondelete="SET NULL"))


class Invitation(Base):
    """A pending (or settled) invitation into a tenant: the SHA-256 of its secret only."""

    __tablename__ = "invitations"
    id: Mapped[uuid.UUID] = _pk()
    tenant_id: Mapped[uuid.UUID] = _tenant_fk()
    email: Mapped[str] = mapped_column(Text, nullable=False)
    role: Mapped[str] = mapped_column(Text, nullable=False)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    invited_by: Mapped[uuid.UUID | None] = _user_fk()
    created_at: Mapped[dt.datetime] = _created()
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    accepted_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    accepted_by: Mapped[uuid.UUID | None] = _user_fk()
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_by: Mapped[uuid.UUID | None] = _user_fk()
    __table_args__ = (
        UniqueConstraint("tenant_id", "id", name="invitations_tenant_id_id_key"),
        UniqueConstraint("token_hash", name="invitations_token_hash_key"),
        CheckConstraint("octet_length(token_hash) = 32", name="invitations_hash_is_sha256"),
        CheckConstraint("role IN ('ADMIN', 'EDITOR', 'VIEWER')", name="invitations_role"),
        CheckConstraint(
            "email ~ '^[^@\\s]+@[^@\\s]+$' AND email = lower(email)",
            name="invitations_email_format",
        ),
        Index("invitations_tenant_email_idx", "tenant_id", "email", "id"),
        Index(
            "invitations_tenant_email_open",
            "tenant_id",
            "email",
            unique=True,
            postgresql_where=text("accepted_at IS NULL AND revoked_at IS NULL"),
        ),
    )
