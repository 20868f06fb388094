"""Encryption key rotation: which key protects how many stored values, and re-encryption.

Every ciphertext column is listed in ``COLUMNS`` with the binding its values are sealed to
(tenant, table, row, field). ``status`` counts the stored values per key id in SQL (the key
id is the second dot-separated part of a value); ``rotate`` re-encrypts, in batches of one
transaction each, every value whose key id is a known key other than the active one.

A batch runs as the staff role (the explicit cross-tenant policy), takes the oldest rows by
primary key with ``FOR UPDATE SKIP LOCKED`` (a row a writer holds is left for the next run),
decrypts with the value's own key and encrypts with the active key under THE SAME binding,
and writes compare-and-set on the old ciphertext: a value a writer replaced meanwhile is
never overwritten. Reads keep working throughout because the old key stays in the keyring;
a key may leave the keyring only once ``status`` says it protects nothing.

Values under a key id the keyring does not hold are reported as unreadable and left as they
are; so are values that do not decrypt in their place (tampered, or copied from elsewhere).
Neither plaintexts nor ciphertexts are ever logged or printed: only counts, key ids and row ids.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import (
    Column,
    Table,
    and_,
    func,
    literal,
    literal_column,
    select,
    union_all,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from zixly.alerts.config import webhook_binding
from zixly.core.logging import get_logger
from zixly.core.settings import Settings
from zixly.db.models import AlertSettings, Integration, N8nInstance
from zixly.db.session import Database, Scope
from zixly.providers.tokens import integration_binding
from zixly.provisioning.secrets import SecretField
from zixly.provisioning.secrets import binding as instance_binding
from zixly.security.crypto import (
    KEYS_FILE,
    Binding,
    DecryptionError,
    Keyring,
    KeyringError,
    generate_key,
    key_entry,
)

log = get_logger("zixly.keys.rotation")

STAFF = Scope(tenant_id=None, staff=True)
BATCH_SIZE = 200
ROTATION_JOB = "rotate_encryption_keys"
ROTATION_TIMEOUT_SECONDS = 3600


# --- where ciphertexts live ------------------------------------------------------------------


@dataclass(frozen=True)
class SecretColumn:
    """One ciphertext column and how its values are bound."""

    table: Table
    column: str
    key: str  # the primary key column (one column in every table listed)
    bind: Callable[[Any, uuid.UUID], Binding]  # (primary key, tenant id) -> binding

    @property
    def name(self) -> str:
        return f"{self.table.name}.{self.column}"

    @property
    def value(self) -> Column[Any]:
        return self.table.c[self.column]

    @property
    def pk(self) -> Column[Any]:
        return self.table.c[self.key]

    def kid(self) -> Any:
        # Constants inline, not bound: GROUP BY must repeat the very same expression.
        return func.split_part(self.value, literal_column("'.'"), literal_column("2"))


def _integration(token: str) -> SecretColumn:
    return SecretColumn(
        cast(Table, Integration.__table__),
        f"{token}_ciphertext",
        "id",
        lambda pk, tenant: integration_binding(tenant, pk, token),
    )


def _instance(secret: SecretField) -> SecretColumn:
    return SecretColumn(
        cast(Table, N8nInstance.__table__),
        secret.column,
        "tenant_id",
        lambda _pk, tenant: instance_binding(tenant, secret),
    )


def _alert_webhook() -> SecretColumn:
    return SecretColumn(
        cast(Table, AlertSettings.__table__),
        "webhook_url_ciphertext",
        "tenant_id",
        lambda _pk, tenant: webhook_binding(tenant),
    )


COLUMNS: tuple[SecretColumn, ...] = (
    _integration("access_token"),
    _integration("refresh_token"),
    *(_instance(secret) for secret in SecretField),
    _alert_webhook(),
)


# --- status -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyUsage:
    kid: str
    columns: dict[str, int]  # column name -> stored values under this key
    configured: bool
    active: bool

    @property
    def protects(self) -> int:
        return sum(self.columns.values())

    @property
    def retirable(self) -> bool:
        """In the keyring, not active, and nothing stored depends on it."""
        return self.configured and not self.active and self.protects == 0

    @property
    def advice(self) -> str:
        if not self.configured:
            return "UNREADABLE: not in the keyring (add the key back, or re-enter these secrets)"
        if self.active:
            return "active: new values are encrypted with it"
        if self.protects:
            return "still in use: run `zixly keys rotate`, then it may be removed"
        return "protects nothing: may be removed from the keyring"


@dataclass(frozen=True)
class KeyStatus:
    active_kid: str
    keys: list[KeyUsage]

    def usage(self, kid: str) -> KeyUsage:
        for usage in self.keys:
            if usage.kid == kid:
                return usage
        raise KeyError(kid)

    @property
    def unreadable(self) -> list[KeyUsage]:
        return [usage for usage in self.keys if not usage.configured]

    @property
    def pending(self) -> int:
        """Readable values not yet under the active key."""
        return sum(u.protects for u in self.keys if u.configured and not u.active)

    def as_dict(self) -> dict[str, Any]:
        return {
            "active_kid": self.active_kid,
            "keys": [
                {
                    "kid": u.kid,
                    "protects": u.protects,
                    "columns": u.columns,
                    "configured": u.configured,
                    "active": u.active,
                    "retirable": u.retirable,
                }
                for u in self.keys
            ],
        }


async def key_status(db: Database, keyring: Keyring) -> KeyStatus:
    """Stored values per key id across every ciphertext column (counted in SQL)."""
    counts = union_all(
        *(
            select(
                literal(column.name).label("column"),
                column.kid().label("kid"),
                func.count().label("values"),
            )
            .where(column.value.is_not(None))
            .group_by(column.kid())
            for column in COLUMNS
        )
    )
    async with db.transaction(STAFF) as session:
        rows = (await session.execute(select(counts.subquery()))).all()
    found: dict[str, dict[str, int]] = {kid: {} for kid in keyring.keys}
    for row in rows:
        found.setdefault(row.kid, {})[row.column] = int(row.values)
    keys = [
        KeyUsage(
            kid=kid,
            columns={c.name: per_column.get(c.name, 0) for c in COLUMNS},
            configured=kid in keyring.keys,
            active=kid == keyring.active_kid,
        )
        for kid, per_column in sorted(found.items())
    ]
    return KeyStatus(keyring.active_kid, keys)


# --- rotation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchProgress:
    column: str
    batch: int  # of this column, from 1
    rotated: int  # in this batch
    total_rotated: int  # in this run so far


@dataclass
class RotationReport:
    active_kid: str
    rotated: int = 0
    batches: int = 0
    undecryptable: int = 0  # known key, but does not open in its place: left as is
    changed_meanwhile: int = 0  # a writer replaced the value first: theirs is kept
    complete: bool = True  # False when stopped by ``max_batches``
    per_column: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "active_kid": self.active_kid,
            "rotated": self.rotated,
            "batches": self.batches,
            "undecryptable": self.undecryptable,
            "changed_meanwhile": self.changed_meanwhile,
            "complete": self.complete,
            "per_column": self.per_column,
        }


Progress = Callable[[BatchProgress], Awaitable[None]]


class KeyRotator:
    def __init__(self, db: Database, keyring: Keyring, *, batch_size: int = BATCH_SIZE) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        self.db = db
        self.keyring = keyring
        self.batch_size = batch_size
        # Known keys other than the active one: values under them can and should move.
        self.old_kids = sorted(kid for kid in keyring.keys if kid != keyring.active_kid)

    async def rotate(
        self, *, max_batches: int | None = None, progress: Progress | None = None
    ) -> RotationReport:
        """Re-encrypt everything under an old known key. Resumable: a later run picks up
        whatever is still not under the active key."""
        report = RotationReport(self.keyring.active_kid)
        for column in COLUMNS:
            report.per_column[column.name] = 0
            after: Any = None
            batch = 0
            while self.old_kids:
                if max_batches is not None and report.batches >= max_batches:
                    report.complete = False
                    return report
                rotated, after = await self._batch(column, after, report)
                if after is None:
                    break
                batch += 1
                report.batches += 1
                report.rotated += rotated
                report.per_column[column.name] += rotated
                if progress is not None:
                    await progress(BatchProgress(column.name, batch, rotated, report.rotated))
        log.info("keys.rotated", **report.as_dict())
        return report

    async def _batch(
        self, column: SecretColumn, after: Any, report: RotationReport
    ) -> tuple[int, Any]:
        """One transaction; returns (values rotated, last primary key seen or None)."""
        table = column.table
        query = (
            select(column.pk, table.c.tenant_id, column.value)
            .where(column.value.is_not(None), column.kid().in_(self.old_kids))
            .order_by(column.pk)
            .limit(self.batch_size)
            .with_for_update(skip_locked=True)
        )
        if after is not None:  # this run's position: undecryptable rows are not retried
            query = query.where(column.pk > after)
        async with self.db.transaction(STAFF) as session:
            rows = (await session.execute(query)).all()
            if not rows:
                return 0, None
            rotated = 0
            for pk, tenant_id, old in rows:
                new = self._reencrypt(column, pk, tenant_id, old)
                if new is None:
                    report.undecryptable += 1
                elif await _compare_and_set(session, column, pk, old, new):
                    rotated += 1
                else:
                    report.changed_meanwhile += 1
        return rotated, rows[-1][0]

    def _reencrypt(
        self, column: SecretColumn, pk: Any, tenant_id: uuid.UUID, old: str
    ) -> str | None:
        place = column.bind(pk, tenant_id)
        try:
            plaintext = self.keyring.decrypt(old, place)
        except DecryptionError as error:
            log.warning(
                "keys.rotate.undecryptable", column=column.name, row=str(pk), code=error.code
            )
            return None
        return self.keyring.encrypt(plaintext, place)


async def _compare_and_set(
    session: AsyncSession, column: SecretColumn, pk: Any, old: str, new: str
) -> bool:
    # ``lock_version`` of an instance stays: the same secret under another key is not a
    # state change, and bumping it would fail the lifecycle's concurrent writes for nothing.
    result = await session.execute(
        update(column.table)
        .where(and_(column.pk == pk, column.value == old))
        .values({column.column: new})
    )
    return bool(getattr(result, "rowcount", 0))


# --- the arq job ------------------------------------------------------------------------------


def rotation_job_id(keyring: Keyring) -> str:
    """One rotation towards a given active key at a time."""
    return f"{ROTATION_JOB}:{keyring.active_kid}"


async def rotate_encryption_keys(ctx: dict[str, Any]) -> dict[str, Any]:
    """arq job: rotate every stored value to the worker's active key."""
    rotator = KeyRotator(ctx["db"], ctx["keyring"])  # the worker's (zixly.container)
    return (await rotator.rotate()).as_dict()


# --- new keys ---------------------------------------------------------------------------------


def new_kid(now: datetime | None = None) -> str:
    """Date-based and unique: ``k20250612-3fa9c1``."""
    return f"k{(now or datetime.now(UTC)):%Y%m%d}-{secrets.token_hex(3)}"


def new_entry(kid: str | None = None) -> tuple[str, str]:
    """(kid, ``kid:base64key``) for a fresh key. The entry is the secret: print it once to
    the operator, never log it."""
    kid = kid or new_kid()
    entry = key_entry(kid, generate_key())
    Keyring.parse(entry)  # the kid's shape
    return kid, entry


def add_dev_key(settings: Settings, kid: str | None = None) -> str:
    """Append a fresh key to the dev key file, which makes it active; returns its kid."""
    if settings.encryption_keys is not None:
        raise KeyringError(
            "keys come from ZIXLY_ENCRYPTION_KEYS here: run `zixly keys generate` and append "
            "the printed entry to that setting instead"
        )
    Keyring.from_settings(settings)  # creates the dev file on first use
    path = Path(settings.data_dir) / KEYS_FILE
    current = path.read_text()
    kid, entry = new_entry(kid)
    if kid in Keyring.parse(current).keys:
        raise KeyringError(f"key id {kid!r} is already in the keyring")
    updated = current if current.endswith("\n") or not current else current + "\n"
    updated += entry + "\n"
    Keyring.parse(updated)
    tmp = path.with_name(f".{KEYS_FILE}.{os.getpid()}.add.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(updated)
    os.replace(tmp, path)
    log.info("keys.dev_key_added", kid=kid)
    return kid


__all__ = [
    "COLUMNS",
    "ROTATION_JOB",
    "BatchProgress",
    "KeyRotator",
    "KeyStatus",
    "KeyUsage",
    "RotationReport",
    "SecretColumn",
    "add_dev_key",
    "integration_binding",
    "key_status",
    "new_entry",
    "new_kid",
    "rotate_encryption_keys",
    "rotation_job_id",
]
