"""Apply the Alembic migrations (as the owner role) from Python."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from alembic import command
from alembic.config import Config
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.util import await_only

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(
    url: str,
    *,
    app_role: str = "zixly_app",
    staff_role: str = "zixly_staff",
    definer_role: str = "zixly_definer",
) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes.update(
        url=url, app_role=app_role, staff_role=staff_role, definer_role=definer_role
    )
    return config


class Bound(Protocol):
    """What ``exec_script`` needs: migrations pass the ``alembic.op`` module proxy."""

    def get_bind(self) -> Connection: ...


def exec_script(op: Bound, sql: str) -> None:
    """Run a multi-statement SQL script (functions with ``$$`` bodies included).

    asyncpg prepares every statement SQLAlchemy sends, and a prepared statement holds one
    command; its simple-query ``execute`` without arguments takes a whole script.
    """
    driver_connection = op.get_bind().connection.driver_connection
    if driver_connection is None:
        raise RuntimeError("the migration's connection is closed")
    await_only(driver_connection.execute(sql))


async def upgrade(
    url: str,
    revision: str = "head",
    *,
    app_role: str = "zixly_app",
    staff_role: str = "zixly_staff",
    definer_role: str = "zixly_definer",
) -> None:
    config = alembic_config(
        url, app_role=app_role, staff_role=staff_role, definer_role=definer_role
    )
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:

            def _run(sync_connection: Connection) -> None:
                config.attributes["connection"] = sync_connection
                command.upgrade(config, revision)

            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()
