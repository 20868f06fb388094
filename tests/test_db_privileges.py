"""Least privilege in PostgreSQL, tried as the roles an attacker would hold (migration 0006).

Raw SQL as the application role (``endpoints.database_url``: what SQL injection in the API
would run as), as the staff role, and as the embedded superuser where a probe needs a
privilege the application role must not have.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text

from tests.conftest import World, plain_dsn
from zixly.container import Services
from zixly.db.bootstrap import UnsafeRoleError, assert_application_role_is_safe
from zixly.db.session import Scope
from zixly.embedded.stack import Endpoints

pytestmark = pytest.mark.asyncio

# Tables only the definer role's look-ups may read across tenants; every other table with
# row-level security holds tenant data the definer role must not read at all.
# invitations: zixly_accept_invitation (0007) finds the invitation by its digest.
DEFINER_READS = {"users", "memberships", "tenants", "ingest_tokens", "invitations"}


@asynccontextmanager
async def connected(url: str | None) -> AsyncIterator[asyncpg.Connection]:
    assert url is not None
    conn = await asyncpg.connect(plain_dsn(url))
    try:
        yield conn
    finally:
        await conn.close()


async def _tenant_with_revenue(world: World, label: str, revenue: int) -> uuid.UUID:
    tenant = await world.tenant(label)
    await world.owner.execute(
        "INSERT INTO financials (tenant_id, client_kpi_id, record_date, revenue, expenses, "
        "net_profit, cash_flow) VALUES ($1, $2, '2025-01-01', $3, 0, 0, 0)",
        tenant.id,
        tenant.client_ids[0],
        revenue,
    )
    return tenant.id


async def test_app_role_cannot_create_temporary_objects(endpoints: Endpoints) -> None:
    async with connected(endpoints.database_url) as app:
        for statement in (
            "CREATE TEMP TABLE users (id uuid)",
            "CREATE TEMP VIEW tenants AS SELECT 1 AS id",
            "CREATE FUNCTION pg_temp.lower(text) RETURNS text LANGUAGE sql AS 'SELECT $1'",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await app.execute(statement)
        assert not await app.fetchval(
            "SELECT has_database_privilege(current_database(), 'TEMPORARY')"
        )


async def test_app_role_cannot_create_in_any_schema(endpoints: Endpoints) -> None:
    async with connected(endpoints.database_url) as app:
        for statement in (
            "CREATE TABLE public.x (id int)",
            "CREATE FUNCTION public.lower(text) RETURNS text LANGUAGE sql AS 'SELECT $1'",
            "CREATE SCHEMA x",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await app.execute(statement)
        creatable = await app.fetch(
            "SELECT nspname FROM pg_namespace WHERE has_schema_privilege(oid, 'CREATE')"
        )
        assert creatable == []
        assert not await app.fetchval("SELECT has_database_privilege(current_database(), 'CREATE')")


async def test_definer_functions_ignore_temporary_shadows(
    endpoints: Endpoints, world: World
) -> None:
    """A session that may create temporary tables (the superuser here, since the application
    role may not) shadows every table the definer functions read; they still read the real
    ones. With ``search_path = pg_catalog, public`` the temporary schema came first."""
    tenant = await world.tenant("shadow")
    token = b"shadow-" + uuid.uuid4().bytes
    digest = hashlib.sha256(token).digest()
    async with connected(endpoints.admin_database_url) as admin:
        await admin.execute("SET search_path = public")
        await admin.execute(
            "CREATE TEMP TABLE users AS SELECT gen_random_uuid() AS id, $1::text AS email, "
            "'shadow'::text AS display_name, true AS is_staff",
            "nobody-real@shadow.test",
        )
        await admin.execute(
            "CREATE TEMP TABLE tenants AS SELECT $1::uuid AS id, 'forged'::text AS slug",
            tenant.id,
        )
        await admin.execute("CREATE TEMP TABLE memberships AS SELECT * FROM public.memberships")
        await admin.execute(
            "CREATE TEMP TABLE ingest_tokens AS SELECT gen_random_uuid() AS id, "
            "$1::uuid AS tenant_id, $2::bytea AS token_hash, NULL::timestamptz AS revoked_at, "
            "NULL::timestamptz AS expires_at",
            tenant.id,
            digest,
        )
        await admin.execute(
            "GRANT SELECT ON pg_temp.users, pg_temp.tenants, pg_temp.memberships, "
            "pg_temp.ingest_tokens TO PUBLIC"
        )
        forged = await admin.fetch(
            "SELECT * FROM zixly_auth_principal('nobody-real@shadow.test', NULL, NULL)"
        )
        assert forged == []  # the temporary users table was not read
        real = await admin.fetchrow(
            "SELECT * FROM zixly_auth_principal($1, NULL, NULL)", tenant.admin
        )
        assert real is not None and real["tenant_slug"] == tenant.slug  # real tenants
        assert await admin.fetch("SELECT * FROM zixly_ingest_principal($1)", digest) == []
        created = await admin.fetchval("SELECT zixly_ensure_user('nobody-real@shadow.test')")
        assert await world.owner.fetchval("SELECT count(*) FROM users WHERE id = $1", created) == 1


async def test_no_definer_function_reads_another_tenants_rows(
    endpoints: Endpoints, world: World
) -> None:
    """The exploit against the old search path: a temporary view named like a table the
    function reads, calling a temporary function that copies tenant B's rows as the
    function's owner. Refused at its first step now; never yields B's rows."""
    a = await _tenant_with_revenue(world, "loot-a", 11)
    b = await _tenant_with_revenue(world, "loot-b", 777_777)
    # A user the application role can see with tenant A set: the shadow's filter reaches
    # the stealing function for that row.
    a_admin = await world.owner.fetchval(
        "SELECT u.email FROM users u JOIN memberships m ON m.user_id = u.id "
        "WHERE m.tenant_id = $1 LIMIT 1",
        a,
    )
    async with connected(endpoints.database_url) as app:
        try:
            await app.execute(
                """
                CREATE TEMP TABLE loot (tenant_id uuid, revenue numeric);
                CREATE FUNCTION pg_temp.steal() RETURNS boolean LANGUAGE plpgsql AS $$
                BEGIN
                    INSERT INTO pg_temp.loot SELECT tenant_id, revenue FROM public.financials;
                    RETURN true;
                END $$;
                CREATE TEMP VIEW users AS
                    SELECT u.* FROM public.users u WHERE pg_temp.steal();
                CREATE TEMP VIEW ingest_tokens AS
                    SELECT t.* FROM public.ingest_tokens t WHERE pg_temp.steal();
                GRANT SELECT ON pg_temp.users, pg_temp.ingest_tokens TO PUBLIC;
                GRANT INSERT ON pg_temp.loot TO PUBLIC;
                """
            )
        except asyncpg.InsufficientPrivilegeError:
            stolen: set[uuid.UUID] = set()
        else:
            async with app.transaction():
                await app.execute("SELECT set_config('app.tenant_id', $1, true)", str(a))
                await app.fetch("SELECT * FROM zixly_auth_principal($1, NULL, NULL)", a_admin)
                await app.fetch("SELECT * FROM zixly_ingest_principal('\\x00'::bytea)")
                stolen = {r["tenant_id"] for r in await app.fetch("SELECT * FROM pg_temp.loot")}
        assert b not in stolen


async def test_every_definer_function_is_safe(endpoints: Endpoints, services: Services) -> None:
    """Over the whole database, so functions that later migrations add are checked too:
    a search path ending in pg_temp, no EXECUTE for PUBLIC, an owner that is no table owner,
    has no BYPASSRLS, and can read no tenant data."""
    app, staff = services.settings.app_role, services.settings.staff_role
    async with connected(endpoints.admin_database_url) as admin:
        functions = await admin.fetch(
            "SELECT p.oid::regprocedure::text AS name, p.proconfig, p.proacl::text[] AS acl, "
            "r.rolname AS owner, r.rolsuper, r.rolbypassrls, r.rolcanlogin "
            "FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner "
            "WHERE p.prosecdef AND p.pronamespace = 'public'::regnamespace"
        )
        assert {f["name"].split("(")[0] for f in functions} >= {
            "zixly_auth_principal",
            "zixly_ensure_user",
            "zixly_ingest_principal",
        }
        rls_tables = {
            r["relname"]
            for r in await admin.fetch(
                "SELECT relname FROM pg_class WHERE relrowsecurity "
                "AND relnamespace = 'public'::regnamespace"
            )
        }
        for f in functions:
            name = f["name"]
            paths = [c for c in f["proconfig"] or [] if c.startswith("search_path=")]
            assert paths, f"{name} does not fix its search_path"
            schemas = [s.strip() for s in paths[0].removeprefix("search_path=").split(",")]
            assert schemas[-1] == "pg_temp", f"{name}: pg_temp is not last in {schemas}"
            assert set(schemas) <= {"pg_catalog", "public", "pg_temp"}, name
            assert f["acl"] is not None, f"{name}: PUBLIC may execute it (default ACL)"
            assert not any(entry.startswith("=") for entry in f["acl"]), f"{name}: {f['acl']}"
            assert not await admin.fetchval(
                "SELECT has_function_privilege('public', $1, 'EXECUTE')", name
            )
            assert not (f["rolsuper"] or f["rolbypassrls"] or f["rolcanlogin"]), (
                f"{name} runs as {f['owner']}, which can log in or bypasses RLS"
            )
            owned = await admin.fetchval(
                "SELECT count(*) FROM pg_class WHERE relowner = $1::regrole "
                "AND relnamespace = 'public'::regnamespace",
                f["owner"],
            )
            assert owned == 0, (
                f"{name} is owned by {f['owner']}, which owns tables: make the definer role "
                "own it (zixly.db.privileges.definer_function)"
            )
            readable = {
                t
                for t in rls_tables - DEFINER_READS
                if await admin.fetchval(
                    "SELECT has_table_privilege($1, $2, 'SELECT')", f["owner"], f"public.{t}"
                )
            }
            assert readable == set(), f"{name}'s owner can read tenant data: {readable}"
        # Only the roles that need them may execute them.
        assert not await admin.fetchval(
            "SELECT has_function_privilege($1, 'zixly_auth_principal(text, text, timestamptz)', 'EXECUTE')",
            staff,
        )
        assert await admin.fetchval(
            "SELECT has_function_privilege($1, 'zixly_auth_principal(text, text, timestamptz)', 'EXECUTE')",
            app,
        )


async def test_owner_reads_through_rls_only_in_its_own_session(
    endpoints: Endpoints, world: World
) -> None:
    """FORCE ROW LEVEL SECURITY: code the owner owns that another role's session runs (a
    definer function, as the old ones were) sees no tenant's rows; the owner's own
    session (fixtures, seeding, migrations) still does."""
    b = await _tenant_with_revenue(world, "force-b", 5)
    assert await world.owner.fetchval("SELECT count(*) FROM financials WHERE tenant_id = $1", b)
    async with connected(endpoints.admin_database_url) as admin:
        unforced = await admin.fetch(
            "SELECT relname FROM pg_class WHERE relrowsecurity AND NOT relforcerowsecurity "
            "AND relnamespace = 'public'::regnamespace"
        )
        assert unforced == [], "row-level security enabled but not forced"
        tx = admin.transaction()
        await tx.start()
        try:
            await admin.execute(
                "CREATE FUNCTION public.probe_count(uuid) RETURNS bigint LANGUAGE sql "
                "SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS "
                "'SELECT count(*) FROM public.financials WHERE tenant_id = $1'"
            )
            await admin.execute("ALTER FUNCTION public.probe_count(uuid) OWNER TO zixly_owner")
            await admin.execute("SET LOCAL ROLE zixly_app")
            assert await admin.fetchval("SELECT public.probe_count($1)", b) == 0
        finally:
            await tx.rollback()


async def test_app_role_cannot_become_staff_or_owner(endpoints: Endpoints) -> None:
    async with connected(endpoints.database_url) as app:
        for role in ("zixly_staff", "zixly_owner", "zixly_definer", "postgres"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await app.execute(f"SET ROLE {role}")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with app.transaction():
                    await app.execute(f"SET LOCAL ROLE {role}")
        assert (
            await app.fetch(
                "SELECT roleid::regrole FROM pg_auth_members WHERE member = current_user::regrole"
            )
            == []
        )
        await assert_application_role_is_safe(app)


async def test_staff_role_cannot_become_the_owner(endpoints: Endpoints) -> None:
    async with connected(endpoints.staff_database_url) as staff:
        assert await staff.fetchval("SELECT current_user") == "zixly_staff"
        for role in ("zixly_owner", "zixly_definer", "postgres"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await staff.execute(f"SET ROLE {role}")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await staff.execute("CREATE TEMP TABLE t (id int)")
        row = await staff.fetchrow(
            "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
        )
        assert tuple(row) == (False, False)


@pytest.mark.parametrize("granted", ["zixly_staff", "zixly_owner", "zixly_definer"])
async def test_safety_check_refuses_a_role_that_can_become_another(
    endpoints: Endpoints, granted: str
) -> None:
    """The API's start-up check refuses an application role that is a member of the staff,
    owner or definer role (any role with policies, tables, definer functions or BYPASSRLS)."""
    async with connected(endpoints.admin_database_url) as admin:
        tx = admin.transaction()
        await tx.start()
        try:
            probe = f"probe_{uuid.uuid4().hex[:8]}"
            await admin.execute(f"CREATE ROLE {probe} NOINHERIT")
            await admin.execute(f"GRANT {granted} TO {probe}")
            await admin.execute(f"SET LOCAL ROLE {probe}")
            with pytest.raises(UnsafeRoleError, match=f"member of .*{granted}"):
                await assert_application_role_is_safe(admin)
        finally:
            await tx.rollback()


async def test_safety_check_refuses_temp_and_create(endpoints: Endpoints) -> None:
    for grant in ("TEMPORARY ON DATABASE zixly", "CREATE ON SCHEMA public"):
        async with connected(endpoints.admin_database_url) as admin:
            tx = admin.transaction()
            await tx.start()
            try:
                probe = f"probe_{uuid.uuid4().hex[:8]}"
                await admin.execute(f"CREATE ROLE {probe}")
                await admin.execute(f"GRANT {grant} TO {probe}")
                await admin.execute(f"SET LOCAL ROLE {probe}")
                with pytest.raises(UnsafeRoleError, match="may create"):
                    await assert_application_role_is_safe(admin)
            finally:
                await tx.rollback()


async def test_staff_transactions_use_their_own_pool(services: Services, world: World) -> None:
    """Staff work still crosses tenants, over the staff pool; tenant work never runs there."""
    a = await world.tenant("pool-a")
    b = await world.tenant("pool-b")
    who = text("SELECT session_user, current_user")
    async with services.db.transaction(Scope(tenant_id=None, staff=True)) as session:
        assert tuple((await session.execute(who)).one()) == ("zixly_staff", "zixly_staff")
        seen = await session.execute(
            text("SELECT count(*) FROM tenants WHERE id IN (:a, :b)"), {"a": a.id, "b": b.id}
        )
        assert seen.scalar_one() == 2
    async with services.db.transaction(Scope(tenant_id=a.id)) as session:
        assert tuple((await session.execute(who)).one()) == ("zixly_app", "zixly_app")
        seen = await session.execute(
            text("SELECT count(*) FROM tenants WHERE id IN (:a, :b)"), {"a": a.id, "b": b.id}
        )
        assert seen.scalar_one() == 1


async def test_bootstrap_removes_the_old_path_from_app_to_staff(endpoints: Endpoints) -> None:
    """A cluster bootstrapped by an earlier version made the application role a member of
    staff; ``zixly db bootstrap`` (what the embedded stack runs at every start) removes it."""
    membership = (
        "SELECT count(*) FROM pg_auth_members "
        "WHERE member = 'zixly_app'::regrole AND roleid = 'zixly_staff'::regrole"
    )
    async with connected(endpoints.admin_database_url) as admin:
        await admin.execute("GRANT zixly_staff TO zixly_app")
        try:
            assert await admin.fetchval(membership) == 1
            process = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).parent / "zixly"),
                "db",
                "bootstrap",
                "--admin-url",
                plain_dsn(endpoints.admin_database_url or ""),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            output, _ = await process.communicate()
            assert process.returncode == 0, output.decode()
            assert await admin.fetchval(membership) == 0
        finally:
            await admin.execute("REVOKE zixly_staff FROM zixly_app")
    async with connected(endpoints.database_url) as app:
        await assert_application_role_is_safe(app)
