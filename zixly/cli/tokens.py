"""``zixly tenant ingest-token mint|rotate <tenant>``: a tenant's ingest tokens from a staff
terminal.

``mint`` issues a new named token (for a tenant's own scripts; never the instance's).
``rotate`` replaces the instance's token the way the staff ``rotateIngestToken`` mutation
does (zixly.ingest.instance_tokens: the new token is pushed into the instance's n8n
credential before the old one is revoked). Either prints the new token once, alone on
stdout (the rest goes to the console, stderr); only its digest is stored.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.console import Console

from zixly.domain.audit import Actor
from zixly.ingest.instance_tokens import mint_token
from zixly.provisioning.control import resolve_tenant
from zixly.provisioning.credentials import CredentialDeps, token_rotation

if TYPE_CHECKING:
    from zixly.cli.tenants import Command
    from zixly.container import Services

CLI_ACTOR = Actor(tenant_id=None, user_id=None, request_id="cli")
MINTED_NAME = "minted by staff"


def add_ingest_token_commands(
    tsub: Any, console: Console, sync: Callable[[Console, Command], Any]
) -> None:
    tokens = tsub.add_parser("ingest-token", help="mint or rotate a tenant's ingest token")
    ksub = tokens.add_subparsers(dest="token_command", required=True)

    mint = ksub.add_parser("mint", help="issue a new named token; printed once")
    mint.add_argument("tenant", help="slug or id")
    mint.add_argument("--name", default=MINTED_NAME, help="the token's name (unique when live)")
    mint.set_defaults(func=sync(console, _mint), command=_mint)

    rotate = ksub.add_parser(
        "rotate",
        help="replace the instance's token: pushed into its n8n credential, then the old one "
        "revoked; printed once",
    )
    rotate.add_argument("tenant", help="slug or id")
    rotate.set_defaults(func=sync(console, _rotate), command=_rotate)


async def _mint(p: Services, args: argparse.Namespace, console: Console) -> int:
    tenant_id = await resolve_tenant(p.db, args.tenant)
    issued = await mint_token(p.db, tenant_id, args.name, CLI_ACTOR)
    console.print(
        f"minted ingest token {issued.row.prefix}… ({args.name!r}) for {args.tenant}; "
        "it is shown once, below"
    )
    print(issued.token.reveal(), flush=True)  # stdout only; never logged
    return 0


async def _rotate(p: Services, args: argparse.Namespace, console: Console) -> int:
    tenant_id = await resolve_tenant(p.db, args.tenant)
    deps = CredentialDeps(p.db, p.keyring, p.http, p.settings.ingest_base_url)
    issued = await token_rotation(deps).rotate(tenant_id, CLI_ACTOR)
    console.print(
        f"rotated the instance's ingest token of {args.tenant}: now {issued.row.prefix}…, in "
        "its n8n credential; the old one is revoked. Shown once, below"
    )
    print(issued.token.reveal(), flush=True)
    return 0
