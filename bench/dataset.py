"""The benchmark's data: N tenants sharing M daily financial rows, seeded with COPY.

The layout is a pure function of (tenants, rows): every client has one row per day from
``START`` for up to ``SPAN_DAYS`` days. So the number of rows any date window holds is
computed here (the load generator checks each response against it). Tenant slugs and user
emails name the sizes, so data sets of different sizes live side by side in one database
and a complete one is reused as is (``--quick`` and a full run do not re-seed each other).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
import uuid
from dataclasses import dataclass

import asyncpg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from zixly.dev.seed import (
    copy_financials,
    daily_financials,
    ensure_client,
    ensure_tenant,
    ensure_user,
)

LAYOUT_VERSION = "v1"  # bump when the layout changes, so older bench data is not reused
SLUG_PREFIX = "bench-"  # every bench tenant's slug starts so
EMAIL_DOMAIN = "bench.zixly.test"  # every bench user's email ends so
START = dt.date(2023, 1, 1)
SPAN_DAYS = 1096  # three years, so two-year summary windows still move around
SEED_CONNECTIONS = 2


@dataclass(frozen=True)
class Layout:
    tenants: int
    rows: int

    def __post_init__(self) -> None:
        if self.tenants < 1 or self.rows < 0:
            raise ValueError("need at least one tenant and a non-negative row count")

    @property
    def last_day(self) -> dt.date:
        return START + dt.timedelta(days=SPAN_DAYS - 1)

    @property
    def name(self) -> str:
        return f"{LAYOUT_VERSION}-{self.tenants}x{self.rows}"

    def slug(self, index: int) -> str:
        return f"{SLUG_PREFIX}{self.name}-{index:04d}"

    def email(self, index: int) -> str:
        return f"viewer-{index:04d}@{self.name}.{EMAIL_DOMAIN}"

    def rows_of(self, index: int) -> int:
        share, extra = divmod(self.rows, self.tenants)
        return share + (1 if index < extra else 0)

    def client_days(self, index: int) -> tuple[int, ...]:
        """Days of data of each of the tenant's clients (all start at ``START``)."""
        remaining, days = self.rows_of(index), []
        while remaining > 0:
            days.append(min(SPAN_DAYS, remaining))
            remaining -= days[-1]
        return tuple(days)


@dataclass(frozen=True)
class BenchTenant:
    id: uuid.UUID
    slug: str
    email: str
    user_id: uuid.UUID
    client_days: tuple[int, ...]

    def rows_between(self, start: dt.date, end: dt.date) -> int:
        """Rows with ``start <= record_date <= end`` (both inclusive)."""
        total = 0
        for days in self.client_days:
            low = max(start, START)
            high = min(end, START + dt.timedelta(days=days - 1))
            total += max(0, (high - low).days + 1)
        return total


@dataclass(frozen=True)
class Dataset:
    layout: Layout
    tenants: list[BenchTenant]
    reused: bool
    seed_seconds: float


async def ensure_dataset(
    owner_dsn: str, layout: Layout, console: Console, *, seed: int = 20261127
) -> Dataset:
    """Reuse this layout's tenants when complete, else (re)seed them. ``owner_dsn`` is a plain
    ``postgresql://`` URL of the table owner."""
    started = time.perf_counter()
    owner = await asyncpg.connect(owner_dsn)
    try:
        reused = await _matches(owner, layout)
        if not reused:
            await _clear(owner, layout, console)
            await _seed(owner_dsn, layout, console, seed)
            with console.status("VACUUM ANALYZE"):
                for table in ("tenants", "users", "memberships", "client_kpis", "financials"):
                    await owner.execute(f"VACUUM ANALYZE {table}")
        tenants = await _load(owner, layout)
    finally:
        await owner.close()
    return Dataset(layout, tenants, reused, time.perf_counter() - started)


_COUNTS = """
SELECT t.slug,
       (SELECT count(*) FROM client_kpis c WHERE c.tenant_id = t.id) AS clients,
       (SELECT count(*) FROM financials f WHERE f.tenant_id = t.id) AS rows,
       (SELECT count(*) FROM memberships m WHERE m.tenant_id = t.id) AS members
FROM tenants t WHERE t.slug LIKE $1 ORDER BY t.slug
"""


def _slugs(layout: Layout) -> str:
    return f"{SLUG_PREFIX}{layout.name}-%"


async def _matches(owner: asyncpg.Connection, layout: Layout) -> bool:
    found = await owner.fetch(_COUNTS, _slugs(layout))
    expected = [
        (layout.slug(i), len(layout.client_days(i)), layout.rows_of(i), 1)
        for i in range(layout.tenants)
    ]
    return [(r["slug"], r["clients"], r["rows"], r["members"]) for r in found] == expected


async def _clear(owner: asyncpg.Connection, layout: Layout, console: Console) -> None:
    """Remove an incomplete earlier seeding of this layout (e.g. an interrupted one)."""
    with console.status("removing incomplete bench data"):
        async with owner.transaction():
            await owner.execute("DELETE FROM tenants WHERE slug LIKE $1", _slugs(layout))
            await owner.execute(
                "DELETE FROM users WHERE email LIKE $1", f"%@{layout.name}.{EMAIL_DOMAIN}"
            )


async def _seed(dsn: str, layout: Layout, console: Console, seed: int) -> None:
    """Tenants go to ``SEED_CONNECTIONS`` connections, so generating one tenant's rows in
    Python overlaps with PostgreSQL ingesting another's."""
    began = time.perf_counter()
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    pending = iter(range(layout.tenants))  # shared by the workers

    async def worker() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            for index in pending:
                # A generator per tenant: the data does not depend on which worker ran it.
                rows = await _seed_tenant(conn, layout, index, random.Random(seed + index))
                progress.advance(task, rows)
        finally:
            await conn.close()

    with Progress(*columns, console=console) as progress:
        task = progress.add_task("seeding financial rows", total=layout.rows)
        await asyncio.gather(*(worker() for _ in range(SEED_CONNECTIONS)))
    elapsed = time.perf_counter() - began
    console.print(
        f"seeded {layout.rows:,} rows for {layout.tenants} tenants in {elapsed:.1f} s "
        f"({layout.rows / max(elapsed, 1e-9):,.0f} rows/s)"
    )


async def _seed_tenant(
    conn: asyncpg.Connection, layout: Layout, index: int, rng: random.Random
) -> int:
    """One tenant, its viewer, its clients and all their rows, in one transaction."""
    async with conn.transaction():
        tenant_id = await ensure_tenant(conn, layout.slug(index), f"Bench tenant {index}", "retail")
        await ensure_user(conn, layout.email(index), tenant_id=tenant_id, role="VIEWER")
        rows: list[tuple[object, ...]] = []
        for number, days in enumerate(layout.client_days(index)):
            client = await ensure_client(
                conn, tenant_id, f"BENCH-{number:03d}", f"Client {number}", "retail"
            )
            base = rng.uniform(1500.0, 6000.0)
            rows += daily_financials(rng, tenant_id, client, START, days, base)
        await copy_financials(conn, rows)
    return len(rows)


_TENANTS = """
SELECT t.id, t.slug, u.id AS user_id, u.email
FROM tenants t
JOIN memberships m ON m.tenant_id = t.id
JOIN users u ON u.id = m.user_id
WHERE t.slug LIKE $1 ORDER BY t.slug
"""


async def _load(owner: asyncpg.Connection, layout: Layout) -> list[BenchTenant]:
    rows = await owner.fetch(_TENANTS, _slugs(layout))
    return [
        BenchTenant(
            id=row["id"],
            slug=row["slug"],
            email=row["email"],
            user_id=row["user_id"],
            client_days=layout.client_days(index),
        )
        for index, row in enumerate(rows)
    ]
