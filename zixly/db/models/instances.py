"""Tenant n8n instances (migration 0002), their events and final exports, and ingest tokens
(migration 0004)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from zixly.db.models.base import Base, created, pk, tenant_fk

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
    created_at: Mapped[dt.datetime] = created()
    updated_at: Mapped[dt.datetime] = created()
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
    tenant_id: Mapped[uuid.UUID] = tenant_fk()
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
    id: Mapped[uuid.UUID] = pk()
    tenant_id: Mapped[uuid.UUID] = tenant_fk()
    created_at: Mapped[dt.datetime] = created()
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    bundle: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    __table_args__ = (
        CheckConstraint("reason IN ('DEPROVISION', 'MANUAL')", name="workflow_exports_reason"),
        Index("workflow_exports_tenant_created_idx", "tenant_id", "created_at"),
    )


# --- alerts (migration 0003) --------------------------------------------------------------------

# --- ingest tokens (migration 0004) -------------------------------------------------------------


class IngestToken(Base):
    """A token a tenant's workflows present to the ingest endpoint: its SHA-256 only."""

    __tablename__ = "ingest_tokens"
    id: Mapped[uuid.UUID] = pk()
    tenant_id: Mapped[uuid.UUID] = tenant_fk()
    name: Mapped[str] = mapped_column(Text, nullable=False)
    prefix: Mapped[str] = mapped_column(Text, nullable=False)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    created_at: Mapped[dt.datetime] = created()
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
