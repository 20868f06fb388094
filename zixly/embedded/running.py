"""Where PostgreSQL and Redis are: the configured ones, else the embedded development stack.

Every command that needs the platform's stores (``zixly dev``, ``zixly worker``, the
``tenant`` and ``keys`` commands, ``zixly reconcile``) opens them through ``running_stack``;
with ``ZIXLY_DATABASE_URL`` and ``ZIXLY_REDIS_URL`` set it only hands those on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from zixly.core.errors import ZixlyError
from zixly.core.settings import Settings
from zixly.embedded.stack import EmbeddedStack, Endpoints


@asynccontextmanager
async def running_stack(
    settings: Settings, stays_running: Callable[[str], None] | None = None
) -> AsyncIterator[Endpoints]:
    """The stores' endpoints while the block runs; ``stays_running`` hears of what is left
    running afterwards (an embedded server another live process started)."""
    if settings.database_url and not settings.migrations_database_url:
        raise ZixlyError(
            "ZIXLY_DATABASE_URL is set but ZIXLY_MIGRATIONS_DATABASE_URL is not: migrations "
            "run as the table owner, the API as a role that owns no table"
        )
    stack = EmbeddedStack(
        settings.data_dir,
        database_url=settings.database_url,
        migrations_database_url=settings.migrations_database_url,
        redis_url=settings.redis_url,
        app_role=settings.app_role,
        staff_role=settings.staff_role,
        definer_role=settings.definer_role,
        staff_database_url=settings.staff_database_url,
    )
    try:
        yield await stack.start()
    finally:
        for note in stack.stop():
            if stays_running is not None:
                stays_running(note)
