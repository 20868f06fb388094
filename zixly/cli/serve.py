"""``zixly serve``: the API server of a deployment (the image's default command).

PostgreSQL and Redis are the configured servers (``ZIXLY_DATABASE_URL``, ``ZIXLY_REDIS_URL``);
migrations are a step of their own (``zixly db upgrade``: the compose file's and the
cluster's one-shot ``migrate``). uvicorn builds the app in its own event loop:
``app_from_settings`` is a factory, also usable as
``uvicorn --factory zixly.cli.serve:app_from_settings``. Behind a reverse proxy, uvicorn's
``FORWARDED_ALLOW_IPS`` names the proxies whose X-Forwarded-For is believed (default
127.0.0.1 only: the rate limits key on the client address).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zixly.core.errors import ZixlyError
from zixly.core.settings import get_settings

if TYPE_CHECKING:
    from starlette.applications import Starlette


def app_from_settings() -> Starlette:
    from zixly.app import create_app
    from zixly.container import Services

    settings = get_settings()
    if not settings.database_url or not settings.redis_url:
        raise ZixlyError("zixly serve needs ZIXLY_DATABASE_URL and ZIXLY_REDIS_URL")
    services = Services.build(
        settings, database_url=settings.database_url, redis_url=settings.redis_url
    )
    return create_app(services)  # its lifespan closes the services


def serve(_args: Any = None) -> int:
    import uvicorn

    settings = get_settings()
    uvicorn.run(
        app_from_settings,
        factory=True,
        host=settings.host,
        port=settings.port,
        log_config=None,  # uvicorn's loggers go through ours (JSON, redacted)
        lifespan="on",
        ws="websockets-sansio",
        server_header=False,
    )
    return 0


def add_serve_command(sub: Any) -> None:
    serve_parser = sub.add_parser(
        "serve",
        help="serve the API on ZIXLY_HOST:ZIXLY_PORT against the configured PostgreSQL and "
        "Redis (a deployment's API process; run `zixly db upgrade` first)",
    )
    serve_parser.set_defaults(func=serve)
