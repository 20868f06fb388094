"""Tenants, users and memberships, tenant business data (clients, financials, pipeline,
custom metrics), integrations, the audit log and invitations."""

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
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from zixly.db.models.base import Base, created, pk, tenant_fk

EMBEDDING_DIMENSIONS = 384
ROLES = ("ADMIN", "EDITOR", "VIEWER")
INTEGRATION_STATUSES = ("PENDING", "ACTIVE", "STALE", "ERROR", "DISABLED")


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[uuid.UUID] = pk()
    slug: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    industry: Mapped[str | None] = mapped_column(Text)
    plan: Mapped[str] = mapped_column(Text, nullable=False, server_default=text("'standard'"))
    created_at: Mapped[dt.datetime] = created()
    updated_at: Mapped[dt.datetime] = created()
    __table_args__ = (
        CheckConstraint(r"slug ~ '^[a-z0-9][a-z0-9-]{1,62}$'", name="tenants_slug_format"),
    )


class User(Base):
    __tablename__ = "users"
    id: Mapped[uuid.UUID] = pk()
    email: Mapped[str] = mapped_column(Text, nullable=False)
    display_name: Mapped[str | None] = mapped_column(Text)
    is_staff: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    created_at: Mapped[dt.datetime] = created()
    updated_at: Mapped[dt.datetime] = created()
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
    created_at: Mapped[dt.datetime] = created()
    updated_at: Mapped[dt.datetime] = created()
    __table_args__ = (
        CheckConstraint("role IN ('ADMIN', 'EDITOR', 'VIEWER')", name="memberships_role"),
        Index("memberships_user_id_idx", "user_id"),
    )


class ClientKpi(Base):
    __tablename__ = "client_kpis"
    id: Mapped[uuid.UUID] = pk()
    tenant_id: Mapped[uuid.UUID] = tenant_fk()
    client_id: Mapped[str] = mapped_column(Text, nullable=False)
    client_name: Mapped[str] = mapped_column(Text, nullable=False)
    industry: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = created()
    updated_at: Mapped[dt.datetime] = created()
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
    id: Mapped[uuid.UUID] = pk()
    tenant_id: Mapped[uuid.UUID] = tenant_fk()
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
    created_at: Mapped[dt.datetime] = created()
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
    id: Mapped[uuid.UUID] = pk()
    tenant_id: Mapped[uuid.UUID] = tenant_fk()
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
    created_at: Mapped[dt.datetime] = created()
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
    id: Mapped[uuid.UUID] = pk()
    tenant_id: Mapped[uuid.UUID] = tenant_fk()
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
    created_at: Mapped[dt.datetime] = created()
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
    id: Mapped[uuid.UUID] = pk()
    tenant_id: Mapped[uuid.UUID] = tenant_fk()
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
    created_at: Mapped[dt.datetime] = created()
    updated_at: Mapped[dt.datetime] = created()
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
    created_at: Mapped[dt.datetime] = created()
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


def _user_fk() -> Any:
    return mapped_column(UUID(as_uuid=True), ForeignKey("users.id", ondelete="SET NULL"))


class Invitation(Base):
    """A pending (or settled) invitation into a tenant: the SHA-256 of its secret only."""

    __tablename__ = "invitations"
    id: Mapped[uuid.UUID] = pk()
    tenant_id: Mapped[uuid.UUID] = tenant_fk()
    email: Mapped[str] = mapped_column(Text, nullable=False)
    role: Mapped[str] = mapped_column(Text, nullable=False)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    invited_by: Mapped[uuid.UUID | None] = _user_fk()
    created_at: Mapped[dt.datetime] = created()
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
