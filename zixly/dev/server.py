"""``zixly dev``: the embedded stack, migrations, demo data, tokens and the API server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import asyncpg
import uvicorn
from rich.console import Console

from zixly.core.errors import NotFoundError, ZixlyError
from zixly.core.logging import configure_logging
from zixly.core.settings import Settings
from zixly.db.bootstrap import assert_application_role_is_safe
from zixly.db.migrate import upgrade
from zixly.db.session import staff_database_url
from zixly.dev.seed import seed_demo
from zixly.dev.shutdown import Interrupts, Report, stop_instances_started_since
from zixly.embedded.running import running_stack
from zixly.embedded.stack import Endpoints
from zixly.security.tokens import checked_ttl, load_signing_secret, mint_token

if TYPE_CHECKING:
    from zixly.container import Services

DEMO_EMAILS = (
    ("STAFF", "staff@zixly.dev", None),
    ("ADMIN", "admin@demo.zixly.dev", "demo"),
    ("EDITOR", "editor@demo.zixly.dev", "demo"),
    ("VIEWER", "viewer@demo.zixly.dev", "demo"),
)


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def prepare_database(
    settings: Settings, console: Console, *, seed: bool, endpoints: Endpoints | None = None
) -> None:
    async def _prepare(found: Endpoints) -> None:
        with console.status("applying migrations"):
            await upgrade(
                found.migrations_database_url,
                app_role=settings.app_role,
                staff_role=settings.staff_role,
                definer_role=settings.definer_role,
            )
        app = await asyncpg.connect(_dsn(found.database_url))
        try:
            await assert_application_role_is_safe(app)
        finally:
            await app.close()
        staff_url = found.staff_database_url or staff_database_url(found.database_url, settings)
        staff = await asyncpg.connect(_dsn(staff_url))
        try:
            await assert_application_role_is_safe(staff, may_act_as=settings.staff_role)
        finally:
            await staff.close()
        if seed:
            with console.status("seeding the demo tenant"):
                owner = await asyncpg.connect(_dsn(found.migrations_database_url))
                try:
                    await seed_demo(owner)
                finally:
                    await owner.close()

    if endpoints is not None:
        await _prepare(endpoints)
        return
    async with running_stack(settings) as found:
        await _prepare(found)


async def mint_for(settings: Settings, email: str, tenant: str | None, ttl: int | None) -> str:
    checked_ttl(settings, ttl)  # before starting anything
    async with running_stack(settings) as found:
        conn = await asyncpg.connect(_dsn(found.database_url))
        try:
            row = await conn.fetchrow(
                "SELECT user_id, is_staff, tenant_id, role, tenant_choices "
                "FROM zixly_auth_principal($1::text, $2::text, now())",
                email,
                tenant,
            )
        finally:
            await conn.close()
    if row is None:
        raise NotFoundError(f"no user with email {email!r}")
    if tenant is not None and row["tenant_id"] is None and not row["is_staff"]:
        raise NotFoundError(f"{email} is not a member of tenant {tenant!r}")
    if tenant is None and row["tenant_choices"]:
        choices = ", ".join(row["tenant_choices"])
        raise ZixlyError(f"{email} belongs to several tenants: pass --tenant (one of {choices})")
    return mint_token(
        settings,
        load_signing_secret(settings),
        email=email,
        subject=row["user_id"],
        tenant=tenant,
        ttl_seconds=ttl,
    )


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGINT/SIGTERM after its shutdown, which would kill the process
    before the embedded PostgreSQL and Redis are stopped; here the signals stay with
    ``run_dev`` (``zixly.dev.shutdown.Interrupts``), which asks the server to exit and then
    stops everything in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _print_tokens(settings: Settings, console: Console) -> None:
    """One token per line, unwrapped, so it can be copied whole."""
    secret = load_signing_secret(settings)
    console.print("[bold]Ready-to-use tokens[/] (send as 'Authorization: Bearer <token>'):")
    for role, email, tenant in DEMO_EMAILS:
        token = mint_token(settings, secret, email=email, subject=email, tenant=tenant)
        console.print(f"[cyan]{role:<6}[/] {email}")
        console.print(token, soft_wrap=True, highlight=False)


async def run_dev(
    settings: Settings, console: Console, *, demo: bool = False, sandbox_port: int | None = None
) -> int:
    """``zixly dev`` (``demo``: plus the provider sandbox, an in-process worker and the demo
    tenant's n8n pulling sandbox data, see ``zixly.dev.demo``); on the way out, everything it
    started is stopped and what is left running is named (``zixly.dev.shutdown``)."""
    configure_logging(settings.log_level, settings.log_json, console=console)
    interrupts = Interrupts(console)
    main = asyncio.current_task()
    assert main is not None
    interrupts.install(main.cancel)  # while starting: stop what started so far, in order
    report = Report()
    try:
        code = await _run_dev(settings, console, interrupts, report, demo, sandbox_port)
    except asyncio.CancelledError:
        if not interrupts.received:
            raise
        code = 130  # interrupted while starting
    finally:
        interrupts.remove()
    report.print(console)
    return code


async def _run_dev(
    settings: Settings,
    console: Console,
    interrupts: Interrupts,
    report: Report,
    demo: bool,
    sandbox_port: int | None,
) -> int:
    since = datetime.now(UTC)
    async with contextlib.AsyncExitStack() as stack:
        with console.status("starting PostgreSQL + pgvector and Redis"):
            endpoints = await stack.enter_async_context(
                running_stack(settings, report.left_running.append)
            )
        await prepare_database(settings, console, seed=True, endpoints=endpoints)
        settings = _with_mail_sink(settings, console, stack)
        if demo:
            settings = await _demo_settings(settings, console, stack, sandbox_port)
        from zixly.container import Services

        services = Services.build(
            settings, database_url=endpoints.database_url, redis_url=endpoints.redis_url
        )
        stack.push_async_callback(services.close)
        # Runs before services.close (and after the demo's own stop of its instance).
        stack.push_async_callback(stop_instances_started_since, services, since, report)
        return await _serve(settings, console, endpoints, stack, services, interrupts, demo=demo)
    raise AssertionError("unreachable")  # pragma: no cover (the stack does not swallow)


def _with_mail_sink(
    settings: Settings, console: Console, stack: contextlib.AsyncExitStack
) -> Settings:
    """Without a configured SMTP server, mail (invitations, alerts) goes to the dev sink."""
    if settings.smtp_host:
        return settings
    from zixly.dev.mail import mail_sink

    sink = stack.enter_context(mail_sink(settings.data_dir))
    console.print(f"mail sink (SMTP {sink.host}:{sink.port}) keeps messages in {sink.directory}")
    return settings.model_copy(
        update={"smtp_host": sink.host, "smtp_port": sink.port, "smtp_starttls": False}
    )


async def _demo_settings(
    settings: Settings,
    console: Console,
    stack: contextlib.AsyncExitStack,
    sandbox_port: int | None,
) -> Settings:
    from zixly.dev import demo
    from zixly.provisioning.runtimes.progress import install_n8n

    if settings.n8n_runtime != "process":
        raise ZixlyError("zixly dev --demo runs the demo tenant's n8n as a local process")
    await asyncio.to_thread(install_n8n, settings.n8n_version, console)
    port = sandbox_port if sandbox_port is not None else settings.port + 1
    sandbox = await stack.enter_async_context(demo.sandbox_for_demo(port))
    console.print(f"provider sandbox (Xero, HubSpot, Asana, Shopify) at {sandbox.url}")
    return demo.demo_settings(settings, sandbox)


async def _serve(
    settings: Settings,
    console: Console,
    endpoints: Endpoints,
    stack: contextlib.AsyncExitStack,
    services: Services,
    interrupts: Interrupts,
    *,
    demo: bool,
) -> int:
    from zixly.app import create_app

    config = uvicorn.Config(
        create_app(services),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        log_config=None,  # uvicorn's loggers go through ours (JSON, redacted)
        lifespan="on",
        ws="websockets-sansio",
    )
    server = _Server(config)
    interrupts.on_signal(lambda: setattr(server, "should_exit", True))
    serve = asyncio.create_task(server.serve())
    while not server.started and not serve.done():
        await asyncio.sleep(0.05)
    if serve.done():
        await serve
        return 1
    if demo:
        try:
            await _start_demo(settings, console, endpoints, stack, services, server)
        except BaseException:
            server.should_exit = True
            await serve
            raise
    _print_tokens(settings, console)
    console.print(f"[bold green]Zixly is up.[/] GraphiQL: {settings.base_url}/graphql")
    console.print(
        f"Health: {settings.base_url}/readyz   Metrics: {settings.base_url}/metrics   "
        f"Data: {settings.data_dir.resolve()}   Ctrl-C stops everything."
    )
    await serve
    return 0


async def _start_demo(
    settings: Settings,
    console: Console,
    endpoints: Endpoints,
    stack: contextlib.AsyncExitStack,
    services: Any,
    server: uvicorn.Server,
) -> None:
    """The worker, the demo tenant's n8n and its data; on the way out the instance is
    stopped (its data stays for the next start)."""
    from zixly.dev import demo

    await stack.enter_async_context(demo.in_process_worker(settings, endpoints))
    tenant = await demo.demo_tenant(services)
    stack.push_async_callback(demo.stop_instance, settings, services, tenant.tenant_id)
    task = asyncio.create_task(demo.run_demo(settings, services, console, tenant))
    while not task.done():  # Ctrl-C while the demo is still setting up stops it too
        if server.should_exit:
            task.cancel()
        await asyncio.wait({task}, timeout=0.2)
    try:
        await task
    except asyncio.CancelledError:
        if not server.should_exit:
            raise
        return
    secret = load_signing_secret(settings)
    admin = mint_token(
        settings, secret, email=demo.DEMO_ADMIN, subject=demo.DEMO_ADMIN, tenant=demo.DEMO_TENANT
    )
    console.print(
        "[bold]Open the demo tenant's n8n editor:[/] "
        f"{settings.base_url}/editor/{demo.DEMO_TENANT}/login?token={admin}",
        soft_wrap=True,
        highlight=False,
    )
