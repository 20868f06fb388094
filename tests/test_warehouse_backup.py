"""Warehouse backups (``zixly.db.backup``) against the real embedded PostgreSQL: a backup is
one consistent snapshot, restores into an empty database with every table's count and
checksum equal, keeps row-level security, and a damaged or failing restore changes nothing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import World
from zixly.core.errors import ConflictError, NotFoundError
from zixly.db import backup
from zixly.dev.seed import ensure_client
from zixly.embedded.stack import Endpoints


@pytest.fixture
def admin_url(endpoints: Endpoints) -> str:
    assert endpoints.admin_database_url is not None
    return endpoints.admin_database_url


@pytest.fixture
async def scratch(admin_url: str) -> AsyncIterator[str]:
    name = f"zixly_test_restore_{uuid.uuid4().hex[:8]}"
    await backup.create_database(admin_url, name)
    yield name
    await backup.drop_database(admin_url, name)


async def _tables(admin_url: str, database: str) -> int:
    connection = await asyncpg.connect(**backup.plain_dsn(admin_url, database))  # type: ignore[arg-type]
    try:
        value = await connection.fetchval(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        )
        return int(value)
    finally:
        await connection.close()


async def test_backup_restores_identically_and_keeps_row_level_security(
    world: World, admin_url: str, endpoints: Endpoints, scratch: str, tmp_path: Path
) -> None:
    tenant = await world.tenant("bk", clients=3)
    manifest = await backup.backup(admin_url, tmp_path / "b")
    assert manifest.tables["public.tenants"].rows >= 1
    assert manifest.tables["public.client_kpis"].rows >= 3
    assert len(manifest.dump_sha256) == 64 and manifest.dump_bytes > 0
    assert backup.Manifest.read(tmp_path / "b") == manifest

    result = await backup.restore(tmp_path / "b", admin_url, scratch)
    assert result.ok and result.tables == len(manifest.tables) and result.rows == manifest.rows

    # The restored copy is the warehouse, policies and grants included: the application
    # role sees nothing without a tenant, and exactly its tenant's clients with one.
    app = await asyncpg.connect(**backup.plain_dsn(endpoints.database_url, scratch))  # type: ignore[arg-type]
    try:
        assert await app.fetchval("SELECT count(*) FROM client_kpis") == 0
        async with app.transaction():
            await app.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant.id))
            assert await app.fetchval("SELECT count(*) FROM client_kpis") == 3
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await app.execute("ALTER TABLE client_kpis DISABLE ROW LEVEL SECURITY")
    finally:
        await app.close()


async def test_backup_is_one_snapshot_while_tenants_write(
    world: World, owner: asyncpg.Connection, admin_url: str, scratch: str, tmp_path: Path
) -> None:
    tenant = await world.tenant("bw", clients=0)
    stop = asyncio.Event()
    written = 0

    async def write() -> None:
        nonlocal written
        while not stop.is_set():
            await ensure_client(owner, tenant.id, f"W-{written}", "written", "retail")
            written += 1

    task = asyncio.ensure_future(write())
    try:
        while written < 20:
            await asyncio.sleep(0.01)
        before = written
        manifest = await backup.backup(admin_url, tmp_path / "b")
        during = written - before
    finally:
        stop.set()
        await task
    assert during > 0, "no write landed while the backup ran"
    assert manifest.tables["public.client_kpis"].rows >= before
    # The restored copy has exactly the manifest's rows and checksums: the manifest is of
    # the snapshot pg_dump dumped, not of a moment before or after it.
    result = await backup.restore(tmp_path / "b", admin_url, scratch)
    assert result.ok, result.mismatches


async def test_a_damaged_backup_is_refused_and_a_failing_restore_leaves_nothing(
    admin_url: str, scratch: str, tmp_path: Path
) -> None:
    folder = tmp_path / "b"
    manifest = await backup.backup(admin_url, folder)
    dump = folder / backup.DUMP_FILE
    data = dump.read_bytes()

    dump.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one bit flipped
    with pytest.raises(backup.BackupError, match="does not match its manifest"):
        await backup.restore(folder, admin_url, scratch)
    assert await _tables(admin_url, scratch) == 0

    # A dump cut short whose manifest was made to agree: pg_restore fails part-way, and in
    # one transaction, so the target database is left as empty as it was.
    dump.write_bytes(data[: len(data) * 2 // 3])
    manifest.dump_sha256 = backup._sha256(dump)
    (folder / backup.MANIFEST_FILE).write_text(manifest.to_json())
    with pytest.raises(backup.BackupError, match="pg_restore failed"):
        await backup.restore(folder, admin_url, scratch)
    assert await _tables(admin_url, scratch) == 0


async def test_restore_refuses_a_database_that_is_not_empty_and_a_folder_without_backup(
    admin_url: str, endpoints: Endpoints, tmp_path: Path
) -> None:
    await backup.backup(admin_url, tmp_path / "b")
    with pytest.raises(ConflictError, match="already holds a backup"):
        await backup.backup(admin_url, tmp_path / "b")
    warehouse = backup.plain_dsn(endpoints.migrations_database_url)["database"]
    assert isinstance(warehouse, str)
    with pytest.raises(ConflictError, match="restore into an empty one"):
        await backup.restore(tmp_path / "b", admin_url, warehouse)
    with pytest.raises(NotFoundError):
        await backup.restore(tmp_path / "nothing", admin_url, warehouse)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / backup.MANIFEST_FILE).write_text('{"format": 3}')
    with pytest.raises(backup.BackupError, match="not a warehouse backup manifest"):
        await backup.restore(tmp_path / "junk", admin_url, warehouse)


def _zixly_db(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zixly.cli.main", "db", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_cli_drill(admin_url: str, tmp_path: Path) -> None:
    """``zixly db drill``: back up, restore into a scratch database, compare, drop it."""
    env = {**os.environ, "ZIXLY_BACKUP_DATABASE_URL": admin_url, "ZIXLY_DATA_DIR": str(tmp_path)}
    done = _zixly_db(env, "drill", "--to", str(tmp_path / "d"))
    assert done.returncode == 0, done.stderr
    assert "drill passed" in done.stderr
    assert (tmp_path / "d" / backup.MANIFEST_FILE).is_file()

    # The same backup restored with `zixly db restore --create` into a new database.
    name = f"zixly_test_cli_{uuid.uuid4().hex[:8]}"
    try:
        done = _zixly_db(env, "restore", str(tmp_path / "d"), "--database", name, "--create")
        assert done.returncode == 0, done.stderr
        assert f"restored into {name}" in done.stderr
    finally:
        asyncio.run(backup.drop_database(admin_url, name))
