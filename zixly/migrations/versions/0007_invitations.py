"""Invitations with consent, and an explicit tenant choice for users of several tenants.

Revision ID: 0007_invitations
Revises: 0005_template_fingerprints
Create Date: 2026-12-07

``invitations`` are tenant-scoped (row-level security like every tenant table; the
application role may read every column but the digest, and update only the revocation): an ADMIN
invites an email, which gets a pending invitation and a link by mail; only a SHA-256 of the
link's secret is stored (the secret is 256-bit random, so the digest can be neither reversed
nor guessed). Nobody becomes a member without accepting: the invitee, signed in with the
invited email, presents the secret to ``zixly_accept_invitation``, a SECURITY DEFINER
function because the invitee's request runs before (and outside) the inviting tenant.

``zixly_auth_principal`` is replaced: it now returns only what authentication needs (no
email, no display name), and a user with several memberships must choose one (token claim or
header). A user with exactly one membership needs no choice, whatever the token (as
before). With several, a token without a choice keeps resolving to what it resolved to
before the second membership appeared: the one membership that existed when it was issued
(``p_issued_at``, the token's ``iat``, compared to the second, the claim's precision), or,
for a token issued before the user had any, their first membership. Tokens issued after the
second membership, and tokens without ``iat``, must choose: no tenant is resolved and
``tenant_choices`` lists the user's own memberships' slugs (TENANT_REQUIRED).

Every function here has ``search_path = pg_catalog, public, pg_temp`` and schema-qualifies
what it touches; EXECUTE is revoked from PUBLIC and granted to the application role only.
"""

from alembic import context, op

from zixly.db.migrate import exec_script
from zixly.db.privileges import definer_function, force_rls

revision = "0007_invitations"
down_revision = "0006_least_privilege"
branch_labels = None
depends_on = None

TENANT = "(SELECT nullif(current_setting('app.tenant_id', true), '')::uuid)"
SAFE_PATH = "SET search_path = pg_catalog, public, pg_temp"

DDL = rf"""
CREATE TABLE public.invitations (
    id UUID DEFAULT gen_random_uuid() NOT NULL,
    tenant_id UUID NOT NULL,
    email TEXT NOT NULL,
    role TEXT NOT NULL,
    token_hash BYTEA NOT NULL,
    invited_by UUID,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    expires_at TIMESTAMP WITH TIME ZONE NOT NULL,
    accepted_at TIMESTAMP WITH TIME ZONE,
    accepted_by UUID,
    revoked_at TIMESTAMP WITH TIME ZONE,
    revoked_by UUID,
    PRIMARY KEY (id),
    CONSTRAINT invitations_tenant_id_id_key UNIQUE (tenant_id, id),
    CONSTRAINT invitations_token_hash_key UNIQUE (token_hash),
    CONSTRAINT invitations_hash_is_sha256 CHECK (octet_length(token_hash) = 32),
    CONSTRAINT invitations_role CHECK (role IN ('ADMIN', 'EDITOR', 'VIEWER')),
    CONSTRAINT invitations_email_format
        CHECK (email ~ '^[^@\s]+@[^@\s]+$' AND email = lower(email)),
    FOREIGN KEY(tenant_id) REFERENCES public.tenants (id) ON DELETE CASCADE,
    FOREIGN KEY(invited_by) REFERENCES public.users (id) ON DELETE SET NULL,
    FOREIGN KEY(accepted_by) REFERENCES public.users (id) ON DELETE SET NULL,
    FOREIGN KEY(revoked_by) REFERENCES public.users (id) ON DELETE SET NULL
);
CREATE INDEX invitations_tenant_email_idx ON public.invitations (tenant_id, email, id);
CREATE UNIQUE INDEX invitations_tenant_email_open ON public.invitations (tenant_id, email)
    WHERE accepted_at IS NULL AND revoked_at IS NULL;

DROP FUNCTION public.zixly_auth_principal(text, text);
CREATE FUNCTION public.zixly_auth_principal(
    p_email text, p_tenant text, p_issued_at timestamptz
)
RETURNS TABLE (user_id uuid, is_staff boolean, tenant_id uuid, tenant_slug text, role text,
               tenant_choices text[])
LANGUAGE sql STABLE SECURITY DEFINER {SAFE_PATH} AS $$
    WITH u AS (
        SELECT users.id, users.is_staff FROM public.users
        WHERE lower(users.email) = lower(p_email)
    ), mine AS (
        SELECT m.tenant_id, t.slug, m.role, m.created_at
        FROM public.memberships m
        JOIN public.tenants t ON t.id = m.tenant_id
        JOIN u ON u.id = m.user_id
    ), since AS (
        -- When the token was issued, or the user's first membership if that came later.
        SELECT greatest(p_issued_at, min(date_trunc('second', mine.created_at))) AS at
        FROM mine
    ), chosen AS (
        SELECT * FROM mine
        WHERE CASE
            WHEN p_tenant IS NOT NULL THEN mine.slug = p_tenant OR mine.tenant_id::text = p_tenant
            WHEN (SELECT count(*) FROM mine) = 1 THEN true
            ELSE p_issued_at IS NOT NULL
                 AND date_trunc('second', mine.created_at) <= (SELECT since.at FROM since)
        END
    ), one AS (
        SELECT * FROM chosen WHERE (SELECT count(*) FROM chosen) = 1
    )
    SELECT u.id, u.is_staff,
           (SELECT one.tenant_id FROM one),
           (SELECT one.slug FROM one),
           (SELECT one.role FROM one),
           CASE WHEN p_tenant IS NULL AND NOT EXISTS (SELECT 1 FROM one)
                     AND (SELECT count(*) FROM mine) > 1
                THEN (SELECT array_agg(mine.slug ORDER BY mine.slug) FROM mine)
           END
    FROM u
$$;
COMMENT ON FUNCTION public.zixly_auth_principal(text, text, timestamptz) IS
    'Authentication look-up before a tenant is set: the user and the chosen membership (the '
    'named tenant; else the only membership; else the only one that existed when the token '
    'was issued or, issued before any, the first), or tenant_choices (the user''s own slugs) '
    'when a choice is required.';

CREATE FUNCTION public.zixly_accept_invitation(
    p_token_hash bytea, p_user_id uuid, p_request_id text
)
RETURNS TABLE (outcome text, tenant_id uuid, tenant_slug text, role text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER {SAFE_PATH} AS $$
#variable_conflict use_column
DECLARE
    inv public.invitations%ROWTYPE;
    invitee public.users%ROWTYPE;
    added boolean;
BEGIN
    SELECT * INTO inv FROM public.invitations i WHERE i.token_hash = p_token_hash FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'UNKNOWN'::text, NULL::uuid, NULL::text, NULL::text;
        RETURN;
    END IF;
    SELECT * INTO invitee FROM public.users u WHERE u.id = p_user_id;
    IF NOT FOUND OR lower(invitee.email) <> inv.email THEN
        RETURN QUERY SELECT 'EMAIL_MISMATCH'::text, NULL::uuid, NULL::text, NULL::text;
        RETURN;
    END IF;
    IF invitee.is_staff THEN
        RETURN QUERY SELECT 'STAFF'::text, NULL::uuid, NULL::text, NULL::text;
        RETURN;
    END IF;
    IF inv.accepted_at IS NOT NULL OR inv.revoked_at IS NOT NULL OR inv.expires_at <= now() THEN
        RETURN QUERY SELECT (CASE WHEN inv.accepted_at IS NOT NULL THEN 'USED'
                                  WHEN inv.revoked_at IS NOT NULL THEN 'REVOKED'
                                  ELSE 'EXPIRED' END)::text,
                            NULL::uuid, NULL::text, NULL::text;
        RETURN;
    END IF;
    INSERT INTO public.memberships (tenant_id, user_id, role)
    VALUES (inv.tenant_id, p_user_id, inv.role)
    ON CONFLICT ON CONSTRAINT memberships_pkey DO NOTHING;
    added := FOUND;
    UPDATE public.invitations SET accepted_at = now(), accepted_by = p_user_id
    WHERE id = inv.id;
    INSERT INTO public.audit_log
        (tenant_id, actor_user_id, action, target_type, target_id, details, request_id)
    VALUES (inv.tenant_id, p_user_id, 'invitation.accepted', 'invitation', inv.id::text,
            jsonb_build_object('email', inv.email, 'role', inv.role, 'already_member', NOT added),
            nullif(p_request_id, ''));
    RETURN QUERY
        SELECT 'ACCEPTED'::text, m.tenant_id, t.slug, m.role
        FROM public.memberships m JOIN public.tenants t ON t.id = m.tenant_id
        WHERE m.tenant_id = inv.tenant_id AND m.user_id = p_user_id;
END
$$;
COMMENT ON FUNCTION public.zixly_accept_invitation(bytea, uuid, text) IS
    'The invitee accepts: the open, unexpired invitation with this SHA-256 digest, sent to '
    'this user''s email, becomes a membership (never for staff); audited. Otherwise only the '
    'outcome (UNKNOWN, EMAIL_MISMATCH, STAFF, USED, REVOKED, EXPIRED), never the tenant.';
"""


def _roles() -> tuple[str, str]:
    attributes = context.config.attributes
    return attributes.get("app_role", "zixly_app"), attributes.get("staff_role", "zixly_staff")


def _definer() -> str:
    return str(context.config.attributes.get("definer_role", "zixly_definer"))


def _least_privilege(app: str, definer: str) -> str:
    """0006's rules for what this migration adds: the two functions run as the definer role,
    which may read and close invitations, add the membership and write its audit row, and
    nothing else; row-level security forced on the new table."""
    return (
        f"""
    GRANT SELECT, UPDATE (accepted_at, accepted_by) ON public.invitations TO {definer};
    CREATE POLICY definer_read ON public.invitations FOR SELECT TO {definer} USING (true);
    CREATE POLICY definer_accept ON public.invitations FOR UPDATE TO {definer}
        USING (true) WITH CHECK (true);
    GRANT INSERT ON public.memberships TO {definer};
    CREATE POLICY definer_join ON public.memberships FOR INSERT TO {definer} WITH CHECK (true);
    GRANT INSERT ON public.audit_log TO {definer};
    GRANT USAGE ON SEQUENCE public.audit_log_id_seq TO {definer};
    CREATE POLICY definer_audit ON public.audit_log FOR INSERT TO {definer} WITH CHECK (true);
    """
        + definer_function("zixly_auth_principal(text, text, timestamptz)", definer, [app])
        + definer_function("zixly_accept_invitation(bytea, uuid, text)", definer, [app])
        + force_rls()
    )


def _policies(app: str, staff: str) -> str:
    return f"""
    ALTER TABLE public.invitations ENABLE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON public.invitations TO {app}
        USING (tenant_id = {TENANT}) WITH CHECK (tenant_id = {TENANT});
    CREATE POLICY staff_access ON public.invitations TO {staff} USING (true) WITH CHECK (true);
    """


# The application role never reads the digests (accepting goes through the function) and
# only ever revokes: its column grants say so.
APP_READS = (
    "id, tenant_id, email, role, invited_by, created_at, expires_at, accepted_at, accepted_by, "
    "revoked_at, revoked_by"
)


def _grants(app: str, staff: str) -> str:
    return f"""
    REVOKE ALL ON public.invitations FROM PUBLIC;
    GRANT SELECT ({APP_READS}), INSERT ON public.invitations TO {app};
    GRANT UPDATE (revoked_at, revoked_by) ON public.invitations TO {app};
    GRANT SELECT, INSERT, UPDATE, DELETE ON public.invitations TO {staff};
    REVOKE ALL ON FUNCTION public.zixly_auth_principal(text, text, timestamptz) FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION public.zixly_auth_principal(text, text, timestamptz) TO {app};
    REVOKE ALL ON FUNCTION public.zixly_accept_invitation(bytea, uuid, text) FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION public.zixly_accept_invitation(bytea, uuid, text) TO {app};
    """


# The look-up as 0001 created it, restored by the downgrade.
PREVIOUS_AUTH_PRINCIPAL = """
CREATE FUNCTION public.zixly_auth_principal(p_email text, p_tenant text)
RETURNS TABLE (user_id uuid, email text, display_name text, is_staff boolean,
               tenant_id uuid, tenant_slug text, role text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    WITH u AS (
        SELECT * FROM public.users WHERE lower(users.email) = lower(p_email)
    ), m AS (
        SELECT m.tenant_id, t.slug, m.role
        FROM public.memberships m JOIN public.tenants t ON t.id = m.tenant_id
        JOIN u ON u.id = m.user_id
        WHERE (p_tenant IS NULL OR t.slug = p_tenant OR t.id::text = p_tenant)
    )
    SELECT u.id, u.email, u.display_name, u.is_staff,
           (SELECT m.tenant_id FROM m WHERE (SELECT count(*) FROM m) = 1),
           (SELECT m.slug FROM m WHERE (SELECT count(*) FROM m) = 1),
           (SELECT m.role FROM m WHERE (SELECT count(*) FROM m) = 1)
    FROM u
$$;
"""


def upgrade() -> None:
    app, staff = _roles()
    exec_script(op, DDL)
    exec_script(op, _policies(app, staff))
    exec_script(op, _grants(app, staff))
    exec_script(op, _least_privilege(app, _definer()))


def downgrade() -> None:
    app, _ = _roles()
    definer = _definer()
    exec_script(
        op,
        "DROP POLICY IF EXISTS definer_join ON public.memberships;\n"
        "DROP POLICY IF EXISTS definer_audit ON public.audit_log;\n"
        f"REVOKE INSERT ON public.memberships, public.audit_log FROM {definer};\n"
        f"REVOKE USAGE ON SEQUENCE public.audit_log_id_seq FROM {definer};\n",
    )
    exec_script(
        op,
        "DROP FUNCTION IF EXISTS public.zixly_accept_invitation(bytea, uuid, text);\n"
        "DROP FUNCTION IF EXISTS public.zixly_auth_principal(text, text, timestamptz);\n"
        "DROP TABLE IF EXISTS public.invitations;\n"
        + PREVIOUS_AUTH_PRINCIPAL
        + "REVOKE ALL ON FUNCTION public.zixly_auth_principal(text, text) FROM PUBLIC;\n"
        f"GRANT EXECUTE ON FUNCTION public.zixly_auth_principal(text, text) TO {app};\n"
        + definer_function("zixly_auth_principal(text, text)", definer, [app]),
    )
