"""Cluster-level set-up that migrations cannot do: roles, the database, pgvector.

Runs with an administrative connection (the embedded server's superuser, or a DBA's
URL given to ``zixly db bootstrap``). Idempotent: it also repairs the memberships of a
cluster bootstrapped by an earlier version (the application role used to be a member of
the staff role).

Roles (see docs/decisions.md, "Least privilege in PostgreSQL"):

* the owner: owns the database and the tables, runs the migrations;
* the application role: LOGIN, owns nothing, member of no role, no TEMP, no CREATE;
* the staff role: LOGIN (its own connection pool), member of no role; the staff policies
  name it;
* the definer role: NOLOGIN, owns the SECURITY DEFINER functions (authentication and ingest
  look-ups) with only the column privileges and policies they need. The owner is its only
  member (so that migrations can create and replace those functions).
"""

from __future__ import annotations

import asyncpg

from zixly.core.errors import ZixlyError


class UnsafeRoleError(ZixlyError):
    code = "UNSAFE_DATABASE_ROLE"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


_ROLE_OPTIONS = "NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION"


async def ensure_roles_and_database(
    admin_dsn: str,
    *,
    database: str,
    owner: str,
    app_role: str,
    staff_role: str,
    definer_role: str = "zixly_definer",
) -> None:
    admin = await asyncpg.connect(admin_dsn)
    try:
        existing = {r["rolname"] for r in await admin.fetch("SELECT rolname FROM pg_roles")}
        wanted = {
            owner: f"LOGIN {_ROLE_OPTIONS}",
            staff_role: f"LOGIN NOINHERIT {_ROLE_OPTIONS}",
            app_role: f"LOGIN NOINHERIT {_ROLE_OPTIONS}",
            definer_role: f"NOLOGIN NOINHERIT {_ROLE_OPTIONS}",
        }
        for role, options in wanted.items():
            verb = "ALTER" if role in existing else "CREATE"
            await admin.execute(f"{verb} ROLE {_ident(role)} {options}")
        # No path from the application or staff role to another role: drop every
        # membership they hold (an earlier version made the application role a member of
        # staff, entered by SET ROLE; staff now has its own connection).
        for member in (app_role, staff_role):
            granted = await admin.fetch(
                "SELECT m.roleid::regrole::text AS role FROM pg_auth_members m "
                "WHERE m.member = $1::regrole",
                member,
            )
            for row in granted:
                await admin.execute(f"REVOKE {row['role']} FROM {_ident(member)} CASCADE")
        # The owner creates and replaces the definer's functions in migrations.
        await admin.execute(f"GRANT {_ident(definer_role)} TO {_ident(owner)}")
        has_db = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not has_db:
            await admin.execute(f"CREATE DATABASE {_ident(database)} OWNER {_ident(owner)}")
    finally:
        await admin.close()
    # pgvector is not a trusted extension: create it as the administrator.
    db = await asyncpg.connect(admin_dsn, database=database)
    try:
        await db.execute("CREATE EXTENSION IF NOT EXISTS vector")
        await db.execute(f"GRANT ALL ON SCHEMA public TO {_ident(owner)}")
        # Migration 0006 revokes these as the database owner too; repeated here for a
        # database whose public schema an administrator owns (PostgreSQL < 15 templates).
        await db.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        await db.execute(f"REVOKE TEMPORARY ON DATABASE {_ident(database)} FROM PUBLIC")
    finally:
        await db.close()


# Roles the application role must not be able to act as, by what they hold: superuser,
# BYPASSRLS, ownership of a table or a SECURITY DEFINER function, or any row-level
# security policy (staff, the definer role). Membership in any of them is refused.
_DANGEROUS_MEMBERSHIPS = """
SELECT r.rolname FROM pg_roles r
WHERE r.rolname <> current_user
  AND pg_has_role(current_user, r.oid, 'MEMBER')
  AND (r.rolsuper OR r.rolbypassrls
       OR EXISTS (SELECT 1 FROM pg_class c WHERE c.relowner = r.oid
                  AND c.relnamespace = 'public'::regnamespace)
       OR EXISTS (SELECT 1 FROM pg_proc p WHERE p.proowner = r.oid AND p.prosecdef)
       OR EXISTS (SELECT 1 FROM pg_policy p WHERE r.oid = ANY (p.polroles))
       OR r.rolname IN ('pg_read_all_data', 'pg_write_all_data', 'pg_database_owner'))
ORDER BY 1
"""

_CREATE_ANYWHERE = """
SELECT n.nspname FROM pg_namespace n
WHERE has_schema_privilege(n.oid, 'CREATE') AND n.nspname NOT LIKE 'pg\\_temp\\_%'
  AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%'
ORDER BY 1
"""


async def assert_application_role_is_safe(
    conn: asyncpg.Connection, *, may_act_as: str | None = None
) -> None:
    """Refuse to serve over a connection that row-level security would not constrain, or
    that could become such a role, or could create objects (shadowing, see migration 0006).

    ``may_act_as``: the one role the connection may be a member of (the staff pool's login
    role may be a member of the staff role); the tenant pool passes none.
    """
    row = await conn.fetchrow(
        "SELECT rolsuper, rolbypassrls, current_user AS name "
        "FROM pg_roles WHERE rolname = current_user"
    )
    assert row is not None
    name = row["name"]
    if row["rolsuper"] or row["rolbypassrls"]:
        raise UnsafeRoleError(
            f"database role {name!r} is a superuser or has BYPASSRLS; the API must "
            "connect as a role that row-level security applies to"
        )
    owned = await conn.fetchval(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner = current_user"
    )
    if owned:
        raise UnsafeRoleError(
            f"database role {name!r} owns {owned} table(s); table owners bypass "
            "row-level security. Connect as the application role, migrate as the owner."
        )
    reachable = [
        r["rolname"] for r in await conn.fetch(_DANGEROUS_MEMBERSHIPS) if r["rolname"] != may_act_as
    ]
    if reachable:
        raise UnsafeRoleError(
            f"database role {name!r} is a member of {', '.join(reachable)} and could act as "
            f"them (SET ROLE): revoke its memberships (REVOKE <role> FROM {name}, or "
            "zixly db bootstrap); staff transactions use their own connection "
            "(ZIXLY_STAFF_DATABASE_URL)"
        )
    schemas = [r["nspname"] for r in await conn.fetch(_CREATE_ANYWHERE)]
    if schemas or await conn.fetchval(
        "SELECT has_database_privilege(current_database(), 'CREATE')"
    ):
        raise UnsafeRoleError(
            f"database role {name!r} may create objects (schemas: {', '.join(schemas) or '-'}, "
            "or CREATE on the database): revoke CREATE from it and from PUBLIC"
        )
    if await conn.fetchval("SELECT has_database_privilege(current_database(), 'TEMPORARY')"):
        raise UnsafeRoleError(
            f"database role {name!r} may create temporary objects, which can shadow tables "
            "for functions that do not fix their search path: REVOKE TEMPORARY ON DATABASE "
            "... FROM PUBLIC (zixly db upgrade does this as the database owner)"
        )
