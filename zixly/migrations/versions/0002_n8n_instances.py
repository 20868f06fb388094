"""Tenant n8n instances: the persisted lifecycle state, its event history, workflow exports.

Revision ID: 0002_n8n_instances
Revises: 0001_foundation
Create Date: 2026-11-28

``n8n_instances`` holds one row per tenant (the tenant id is the key): the desired state a
staff member or customer asked for, the actual state the lifecycle reached, the last
completed provisioning step (a retried job resumes after it), the runtime's handle, and the
instance's secrets as AES-GCM ciphertext only (CHECK constraints refuse anything that is not
a ``v1.<kid>.`` value). ``lock_version`` grows with every write, so a worker whose view is
stale cannot overwrite a newer state.

The row outlives deprovisioning (``DEPROVISIONED``, secrets cleared) and a tenant cannot be
deleted while it has one (``ON DELETE RESTRICT``): dropping the row would make the reconciler
treat the running instance as an orphan and remove it, data included, without an export.

Row-level security follows 0001: ``tenant_isolation`` for the application role and an
explicit ``staff_access`` for the staff role (provisioning jobs run as staff). The
application role may read its tenant's rows but not the ciphertext columns (column grants),
and writes nothing: instances change only through the lifecycle.
"""

from alembic import context, op

from zixly.db.migrate import exec_script

revision = "0002_n8n_instances"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None

TENANT = "(SELECT nullif(current_setting('app.tenant_id', true), '')::uuid)"
TABLES = ("n8n_instances", "instance_events", "workflow_exports")
CIPHERTEXT_COLUMNS = (
    "encryption_key_ciphertext",
    "owner_password_ciphertext",
    "api_key_ciphertext",
)
# What the application role may read of n8n_instances (everything but the ciphertexts).
READABLE_INSTANCE_COLUMNS = (
    "tenant_id",
    "desired_state",
    "actual_state",
    "step",
    "runtime",
    "runtime_handle",
    "version",
    "target_version",
    "url",
    "editor_url",
    "templates",
    "last_health",
    "last_health_at",
    "last_error",
    "owner_email",
    "lock_version",
    "created_at",
    "updated_at",
)


def _is_ciphertext(column: str) -> str:
    name = column.removesuffix("_ciphertext")
    return (
        f"CONSTRAINT n8n_instances_{name}_is_ciphertext CHECK (\n"
        f"        {column} IS NULL OR {column} ~ '^v1\\.[A-Za-z0-9_-]+\\.')"
    )


DDL = rf"""
CREATE TABLE n8n_instances (
    tenant_id UUID NOT NULL,
    desired_state TEXT DEFAULT 'RUNNING' NOT NULL,
    actual_state TEXT DEFAULT 'PENDING' NOT NULL,
    step TEXT,
    runtime TEXT NOT NULL,
    runtime_handle JSONB,
    version TEXT NOT NULL,
    target_version TEXT,
    url TEXT,
    editor_url TEXT,
    templates JSONB DEFAULT '[]'::jsonb NOT NULL,
    last_health JSONB,
    last_health_at TIMESTAMP WITH TIME ZONE,
    last_error TEXT,
    encryption_key_ciphertext TEXT,
    owner_password_ciphertext TEXT,
    api_key_ciphertext TEXT,
    owner_email TEXT,
    lock_version INTEGER DEFAULT 0 NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    PRIMARY KEY (tenant_id),
    CONSTRAINT n8n_instances_desired_state
        CHECK (desired_state IN ('RUNNING', 'STOPPED', 'SUSPENDED', 'ABSENT')),
    CONSTRAINT n8n_instances_actual_state CHECK (actual_state IN ('PENDING', 'PROVISIONING',
        'RUNNING', 'STOPPED', 'SUSPENDED', 'UPGRADING', 'DEPROVISIONING', 'DEPROVISIONED',
        'FAILED')),
    CONSTRAINT n8n_instances_step CHECK (step IS NULL OR step IN ('SECRETS', 'CREATED',
        'STARTED', 'READY', 'BOOTSTRAPPED', 'TEMPLATES', 'DONE', 'EXPORTED', 'REMOVED')),
    CONSTRAINT n8n_instances_runtime CHECK (runtime IN ('process', 'docker', 'kubernetes')),
    CONSTRAINT n8n_instances_templates_is_array CHECK (jsonb_typeof(templates) = 'array'),
    {_is_ciphertext("encryption_key_ciphertext")},
    {_is_ciphertext("owner_password_ciphertext")},
    {_is_ciphertext("api_key_ciphertext")},
    FOREIGN KEY(tenant_id) REFERENCES tenants (id) ON DELETE RESTRICT
);
CREATE INDEX n8n_instances_desired_actual_idx ON n8n_instances (desired_state, actual_state);

CREATE TABLE instance_events (
    id BIGSERIAL NOT NULL,
    tenant_id UUID NOT NULL,
    at TIMESTAMP WITH TIME ZONE DEFAULT clock_timestamp() NOT NULL,
    kind TEXT NOT NULL,
    step TEXT,
    message TEXT NOT NULL,
    details JSONB,
    PRIMARY KEY (id),
    CONSTRAINT instance_events_kind CHECK (kind IN ('REQUESTED', 'TRANSITION', 'STEP',
        'HEALTH', 'ERROR', 'EXPORT', 'REPAIR')),
    FOREIGN KEY(tenant_id) REFERENCES tenants (id) ON DELETE CASCADE
);
CREATE INDEX instance_events_tenant_id_idx ON instance_events (tenant_id, id);

CREATE TABLE workflow_exports (
    id UUID DEFAULT gen_random_uuid() NOT NULL,
    tenant_id UUID NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    reason TEXT NOT NULL,
    bundle JSONB NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT workflow_exports_reason CHECK (reason IN ('DEPROVISION', 'MANUAL')),
    FOREIGN KEY(tenant_id) REFERENCES tenants (id) ON DELETE CASCADE
);
CREATE INDEX workflow_exports_tenant_created_idx ON workflow_exports (tenant_id, created_at);
"""


def _roles() -> tuple[str, str]:
    attributes = context.config.attributes
    return attributes.get("app_role", "zixly_app"), attributes.get("staff_role", "zixly_staff")


def _policies(app: str, staff: str) -> str:
    statements = []
    for table in TABLES:
        statements += [
            f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
            f"CREATE POLICY tenant_isolation ON {table} FOR SELECT TO {app} "
            f"USING (tenant_id = {TENANT})",
            f"CREATE POLICY staff_access ON {table} TO {staff} USING (true) WITH CHECK (true)",
        ]
    return ";\n".join(statements) + ";"


def _grants(app: str, staff: str) -> str:
    readable = ", ".join(READABLE_INSTANCE_COLUMNS)
    return f"""
    REVOKE ALL ON n8n_instances, instance_events, workflow_exports FROM PUBLIC;
    GRANT SELECT ({readable}) ON n8n_instances TO {app};
    GRANT SELECT ON instance_events, workflow_exports TO {app};
    GRANT SELECT, INSERT, UPDATE, DELETE ON n8n_instances, instance_events, workflow_exports
        TO {staff};
    GRANT USAGE ON SEQUENCE instance_events_id_seq TO {staff};
    """


def upgrade() -> None:
    app, staff = _roles()
    exec_script(op, DDL)
    exec_script(op, _policies(app, staff))
    exec_script(op, _grants(app, staff))


def downgrade() -> None:
    exec_script(op, "DROP TABLE IF EXISTS workflow_exports, instance_events, n8n_instances")
