"""Least privilege: definer functions as a dedicated role, no TEMP, no CREATE, FORCE RLS.

Revision ID: 0006_least_privilege
Revises: 0005_template_fingerprints
Create Date: 2026-12-07

Until now the SECURITY DEFINER functions (``zixly_auth_principal``, ``zixly_ensure_user``,
``zixly_ingest_principal``) ran as the table owner with ``search_path = pg_catalog,
public``. PostgreSQL searches the session's temporary schema *first* for tables and views
when the path does not name it, so the application role could create a temporary view
``users`` (calling a temporary function) and have it run as the owner, who bypasses
row-level security and may change any table. Now:

* the functions resolve names through ``pg_catalog, public, pg_temp`` (``pg_temp`` last, as
  PostgreSQL's "Writing SECURITY DEFINER Functions Safely" advises) and their bodies name
  ``public.`` tables explicitly;
* they are owned by the definer role (``zixly_definer``, NOLOGIN, created by
  ``zixly/db/bootstrap.py``), which may read ``users``, ``memberships``, ``tenants`` and
  ``ingest_tokens`` (policies ``definer_read``) and insert a user's email
  (``definer_insert``), and nothing else: even a subverted function reads no tenant data;
* PUBLIC may not execute them; the application role may (and staff ``zixly_ensure_user``);
* the application role cannot create temporary objects (TEMPORARY revoked on the database
  from PUBLIC and the application role) nor anything in ``public`` (CREATE revoked from
  PUBLIC explicitly, as PostgreSQL 15+ already does);
* every table with row-level security is FORCEd, with an ``owner_session`` policy that
  lets the owner through only in its own sessions (``session_user = current_user``:
  migrations, seeding, fixtures), never in code it owns that another session runs.

Role memberships are cluster-level: the bootstrap removes the application role's
membership in the staff role (staff transactions have their own connection now).
"""

from alembic import context, op

from zixly.db.migrate import exec_script
from zixly.db.privileges import SAFE_SEARCH_PATH, definer_function, force_rls, unforce_rls

revision = "0006_least_privilege"
down_revision = "0005_template_fingerprints"
branch_labels = None
depends_on = None

# What the definer functions read (all rows: they run before any tenant is known).
DEFINER_READS = ("users", "memberships", "tenants", "ingest_tokens")

FUNCTIONS = f"""
CREATE OR REPLACE FUNCTION public.zixly_auth_principal(p_email text, p_tenant text)
RETURNS TABLE (user_id uuid, email text, display_name text, is_staff boolean,
               tenant_id uuid, tenant_slug text, role text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = {SAFE_SEARCH_PATH} AS $$
    WITH u AS (
        SELECT users.id, users.email, users.display_name, users.is_staff
        FROM public.users WHERE pg_catalog.lower(users.email) = pg_catalog.lower(p_email)
    ), m AS (
        SELECT m.tenant_id, t.slug, m.role
        FROM public.memberships m
        JOIN public.tenants t ON t.id = m.tenant_id
        JOIN u ON u.id = m.user_id
        WHERE (p_tenant IS NULL OR t.slug = p_tenant OR t.id::text = p_tenant)
    )
    SELECT u.id, u.email, u.display_name, u.is_staff,
           (SELECT m.tenant_id FROM m WHERE (SELECT count(*) FROM m) = 1),
           (SELECT m.slug FROM m WHERE (SELECT count(*) FROM m) = 1),
           (SELECT m.role FROM m WHERE (SELECT count(*) FROM m) = 1)
    FROM u
$$;

CREATE OR REPLACE FUNCTION public.zixly_ensure_user(p_email text) RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = {SAFE_SEARCH_PATH} AS $$
DECLARE
    found uuid;
BEGIN
    SELECT u.id INTO found FROM public.users u
    WHERE pg_catalog.lower(u.email) = pg_catalog.lower(p_email);
    IF found IS NULL THEN
        INSERT INTO public.users (email) VALUES (pg_catalog.lower(p_email))
        ON CONFLICT ((pg_catalog.lower(email))) DO NOTHING
        RETURNING id INTO found;
        IF found IS NULL THEN
            SELECT u.id INTO found FROM public.users u
            WHERE pg_catalog.lower(u.email) = pg_catalog.lower(p_email);
        END IF;
    END IF;
    RETURN found;
END
$$;

CREATE OR REPLACE FUNCTION public.zixly_ingest_principal(p_hash bytea)
RETURNS TABLE (token_id uuid, tenant_id uuid, tenant_slug text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = {SAFE_SEARCH_PATH} AS $$
    SELECT t.id, t.tenant_id, tn.slug
    FROM public.ingest_tokens t JOIN public.tenants tn ON tn.id = t.tenant_id
    WHERE t.token_hash = p_hash
      AND t.revoked_at IS NULL
      AND (t.expires_at IS NULL OR t.expires_at > pg_catalog.now())
$$;
"""


def _roles() -> tuple[str, str, str]:
    attributes = context.config.attributes
    return (
        attributes.get("app_role", "zixly_app"),
        attributes.get("staff_role", "zixly_staff"),
        attributes.get("definer_role", "zixly_definer"),
    )


def _require_definer(definer: str) -> str:
    return f"""
    DO $check$
    BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = '{definer}') THEN
            RAISE EXCEPTION 'role {definer} does not exist'
                USING HINT = 'create it first: zixly db bootstrap --admin-url <superuser URL> '
                             '(or CREATE ROLE {definer} NOLOGIN; GRANT {definer} TO '
                             'the migration role)';
        END IF;
    END
    $check$;
    """


def _database_privileges(app: str, staff: str) -> str:
    return f"""
    DO $db$
    BEGIN
        EXECUTE format('REVOKE TEMPORARY, CREATE ON DATABASE %I FROM PUBLIC, %I, %I',
                       current_database(), '{app}', '{staff}');
    END
    $db$;
    REVOKE CREATE ON SCHEMA public FROM PUBLIC;
    """


def _definer_privileges(definer: str) -> str:
    statements = [f"GRANT USAGE ON SCHEMA public TO {definer}"]
    for table in DEFINER_READS:
        statements += [
            f"GRANT SELECT ON public.{table} TO {definer}",
            f"CREATE POLICY definer_read ON public.{table} FOR SELECT TO {definer} USING (true)",
        ]
    statements += [
        f"GRANT INSERT (email) ON public.users TO {definer}",
        f"CREATE POLICY definer_insert ON public.users FOR INSERT TO {definer} WITH CHECK (true)",
    ]
    return ";\n".join(statements) + ";"


def upgrade() -> None:
    app, staff, definer = _roles()
    exec_script(op, _require_definer(definer))
    exec_script(op, _database_privileges(app, staff))
    exec_script(op, _definer_privileges(definer))
    exec_script(op, FUNCTIONS)
    exec_script(
        op,
        definer_function("zixly_auth_principal(text, text)", definer, [app])
        + definer_function("zixly_ensure_user(text)", definer, [app, staff])
        + definer_function("zixly_ingest_principal(bytea)", definer, [app]),
    )
    exec_script(op, force_rls())


def downgrade() -> None:
    definer = _roles()[2]
    functions = (
        "zixly_auth_principal(text, text)",
        "zixly_ensure_user(text)",
        "zixly_ingest_principal(bytea)",
    )
    statements = [unforce_rls()]
    statements += [f"ALTER FUNCTION public.{f} OWNER TO CURRENT_USER;" for f in functions]
    statements += [f"DROP POLICY IF EXISTS definer_read ON public.{t};" for t in DEFINER_READS]
    statements += [
        "DROP POLICY IF EXISTS definer_insert ON public.users;",
        f"REVOKE ALL ON {', '.join(f'public.{t}' for t in DEFINER_READS)} FROM {definer};",
        f"REVOKE ALL ON SCHEMA public FROM {definer};",
        "DO $db$ BEGIN EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO PUBLIC', "
        "current_database()); END $db$;",
    ]
    exec_script(op, "\n".join(statements))
