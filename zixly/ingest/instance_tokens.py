"""The ingest token a tenant's n8n instance holds: issued at deploy, rotated by staff.

The instance's token is the tenant's live token named ``n8n instance``. It is issued when
the template credential that carries it ("Zixly ingest token", placeholder source
``ingest:token``) is created in the instance; it replaces (revokes) any earlier instance
token then, since nothing else holds that one's plaintext: only its digest is stored.

Rotation must never leave the instance without a working token:

1. one transaction issues the new token (the old one is renamed aside, still live) and
   commits, so the new token works before anything holds it;
2. the new token is pushed into the instance's credential (``push``: every credential
   rendered from ``ingest:token`` is updated in place in n8n);
3. only when that succeeded is the old token revoked. If the push fails the new token is
   revoked instead and the old one gets its name back: nothing changed.

With no running instance there is nothing to push to (the push updates nothing) and the
old token is revoked at once; a credential created later renders a token of its own. An
instance that is only stopped keeps the revoked token in its credential: rotate again once
it runs.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

from sqlalchemy import Row, Table, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from zixly.core.errors import ConflictError, NotFoundError, UnavailableError, ValidationError
from zixly.core.logging import get_logger
from zixly.db.models import Tenant
from zixly.db.session import Database, Scope
from zixly.domain.audit import Actor, AuditEntry, write_audit
from zixly.ingest.tokens import MAX_NAME_LENGTH, IngestTokenRepository, IssuedToken
from zixly.security.crypto import Secret

log = get_logger("zixly.ingest")

STAFF = Scope(tenant_id=None, staff=True)
INSTANCE_TOKEN_NAME = "n8n instance"  # noqa: S105 - a token's display name
SOURCE = "ingest:token"  # the manifest placeholder source rendered as the instance's token
SYSTEM = Actor(tenant_id=None, user_id=None, request_id=None)

# Re-renders the instance's credentials that use the given sources; returns how many.
PushCredentials = Callable[[uuid.UUID, Mapping[str, str]], Awaitable[int]]

_TENANTS = cast(Table, Tenant.__table__)


def _aside_name(now: dt.datetime) -> str:
    return f"{INSTANCE_TOKEN_NAME} (replaced {now:%Y-%m-%d %H:%M:%S} UTC)"


def _audit(action: str, row: Row[Any], **details: Any) -> AuditEntry:
    return AuditEntry(
        action,
        "ingest_token",
        str(row.id),
        {"name": INSTANCE_TOKEN_NAME, "prefix": row.prefix} | details,
    )


async def _replace(
    session: AsyncSession, tenant_id: uuid.UUID, actor: Actor
) -> tuple[IssuedToken, list[Row[Any]]]:
    """Issue a new instance token; the earlier ones (locked) stay live, renamed aside."""
    tokens = IngestTokenRepository(session, tenant_id)
    old = await tokens.live_named(INSTANCE_TOKEN_NAME, for_update=True)
    now = dt.datetime.now(dt.UTC)
    for row in old:
        await tokens.rename(row.id, _aside_name(now))
    issued = await tokens.issue(INSTANCE_TOKEN_NAME, created_by=actor.user_id)
    return issued, old


async def issue_instance_token(db: Database, tenant_id: uuid.UUID) -> Secret:
    """A new instance token for ``tenant_id`` (at deploy), replacing the previous one."""
    async with db.transaction(STAFF) as session:
        issued, old = await _replace(session, tenant_id, SYSTEM)
        await IngestTokenRepository(session, tenant_id).revoke([row.id for row in old])
        await write_audit(
            session,
            SYSTEM,
            _audit("ingest_token.issued", issued.row, replaced=[str(r.id) for r in old]),
            tenant_id=tenant_id,
        )
    log.info("ingest.token_issued", tenant_id=str(tenant_id), prefix=issued.row.prefix)
    return issued.token


def instance_token_issuer(db: Database, tenant_id: uuid.UUID) -> Callable[[], Awaitable[str]]:
    """What template deployment calls for an ``ingest:token`` value."""

    async def issue() -> str:
        return (await issue_instance_token(db, tenant_id)).reveal()

    return issue


class InstanceTokenRotation:
    def __init__(self, db: Database, push: PushCredentials) -> None:
        self.db = db
        self.push = push

    async def rotate(self, tenant_id: uuid.UUID, actor: Actor) -> IssuedToken:
        """Issue a new instance token, put it into the instance, then revoke the old one.
        Returns the new token (its plaintext only for a caller that shows it once)."""
        async with self.db.transaction(STAFF) as session:
            if await self._tenant_missing(session, tenant_id):
                raise NotFoundError("no such tenant", field="tenantId")
            try:
                issued, old = await _replace(session, tenant_id, actor)
            except IntegrityError as exc:  # the live-name index: a concurrent rotation won
                raise ConflictError("the tenant's token is being rotated already") from exc
        try:
            # 0 when the tenant has no running instance (nothing holds the old token there)
            pushed = await self.push(tenant_id, {SOURCE: issued.token.reveal()})
        except Exception as exc:
            await self._undo(tenant_id, actor, issued, old)
            log.warning(
                "ingest.rotation_failed", tenant_id=str(tenant_id), error=type(exc).__name__
            )
            raise UnavailableError(
                "the new token could not be put into the tenant's n8n; it was revoked and the "
                "old token stays valid"
            ) from exc
        async with self.db.transaction(STAFF) as session:
            revoked = await IngestTokenRepository(session, tenant_id).revoke([r.id for r in old])
            entry = _audit(
                "ingest_token.rotated",
                issued.row,
                revoked=[str(r.id) for r in revoked],
                credentials_updated=pushed,
            )
            await write_audit(session, actor, entry, tenant_id=tenant_id)
        log.info(
            "ingest.token_rotated",
            tenant_id=str(tenant_id),
            prefix=issued.row.prefix,
            revoked=len(revoked),
            pushed_to_n8n=pushed,
        )
        return issued

    @staticmethod
    async def _tenant_missing(session: AsyncSession, tenant_id: uuid.UUID) -> bool:
        query = select(_TENANTS.c.id).where(_TENANTS.c.id == tenant_id)
        return (await session.execute(query)).first() is None

    async def _undo(
        self, tenant_id: uuid.UUID, actor: Actor, issued: IssuedToken, old: list[Row[Any]]
    ) -> None:
        async with self.db.transaction(STAFF) as session:
            tokens = IngestTokenRepository(session, tenant_id)
            await tokens.revoke([issued.row.id])  # first: the live name is free again
            for row in old:
                await tokens.rename(row.id, INSTANCE_TOKEN_NAME)
            await write_audit(
                session,
                actor,
                _audit("ingest_token.rotation_failed", issued.row),
                tenant_id=tenant_id,
            )


async def mint_token(db: Database, tenant_id: uuid.UUID, name: str, actor: Actor) -> IssuedToken:
    """A new live ingest token named ``name`` for a tenant (staff), audited without token
    material. The instance's own token is rotated (``InstanceTokenRotation``), not minted."""
    if not name.strip() or len(name) > MAX_NAME_LENGTH or "\x00" in name:
        raise ValidationError(f"a token name is 1 to {MAX_NAME_LENGTH} characters", field="name")
    if name == INSTANCE_TOKEN_NAME:
        raise ValidationError("the instance's token is rotated, not minted", field="name")
    async with db.transaction(STAFF) as session:
        if await InstanceTokenRotation._tenant_missing(session, tenant_id):
            raise NotFoundError("no such tenant", field="tenant")
        try:
            async with session.begin_nested():
                issued = await IngestTokenRepository(session, tenant_id).issue(
                    name, created_by=actor.user_id
                )
        except IntegrityError as exc:  # the live-name index
            raise ConflictError(f"the tenant has a live token named {name!r}") from exc
        entry = AuditEntry(
            "ingest_token.minted",
            "ingest_token",
            str(issued.row.id),
            {"name": name, "prefix": issued.row.prefix},
        )
        await write_audit(session, actor, entry, tenant_id=tenant_id)
    log.info("ingest.token_minted", tenant_id=str(tenant_id), prefix=issued.row.prefix)
    return issued


async def revoke_all(db: Database, tenant_id: uuid.UUID, *, reason: str) -> int:
    """Revoke every live ingest token of a tenant (deprovisioning: nothing may post for it
    any more); audited; returns how many."""
    async with db.transaction(STAFF) as session:
        tokens = IngestTokenRepository(session, tenant_id)
        live = await tokens.listing(include_revoked=False, limit=10_000)
        revoked = await tokens.revoke([row.id for row in live])
        if revoked:
            entry = AuditEntry(
                "ingest_token.revoked_all",
                "tenant",
                str(tenant_id),
                {"reason": reason, "tokens": [str(row.id) for row in revoked]},
            )
            await write_audit(session, SYSTEM, entry, tenant_id=tenant_id)
    log.info("ingest.tokens_revoked", tenant_id=str(tenant_id), reason=reason, revoked=len(revoked))
    return len(revoked)
