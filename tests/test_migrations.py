"""The models in zixly/db/models.py and the migrations describe the same schema."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import pool
from sqlalchemy.ext.asyncio import create_async_engine

from zixly.db.models import Base
from zixly.embedded.stack import Endpoints


async def test_models_match_migrated_database(endpoints: Endpoints) -> None:
    engine = create_async_engine(endpoints.migrations_database_url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:

            def _diff(sync_connection: Any) -> list[Any]:
                context = MigrationContext.configure(
                    sync_connection, opts={"compare_type": True, "compare_server_default": False}
                )
                return list(compare_metadata(context, Base.metadata))

            diff = await connection.run_sync(_diff)
    finally:
        await engine.dispose()
    ignored = {"alembic_version"}
    relevant = [d for d in diff if not (d[0] == "remove_table" and d[1].name in ignored)]
    assert relevant == []
