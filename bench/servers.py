"""The servers under test, each in its own process with uvicorn (one worker).

Parent side: ``running_servers`` starts them on free ports, waits until they answer and
always stops them. Child side (``python -m bench.servers zixly|baseline --port N``): builds
the app from ``ZIXLY_*`` environment variables and serves it.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("zixly", "baseline")
STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Server:
    kind: str
    base_url: str
    process: subprocess.Popen[bytes]
    log: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start(kind: str, env: Mapping[str, str], log: Path) -> Server:
    port = _free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.servers", kind, "--port", str(port)],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the parent only, which stops us in order
        )
    return Server(kind, f"http://127.0.0.1:{port}", process, log)


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                break
            try:
                if client.get(f"{server.base_url}/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    tail = server.log.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"the {server.kind} server did not start; its output:\n{tail}")


def _stop(server: Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            server.process.kill()
    server.process.wait()


@contextmanager
def running_servers(
    kinds: Sequence[str], env: Mapping[str, str], log_dir: Path
) -> Iterator[dict[str, Server]]:
    """Start every kind at once (they import in parallel), then wait for each."""
    log_dir.mkdir(parents=True, exist_ok=True)
    started: list[Server] = []
    try:
        for kind in kinds:
            started.append(_start(kind, env, log_dir / f"{kind}.log"))
        for server in started:
            _wait_ready(server)
        yield {server.kind: server for server in started}
    finally:
        for server in started:
            _stop(server)


# --- child side ------------------------------------------------------------------


def _zixly_app() -> Any:
    from zixly.app import create_app
    from zixly.container import Services
    from zixly.core.logging import configure_logging
    from zixly.core.settings import Settings

    settings = Settings()
    assert settings.database_url and settings.redis_url, "set ZIXLY_DATABASE_URL and _REDIS_URL"
    configure_logging(settings.log_level, settings.log_json)
    services = Services.build(
        settings, database_url=settings.database_url, redis_url=settings.redis_url
    )
    return create_app(services)


def _baseline_app() -> Any:
    from bench.baseline import create_app
    from zixly.core.settings import Settings

    settings = Settings()
    assert settings.database_url, "set ZIXLY_DATABASE_URL"
    return create_app(
        settings.database_url.replace("postgresql+asyncpg://", "postgresql://"),
        # The API's SQLAlchemy pool may grow to pool_size + max_overflow connections.
        pool_size=settings.db_pool_size + settings.db_max_overflow,
        statement_timeout_ms=settings.statement_timeout_ms,
    )


def _exit_with_parent() -> None:
    """A killed parent cannot stop us, so we notice it is gone and stop ourselves."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="serve one benchmark target")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    _exit_with_parent()
    app = _zixly_app() if args.kind == "zixly" else _baseline_app()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        ws="none",
    )


if __name__ == "__main__":
    main()
