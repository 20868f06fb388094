"""Data flows: ingest tokens, row lineage, integration sync health, the monitor's cursor.

Revision ID: 0004_data_flows
Revises: 0003_alerts
Create Date: 2026-11-27

``ingest_tokens`` hold what a tenant's n8n instance presents to the ingest endpoint: only a
SHA-256 of each token is stored (tokens are 256-bit random, so a plain digest cannot be
reversed or guessed), with a short ``prefix`` so people can tell tokens apart. A token is
looked up before any tenant is known, through the SECURITY DEFINER function
``zixly_ingest_principal`` (like ``zixly_auth_principal``); everything after runs as the
application role with the token's tenant set, under the usual row-level security.

Lineage: every warehouse row written by ingest records the n8n workflow and execution that
wrote it and when (``source_workflow_id``, ``source_execution_id``, ``ingested_at``).

Sync health: ``integrations`` gain the monitor's view (consecutive failures, the last check,
the last failure and its message, the last execution seen); ``n8n_instances`` gain the
monitor's cursor (the highest execution id already read) and its last check.
"""

from alembic import context, op

from zixly.db.migrate import exec_script

revision = "0004_data_flows"
down_revision = "0003_alerts"
branch_labels = None
depends_on = None

TENANT = "(SELECT nullif(current_setting('app.tenant_id', true), '')::uuid)"
LINEAGE_TABLES = ("financials", "lead_events", "custom_metrics")

DDL = r"""
CREATE TABLE ingest_tokens (
    id UUID DEFAULT gen_random_uuid() NOT NULL,
    tenant_id UUID NOT NULL,
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    token_hash BYTEA NOT NULL,
    created_by UUID,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    last_used_at TIMESTAMP WITH TIME ZONE,
    expires_at TIMESTAMP WITH TIME ZONE,
    revoked_at TIMESTAMP WITH TIME ZONE,
    PRIMARY KEY (id),
    CONSTRAINT ingest_tokens_tenant_id_id_key UNIQUE (tenant_id, id),
    CONSTRAINT ingest_tokens_token_hash_key UNIQUE (token_hash),
    CONSTRAINT ingest_tokens_hash_is_sha256 CHECK (octet_length(token_hash) = 32),
    CONSTRAINT ingest_tokens_name_length CHECK (char_length(name) BETWEEN 1 AND 100),
    FOREIGN KEY(tenant_id) REFERENCES tenants (id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX ingest_tokens_tenant_name_live ON ingest_tokens (tenant_id, name)
    WHERE revoked_at IS NULL;

ALTER TABLE financials
    ADD COLUMN source_workflow_id TEXT,
    ADD COLUMN source_execution_id TEXT,
    ADD COLUMN ingested_at TIMESTAMP WITH TIME ZONE;
ALTER TABLE lead_events
    ADD COLUMN source_workflow_id TEXT,
    ADD COLUMN source_execution_id TEXT,
    ADD COLUMN ingested_at TIMESTAMP WITH TIME ZONE;
ALTER TABLE custom_metrics
    ADD COLUMN source_workflow_id TEXT,
    ADD COLUMN source_execution_id TEXT,
    ADD COLUMN ingested_at TIMESTAMP WITH TIME ZONE;

ALTER TABLE integrations
    ADD COLUMN consecutive_failures INTEGER DEFAULT 0 NOT NULL,
    ADD COLUMN last_checked_at TIMESTAMP WITH TIME ZONE,
    ADD COLUMN last_failure_at TIMESTAMP WITH TIME ZONE,
    ADD COLUMN last_error TEXT,
    ADD COLUMN last_execution_id TEXT,
    ADD CONSTRAINT integrations_consecutive_failures_nonnegative
        CHECK (consecutive_failures >= 0);

ALTER TABLE n8n_instances
    ADD COLUMN monitor_cursor BIGINT,
    ADD COLUMN monitor_checked_at TIMESTAMP WITH TIME ZONE,
    ADD COLUMN monitor_error TEXT;

CREATE FUNCTION zixly_ingest_principal(p_hash bytea)
RETURNS TABLE (token_id uuid, tenant_id uuid, tenant_slug text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT t.id, t.tenant_id, tenants.slug
    FROM ingest_tokens t JOIN tenants ON tenants.id = t.tenant_id
    WHERE t.token_hash = p_hash
      AND t.revoked_at IS NULL
      AND (t.expires_at IS NULL OR t.expires_at > now())
$$;
COMMENT ON FUNCTION zixly_ingest_principal(bytea) IS
    'Ingest authentication before a tenant is set: the live token with this SHA-256 digest '
    'and its tenant, or no row.';
"""


def _roles() -> tuple[str, str]:
    attributes = context.config.attributes
    return attributes.get("app_role", "zixly_app"), attributes.get("staff_role", "zixly_staff")


def _policies(app: str, staff: str) -> str:
    return f"""
    ALTER TABLE ingest_tokens ENABLE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON ingest_tokens TO {app}
        USING (tenant_id = {TENANT}) WITH CHECK (tenant_id = {TENANT});
    CREATE POLICY staff_access ON ingest_tokens TO {staff} USING (true) WITH CHECK (true);
    """


def _grants(app: str, staff: str) -> str:
    return f"""
    REVOKE ALL ON ingest_tokens FROM PUBLIC;
    GRANT SELECT, INSERT, UPDATE ON ingest_tokens TO {app};
    GRANT SELECT, INSERT, UPDATE, DELETE ON ingest_tokens TO {staff};
    REVOKE ALL ON FUNCTION zixly_ingest_principal(bytea) FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION zixly_ingest_principal(bytea) TO {app};
    """


def upgrade() -> None:
    app, staff = _roles()
    exec_script(op, DDL)
    exec_script(op, _policies(app, staff))
    exec_script(op, _grants(app, staff))


def downgrade() -> None:
    columns = ", ".join(
        f"DROP COLUMN IF EXISTS {c}"
        for c in ("source_workflow_id", "source_execution_id", "ingested_at")
    )
    exec_script(
        op,
        "DROP FUNCTION IF EXISTS zixly_ingest_principal(bytea);\n"
        "DROP TABLE IF EXISTS ingest_tokens;\n"
        + "".join(f"ALTER TABLE {t} {columns};\n" for t in LINEAGE_TABLES)
        + "ALTER TABLE integrations DROP COLUMN IF EXISTS consecutive_failures, "
        "DROP COLUMN IF EXISTS last_checked_at, DROP COLUMN IF EXISTS last_failure_at, "
        "DROP COLUMN IF EXISTS last_error, DROP COLUMN IF EXISTS last_execution_id;\n"
        "ALTER TABLE n8n_instances DROP COLUMN IF EXISTS monitor_cursor, "
        "DROP COLUMN IF EXISTS monitor_checked_at, DROP COLUMN IF EXISTS monitor_error;\n",
    )
