"""``zixly db backup|restore|drill``: logical backups of the warehouse that prove they restore
(``zixly.db.backup``)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console

from zixly.core.errors import ZixlyError
from zixly.core.settings import Settings, get_settings
from zixly.db import backup
from zixly.embedded.running import running_stack

T = TypeVar("T")


@asynccontextmanager
async def backup_url(settings: Settings) -> AsyncIterator[str]:
    """The configured backup connection, else the embedded server's superuser."""
    if settings.backup_database_url:
        yield settings.backup_database_url
        return
    if settings.database_url:
        raise ZixlyError(
            "set ZIXLY_BACKUP_DATABASE_URL (a superuser, or a role with BYPASSRLS and "
            "pg_read_all_data) to back up an external database"
        )
    async with running_stack(settings) as endpoints:
        assert endpoints.admin_database_url is not None  # the embedded server has one
        yield endpoints.admin_database_url


def default_folder(settings: Settings) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return settings.data_dir / "backups" / "warehouse" / stamp


def _with_url(settings: Settings, work: Callable[[str], Awaitable[T]]) -> T:
    """Run ``work`` with the backup connection (``backup_url``) on a new event loop."""

    async def go() -> T:
        async with backup_url(settings) as url:
            return await work(url)

    return asyncio.run(go())


def _print_manifest(console: Console, manifest: backup.Manifest, folder: Path) -> None:
    console.print(
        f"backup of {manifest.database} (PostgreSQL {manifest.server_version}) in {folder}: "
        f"{len(manifest.tables)} tables, {manifest.rows} rows, {manifest.dump_bytes} bytes, "
        f"sha256 {manifest.dump_sha256[:16]}"
    )


def _backup(console: Console) -> Any:
    def run(args: argparse.Namespace) -> int:
        settings = get_settings()
        folder = Path(args.to) if args.to else default_folder(settings)

        manifest = _with_url(
            settings,
            lambda url: backup.backup(
                url, folder, bin_dir=settings.pg_bin_dir, progress=console.print
            ),
        )
        _print_manifest(console, manifest, folder)
        print(folder)
        return 0

    return run


def _restore(console: Console) -> Any:
    def run(args: argparse.Namespace) -> int:
        settings = get_settings()
        folder = Path(args.folder)

        async def restore(url: str) -> backup.Verification:
            if args.create:
                await backup.create_database(url, args.database)
            return await backup.restore(
                folder, url, args.database, bin_dir=settings.pg_bin_dir, progress=console.print
            )

        result = _with_url(settings, restore)
        console.print(
            f"restored into {result.database}: {result.tables} tables, {result.rows} rows, "
            "every count and checksum as in the backup. Point ZIXLY_DATABASE_URL and "
            "ZIXLY_MIGRATIONS_DATABASE_URL at it to use it."
        )
        return 0

    return run


def _drill(console: Console) -> Any:
    def run(args: argparse.Namespace) -> int:
        settings = get_settings()
        folder = Path(args.to) if args.to else default_folder(settings)

        report = _with_url(
            settings,
            lambda url: backup.drill(
                url, folder, bin_dir=settings.pg_bin_dir, progress=console.print
            ),
        )
        _print_manifest(console, report.manifest, folder)
        console.print(
            f"[green]drill passed[/green]: restored into a scratch database, "
            f"{report.verification.tables} tables and {report.verification.rows} rows match "
            "the backup's counts and checksums; the scratch database is dropped"
        )
        return 0

    return run


def add_warehouse_commands(db_sub: Any, console: Console) -> None:
    """The backup commands, under ``zixly db``."""
    take = db_sub.add_parser(
        "backup",
        help="dump the warehouse (one consistent snapshot, pg_dump custom format) with a "
        "manifest of every table's row count and checksum; prints the backup's folder",
    )
    take.add_argument(
        "--to", default=None, help="folder (default: data_dir/backups/warehouse/<time>)"
    )
    take.set_defaults(func=_backup(console))

    put = db_sub.add_parser(
        "restore",
        help="restore a backup folder into an empty database and verify every table's row "
        "count and checksum against its manifest",
    )
    put.add_argument("folder", help="a folder written by `zixly db backup`")
    put.add_argument("--database", required=True, help="the (empty) database to restore into")
    put.add_argument("--create", action="store_true", help="create that database first")
    put.set_defaults(func=_restore(console))

    drill = db_sub.add_parser(
        "drill",
        help="back up, restore into a scratch database, compare counts and checksums, drop it",
    )
    drill.add_argument("--to", default=None, help="keep the backup here (default as for backup)")
    drill.set_defaults(func=_drill(console))
