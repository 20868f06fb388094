"""A logical backup of the warehouse that proves it restores.

``backup`` takes one consistent snapshot of the database: a ``REPEATABLE READ`` transaction
exports its snapshot, ``pg_dump --snapshot`` dumps exactly that snapshot (custom format),
and, in the same transaction, every table's row count and checksum are computed. So the
manifest describes what is in the dump, even while tenants keep writing.

``restore`` checks the dump against its manifest (SHA-256), restores it with
``pg_restore --single-transaction --exit-on-error`` into an empty database, and compares
the restored tables' counts and checksums with the manifest: a restore that does not
match is an error, not a warning. ``drill`` does both into a scratch database and drops
it, which is what an operator schedules to know the backups work.

Both need a role that row-level security does not filter (a superuser, or a role with
BYPASSRLS and ``pg_read_all_data``): the warehouse's tables use FORCE ROW LEVEL SECURITY,
and ``pg_dump`` refuses (rather than silently dumping a subset) when a policy would apply.
Roles are cluster-wide and not in the dump: restore into a cluster where
``zixly db bootstrap`` has created them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from zixly.core.errors import ConflictError, NotFoundError, UnavailableError, ZixlyError

DUMP_FILE = "warehouse.dump"
MANIFEST_FILE = "manifest.json"
FORMAT = "zixly-warehouse-backup/1"
SCHEMAS_SKIPPED = ("pg_catalog", "information_schema", "pg_toast")
TOOL_TIMEOUT_SECONDS = 3600.0

# A table's row count and the md5 over its rows' md5s in sorted order: independent of the
# rows' physical order, so a restored copy gives the same value.
FINGERPRINT = (
    "SELECT count(*) AS rows, md5(coalesce(string_agg(h, '' ORDER BY h), '')) AS sum "
    "FROM (SELECT md5(t::text) AS h FROM {table} t) AS rows_of"
)

Progress = Callable[[str], None]


class BackupError(ZixlyError):
    """A backup or restore that did not complete, or a restore that does not match."""

    code = "BACKUP_FAILED"


@dataclass(frozen=True)
class TableFingerprint:
    rows: int
    checksum: str  # md5 over the md5 of each row's text, in sorted order


@dataclass
class Manifest:
    format: str
    created_at: str
    database: str
    server_version: str
    dump_sha256: str
    dump_bytes: int
    tables: dict[str, TableFingerprint] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables.values())

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = folder / MANIFEST_FILE
        try:
            data = json.loads(path.read_text())
            tables = {k: TableFingerprint(**v) for k, v in data.pop("tables").items()}
            manifest = cls(**data, tables=tables)
        except FileNotFoundError:
            raise NotFoundError(f"no backup manifest at {path}") from None
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise BackupError(f"{path} is not a warehouse backup manifest: {exc}") from None
        if manifest.format != FORMAT:
            raise BackupError(f"{path} has format {manifest.format!r}, expected {FORMAT!r}")
        return manifest


@dataclass(frozen=True)
class Verification:
    """A restored database compared with its manifest."""

    database: str
    tables: int
    rows: int
    mismatches: dict[str, tuple[TableFingerprint | None, TableFingerprint | None]]

    @property
    def ok(self) -> bool:
        return not self.mismatches


# --- the PostgreSQL client programs -----------------------------------------------------------


def tool(name: str, bin_dir: Path | None = None) -> Path:
    """``pg_dump``/``pg_restore``: from ``bin_dir``, else the embedded server's own (pgserver
    ships the client programs of its server version), else PATH."""
    candidates: list[Path] = []
    if bin_dir is not None:
        candidates.append(bin_dir / name)
    with contextlib.suppress(ImportError):
        import pgserver

        candidates.append(Path(pgserver.__file__).parent / "pginstall" / "bin" / name)
    found = shutil.which(name)
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise UnavailableError(
        f"{name} was not found: install PostgreSQL's client programs (the server's version "
        "or newer) or set ZIXLY_PG_BIN_DIR"
    )


def libpq_environment(url: str, database: str | None = None) -> dict[str, str]:
    """A SQLAlchemy/asyncpg URL as libpq's environment variables, so that no password
    appears in a command line (``ps`` shows those)."""
    parsed = make_url(url)
    env = {"PGDATABASE": database or parsed.database or "postgres", "PGCONNECT_TIMEOUT": "10"}
    host = parsed.query.get("host") or parsed.host
    if isinstance(host, tuple):
        host = host[0]
    for key, value in (
        ("PGHOST", host),
        ("PGPORT", parsed.port and str(parsed.port)),
        ("PGUSER", parsed.username),
        ("PGPASSWORD", parsed.password),
    ):
        if value:
            env[key] = str(value)
    return env


def plain_dsn(url: str, database: str | None = None) -> dict[str, object]:
    """asyncpg.connect keyword arguments for a SQLAlchemy URL (optionally another database)."""
    env = libpq_environment(url, database)
    return {
        "host": env.get("PGHOST"),
        "port": int(env["PGPORT"]) if "PGPORT" in env else None,
        "user": env.get("PGUSER"),
        "password": env.get("PGPASSWORD"),
        "database": env["PGDATABASE"],
    }


async def _run(command: list[str], env: dict[str, str], what: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
    )
    try:
        _out, err = await asyncio.wait_for(process.communicate(), TOOL_TIMEOUT_SECONDS)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        detail = err.decode(errors="replace").strip().splitlines()
        raise BackupError(f"{what} failed: " + (" | ".join(detail[-5:]) or "no output"))


# --- fingerprints --------------------------------------------------------------------------


async def fingerprints(connection: asyncpg.Connection) -> dict[str, TableFingerprint]:
    """Every user table's row count and an order-independent checksum of its rows, as this
    connection's snapshot sees them. With ``row_security`` off, a policy that would hide
    rows is an error instead of a silently smaller count."""
    await connection.execute("SET LOCAL row_security = off")
    tables = await connection.fetch(
        """
        SELECT n.nspname AS schema, c.relname AS name
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
          AND n.nspname <> ALL($1::text[]) AND n.nspname NOT LIKE 'pg_temp%'
        ORDER BY 1, 2
        """,
        list(SCHEMAS_SKIPPED),
    )
    found: dict[str, TableFingerprint] = {}
    for table in tables:
        qualified = f"{_ident(table['schema'])}.{_ident(table['name'])}"
        row = await connection.fetchrow(FINGERPRINT.format(table=qualified))
        assert row is not None
        found[f"{table['schema']}.{table['name']}"] = TableFingerprint(row["rows"], row["sum"])
    return found


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _prepare(folder: Path) -> Path:
    if (folder / MANIFEST_FILE).exists():
        raise ConflictError(f"{folder} already holds a backup")
    folder.mkdir(parents=True, exist_ok=True)
    return folder / DUMP_FILE


def _checked(folder: Path) -> tuple[Manifest, Path]:
    """The backup's manifest and dump, the dump's SHA-256 checked against the manifest."""
    manifest = Manifest.read(folder)
    dump = folder / DUMP_FILE
    if not dump.is_file():
        raise NotFoundError(f"the backup in {folder} has no {DUMP_FILE}")
    digest = _sha256(dump)
    if digest != manifest.dump_sha256:
        raise BackupError(
            f"{dump} does not match its manifest (sha256 {digest[:12]}..., manifest "
            f"{manifest.dump_sha256[:12]}...): the file is damaged or was replaced"
        )
    return manifest, dump


@contextlib.asynccontextmanager
async def _connect(url: str, database: str | None = None) -> AsyncIterator[asyncpg.Connection]:
    try:
        connection = await asyncpg.connect(**plain_dsn(url, database), timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise UnavailableError(f"cannot connect to PostgreSQL: {exc}") from exc
    try:
        yield connection
    finally:
        await connection.close()


# --- backup, restore, drill ----------------------------------------------------------------


async def backup(
    url: str, folder: Path, *, bin_dir: Path | None = None, progress: Progress | None = None
) -> Manifest:
    """Dump the database at ``url`` into ``folder`` (created; must not hold a backup yet)
    with a manifest of the same snapshot."""
    say = progress or (lambda _line: None)
    dump = await asyncio.to_thread(_prepare, folder)
    partial = dump.with_suffix(".partial")
    async with _connect(url) as connection:
        async with connection.transaction(isolation="repeatable_read", readonly=True):
            snapshot = await connection.fetchval("SELECT pg_export_snapshot()")
            database = await connection.fetchval("SELECT current_database()")
            version = await connection.fetchval("SHOW server_version")
            say(f"snapshot {snapshot} of {database} (PostgreSQL {version})")
            command = [
                str(tool("pg_dump", bin_dir)),
                "--format=custom",
                f"--snapshot={snapshot}",
                "--no-password",
                f"--file={partial}",
            ]
            dumping = asyncio.ensure_future(_run(command, libpq_environment(url), "pg_dump"))
            try:
                tables = await fingerprints(connection)
                say(
                    f"fingerprinted {len(tables)} tables, {sum(t.rows for t in tables.values())} rows"
                )
                await dumping  # the snapshot must stay exported until pg_dump has it
            except BaseException:
                dumping.cancel()
                with contextlib.suppress(BaseException):
                    await dumping
                partial.unlink(missing_ok=True)
                raise
    manifest = await asyncio.to_thread(_seal, partial, dump, str(database), str(version), tables)
    say(f"wrote {dump} ({manifest.dump_bytes} bytes) and its manifest")
    return manifest


def _seal(
    partial: Path, dump: Path, database: str, version: str, tables: dict[str, TableFingerprint]
) -> Manifest:
    """Move the finished dump into place and write its manifest (last: a folder with a
    manifest holds a complete backup)."""
    partial.replace(dump)
    manifest = Manifest(
        format=FORMAT,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        database=database,
        server_version=version,
        dump_sha256=_sha256(dump),
        dump_bytes=dump.stat().st_size,
        tables=tables,
    )
    (dump.parent / MANIFEST_FILE).write_text(manifest.to_json())
    return manifest


def compare(
    expected: dict[str, TableFingerprint], found: dict[str, TableFingerprint]
) -> dict[str, tuple[TableFingerprint | None, TableFingerprint | None]]:
    return {
        name: (expected.get(name), found.get(name))
        for name in sorted(set(expected) | set(found))
        if expected.get(name) != found.get(name)
    }


async def verify(url: str, manifest: Manifest, database: str | None = None) -> Verification:
    async with _connect(url, database) as connection:
        async with connection.transaction(isolation="repeatable_read", readonly=True):
            found = await fingerprints(connection)
            name = await connection.fetchval("SELECT current_database()")
    return Verification(
        database=str(name),
        tables=len(found),
        rows=sum(t.rows for t in found.values()),
        mismatches=compare(manifest.tables, found),
    )


async def restore(
    folder: Path,
    url: str,
    database: str,
    *,
    bin_dir: Path | None = None,
    progress: Progress | None = None,
) -> Verification:
    """Restore the backup in ``folder`` into the empty database ``database`` (on the server
    of ``url``) in one transaction, then prove it matches the manifest."""
    say = progress or (lambda _line: None)
    manifest, dump = await asyncio.to_thread(_checked, folder)
    async with _connect(url, database) as connection:
        existing = await connection.fetchval(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p') AND n.nspname <> ALL($1::text[])",
            list(SCHEMAS_SKIPPED),
        )
    if existing:
        raise ConflictError(
            f"database {database} already has {existing} tables: restore into an empty one"
        )
    say(f"restoring {manifest.rows} rows in {len(manifest.tables)} tables into {database}")
    command = [
        str(tool("pg_restore", bin_dir)),
        "--single-transaction",
        "--exit-on-error",
        "--no-password",
        f"--dbname={database}",
        str(dump),
    ]
    await _run(command, libpq_environment(url, database), "pg_restore")
    result = await verify(url, manifest, database)
    if not result.ok:
        names = ", ".join(list(result.mismatches)[:5])
        raise BackupError(f"the restored {database} does not match the backup: {names}")
    say(f"verified {result.tables} tables, {result.rows} rows: identical to the backup")
    return result


async def create_database(url: str, name: str) -> None:
    async with _connect(url) as connection:
        await connection.execute(f"CREATE DATABASE {_ident(name)} TEMPLATE template0")


async def drop_database(url: str, name: str) -> None:
    async with _connect(url) as connection:
        await connection.execute(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")


@dataclass(frozen=True)
class DrillReport:
    manifest: Manifest
    verification: Verification
    folder: Path


async def drill(
    url: str, folder: Path, *, bin_dir: Path | None = None, progress: Progress | None = None
) -> DrillReport:
    """Back up, restore into a scratch database, compare, drop the scratch database."""
    manifest = await backup(url, folder, bin_dir=bin_dir, progress=progress)
    scratch = f"zixly_drill_{uuid.uuid4().hex[:12]}"
    await create_database(url, scratch)
    try:
        verification = await restore(folder, url, scratch, bin_dir=bin_dir, progress=progress)
    finally:
        await drop_database(url, scratch)
    return DrillReport(manifest, verification, folder)
