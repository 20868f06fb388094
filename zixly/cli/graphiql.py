"""``zixly graphiql install|status``: GraphiQL's browser files, served by the app at /graphql."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console

from zixly.core.settings import get_settings
from zixly.graphql.ide_assets import bundle, install
from zixly.provisioning.runtimes.progress import RichInstallProgress, format_elapsed


def add_graphiql_commands(sub: Any, console: Console) -> None:
    """Register the ``graphiql`` group on the top-level subparsers ``sub``."""
    graphiql = sub.add_parser(
        "graphiql", help="install GraphiQL's files (pinned npm packages) for GET /graphql"
    )
    graphiql_sub = graphiql.add_subparsers(dest="graphiql_command", required=True)
    install_cmd = graphiql_sub.add_parser(
        "install",
        help="install GraphiQL, React and React DOM from the npm registry into the cache "
        "(ZIXLY_GRAPHIQL_CACHE_DIR), checked against the committed lock file; idempotent",
    )
    install_cmd.set_defaults(func=lambda _args: _install(console))
    status = graphiql_sub.add_parser("status", help="are GraphiQL's files installed? (exit 1: no)")
    status.set_defaults(func=lambda _args: _status(console))


def _install(console: Console) -> int:
    target = bundle(get_settings())
    if target.installed:
        console.print(
            f"GraphiQL {target.graphiql_version} is already installed in {target.root}",
            soft_wrap=True,
        )
        return 0
    started = time.monotonic()
    with RichInstallProgress(console) as progress:
        done = install(get_settings(), progress)
    console.print(
        f"[green]GraphiQL {done.graphiql_version} installed[/green] in {done.root} "
        f"({format_elapsed(time.monotonic() - started)})",
        soft_wrap=True,
    )
    return 0


def _status(console: Console) -> int:
    target = bundle(get_settings())
    if target.installed:
        console.print(f"GraphiQL {target.graphiql_version}: installed in {target.root}")
        return 0
    console.print(
        f"GraphiQL {target.graphiql_version}: not installed (run `zixly graphiql install`)"
    )
    return 1
