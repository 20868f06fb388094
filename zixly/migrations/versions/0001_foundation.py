"""Foundation: tenants, users, memberships, business data, integrations, audit log, RLS.

Revision ID: 0001_foundation
Revises:
Create Date: 2026-11-27

Row-level security
------------------
Every tenant-scoped table has two policies:

* ``tenant_isolation`` for the application role: a row is visible (and writable) only
  when its ``tenant_id`` equals the transaction-local setting ``app.tenant_id``. The
  setting is read through ``nullif(..., '')`` because a pooled connection whose earlier
  transaction set it locally reports ``''`` afterwards: an unset tenant sees nothing.
* ``staff_access`` for the staff role, which the application role can only act as by an
  explicit ``SET LOCAL ROLE``; the application role is NOINHERIT, so the staff policy
  never applies to it implicitly.

The application role owns no table and has NOBYPASSRLS. Tables are owned by the migration
role, which is also the owner of the two SECURITY DEFINER functions below: they are the only
ways to read a user before the tenant is known (authentication) and to create a user row.
"""

from alembic import context, op

from zixly.db.migrate import exec_script

revision = "0001_foundation"
down_revision = None
branch_labels = None
depends_on = None

TENANT = "(SELECT nullif(current_setting('app.tenant_id', true), '')::uuid)"
TENANT_SCOPED = (
    "memberships",
    "client_kpis",
    "financials",
    "lead_events",
    "custom_metrics",
    "integrations",
)

DDL = r"""
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE tenants (
    id UUID DEFAULT gen_random_uuid() NOT NULL,
    slug TEXT NOT NULL,
    name TEXT NOT NULL,
    industry TEXT,
    plan TEXT DEFAULT 'standard' NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT tenants_slug_format CHECK (slug ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    CONSTRAINT tenants_slug_key UNIQUE (slug)
);

CREATE TABLE users (
    id UUID DEFAULT gen_random_uuid() NOT NULL,
    email TEXT NOT NULL,
    display_name TEXT,
    is_staff BOOLEAN DEFAULT false NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT users_email_format CHECK (email ~ '^[^@\s]+@[^@\s]+$')
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE memberships (
    tenant_id UUID NOT NULL,
    user_id UUID NOT NULL,
    role TEXT NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    PRIMARY KEY (tenant_id, user_id),
    CONSTRAINT memberships_role CHECK (role IN ('ADMIN', 'EDITOR', 'VIEWER')),
    FOREIGN KEY(tenant_id) REFERENCES tenants (id) ON DELETE CASCADE,
    FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE
);
CREATE INDEX memberships_user_id_idx ON memberships (user_id);

CREATE TABLE client_kpis (
    id UUID DEFAULT gen_random_uuid() NOT NULL,
    tenant_id UUID NOT NULL,
    client_id TEXT NOT NULL,
    client_name TEXT NOT NULL,
    industry TEXT,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT client_kpis_tenant_client_key UNIQUE (tenant_id, client_id),
    CONSTRAINT client_kpis_tenant_id_id_key UNIQUE (tenant_id, id),
    FOREIGN KEY(tenant_id) REFERENCES tenants (id) ON DELETE CASCADE
);
CREATE INDEX client_kpis_tenant_name_idx ON client_kpis (tenant_id, client_name);

CREATE TABLE financials (
    id UUID DEFAULT gen_random_uuid() NOT NULL,
    tenant_id UUID NOT NULL,
    client_kpi_id UUID NOT NULL,
    record_date DATE NOT NULL,
    revenue NUMERIC(14, 2) NOT NULL,
    expenses NUMERIC(14, 2) NOT NULL,
    net_profit NUMERIC(14, 2) NOT NULL,
    cash_flow NUMERIC(14, 2) NOT NULL,
    currency TEXT DEFAULT 'AUD' NOT NULL,
    source_system TEXT DEFAULT 'manual' NOT NULL,
    external_id TEXT,
    metadata JSONB,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT financials_client_fkey FOREIGN KEY(tenant_id, client_kpi_id)
        REFERENCES client_kpis (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT financials_natural_key UNIQUE (tenant_id, client_kpi_id, record_date, source_system),
    CONSTRAINT financials_currency CHECK (currency ~ '^[A-Z]{3}$'),
    FOREIGN KEY(tenant_id) REFERENCES tenants (id) ON DELETE CASCADE
);
CREATE INDEX financials_tenant_date_idx ON financials (tenant_id, record_date);
CREATE INDEX financials_tenant_client_date_idx ON financials (tenant_id, client_kpi_id, record_date);

CREATE TABLE lead_events (
    id UUID DEFAULT gen_random_uuid() NOT NULL,
    tenant_id UUID NOT NULL,
    client_kpi_id UUID NOT NULL,
    event_date TIMESTAMP WITH TIME ZONE NOT NULL,
    lead_id TEXT NOT NULL,
    stage TEXT NOT NULL,
    value NUMERIC(14, 2),
    status TEXT NOT NULL,
    source_system TEXT DEFAULT 'manual' NOT NULL,
    external_id TEXT,
    metadata JSONB,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT lead_events_client_fkey FOREIGN KEY(tenant_id, client_kpi_id)
        REFERENCES client_kpis (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT lead_events_natural_key
        UNIQUE (tenant_id, client_kpi_id, source_system, lead_id, stage, event_date),
    FOREIGN KEY(tenant_id) REFERENCES tenants (id) ON DELETE CASCADE
);
CREATE INDEX lead_events_tenant_lead_idx ON lead_events (tenant_id, lead_id);
CREATE INDEX lead_events_tenant_client_date_idx ON lead_events (tenant_id, client_kpi_id, event_date);
CREATE INDEX lead_events_tenant_stage_status_idx ON lead_events (tenant_id, stage, status);

CREATE TABLE custom_metrics (
    id UUID DEFAULT gen_random_uuid() NOT NULL,
    tenant_id UUID NOT NULL,
    client_kpi_id UUID NOT NULL,
    metric_name TEXT NOT NULL,
    metric_value NUMERIC(14, 4) NOT NULL,
    unit TEXT,
    record_date TIMESTAMP WITH TIME ZONE NOT NULL,
    source_system TEXT DEFAULT 'manual' NOT NULL,
    metadata JSONB,
    embedding VECTOR(384),
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT custom_metrics_client_fkey FOREIGN KEY(tenant_id, client_kpi_id)
        REFERENCES client_kpis (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT custom_metrics_natural_key
        UNIQUE (tenant_id, client_kpi_id, metric_name, record_date, source_system),
    FOREIGN KEY(tenant_id) REFERENCES tenants (id) ON DELETE CASCADE
);
CREATE INDEX custom_metrics_embedding_hnsw_idx ON custom_metrics
    USING hnsw (embedding vector_cosine_ops);
CREATE INDEX custom_metrics_tenant_client_name_date_idx
    ON custom_metrics (tenant_id, client_kpi_id, metric_name, record_date);
CREATE INDEX custom_metrics_tenant_name_date_idx ON custom_metrics (tenant_id, metric_name, record_date);

CREATE TABLE integrations (
    id UUID DEFAULT gen_random_uuid() NOT NULL,
    tenant_id UUID NOT NULL,
    provider TEXT NOT NULL,
    status TEXT DEFAULT 'PENDING' NOT NULL,
    access_token_ciphertext TEXT,
    refresh_token_ciphertext TEXT,
    expires_at TIMESTAMP WITH TIME ZONE,
    metadata JSONB,
    last_sync_at TIMESTAMP WITH TIME ZONE,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT integrations_tenant_provider_key UNIQUE (tenant_id, provider),
    CONSTRAINT integrations_status
        CHECK (status IN ('PENDING', 'ACTIVE', 'STALE', 'ERROR', 'DISABLED')),
    CONSTRAINT integrations_access_token_is_ciphertext CHECK (
        access_token_ciphertext IS NULL OR access_token_ciphertext ~ '^v1\.[A-Za-z0-9_-]+\.'),
    CONSTRAINT integrations_refresh_token_is_ciphertext CHECK (
        refresh_token_ciphertext IS NULL OR refresh_token_ciphertext ~ '^v1\.[A-Za-z0-9_-]+\.'),
    FOREIGN KEY(tenant_id) REFERENCES tenants (id) ON DELETE CASCADE
);

CREATE TABLE audit_log (
    id BIGSERIAL NOT NULL,
    tenant_id UUID,
    actor_user_id UUID,
    action TEXT NOT NULL,
    target_type TEXT,
    target_id TEXT,
    details JSONB,
    request_id TEXT,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    PRIMARY KEY (id)
);
CREATE INDEX audit_log_tenant_created_idx ON audit_log (tenant_id, created_at);

CREATE FUNCTION zixly_auth_principal(p_email text, p_tenant text)
RETURNS TABLE (user_id uuid, email text, display_name text, is_staff boolean,
               tenant_id uuid, tenant_slug text, role text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    WITH u AS (
        SELECT * FROM users WHERE lower(users.email) = lower(p_email)
    ), m AS (
        SELECT m.tenant_id, t.slug, m.role
        FROM memberships m JOIN tenants t ON t.id = m.tenant_id JOIN u ON u.id = m.user_id
        WHERE (p_tenant IS NULL
               OR t.slug = p_tenant
               OR t.id::text = p_tenant)
    )
    SELECT u.id, u.email, u.display_name, u.is_staff,
           (SELECT m.tenant_id FROM m WHERE (SELECT count(*) FROM m) = 1),
           (SELECT m.slug FROM m WHERE (SELECT count(*) FROM m) = 1),
           (SELECT m.role FROM m WHERE (SELECT count(*) FROM m) = 1)
    FROM u
$$;
COMMENT ON FUNCTION zixly_auth_principal(text, text) IS
    'Authentication look-up before a tenant is set: the user and, when the tenant is named '
    'or the user has exactly one membership, that membership.';

CREATE FUNCTION zixly_ensure_user(p_email text) RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    found uuid;
BEGIN
    SELECT id INTO found FROM users WHERE lower(email) = lower(p_email);
    IF found IS NULL THEN
        INSERT INTO users (email) VALUES (lower(p_email))
        ON CONFLICT (lower(email)) DO NOTHING
        RETURNING id INTO found;
        IF found IS NULL THEN
            SELECT id INTO found FROM users WHERE lower(email) = lower(p_email);
        END IF;
    END IF;
    RETURN found;
END
$$;
COMMENT ON FUNCTION zixly_ensure_user(text) IS
    'Returns the id of the user with this email, creating the user row when absent '
    '(invitations). Grants no membership.';
"""


def _roles() -> tuple[str, str]:
    attributes = context.config.attributes
    return attributes.get("app_role", "zixly_app"), attributes.get("staff_role", "zixly_staff")


def _policies(app: str, staff: str) -> str:
    statements = [
        "ALTER TABLE tenants ENABLE ROW LEVEL SECURITY",
        f"CREATE POLICY tenant_isolation ON tenants FOR SELECT TO {app} USING (id = {TENANT})",
        f"CREATE POLICY staff_access ON tenants TO {staff} USING (true) WITH CHECK (true)",
        "ALTER TABLE users ENABLE ROW LEVEL SECURITY",
        f"""CREATE POLICY tenant_isolation ON users FOR SELECT TO {app} USING (
            id = (SELECT nullif(current_setting('app.user_id', true), '')::uuid)
            OR EXISTS (SELECT 1 FROM memberships m WHERE m.user_id = users.id
                       AND m.tenant_id = {TENANT}))""",
        f"CREATE POLICY staff_access ON users TO {staff} USING (true) WITH CHECK (true)",
        "ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY",
        f"CREATE POLICY tenant_read ON audit_log FOR SELECT TO {app} USING (tenant_id = {TENANT})",
        f"CREATE POLICY tenant_write ON audit_log FOR INSERT TO {app} "
        f"WITH CHECK (tenant_id = {TENANT})",
        f"CREATE POLICY staff_read ON audit_log FOR SELECT TO {staff} USING (true)",
        f"CREATE POLICY staff_write ON audit_log FOR INSERT TO {staff} WITH CHECK (true)",
    ]
    for table in TENANT_SCOPED:
        statements += [
            f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
            f"CREATE POLICY tenant_isolation ON {table} TO {app} "
            f"USING (tenant_id = {TENANT}) WITH CHECK (tenant_id = {TENANT})",
            f"CREATE POLICY staff_access ON {table} TO {staff} USING (true) WITH CHECK (true)",
        ]
    return ";\n".join(statements) + ";"


def _grants(app: str, staff: str) -> str:
    data = ", ".join(TENANT_SCOPED)
    return f"""
    REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
    GRANT USAGE ON SCHEMA public TO {app}, {staff};
    GRANT SELECT, INSERT, UPDATE, DELETE ON {data} TO {app}, {staff};
    GRANT SELECT ON tenants, users TO {app};
    GRANT SELECT, INSERT, UPDATE, DELETE ON tenants, users TO {staff};
    GRANT SELECT, INSERT ON audit_log TO {app}, {staff};
    GRANT USAGE ON SEQUENCE audit_log_id_seq TO {app}, {staff};
    REVOKE ALL ON FUNCTION zixly_auth_principal(text, text) FROM PUBLIC;
    REVOKE ALL ON FUNCTION zixly_ensure_user(text) FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION zixly_auth_principal(text, text) TO {app};
    GRANT EXECUTE ON FUNCTION zixly_ensure_user(text) TO {app}, {staff};
    """


def upgrade() -> None:
    app, staff = _roles()
    exec_script(op, DDL)
    exec_script(op, _policies(app, staff))
    exec_script(op, _grants(app, staff))


def downgrade() -> None:
    exec_script(
        op,
        """
        DROP FUNCTION IF EXISTS zixly_ensure_user(text);
        DROP FUNCTION IF EXISTS zixly_auth_principal(text, text);
        DROP TABLE IF EXISTS audit_log, integrations, custom_metrics, lead_events, financials,
            client_kpis, memberships, users, tenants CASCADE;
        """,
    )
