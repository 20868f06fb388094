"""``zixly keys generate|status|rotate``: the encryption keyring and its rotation.

Rotating a key, step by step:

1. ``zixly keys generate`` prints a new ``kid:base64key`` entry (the only place it is ever
   shown). Append it to ``ZIXLY_ENCRYPTION_KEYS`` (and set ``ZIXLY_ENCRYPTION_ACTIVE_KID`` to
   its kid, or leave that unset: the last entry is active), then restart the API and the
   worker. In the embedded default, ``zixly keys generate --add`` appends it to the dev key
   file instead and makes it active.
2. ``zixly keys rotate`` re-encrypts every stored value under the new key (``--enqueue``
   hands the same job to the worker). Reads keep working meanwhile.
3. ``zixly keys status`` shows what each key still protects; remove a key from the keyring
   only when it says the key protects nothing.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from rich.console import Console
from rich.table import Table

from zixly.cli.tenants import run_command, waiting_note
from zixly.container import Services
from zixly.core.queue import wait_for_job
from zixly.core.settings import Settings, get_settings
from zixly.keys.rotation import (
    ROTATION_JOB,
    BatchProgress,
    KeyRotator,
    KeyStatus,
    add_dev_key,
    key_status,
    new_entry,
    rotation_job_id,
)


def add_key_commands(sub: Any, console: Console) -> None:
    keys = sub.add_parser("keys", help="encryption keys: generate, status, rotate")
    ksub = keys.add_subparsers(dest="keys_command", required=True)

    generate = ksub.add_parser("generate", help="print a new kid:base64key entry")
    generate.add_argument("--kid", default=None, help="key id (default: date-based, random)")
    generate.add_argument(
        "--add",
        action="store_true",
        help="dev: append it to data_dir/encryption-keys (making it active), print only its id",
    )
    generate.set_defaults(func=lambda args: generate_command(args, get_settings(), console))

    status = ksub.add_parser("status", help="what each key protects; which may be removed")
    status.set_defaults(func=_sync(console), command=status_command)

    rotate = ksub.add_parser("rotate", help="re-encrypt every stored value with the active key")
    rotate.add_argument(
        "--batch-size",
        type=_positive,
        default=200,
        help="values re-encrypted per transaction (in this process; the worker's job uses "
        "its default)",
    )
    rotate.add_argument(
        "--enqueue",
        action="store_true",
        help="hand the job to the arq worker (`zixly worker`) and wait until it ends (exit 1 "
        "if values are left under other keys)",
    )
    rotate.add_argument(
        "--no-wait",
        action="store_true",
        help="like --enqueue, but return once the job is queued",
    )
    rotate.set_defaults(func=_sync(console), command=rotate_command)


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _sync(console: Console) -> Any:
    def run(args: argparse.Namespace) -> int:
        return asyncio.run(run_command(args.command, args, get_settings(), console))

    return run


def generate_command(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    if args.add:
        kid = add_dev_key(settings, args.kid)
        console.print(f"added key {kid} to the dev key file; it is now the active key")
        if settings.encryption_active_kid and settings.encryption_active_kid != kid:
            console.print(
                f"[yellow]note:[/yellow] ZIXLY_ENCRYPTION_ACTIVE_KID pins "
                f"{settings.encryption_active_kid}; unset it to use {kid}"
            )
        console.print("next: `zixly keys rotate`")
        return 0
    _, entry = new_entry(args.kid)
    print(entry)  # stdout only, for the operator to paste; never logged
    return 0


async def status_command(p: Services, _args: argparse.Namespace, console: Console) -> int:
    status = await key_status(p.db, p.keyring)
    print_status(console, status)
    return 1 if status.unreadable else 0


def print_status(console: Console, status: KeyStatus) -> None:
    table = Table("key id", "protects", "in keyring", "status")
    for usage in status.keys:
        table.add_row(
            usage.kid,
            str(usage.protects),
            "yes" if usage.configured else "NO",
            usage.advice,
        )
    console.print(table)
    console.print(f"active key: {status.active_kid}")
    if status.pending:
        console.print(f"{status.pending} value(s) not yet under the active key")
    retirable = [u.kid for u in status.keys if u.retirable]
    if retirable:
        console.print(f"may be removed from the keyring: {', '.join(retirable)}")
    else:
        console.print("no key may be removed yet")
    for usage in status.unreadable:
        console.print(
            f"[red]unreadable:[/red] {usage.protects} value(s) under key {usage.kid}, "
            "which is not in the keyring"
        )


async def rotate_command(p: Services, args: argparse.Namespace, console: Console) -> int:
    keyring = p.keyring
    if args.enqueue or args.no_wait:
        job_id = rotation_job_id(keyring)
        job = await p.queue.enqueue_job(ROTATION_JOB, _job_id=job_id)
        queued = f"job {job.job_id} queued" if job else "the same job is already queued"
        console.print(f"rotation to key {keyring.active_kid}: {queued} (run `zixly worker`)")
        if args.no_wait:
            return 0
        with console.status(f"the worker is re-encrypting (job {job_id})"):
            await wait_for_job(p.queue, job_id, no_worker=waiting_note(console, job_id))
        status = await key_status(p.db, keyring)
        print_status(console, status)
        return 0 if not (status.pending or status.unreadable) else 1

    async def show(step: BatchProgress) -> None:
        console.print(
            f"{step.column}: batch {step.batch}, {step.rotated} re-encrypted "
            f"({step.total_rotated} so far)",
            highlight=False,
        )

    report = await KeyRotator(p.db, keyring, batch_size=args.batch_size).rotate(progress=show)
    console.print(f"re-encrypted {report.rotated} value(s) with key {report.active_kid}")
    if report.undecryptable:
        console.print(
            f"[red]{report.undecryptable} value(s) do not decrypt in their place; left as they "
            "are (see the log for their rows)[/red]"
        )
    if report.changed_meanwhile:
        console.print(f"{report.changed_meanwhile} value(s) were replaced meanwhile; kept")
    status = await key_status(p.db, keyring)
    print_status(console, status)
    return 0 if not (status.pending or status.unreadable) else 1
