"""The ``zixly`` command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from rich.console import Console

from zixly.cli.graphiql import add_graphiql_commands
from zixly.cli.keys import add_key_commands
from zixly.cli.n8n import add_n8n_commands
from zixly.cli.serve import add_serve_command
from zixly.cli.tenants import add_tenant_commands
from zixly.cli.warehouse import add_warehouse_commands
from zixly.core.errors import ZixlyError
from zixly.core.logging import configure_logging
from zixly.core.settings import Settings, get_settings

console = Console(stderr=True)


def _cmd_dev(args: argparse.Namespace) -> int:
    from zixly.dev.server import run_dev

    settings = get_settings()
    if args.port is not None:
        settings = settings.model_copy(update={"port": args.port})
    return asyncio.run(run_dev(settings, console, demo=args.demo, sandbox_port=args.sandbox_port))


def _cmd_token(args: argparse.Namespace) -> int:
    from zixly.dev.server import mint_for

    token = asyncio.run(mint_for(get_settings(), args.email, args.tenant, args.ttl))
    print(token)
    return 0


def _cmd_db_upgrade(_args: argparse.Namespace) -> int:
    from zixly.dev.server import prepare_database

    asyncio.run(prepare_database(get_settings(), console, seed=False))
    return 0


def _cmd_db_bootstrap(args: argparse.Namespace) -> int:
    from zixly.db.bootstrap import ensure_roles_and_database

    settings = get_settings()
    asyncio.run(
        ensure_roles_and_database(
            args.admin_url.replace("postgresql+asyncpg://", "postgresql://", 1),
            database=args.database,
            owner=args.owner,
            app_role=settings.app_role,
            staff_role=settings.staff_role,
            definer_role=settings.definer_role,
        )
    )
    console.print(
        f"roles {args.owner}, {settings.app_role}, {settings.staff_role} (LOGIN: set their "
        f"passwords with ALTER ROLE ... PASSWORD) and {settings.definer_role} (NOLOGIN) and "
        f"database {args.database} are in place; now run `zixly db upgrade`"
    )
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    from zixly.graphql.schema import SCHEMA_FILE, render_sdl

    sdl = render_sdl()
    if args.write:
        SCHEMA_FILE.write_text(sdl)
        console.print(f"wrote {SCHEMA_FILE}")
    else:
        print(sdl, end="")
    return 0


def _cmd_worker(_args: argparse.Namespace) -> int:
    from zixly.workers.settings import run_worker

    return run_worker(get_settings())


def _cmd_reconcile(args: argparse.Namespace) -> int:
    import json

    from zixly.workers.settings import reconcile_once

    print(json.dumps(reconcile_once(get_settings(), args.tenant or None), indent=2))
    return 0


def _cmd_sandbox(args: argparse.Namespace) -> int:
    from zixly.dev.sandbox.server import run_sandbox

    return run_sandbox(
        args.port, args.seed, lambda line: print(line, flush=True), tokens=args.tokens
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zixly", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser(
        "dev",
        help="run the whole stack on this machine (embedded PostgreSQL and Redis unless "
        "ZIXLY_DATABASE_URL / ZIXLY_REDIS_URL name servers); Ctrl-C stops everything it "
        "started",
    )
    dev.add_argument("--port", type=int, default=None, help="HTTP port (default ZIXLY_PORT)")
    dev.add_argument(
        "--demo",
        action="store_true",
        help="also run the provider sandbox, a worker and the demo tenant's n8n pulling "
        "sandbox data into the dashboards",
    )
    dev.add_argument(
        "--sandbox-port",
        type=int,
        default=None,
        help="the sandbox's port with --demo (default: the HTTP port + 1)",
    )
    dev.set_defaults(func=_cmd_dev)

    token = sub.add_parser("token", help="mint a dev token (HS256, Zixly's own key)")
    token.add_argument("--email", required=True, help="an existing user's email")
    token.add_argument("--tenant", default=None, help="tenant slug or id")
    token.add_argument(
        "--ttl",
        type=int,
        default=None,
        help="lifetime in seconds (at most ZIXLY_JWT_MAX_LIFETIME_SECONDS)",
    )
    token.set_defaults(func=_cmd_token)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_up = db_sub.add_parser("upgrade", help="create roles (embedded) and apply migrations")
    db_up.set_defaults(func=_cmd_db_upgrade)
    db_boot = db_sub.add_parser(
        "bootstrap",
        help="create or repair the roles and the database on an external PostgreSQL "
        "(idempotent; run as an administrator before `zixly db upgrade`)",
    )
    db_boot.add_argument("--admin-url", required=True, help="a superuser's (or DBA's) URL")
    db_boot.add_argument("--database", default="zixly", help="the database to create")
    db_boot.add_argument("--owner", default="zixly_owner", help="the migration role")
    db_boot.set_defaults(func=_cmd_db_bootstrap)
    add_warehouse_commands(db_sub, console)

    schema = sub.add_parser("schema", help="print the GraphQL SDL (--write: update schema.graphql)")
    schema.add_argument("--write", action="store_true", help="write schema.graphql instead")
    schema.set_defaults(func=_cmd_schema)

    add_n8n_commands(sub, console)
    add_graphiql_commands(sub, console)
    add_tenant_commands(sub, console)
    add_key_commands(sub, console)

    worker = sub.add_parser(
        "worker",
        help="run the arq worker: instance jobs, key rotation, initial syncs, alert delivery "
        "and the crons (reconciler, token refresh, sync-health monitor, export purge)",
    )
    worker.set_defaults(func=_cmd_worker)
    add_serve_command(sub)

    reconcile = sub.add_parser(
        "reconcile", help="compare n8n instances with the database once and repair drift"
    )
    reconcile.add_argument(
        "--tenant", action="append", default=[], help="only this tenant, by slug or id (repeatable)"
    )
    reconcile.set_defaults(func=_cmd_reconcile)

    sandbox = sub.add_parser(
        "sandbox",
        help="serve the provider sandbox (Xero, HubSpot, Asana, Shopify: OAuth and data APIs) "
        "on 127.0.0.1 and print its URL",
    )
    sandbox.add_argument("--port", type=int, default=8765, help="port (0: any free one)")
    sandbox.add_argument("--seed", type=int, default=7, help="seed of the generated data")
    sandbox.add_argument(
        "--tokens", action="store_true", help="also print day-long access tokens to try it"
    )
    sandbox.set_defaults(func=_cmd_sandbox)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
        # One writer on standard error: log lines go through the console that prints the
        # progress (zixly.core.logging); standard output stays for what a command returns.
        configure_logging(settings.log_level, settings.log_json, console=console)
        code: int = args.func(args)
    except ZixlyError as error:
        console.print(f"[red]error:[/red] {error.message}")
        return 2
    except KeyboardInterrupt:
        return 130
    return code


__all__ = ["Settings", "main"]

if __name__ == "__main__":
    sys.exit(main())
