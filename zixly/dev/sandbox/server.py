"""Serving the whole provider sandbox (token endpoints and data APIs) on a loopback port.

In-process (:func:`serve_sandbox`): tests and ``zixly dev --demo`` run it on their own event
loop, on a free port, and point ``provider_base_urls`` at :attr:`RunningSandbox.base_urls`.
Standalone (:func:`run_sandbox`, the ``zixly sandbox`` command): it serves until
interrupted and prints its URL and the settings value that points Zixly at it.

Loopback only: the sandbox accepts any client and issues tokens to anyone who asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette

from zixly.core.logging import get_logger
from zixly.dev.sandbox.common import DataApis, DataConfig
from zixly.dev.sandbox.oauth import ProviderSandbox
from zixly.providers.registry import PROVIDERS

log = get_logger("zixly.dev.sandbox")
HOST = "127.0.0.1"
DATA_PROVIDERS = ("xero", "hubspot", "asana", "shopify")


class _Server(uvicorn.Server):
    """uvicorn on the caller's event loop, leaving the process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass(frozen=True)
class RunningSandbox:
    url: str  # e.g. http://127.0.0.1:40123
    sandbox: ProviderSandbox

    @property
    def base_urls(self) -> dict[str, str]:
        """``provider_base_urls`` pointing every provider at this sandbox."""
        return {name: f"{self.url}/{name}" for name in PROVIDERS}


def _config(app: Starlette, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=HOST,
        port=port,
        lifespan="off",
        ws="none",
        log_config=None,
        log_level="warning",
        access_log=False,
    )


@contextlib.asynccontextmanager
async def serve_sandbox(
    sandbox: ProviderSandbox | None = None, *, port: int = 0
) -> AsyncIterator[RunningSandbox]:
    """Serve ``sandbox`` (a new one by default) on 127.0.0.1 (``port`` 0: a free one) for the
    duration of the block."""
    sandbox = sandbox if sandbox is not None else ProviderSandbox()
    server = _Server(_config(sandbox.app(), port))
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()  # surfaces a start-up failure (port in use...)
                    raise RuntimeError("the sandbox server exited before it started")
                await asyncio.sleep(0.01)
        bound = server.servers[0].sockets[0].getsockname()[1]
        yield RunningSandbox(f"http://{HOST}:{bound}", sandbox)
    finally:
        server.should_exit = True
        await task


def run_sandbox(
    port: int, seed: int, announce: Callable[[str], None], *, tokens: bool = False
) -> int:
    """Serve a sandbox until interrupted (the ``zixly sandbox`` command)."""
    sandbox = ProviderSandbox(data=DataApis(config=DataConfig(seed=seed)))

    async def main() -> None:
        async with serve_sandbox(sandbox, port=port) as running:
            announce(f"provider sandbox at {running.url} (seed {seed})")
            announce(f"ZIXLY_PROVIDER_BASE_URLS='{json.dumps(running.base_urls)}'")
            if tokens:  # day-long access tokens, for trying the data APIs by hand
                for name in DATA_PROVIDERS:
                    token = sandbox.issue_access_token(name, lifetime=86400)
                    announce(f"{name} access token: {token}")
            log.info("sandbox.serving", url=running.url, seed=seed)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    return 0
