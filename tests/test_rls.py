"""Row-level security on its own: raw SQL as the application role, no repository filter."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from tests.conftest import World, plain_dsn
from zixly.db.bootstrap import UnsafeRoleError, assert_application_role_is_safe
from zixly.db.models import TENANT_SCOPED_TABLES
from zixly.embedded.stack import Endpoints

pytestmark = pytest.mark.asyncio


async def _app_connection(endpoints: Endpoints) -> asyncpg.Connection:
    return await asyncpg.connect(plain_dsn(endpoints.database_url))


async def _arrange_two_tenants(world: World) -> tuple[uuid.UUID, uuid.UUID]:
    a = await world.tenant("rls-a")
    b = await world.tenant("rls-b")
    for tenant in (a, b):
        client = tenant.client_ids[0]
        await world.owner.execute(
            "INSERT INTO financials (tenant_id, client_kpi_id, record_date, revenue, expenses, "
            "net_profit, cash_flow) VALUES ($1, $2, '2025-01-01', 10, 5, 5, 5)",
            tenant.id,
            client,
        )
        await world.owner.execute(
            "INSERT INTO lead_events (tenant_id, client_kpi_id, event_date, lead_id, stage, "
            "status) VALUES ($1, $2, now(), 'L1', 'prospect', 'active')",
            tenant.id,
            client,
        )
        await world.owner.execute(
            "INSERT INTO custom_metrics (tenant_id, client_kpi_id, metric_name, metric_value, "
            "record_date) VALUES ($1, $2, 'm', 1, now())",
            tenant.id,
            client,
        )
        await world.owner.execute(
            "INSERT INTO integrations (tenant_id, provider) VALUES ($1, 'xero')", tenant.id
        )
        await world.owner.execute(
            "INSERT INTO audit_log (tenant_id, action) VALUES ($1, 'test')", tenant.id
        )
    return a.id, b.id


async def test_app_role_sees_only_the_tenant_it_sets(endpoints: Endpoints, world: World) -> None:
    a, b = await _arrange_two_tenants(world)
    conn = await _app_connection(endpoints)
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(a))
            for table in (*TENANT_SCOPED_TABLES, "tenants"):
                column = "id" if table == "tenants" else "tenant_id"
                seen = {r[0] for r in await conn.fetch(f"SELECT DISTINCT {column} FROM {table}")}
                assert seen == {a}, table
            # Asking for tenant B's rows by id (the repository filter bypassed) yields nothing.
            assert (
                await conn.fetchval("SELECT count(*) FROM financials WHERE tenant_id = $1", b) == 0
            )
            assert await conn.fetchval("SELECT count(*) FROM tenants WHERE id = $1", b) == 0
    finally:
        await conn.close()


async def test_unset_tenant_sees_nothing_even_on_a_reused_connection(
    endpoints: Endpoints, world: World
) -> None:
    a, _ = await _arrange_two_tenants(world)
    conn = await _app_connection(endpoints)
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(a))
            assert await conn.fetchval("SELECT count(*) FROM client_kpis") > 0
        # Same connection, next transaction: the local setting reads '' now, not NULL.
        assert await conn.fetchval("SELECT current_setting('app.tenant_id', true)") == ""
        for table in (*TENANT_SCOPED_TABLES, "tenants"):
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0, table
    finally:
        await conn.close()


async def test_writes_into_another_tenant_are_refused(endpoints: Endpoints, world: World) -> None:
    a, b = await _arrange_two_tenants(world)
    b_client = await world.owner.fetchval("SELECT id FROM client_kpis WHERE tenant_id = $1", b)
    conn = await _app_connection(endpoints)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            async with conn.transaction():
                await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(a))
                await conn.execute(
                    "INSERT INTO client_kpis (tenant_id, client_id, client_name) "
                    "VALUES ($1, 'sneaky', 'x')",
                    b,
                )
        # A row of tenant A pointing at tenant B's client breaks the composite foreign key.
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            async with conn.transaction():
                await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(a))
                await conn.execute(
                    "INSERT INTO financials (tenant_id, client_kpi_id, record_date, revenue, "
                    "expenses, net_profit, cash_flow) VALUES ($1, $2, '2025-02-01', 1, 1, 0, 0)",
                    a,
                    b_client,
                )
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(a))
            updated = await conn.execute(
                "UPDATE financials SET revenue = 0 WHERE tenant_id = $1", b
            )
            deleted = await conn.execute("DELETE FROM client_kpis WHERE tenant_id = $1", b)
            assert (updated, deleted) == ("UPDATE 0", "DELETE 0")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("UPDATE audit_log SET action = 'tampered'")
        assert (
            await world.owner.fetchval("SELECT revenue FROM financials WHERE tenant_id = $1", b)
            == 10
        )
    finally:
        await conn.close()


async def test_app_role_cannot_switch_rls_off(endpoints: Endpoints, world: World) -> None:
    await _arrange_two_tenants(world)
    conn = await _app_connection(endpoints)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("SET row_security = off; SELECT count(*) FROM financials")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("ALTER TABLE financials DISABLE ROW LEVEL SECURITY")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("SET ROLE zixly_owner")
        role = await conn.fetchrow(
            "SELECT rolsuper, rolbypassrls, rolinherit FROM pg_roles WHERE rolname = current_user"
        )
        assert tuple(role) == (False, False, False)
        await assert_application_role_is_safe(conn)
    finally:
        await conn.close()


async def test_staff_policy_applies_only_over_the_staff_connection(
    endpoints: Endpoints, world: World
) -> None:
    a, b = await _arrange_two_tenants(world)
    conn = await _app_connection(endpoints)
    try:
        async with conn.transaction():
            # The application role is a member of no role: no cross-tenant rows, and no way
            # to become staff (tests/test_db_privileges.py tries every such path).
            assert (
                await conn.fetchval("SELECT count(*) FROM tenants WHERE id = ANY($1)", [a, b]) == 0
            )
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("SET LOCAL ROLE zixly_staff")
    finally:
        await conn.close()
    assert endpoints.staff_database_url is not None
    staff = await asyncpg.connect(plain_dsn(endpoints.staff_database_url))
    try:
        assert await staff.fetchval("SELECT count(*) FROM tenants WHERE id = ANY($1)", [a, b]) == 2
    finally:
        await staff.close()


async def test_owner_and_superuser_connections_are_refused(endpoints: Endpoints) -> None:
    owner = await asyncpg.connect(plain_dsn(endpoints.migrations_database_url))
    try:
        with pytest.raises(UnsafeRoleError, match="owns"):
            await assert_application_role_is_safe(owner)
    finally:
        await owner.close()
    superuser_dsn = plain_dsn(endpoints.migrations_database_url).replace(
        "zixly_owner@", "postgres@"
    )
    superuser = await asyncpg.connect(superuser_dsn)
    try:
        with pytest.raises(UnsafeRoleError, match="superuser"):
            await assert_application_role_is_safe(superuser)
    finally:
        await superuser.close()
