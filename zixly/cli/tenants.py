"""``zixly tenant create|list|status|provision|stop|start|upgrade|deprovision|export|ingest-token``.

Platform work from a staff terminal, against the configured database and Redis (the
embedded ones when none is configured). Operations run in this process by default, calling
the lifecycle directly (no worker needed) and printing each step as the lifecycle publishes
it; ``--enqueue`` records the request and hands the job to the arq worker instead, then
follows the same events until the job ends (exit 1 unless the instance settled where it was
asked to), and ``--no-wait`` returns as soon as the job is queued.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from zixly.cli.tokens import CLI_ACTOR, add_ingest_token_commands
from zixly.container import Services
from zixly.core.errors import NotFoundError, ValidationError
from zixly.core.queue import wait_for_job
from zixly.core.settings import Settings, get_settings
from zixly.domain.tenants import SLUG_PATTERN, create_tenant
from zixly.provisioning.control import (
    all_tenants,
    provision_templates,
    request_and_enqueue,
    resolve_tenant,
)
from zixly.provisioning.enqueue import operation_job_id
from zixly.provisioning.final_exports import final_export
from zixly.provisioning.instances import InstanceRepository, InstanceRow
from zixly.provisioning.lifecycle import InstanceLifecycle
from zixly.provisioning.n8n.bundle_export import n8n_workflows
from zixly.provisioning.operations import STAFF, Operation, Template
from zixly.provisioning.runtimes.base import InstanceRuntime
from zixly.provisioning.templates import REF_PREFIX, bundled_manifest, template_id
from zixly.provisioning.watch import follow, settled

OPERATIONS = {
    "provision": Operation.PROVISION,
    "stop": Operation.STOP,
    "start": Operation.START,
    "upgrade": Operation.UPGRADE,
    "deprovision": Operation.DEPROVISION,
}


@asynccontextmanager
async def platform(
    settings: Settings, runtime: InstanceRuntime | None = None
) -> AsyncIterator[Services]:
    """The platform's object graph (``zixly.container``) over the configured or embedded
    stores, for one command."""
    from zixly.embedded.running import running_stack

    async with running_stack(settings) as endpoints:
        services = Services.build(
            settings,
            database_url=endpoints.database_url,
            redis_url=endpoints.redis_url,
            runtime=runtime,
            http_timeout=30.0,
        )
        try:
            yield services
        finally:
            await services.close()


def add_tenant_commands(sub: Any, console: Console) -> None:
    tenant = sub.add_parser("tenant", help="tenants and their n8n instances (platform staff)")
    tsub = tenant.add_subparsers(dest="tenant_command", required=True)

    create = tsub.add_parser("create", help="create a tenant")
    create.add_argument("slug", help="2 to 63 lowercase letters, digits or '-'")
    create.add_argument("--name", required=True, help="the business's name")
    create.add_argument("--industry", default=None, help="free text, optional")
    create.set_defaults(func=_sync(console, _create), command=_create)

    listing = tsub.add_parser("list", help="every tenant with its instance's state")
    listing.set_defaults(func=_sync(console, _list), command=_list)

    status = tsub.add_parser("status", help="a tenant's instance and its recent events")
    status.add_argument("tenant", help="slug or id")
    status.add_argument("--events", type=int, default=10, help="how many recent events")
    status.set_defaults(func=_sync(console, _status), command=_status)

    for name, operation in OPERATIONS.items():
        command = tsub.add_parser(name, help=f"{name} the tenant's n8n instance")
        command.add_argument("tenant", help="slug or id")
        command.add_argument(
            "--enqueue",
            action="store_true",
            help="hand the job to the arq worker (`zixly worker`) and follow its progress "
            "until it ends (exit 1 if the instance did not get there)",
        )
        command.add_argument(
            "--no-wait",
            action="store_true",
            help="like --enqueue, but return once the job is queued, printing its id",
        )
        if operation is Operation.PROVISION:
            command.add_argument(
                "--version", help="n8n version of a new instance (default ZIXLY_N8N_VERSION)"
            )
        if operation is Operation.UPGRADE:
            command.add_argument(
                "--version",
                required=True,
                help="the n8n version to move to (installed: `zixly n8n install --version V`); "
                "rolled back if it does not come up healthy",
            )
        if operation is Operation.PROVISION:
            chosen = command.add_mutually_exclusive_group()
            chosen.add_argument(
                "--template",
                action="append",
                default=[],
                type=template_argument,
                metavar="TEMPLATE",
                help="a bundled template by id (`xero-profit-and-loss` or "
                "`manifest:xero-profit-and-loss`; the ids are in n8n-workflows/manifest.json) "
                "or a workflow JSON file (an n8n export of one workflow); repeatable; default: "
                "the plan's default templates",
            )
            chosen.add_argument("--no-templates", action="store_true", help="deploy no templates")
        command.set_defaults(func=_sync(console, _operate), command=_operate, operation=operation)

    export = tsub.add_parser(
        "export", help="write the tenant's workflows to a file `n8n import:workflow` takes"
    )
    export.add_argument("tenant", help="slug or id")
    export.add_argument("--output", "-o", required=True, help="a file, or - for stdout")
    export.add_argument(
        "--id", action="append", default=None, help="only this workflow id (repeatable)"
    )
    export.add_argument(
        "--final",
        action="store_true",
        help="the export kept from the deprovisioning (while retained), not the live instance",
    )
    export.set_defaults(func=_sync(console, _export), command=_export)
    add_ingest_token_commands(tsub, console, _sync)


Command = Callable[[Services, argparse.Namespace, Console], Awaitable[int]]


def template_argument(value: str) -> str:
    """``--template``: ``manifest:<id>``, a bare manifest id, or a workflow JSON file."""
    ids = [spec.id for spec in bundled_manifest().templates]
    if template_id(value) is not None or Path(value).is_file():
        return value
    if value in ids:
        return REF_PREFIX + value
    raise argparse.ArgumentTypeError(
        f"{value!r} is neither a workflow JSON file nor a bundled template id ({', '.join(ids)})"
    )


def _sync(console: Console, command: Command) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return asyncio.run(run_command(command, args, get_settings(), console))

    return run


async def run_command(
    command: Command,
    args: argparse.Namespace,
    settings: Settings,
    console: Console,
    *,
    runtime: InstanceRuntime | None = None,
) -> int:
    async with platform(settings, runtime) as built:
        return await command(built, args, console)


async def _create(p: Services, args: argparse.Namespace, console: Console) -> int:
    if not SLUG_PATTERN.fullmatch(args.slug):
        raise ValidationError("the slug must be 2 to 63 lowercase letters, digits or '-'")
    async with p.db.transaction(STAFF) as session:
        row = await create_tenant(
            session, CLI_ACTOR, slug=args.slug, name=args.name, industry=args.industry
        )
    console.print(f"created tenant [bold]{row.slug}[/bold] {row.id}")
    return 0


async def _list(p: Services, _args: argparse.Namespace, console: Console) -> int:
    async with p.db.transaction(STAFF) as session:
        tenants = await all_tenants(session)
        instances = {row.tenant_id: row for row in await InstanceRepository(session).all()}
    table = Table("slug", "id", "instance", "desired", "version", "url")
    for tenant in tenants:
        row = instances.get(tenant.id)
        table.add_row(
            tenant.slug,
            str(tenant.id),
            row.actual_state.value if row else "-",
            row.desired_state.value if row else "-",
            row.version if row else "-",
            (row.editor_url or "-") if row else "-",
        )
    console.print(table)
    return 0


async def _status(p: Services, args: argparse.Namespace, console: Console) -> int:
    tenant_id = await resolve_tenant(p.db, args.tenant)
    async with p.db.transaction(STAFF) as session:
        repo = InstanceRepository(session)
        row = await repo.get(tenant_id)
        events = (await repo.events(tenant_id))[-args.events :] if args.events > 0 else []
    if row is None:
        console.print(f"tenant {args.tenant} has no n8n instance")
        return 1
    _print_row(console, row)
    for event in events:
        step = f" [{event.step.value}]" if event.step else ""
        console.print(f"  {event.at:%Y-%m-%d %H:%M:%S} {event.kind.value}{step} {event.message}")
    return 0


async def _operate(p: Services, args: argparse.Namespace, console: Console) -> int:
    operation: Operation = args.operation
    tenant_id = await resolve_tenant(p.db, args.tenant)
    lifecycle = p.lifecycle
    version = getattr(args, "version", None)
    templates = getattr(args, "template", None) or None
    if getattr(args, "no_templates", False):
        templates = []
    if args.enqueue or args.no_wait:
        return await _enqueue(p, args, console, tenant_id, version, templates)
    if operation is Operation.PROVISION:
        async with p.db.transaction(STAFF) as session:
            templates = await provision_templates(session, tenant_id, templates)
    call = _call(lifecycle, operation, tenant_id, args, templates)
    row = await follow(p.redis, tenant_id, console, call)
    _print_row(console, row)
    return 0 if row.last_error is None else 1


async def _enqueue(
    p: Services,
    args: argparse.Namespace,
    console: Console,
    tenant_id: uuid.UUID,
    version: str | None,
    templates: Sequence[Template] | None,
) -> int:
    """Hand the operation to the worker and, unless ``--no-wait``, follow its events until
    the job ends: exit 0 when the instance settled where it was asked to, 1 otherwise."""
    operation: Operation = args.operation

    async def queued() -> InstanceRow:
        row, job = await request_and_enqueue(
            p.lifecycle,
            p.db.transaction(STAFF),
            p.queue,
            tenant_id,
            operation,
            version=version,
            templates=templates,
            plan_defaults=True,
        )
        if job is not None:
            console.print(
                f"{operation.value} requested; job {job.job_id} queued (run `zixly worker`)",
                highlight=False,
            )
            job_id = job.job_id
        else:
            job_id = operation_job_id(operation, tenant_id, version=version)
            console.print(
                f"{operation.value} requested; the same job ({job_id}) is already queued or "
                "running",
                highlight=False,
            )
        if args.no_wait:
            console.print("not waiting (--no-wait): `zixly tenant status` shows how it goes")
            return row
        await wait_for_job(p.queue, job_id, no_worker=waiting_note(console, job_id))
        async with p.db.transaction(STAFF) as session:
            done = await InstanceRepository(session).get(tenant_id)
        return done or row

    if args.no_wait:
        row = await queued()
        _print_row(console, row)
        return 0
    row = await follow(p.redis, tenant_id, console, queued())
    _print_row(console, row)
    if not settled(row):
        console.print(f"[red]the job ended with the instance {row.actual_state.value}[/red]")
        return 1
    return 0


def _call(
    lifecycle: InstanceLifecycle,
    operation: Operation,
    tenant_id: uuid.UUID,
    args: Any,
    templates: Sequence[Template] | None,
) -> Awaitable[InstanceRow]:
    if operation is Operation.PROVISION:
        return lifecycle.provision(tenant_id, version=args.version, templates=templates)
    if operation is Operation.UPGRADE:
        return lifecycle.upgrade(tenant_id, args.version)
    methods = {
        Operation.STOP: lifecycle.stop,
        Operation.START: lifecycle.start,
        Operation.DEPROVISION: lifecycle.deprovision,
    }
    return methods[operation](tenant_id)


async def _export(p: Services, args: argparse.Namespace, console: Console) -> int:
    tenant_id = await resolve_tenant(p.db, args.tenant)
    if args.final:
        async with p.db.transaction(STAFF) as session:
            kept = await final_export(session, tenant_id, p.settings.final_export_retention_days)
        if kept is None:
            raise NotFoundError(f"tenant {args.tenant} has no final export (or it expired)")
        bundle = kept.bundle
        ids = set(args.id or [])
        note = f" (final export of {kept.created_at:%Y-%m-%d %H:%M} UTC, kept until "
        note += f"{kept.expires_at:%Y-%m-%d %H:%M} UTC)"
    else:
        n8n = p.tenant_n8n
        bundle = await n8n.export(tenant_id, args.id)
        ids, note = set(), ""
    workflows = [w for w in n8n_workflows(bundle) if not ids or str(w.get("id")) in ids]
    text = json.dumps(workflows, indent=2) + "\n"
    if args.output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        console.print(f"wrote {len(workflows)} workflow(s) to stdout{note}")
    else:
        await asyncio.to_thread(Path(args.output).write_text, text)
        console.print(f"wrote {len(workflows)} workflow(s) to {args.output}{note}")
    return 0


def _print_row(console: Console, row: InstanceRow) -> None:
    step = row.step.value if row.step else "-"
    console.print(
        f"instance {row.actual_state.value} (desired {row.desired_state.value}, step {step}, "
        f"n8n {row.version}) {row.editor_url or ''}".rstrip()
    )
    if row.last_error:
        console.print(f"[red]last error:[/red] {row.last_error}")


def waiting_note(console: Console, job_id: str) -> Callable[[], None]:
    """What ``wait_for_job`` says when no worker takes the job."""
    return lambda: console.print(
        f"job {job_id} is still waiting for a worker (is `zixly worker` running?); Ctrl-C "
        "stops waiting, the job stays queued",
        highlight=False,
    )
