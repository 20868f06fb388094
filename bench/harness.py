"""What every benchmark script shares: the embedded stack it measures on, its event loop,
and how it runs from the command line (console width, Ctrl-C)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console

from zixly.db.migrate import upgrade
from zixly.embedded.stack import EmbeddedStack, Endpoints

T = TypeVar("T")


async def on_embedded_stack(
    data_dir: Path, console: Console, body: Callable[[Endpoints], Awaitable[T]]
) -> T:
    """Start PostgreSQL + Redis under ``data_dir`` (migrated), run ``body``, stop them."""
    stack = EmbeddedStack(data_dir, database_url=None, migrations_database_url=None, redis_url=None)
    try:
        with console.status(f"starting PostgreSQL + Redis in {data_dir}"):
            endpoints = await stack.start()
            await upgrade(endpoints.migrations_database_url)
        return await body(endpoints)
    finally:
        with console.status("stopping PostgreSQL + Redis"):
            stack.stop()


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop when it is installed (as uvicorn uses it)."""
    try:
        import uvloop

        factory: Any = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coroutine)


def console() -> Console:
    """A terminal's own width; piped output wide enough that the tables stay whole."""
    return Console() if sys.stdout.isatty() else Console(width=140)


def interrupted(console: Console, what: str) -> int:
    console.print(f"[yellow]interrupted[/]: {what} and the embedded stack were stopped")
    return 130
