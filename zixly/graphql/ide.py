"""GraphiQL at ``GET /graphql``, from files Zixly serves itself: nothing comes from a CDN.

The page loads React, GraphiQL and its own script from ``/graphiql/<key>/<name>`` (the files
``zixly graphiql install`` put in the cache, see ``zixly.graphql.ide_assets``); the key changes
whenever a file does, so they are cached as immutable. The page's Content-Security-Policy
allows scripts, styles and connections to this origin only. Without the files installed the
page says how to install them instead of loading forever.

The headers editor opens pre-filled with ``{"Authorization": "Bearer <token>"}``; until the
placeholder is replaced nothing is sent with it (and the schema is fetched once a token is
there). Subscriptions run over graphql-transport-ws on the same URL, the headers editor's
values going in ``connection_init`` as the server expects.
"""

from __future__ import annotations

import html
import json
from pathlib import PurePosixPath

from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, request_response

from zixly.core.settings import Settings
from zixly.graphql.ide_assets import Bundle, bundle

ASSET_PREFIX = "/graphiql"
TOKEN_PLACEHOLDER = "<token>"  # noqa: S105 - shown to the user, never sent
DEFAULT_HEADERS = json.dumps({"Authorization": f"Bearer {TOKEN_PLACEHOLDER}"}, indent=2)
DEFAULT_QUERY = """\
# Zixly's GraphQL API. Put a bearer token in Headers (below): `zixly dev` prints some,
# `zixly token --email <user> [--tenant <slug>]` mints one. Run with Ctrl-Enter.
{
  me { email role tenant { name } }
  clients { nodes { name latestFinancial { revenue } } }
}
"""
IMMUTABLE = "public, max-age=31536000, immutable"
MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",  # GraphiQL and CodeMirror set inline styles
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",  # HTTP and the WebSocket to this origin only
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Zixly GraphiQL</title>
<link rel="stylesheet" href="{css}">
<style>
  html, body {{ height: 100%; margin: 0; }}
  body {{ display: flex; flex-direction: column; font-family: system-ui, sans-serif; }}
  #zixly-hint {{ padding: 6px 12px; font-size: 13px; background: #f3f4f6; color: #111827;
    border-bottom: 1px solid #d1d5db; }}
  #zixly-hint code {{ background: #e5e7eb; padding: 1px 4px; border-radius: 3px; }}
  #graphiql {{ flex: 1; min-height: 0; }}
</style>
</head>
<body>
<div id="zixly-hint">Zixly GraphQL API &middot; put a token in <b>Headers</b>:
  <code>{{"Authorization": "Bearer &lt;token&gt;"}}</code> &middot; <code>zixly dev</code>
  prints tokens, <code>zixly token --email &lt;user&gt; [--tenant &lt;slug&gt;]</code> mints one.
</div>
<div id="graphiql">Loading GraphiQL...</div>
<noscript>GraphiQL needs JavaScript.</noscript>
<script id="zixly-graphiql-config" type="application/json">{config}</script>
{scripts}
</body>
</html>
"""

_MISSING = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>GraphiQL is not installed</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 46em; margin: 3em auto;">
<h1>GraphiQL is not installed on this server</h1>
<p>Zixly serves GraphiQL {version} from files installed with the project, not from a CDN,
and they are not there yet. Install them, then reload this page:</p>
<pre>.venv/bin/zixly graphiql install</pre>
<p><code>make dev</code> and <code>make test</code> run it. The files are kept under
<code>ZIXLY_GRAPHIQL_CACHE_DIR</code> (default <code>~/.cache/zixly/graphiql</code>).
The API itself works without them: <code>POST /graphql</code>.</p>
</body>
</html>
"""


class GraphiQLPage:
    """The page and the route that serves its files."""

    def __init__(self, settings: Settings, *, path: str = "/graphql") -> None:
        self.bundle: Bundle = bundle(settings)
        self.path = path

    def url(self, name: str) -> str:
        return f"{ASSET_PREFIX}/{self.bundle.key}/{name}"

    def page(self) -> Response:
        if not self.bundle.installed:
            text = _MISSING.format(version=html.escape(self.bundle.graphiql_version))
            return HTMLResponse(text, status_code=503, headers=PAGE_HEADERS)
        config = {
            "endpoint": self.path,
            "tokenPlaceholder": TOKEN_PLACEHOLDER,
            "defaultHeaders": DEFAULT_HEADERS,
            "defaultQuery": DEFAULT_QUERY,
        }
        # In a <script> element only "</" could end it early: escape "<" in the JSON.
        embedded = json.dumps(config).replace("<", "\\u003c")
        scripts = "\n".join(
            f'<script src="{self.url(name)}"></script>'
            for name in self.bundle.names
            if name.endswith(".js")
        )
        text = _PAGE.format(css=self.url("graphiql.min.css"), config=embedded, scripts=scripts)
        return HTMLResponse(text, headers=PAGE_HEADERS)

    def routes(self) -> list[BaseRoute]:
        # gzip for clients that ask for it (GraphiQL's bundle is 3.5 MB, about 0.7 MB gzipped)
        app = GZipMiddleware(request_response(self._asset), minimum_size=1024, compresslevel=6)
        return [Route(ASSET_PREFIX + "/{key}/{name}", app, methods=["GET", "HEAD"])]

    async def _asset(self, request: Request) -> Response:
        key, name = request.path_params["key"], request.path_params["name"]
        path = self.bundle.path(name) if key == self.bundle.key else None
        if path is None or not path.is_file():
            return PlainTextResponse("Not Found", status_code=404)
        return FileResponse(
            path,
            media_type=MEDIA_TYPES[PurePosixPath(name).suffix],
            headers={"Cache-Control": IMMUTABLE, "X-Content-Type-Options": "nosniff"},
        )
