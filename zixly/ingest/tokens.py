"""Ingest tokens: what a tenant's n8n workflows present to the ingest endpoint.

A token is ``zik_`` followed by 43 URL-safe characters (``secrets.token_urlsafe(32)``: 256
random bits). Only its SHA-256 is stored, with a short display prefix (``zik_`` and the
next 8 characters) so people can tell tokens apart. A plain digest is enough: the token is
uniformly random and far too long to guess, so there is nothing for a slow, salted hash to
protect; and a digest can be looked up by an index, which a salted hash could not.

Authentication needs no comparison in Python at all: the digest of what was presented is
looked up through the SECURITY DEFINER function ``zixly_ingest_principal`` (the application
role, before any tenant is set), which answers only for a live token. Unknown, revoked and
expired tokens take the same path and get the same answer. What follows runs with the
token's tenant set, under row-level security.

``last_used_at`` is written at most once a minute per token, and never waits: a request
whose token row is locked (another request of the same token is writing it) skips the
update rather than queue behind that transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Row, Table, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from zixly.core.errors import NotFoundError
from zixly.db.models import IngestToken
from zixly.domain.audit import Actor, AuditEntry, write_audit
from zixly.security.crypto import Secret

TOKEN_PREFIX = "zik_"  # noqa: S105 - the format's fixed prefix
TOKEN_PATTERN = re.compile(r"^zik_[A-Za-z0-9_-]{43}$")
DISPLAY_LENGTH = len(TOKEN_PREFIX) + 8
MAX_NAME_LENGTH = 100
TOUCH_EVERY = dt.timedelta(minutes=1)

T = cast(Table, IngestToken.__table__)
COLUMNS: tuple[Any, ...] = (
    T.c.id,
    T.c.tenant_id,
    T.c.name,
    T.c.prefix,
    T.c.created_by,
    T.c.created_at,
    T.c.last_used_at,
    T.c.expires_at,
    T.c.revoked_at,
)

_PRINCIPAL = text("SELECT token_id, tenant_id, tenant_slug FROM zixly_ingest_principal(:digest)")
# Throttled, and never waits for a lock held by a concurrent request of the same token.
_TOUCH = text(
    "UPDATE ingest_tokens SET last_used_at = now() WHERE id = ("
    " SELECT id FROM ingest_tokens WHERE id = :id"
    " AND (last_used_at IS NULL OR last_used_at < now() - make_interval(secs => :every))"
    " FOR UPDATE SKIP LOCKED)"
)


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def well_formed(token: str) -> bool:
    return TOKEN_PATTERN.fullmatch(token) is not None


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def display_prefix(token: str) -> str:
    return token[:DISPLAY_LENGTH]


@dataclass(frozen=True)
class IngestPrincipal:
    """Who an ingest request acts for: a live token and its tenant."""

    token_id: uuid.UUID
    tenant_id: uuid.UUID
    tenant_slug: str


@dataclass(frozen=True)
class IssuedToken:
    """A freshly issued token: its row, and the plaintext (shown nowhere, pushed to n8n)."""

    row: Row[Any]
    token: Secret


async def resolve(session: AsyncSession, token: str) -> IngestPrincipal | None:
    """The live token's principal, or None (unknown, revoked, expired: alike)."""
    row = (await session.execute(_PRINCIPAL, {"digest": token_digest(token)})).first()
    if row is None:
        return None
    return IngestPrincipal(row.token_id, row.tenant_id, row.tenant_slug)


async def touch(session: AsyncSession, token_id: uuid.UUID) -> None:
    """Record the token's use (at most once per ``TOUCH_EVERY``)."""
    await session.execute(_TOUCH, {"id": token_id, "every": TOUCH_EVERY.total_seconds()})


class IngestTokenRepository:
    """Token rows. ``tenant_id`` names the tenant every statement is limited to; under the
    application role RLS limits it to the scope's tenant as well."""

    def __init__(self, session: AsyncSession, tenant_id: uuid.UUID) -> None:
        self.session = session
        self.tenant_id = tenant_id

    async def listing(self, *, include_revoked: bool, limit: int) -> list[Row[Any]]:
        query = select(*COLUMNS).where(T.c.tenant_id == self.tenant_id)
        if not include_revoked:
            query = query.where(T.c.revoked_at.is_(None))
        query = query.order_by(T.c.created_at.desc(), T.c.id).limit(limit)
        return list((await self.session.execute(query)).all())

    async def get(self, token_id: uuid.UUID, *, for_update: bool = False) -> Row[Any] | None:
        query = select(*COLUMNS).where(T.c.tenant_id == self.tenant_id, T.c.id == token_id)
        if for_update:
            query = query.with_for_update()
        return (await self.session.execute(query)).first()

    async def live_named(self, name: str, *, for_update: bool = False) -> list[Row[Any]]:
        query = select(*COLUMNS).where(
            T.c.tenant_id == self.tenant_id, T.c.name == name, T.c.revoked_at.is_(None)
        )
        if for_update:
            query = query.with_for_update()
        return list((await self.session.execute(query)).all())

    async def issue(
        self,
        name: str,
        *,
        created_by: uuid.UUID | None = None,
        expires_at: dt.datetime | None = None,
    ) -> IssuedToken:
        token = new_token()
        statement = (
            insert(T)
            .values(
                tenant_id=self.tenant_id,
                name=name,
                prefix=display_prefix(token),
                token_hash=token_digest(token),
                created_by=created_by,
                expires_at=expires_at,
            )
            .returning(*COLUMNS)
        )
        row = (await self.session.execute(statement)).one()
        return IssuedToken(row, Secret(token))

    async def revoke(self, token_ids: list[uuid.UUID]) -> list[Row[Any]]:
        """Revoke the live ones among ``token_ids``; returns the rows it revoked."""
        if not token_ids:
            return []
        statement = (
            update(T)
            .where(
                T.c.tenant_id == self.tenant_id,
                T.c.id.in_(token_ids),
                T.c.revoked_at.is_(None),
            )
            .values(revoked_at=text("now()"))
            .returning(*COLUMNS)
        )
        return list((await self.session.execute(statement)).all())

    async def rename(self, token_id: uuid.UUID, name: str) -> None:
        await self.session.execute(
            update(T).where(T.c.tenant_id == self.tenant_id, T.c.id == token_id).values(name=name)
        )


class IngestTokenAdmin:
    """A tenant ADMIN's token operations, each audited (never with token material)."""

    def __init__(self, session: AsyncSession, actor: Actor) -> None:
        if actor.tenant_id is None:
            raise ValueError("an admin acts in a tenant")
        self.session = session
        self.actor = actor
        self.tokens = IngestTokenRepository(session, actor.tenant_id)

    async def revoke(self, token_id: uuid.UUID) -> Row[Any]:
        """Revoke one of the tenant's tokens (already revoked: returned as it is). Another
        tenant's token is invisible (RLS and the tenant filter): NOT_FOUND, like no token."""
        row = await self.tokens.get(token_id, for_update=True)
        if row is None:
            raise NotFoundError("no ingest token with this id", field="id")
        if row.revoked_at is not None:
            return row
        [revoked] = await self.tokens.revoke([token_id])
        await write_audit(
            self.session,
            self.actor,
            AuditEntry(
                "ingest_token.revoked",
                "ingest_token",
                str(token_id),
                {"name": row.name, "prefix": row.prefix},
            ),
        )
        return revoked
