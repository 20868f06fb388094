"""Cluster-level set-up that migrations cannot do: roles, the database, pgvector.

Runs with an administrative connection (the embedded server's superuser, or a DBA's
URL given to ``zixly db bootstrap``). Idempotent.
"""

from __future__ import annotations

import asyncpg

from zixly.errors import ZixlyError


class UnsafeRoleError(ZixlyError):
    code = "UNSAFE_DATABASE_ROLE"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def ensure_roles_and_database(
    admin_dsn: str, *, database: str, owner: str, app_role: str, staff_role: str
) -> None:
    admin = await asyncpg.connect(admin_dsn)
    try:
        existing = {r["rolname"] for r in await admin.fetch("SELECT rolname FROM pg_roles")}
        if owner not in existing:
            await admin.execute(f"CREATE ROLE {_ident(owner)} LOGIN NOSUPERUSER NOBYPASSRLS")
        if staff_role not in existing:
            await admin.execute(f"CREATE ROLE {_ident(staff_role)} NOLOGIN NOSUPERUSER NOBYPASSRLS")
        if app_role not in existing:
            await admin.execute(
                f"CREATE ROLE {_ident(app_role)} LOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT "
                "NOCREATEDB NOCREATEROLE"
            )
        # The application may become staff only by an explicit SET LOCAL ROLE.
        await admin.execute(f"ALTER ROLE {_ident(app_role)} NOINHERIT")
        await admin.execute(f"GRANT {_ident(staff_role)} TO {_ident(app_role)}")
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
    finally:
        await db.close()


async def assert_application_role_is_safe(conn: asyncpg.Connection) -> None:
    """Refuse to serve over a connection that row-level security would not constrain."""
    row = await conn.fetchrow(
        "SELECT rolsuper, rolbypassrls, rolinherit, current_user AS name "
        "FROM pg_roles WHERE rolname = current_user"
    )
    assert row is not None
    if row["rolsuper"] or row["rolbypassrls"]:
        raise UnsafeRoleError(
            f"database role {row['name']!r} is a superuser or has BYPASSRLS; the API must "
            "connect as a role that row-level security applies to"
        )
    owned = await conn.fetchval(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner = current_user"
    )
    if owned:
        raise UnsafeRoleError(
            f"database role {row['name']!r} owns {owned} table(s); table owners bypass "
            "row-level security. Connect as the application role, migrate as the owner."
        )
