"""Alerts: per-tenant alert settings, deduplicated alerts and their pending deliveries.

Revision ID: 0003_alerts
Revises: 0002_n8n_instances
Create Date: 2026-11-29

``alerts`` holds one OPEN row per (tenant, key) at most (a partial unique index): raising a
problem that is already open only counts it (``occurrences``, ``last_seen``), so a persisting
problem notifies once; resolving it closes the row, and raising the same key afterwards opens
a new one. ``alert_deliveries`` is the outbox: one row per notice (or recovery notice) and
channel, retried with back-off until sent. ``alert_settings`` holds a tenant's recipients and
its webhook URL, which carries a token and is stored as AES-GCM ciphertext only.

Row-level security follows 0001/0002: ``tenant_isolation`` for the application role (which
may read its alerts and manage its own settings) and ``staff_access`` for the staff role
(the alert service and the delivery job run as staff, filtering by tenant explicitly).
"""

from alembic import context, op

from zixly.db.migrate import exec_script

revision = "0003_alerts"
down_revision = "0002_n8n_instances"
branch_labels = None
depends_on = None

TENANT = "(SELECT nullif(current_setting('app.tenant_id', true), '')::uuid)"
TABLES = ("alert_settings", "alerts", "alert_deliveries")
SEVERITIES = "('INFO', 'WARNING', 'CRITICAL')"

DDL = rf"""
CREATE TABLE alert_settings (
    tenant_id UUID NOT NULL,
    email_recipients TEXT[] DEFAULT '{{}}'::text[] NOT NULL,
    webhook_url_ciphertext TEXT,
    channels TEXT[] DEFAULT '{{email,webhook}}'::text[] NOT NULL,
    min_severity TEXT DEFAULT 'WARNING' NOT NULL,
    renotify_after_seconds INTEGER,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    PRIMARY KEY (tenant_id),
    CONSTRAINT alert_settings_channels CHECK (channels <@ ARRAY['email', 'webhook']::text[]),
    CONSTRAINT alert_settings_min_severity CHECK (min_severity IN {SEVERITIES}),
    CONSTRAINT alert_settings_renotify_positive
        CHECK (renotify_after_seconds IS NULL OR renotify_after_seconds > 0),
    CONSTRAINT alert_settings_webhook_url_is_ciphertext CHECK (
        webhook_url_ciphertext IS NULL OR webhook_url_ciphertext ~ '^v1\.[A-Za-z0-9_-]+\.'),
    FOREIGN KEY(tenant_id) REFERENCES tenants (id) ON DELETE CASCADE
);

CREATE TABLE alerts (
    id UUID DEFAULT gen_random_uuid() NOT NULL,
    tenant_id UUID NOT NULL,
    key TEXT NOT NULL,
    severity TEXT NOT NULL,
    title TEXT NOT NULL,
    details JSONB,
    status TEXT DEFAULT 'OPEN' NOT NULL,
    occurrences INTEGER DEFAULT 1 NOT NULL,
    first_seen TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    last_seen TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    notified_at TIMESTAMP WITH TIME ZONE,
    resolved_at TIMESTAMP WITH TIME ZONE,
    last_error TEXT,
    PRIMARY KEY (id),
    CONSTRAINT alerts_tenant_id_id_key UNIQUE (tenant_id, id),
    CONSTRAINT alerts_severity CHECK (severity IN {SEVERITIES}),
    CONSTRAINT alerts_status CHECK (status IN ('OPEN', 'RESOLVED')),
    FOREIGN KEY(tenant_id) REFERENCES tenants (id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX alerts_open_key ON alerts (tenant_id, key) WHERE status = 'OPEN';
CREATE INDEX alerts_tenant_first_seen_idx ON alerts (tenant_id, first_seen);

CREATE TABLE alert_deliveries (
    id BIGSERIAL NOT NULL,
    tenant_id UUID NOT NULL,
    alert_id UUID NOT NULL,
    kind TEXT NOT NULL,
    channel TEXT NOT NULL,
    status TEXT DEFAULT 'PENDING' NOT NULL,
    attempts INTEGER DEFAULT 0 NOT NULL,
    next_attempt_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    last_error TEXT,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    sent_at TIMESTAMP WITH TIME ZONE,
    PRIMARY KEY (id),
    CONSTRAINT alert_deliveries_kind CHECK (kind IN ('NOTICE', 'RECOVERY')),
    CONSTRAINT alert_deliveries_channel CHECK (channel IN ('email', 'webhook')),
    CONSTRAINT alert_deliveries_status CHECK (status IN ('PENDING', 'SENT', 'FAILED')),
    CONSTRAINT alert_deliveries_alert_fkey FOREIGN KEY(tenant_id, alert_id)
        REFERENCES alerts (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY(tenant_id) REFERENCES tenants (id) ON DELETE CASCADE
);
CREATE INDEX alert_deliveries_tenant_alert_idx ON alert_deliveries (tenant_id, alert_id);
CREATE INDEX alert_deliveries_pending_idx ON alert_deliveries (next_attempt_at)
    WHERE status = 'PENDING';
"""


def _roles() -> tuple[str, str]:
    attributes = context.config.attributes
    return attributes.get("app_role", "zixly_app"), attributes.get("staff_role", "zixly_staff")


def _policies(app: str, staff: str) -> str:
    statements = []
    for table in TABLES:
        statements += [
            f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
            f"CREATE POLICY tenant_isolation ON {table} TO {app} "
            f"USING (tenant_id = {TENANT}) WITH CHECK (tenant_id = {TENANT})",
            f"CREATE POLICY staff_access ON {table} TO {staff} USING (true) WITH CHECK (true)",
        ]
    return ";\n".join(statements) + ";"


def _grants(app: str, staff: str) -> str:
    return f"""
    REVOKE ALL ON alert_settings, alerts, alert_deliveries FROM PUBLIC;
    GRANT SELECT, INSERT, UPDATE, DELETE ON alert_settings TO {app};
    GRANT SELECT ON alerts, alert_deliveries TO {app};
    GRANT SELECT, INSERT, UPDATE, DELETE ON alert_settings, alerts, alert_deliveries TO {staff};
    GRANT USAGE ON SEQUENCE alert_deliveries_id_seq TO {staff};
    """


def upgrade() -> None:
    app, staff = _roles()
    exec_script(op, DDL)
    exec_script(op, _policies(app, staff))
    exec_script(op, _grants(app, staff))


def downgrade() -> None:
    exec_script(op, "DROP TABLE IF EXISTS alert_deliveries, alerts, alert_settings")
