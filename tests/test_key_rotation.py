"""Key rotation against the session's PostgreSQL: status, batched re-encryption, the CLI.

Every test uses key ids of its own, so rows other tests stored (under other keys) are only
ever "unknown" here and never touched; assertions are about this test's key ids and rows.
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
import stat
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from arq.constants import default_queue_name, job_key_prefix
from redis.asyncio import Redis
from rich.console import Console

from tests.conftest import LogLines, World, make_settings
from zixly.cli.keys import generate_command
from zixly.cli.main import build_parser
from zixly.cli.tenants import run_command
from zixly.core.queue import NO_WORKER_AFTER_SECONDS
from zixly.core.settings import Settings
from zixly.db.session import Database, create_engine
from zixly.dev.demo import in_process_worker
from zixly.embedded.stack import Endpoints
from zixly.keys.rotation import (
    COLUMNS,
    BatchProgress,
    KeyRotator,
    add_dev_key,
    integration_binding,
    key_status,
    rotate_encryption_keys,
    rotation_job_id,
)
from zixly.provisioning.secrets import SecretField
from zixly.provisioning.secrets import binding as instance_binding
from zixly.security.crypto import Binding, DecryptionError, Keyring, KeyringError, key_entry
from zixly.workers.settings import WorkerSettings

KEY_A = bytes(range(100, 132))
KEY_B = bytes(range(200, 232))
KEY_C = bytes(range(1, 33))
TENANTS = 3
PROVIDERS = 5
# per tenant: PROVIDERS integrations x 2 tokens + one instance x 3 secrets
VALUES = TENANTS * (PROVIDERS * 2 + 3)


@dataclass(frozen=True)
class Place:
    table: str
    key_column: str
    pk: uuid.UUID
    column: str
    binding: Binding
    plaintext: str


@dataclass
class Kids:
    a: str
    b: str
    c: str

    def ring(self, *kids: str, active: str) -> Keyring:
        keys = {self.a: KEY_A, self.b: KEY_B, self.c: KEY_C}
        return Keyring({kid: keys[kid] for kid in kids}, active)

    @property
    def old(self) -> Keyring:
        return self.ring(self.a, active=self.a)

    @property
    def both(self) -> Keyring:
        return self.ring(self.a, self.b, active=self.b)

    def entries(self) -> str:
        return f"{key_entry(self.a, KEY_A)},{key_entry(self.b, KEY_B)}"


@pytest.fixture
def kids() -> Kids:
    suffix = uuid.uuid4().hex[:8]
    return Kids(f"a{suffix}", f"b{suffix}", f"c{suffix}")


@pytest.fixture
async def db(settings: Settings, endpoints: Endpoints) -> AsyncIterator[Database]:
    database = Database(create_engine(endpoints.database_url, settings), settings)
    yield database
    await database.dispose()


async def seed(owner: asyncpg.Connection, world: World, ring: Keyring) -> list[Place]:
    """Integrations and instance secrets of a few tenants, all sealed with ``ring``."""
    places: list[Place] = []
    for _ in range(TENANTS):
        tenant = await world.tenant("keys", clients=0)
        for n in range(PROVIDERS):
            row_id = uuid.uuid4()
            values: dict[str, str] = {}
            for token in ("access_token", "refresh_token"):
                place = integration_binding(tenant.id, row_id, token)
                plaintext = f"tok-{token}-{uuid.uuid4().hex}"
                values[token] = ring.encrypt(plaintext, place)
                places.append(
                    Place("integrations", "id", row_id, f"{token}_ciphertext", place, plaintext)
                )
            await owner.execute(
                "INSERT INTO integrations (id, tenant_id, provider, access_token_ciphertext, "
                "refresh_token_ciphertext) VALUES ($1, $2, $3, $4, $5)",
                row_id,
                tenant.id,
                f"provider-{n}",
                values["access_token"],
                values["refresh_token"],
            )
        sealed: dict[str, str] = {}
        for secret in SecretField:
            place = instance_binding(tenant.id, secret)
            plaintext = f"n8n-{secret.value}-{uuid.uuid4().hex}"
            sealed[secret.column] = ring.encrypt(plaintext, place)
            places.append(
                Place("n8n_instances", "tenant_id", tenant.id, secret.column, place, plaintext)
            )
        await owner.execute(
            "INSERT INTO n8n_instances (tenant_id, runtime, version, encryption_key_ciphertext, "
            "owner_password_ciphertext, api_key_ciphertext) "
            "VALUES ($1, 'process', '1.0.0', $2, $3, $4)",
            tenant.id,
            sealed["encryption_key_ciphertext"],
            sealed["owner_password_ciphertext"],
            sealed["api_key_ciphertext"],
        )
    assert len(places) == VALUES
    return places


async def stored(conn: asyncpg.Connection, place: Place) -> str:
    value: str = await conn.fetchval(
        f"SELECT {place.column} FROM {place.table} WHERE {place.key_column} = $1", place.pk
    )
    return value


async def store(conn: asyncpg.Connection, place: Place, value: str) -> None:
    await conn.execute(
        f"UPDATE {place.table} SET {place.column} = $2 WHERE {place.key_column} = $1",
        place.pk,
        value,
    )


def column_counts(places: list[Place]) -> dict[str, int]:
    counts = {column.name: 0 for column in COLUMNS}
    for place in places:
        counts[f"{place.table}.{place.column}"] += 1
    return counts


# --- rotation -------------------------------------------------------------------------------


async def test_rotation_under_continuous_reads_moves_every_value_to_the_active_key(
    owner: asyncpg.Connection, world: World, db: Database, endpoints: Endpoints, kids: Kids
) -> None:
    places = await seed(owner, world, kids.old)
    ring = kids.both
    before = await key_status(db, ring)
    assert before.usage(kids.a).protects == VALUES and before.usage(kids.b).protects == 0
    assert before.usage(kids.a).columns == column_counts(places)
    assert not before.usage(kids.a).retirable and before.pending >= VALUES

    reader = await asyncpg.connect(endpoints.migrations_database_url.replace("+asyncpg", ""))
    done = asyncio.Event()
    pass_done = asyncio.Event()
    reads, failures, mixed_passes = 0, 0, 0

    async def read_continuously() -> None:
        nonlocal reads, failures, mixed_passes
        while not done.is_set():
            seen = set()
            for place in places:
                value = await stored(reader, place)
                seen.add(ring.kid_of(value))
                try:
                    assert ring.decrypt(value, place.binding).reveal() == place.plaintext
                except (DecryptionError, AssertionError):
                    failures += 1
                reads += 1
            mixed_passes += seen == {kids.a, kids.b}
            pass_done.set()

    async def after_each_batch(_step: BatchProgress) -> None:
        pass_done.clear()  # let the reader read everything once between two batches
        await pass_done.wait()

    task = asyncio.create_task(read_continuously())
    try:
        report = await KeyRotator(db, ring, batch_size=7).rotate(progress=after_each_batch)
    finally:
        done.set()
        await task
        await reader.close()

    assert failures == 0
    assert reads >= VALUES * report.batches >= 300
    assert mixed_passes >= report.batches - 1
    assert (report.rotated, report.undecryptable, report.changed_meanwhile) == (VALUES, 0, 0)
    assert report.per_column == column_counts(places)
    assert report.batches == sum(-(-n // 7) for n in column_counts(places).values())

    after = await key_status(db, ring)
    assert after.usage(kids.a).protects == 0 and after.usage(kids.a).retirable
    assert after.usage(kids.b).protects == VALUES and after.usage(kids.b).active
    assert after.usage(kids.b).columns == column_counts(places)
    assert "may be removed" in after.usage(kids.a).advice
    for place in places:
        value = await stored(owner, place)
        assert ring.kid_of(value) == kids.b
        assert ring.decrypt(value, place.binding).reveal() == place.plaintext
        # the new key alone now reads everything
        only_b = kids.ring(kids.b, active=kids.b)
        assert only_b.decrypt(value, place.binding).reveal() == place.plaintext

    again = await KeyRotator(db, ring).rotate()
    assert (again.rotated, again.batches) == (0, 0)


async def test_rotation_resumes_after_a_stop(
    owner: asyncpg.Connection, world: World, db: Database, kids: Kids
) -> None:
    places = await seed(owner, world, kids.old)
    rotator = KeyRotator(db, kids.both, batch_size=4)
    first = await rotator.rotate(max_batches=1)
    assert (first.rotated, first.batches, first.complete) == (4, 1, False)
    status = await key_status(db, kids.both)
    assert (status.usage(kids.a).protects, status.usage(kids.b).protects) == (VALUES - 4, 4)
    assert status.usage(kids.b).columns["integrations.access_token_ciphertext"] == 4
    rest = await rotator.rotate()
    assert (rest.rotated, rest.complete) == (VALUES - 4, True)
    assert (await rotator.rotate()).rotated == 0
    for place in places:
        assert kids.both.decrypt(await stored(owner, place), place.binding).reveal() == (
            place.plaintext
        )


async def test_a_copied_ciphertext_stays_rejected_and_is_not_laundered(
    owner: asyncpg.Connection, world: World, db: Database, kids: Kids, logs: LogLines
) -> None:
    places = await seed(owner, world, kids.old)
    source, target = places[0], places[2]  # two integration rows' access tokens
    assert source.column == target.column and source.pk != target.pk
    copied = await stored(owner, source)
    await store(owner, target, copied)

    report = await KeyRotator(db, kids.both).rotate()
    assert (report.rotated, report.undecryptable) == (VALUES - 1, 1)
    assert await stored(owner, target) == copied  # left as it was, not re-sealed here
    with pytest.raises(DecryptionError):
        kids.both.decrypt(copied, target.binding)
    status = await key_status(db, kids.both)
    assert status.usage(kids.a).protects == 1 and not status.usage(kids.a).retirable
    [warning] = logs.events("keys.rotate.undecryptable")
    assert warning["row"] == str(target.pk) and warning["column"] == target.column.join(
        ("integrations.", "")
    )

    # a rotated value copied elsewhere is still bound to its own place
    rotated = await stored(owner, source)
    assert kids.both.kid_of(rotated) == kids.b
    for other in (target.binding, places[1].binding):  # another row; another field
        with pytest.raises(DecryptionError, match="does not authenticate"):
            kids.both.decrypt(rotated, other)


async def test_unknown_keys_are_reported_and_left_alone(
    owner: asyncpg.Connection, world: World, db: Database, kids: Kids
) -> None:
    places = await seed(owner, world, kids.old)
    lost = places[-1]
    unknown = kids.ring(kids.c, active=kids.c).encrypt(lost.plaintext, lost.binding)
    await store(owner, lost, unknown)

    status = await key_status(db, kids.both)
    usage = status.usage(kids.c)
    assert (usage.configured, usage.protects, usage.retirable) == (False, 1, False)
    assert usage.columns["n8n_instances.api_key_ciphertext"] == 1
    assert kids.c in [u.kid for u in status.unreadable]
    assert usage.advice.startswith("UNREADABLE")

    report = await KeyRotator(db, kids.both).rotate()
    assert (report.rotated, report.undecryptable) == (VALUES - 1, 0)
    assert await stored(owner, lost) == unknown
    assert (await key_status(db, kids.both)).usage(kids.c).protects == 1


async def test_a_concurrent_writers_value_is_never_overwritten(
    owner: asyncpg.Connection,
    world: World,
    db: Database,
    kids: Kids,
    endpoints: Endpoints,
) -> None:
    places = await seed(owner, world, kids.old)
    held = places[5]
    written = kids.old.encrypt("written-meanwhile", held.binding)  # a writer still on key A
    writer = await asyncpg.connect(endpoints.migrations_database_url.replace("+asyncpg", ""))
    try:
        async with writer.transaction():
            await store(writer, held, written)  # holds the row lock until commit
            report = await KeyRotator(db, kids.both, batch_size=3).rotate()
            # the locked row was skipped (and so was its other token, same row)
            assert report.rotated == VALUES - 2
        assert await stored(owner, held) == written
    finally:
        await writer.close()
    status = await key_status(db, kids.both)
    assert status.usage(kids.a).protects == 2 and status.pending >= 2
    second = await KeyRotator(db, kids.both).rotate()
    assert second.rotated == 2
    value = await stored(owner, held)
    assert kids.both.kid_of(value) == kids.b
    assert kids.both.decrypt(value, held.binding).reveal() == "written-meanwhile"


# --- the job and the commands ----------------------------------------------------------------


def cli_settings(endpoints: Endpoints, data_dir: Path, kids: Kids) -> Settings:
    return make_settings(
        data_dir,
        database_url=endpoints.database_url,
        migrations_database_url=endpoints.migrations_database_url,
        redis_url=endpoints.redis_url,
        encryption_keys=kids.entries(),
        encryption_active_kid=kids.b,
    )


async def zixly(settings: Settings, *argv: str) -> tuple[int, str]:
    args = build_parser().parse_args(["keys", *argv])
    out = io.StringIO()
    code = await run_command(args.command, args, settings, Console(file=out, width=200))
    return code, out.getvalue()


def key_texts() -> list[str]:
    return [
        text
        for key in (KEY_A, KEY_B)
        for text in (base64.b64encode(key).decode(), base64.urlsafe_b64encode(key).decode())
    ]


async def test_status_and_rotate_commands_print_counts_and_never_secrets(
    owner: asyncpg.Connection,
    world: World,
    kids: Kids,
    endpoints: Endpoints,
    tmp_path: Path,
    logs: LogLines,
) -> None:
    places = await seed(owner, world, kids.old)
    ciphertexts = [await stored(owner, place) for place in places]
    settings = cli_settings(endpoints, tmp_path, kids)

    code, before = await zixly(settings, "status")
    rows = {line.split()[1]: line for line in before.splitlines() if line.count("│") >= 4}
    assert re.search(rf"│ {kids.a}\s+│ {VALUES}\s+│ yes\s+│ still in use", rows[kids.a])
    assert re.search(rf"│ {kids.b}\s+│ 0\s+│ yes\s+│ active", rows[kids.b])
    assert f"active key: {kids.b}" in before and "no key may be removed yet" in before
    assert code == 1  # other tests' values under keys this keyring lacks are unreadable

    code, rotated = await zixly(settings, "rotate", "--batch-size", "10")
    assert "integrations.access_token_ciphertext: batch 1, 10 re-encrypted (10 so far)" in rotated
    assert f"re-encrypted {VALUES} value(s) with key {kids.b}" in rotated
    assert f"may be removed from the keyring: {kids.a}" in rotated

    code, after = await zixly(settings, "status")
    rows = {line.split()[1]: line for line in after.splitlines() if line.count("│") >= 4}
    assert re.search(rf"│ {kids.a}\s+│ 0\s+│ yes\s+│ protects nothing", rows[kids.a])
    assert re.search(rf"│ {kids.b}\s+│ {VALUES}\s+│ yes\s+│ active", rows[kids.b])

    rotated_values = [await stored(owner, place) for place in places]
    printed = before + rotated + after + logs.text
    assert logs.events("keys.rotated")
    for secret in [p.plaintext for p in places] + ciphertexts + rotated_values + key_texts():
        assert secret not in printed


async def test_the_arq_job_rotates_and_is_enqueued_once(
    owner: asyncpg.Connection,
    world: World,
    db: Database,
    kids: Kids,
    endpoints: Endpoints,
    tmp_path: Path,
) -> None:
    registered = {f.name: f for f in WorkerSettings.functions}
    assert "rotate_encryption_keys" in registered
    settings = cli_settings(endpoints, tmp_path, kids)

    code, first = await zixly(settings, "rotate", "--no-wait")
    job_id = f"rotate_encryption_keys:{kids.b}"
    assert rotation_job_id(kids.both) == job_id
    assert (code, first.strip()) == (
        0,
        f"rotation to key {kids.b}: job {job_id} queued (run `zixly worker`)",
    )
    _, second = await zixly(settings, "rotate", "--no-wait")
    assert "the same job is already queued" in second
    redis = Redis.from_url(endpoints.redis_url)
    try:
        await redis.delete(job_key_prefix + job_id)
        await redis.zrem(default_queue_name, job_id)
    finally:
        await redis.aclose()

    places = await seed(owner, world, kids.old)
    result = await rotate_encryption_keys(
        {"settings": settings, "db": db, "keyring": Keyring.from_settings(settings)}
    )
    assert (result["rotated"], result["complete"], result["active_kid"]) == (VALUES, True, kids.b)
    for place in places:
        assert kids.both.kid_of(await stored(owner, place)) == kids.b


async def test_rotate_enqueue_waits_for_the_worker_and_exits_with_its_outcome(
    owner: asyncpg.Connection, world: World, kids: Kids, endpoints: Endpoints, tmp_path: Path
) -> None:
    """``--enqueue`` waits (saying so while no worker takes the job) until a real worker ran
    the job, then prints the keys' status and exits as ``keys status`` would."""
    places = await seed(owner, world, kids.old)
    settings = cli_settings(endpoints, tmp_path, kids)
    job_id = rotation_job_id(kids.both)
    waiting = asyncio.create_task(zixly(settings, "rotate", "--enqueue"))
    redis = Redis.from_url(endpoints.redis_url)
    try:
        while await redis.zscore(default_queue_name, job_id) is None:
            assert not waiting.done(), waiting.result()
            await asyncio.sleep(0.05)
        await asyncio.sleep(NO_WORKER_AFTER_SECONDS + 1)
        assert not waiting.done()  # no worker yet: still waiting
        async with in_process_worker(settings, endpoints):
            code, out = await asyncio.wait_for(waiting, timeout=30)
    finally:
        if not waiting.done():
            waiting.cancel()
        await redis.zrem(default_queue_name, job_id)
        await redis.aclose()
    assert f"rotation to key {kids.b}: job {job_id} queued" in out
    assert f"job {job_id} is still waiting for a worker" in out
    assert f"may be removed from the keyring: {kids.a}" in out
    for place in places:
        assert kids.both.kid_of(await stored(owner, place)) == kids.b
    # Other tests' values under keys this keyring lacks stay unreadable: exit 1 then.
    assert code == (1 if "unreadable:" in out else 0), out


def test_generate_prints_a_fresh_entry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["keys", "generate"])
    out = io.StringIO()
    assert generate_command(args, make_settings(tmp_path), Console(file=out)) == 0
    entry = capsys.readouterr().out.strip()
    ring = Keyring.parse(entry)
    [(kid, key)] = ring.keys.items()
    assert re.fullmatch(r"k\d{8}-[0-9a-f]{6}", kid) and len(key) == 32
    assert out.getvalue() == ""
    assert not (tmp_path / "encryption-keys").exists()  # printing touches no key file
    args = build_parser().parse_args(["keys", "generate"])
    generate_command(args, make_settings(tmp_path), Console(file=out))
    assert Keyring.parse(capsys.readouterr().out).keys != ring.keys


def test_generate_add_extends_the_dev_key_file_and_makes_it_active(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tmp_path)
    args = build_parser().parse_args(["keys", "generate", "--add", "--kid", "dev2"])
    out = io.StringIO()
    assert generate_command(args, settings, Console(file=out, width=200)) == 0
    ring = Keyring.from_settings(settings)
    assert sorted(ring.keys) == ["dev1", "dev2"] and ring.active_kid == "dev2"
    path = tmp_path / "encryption-keys"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encryption-keys"]
    shown = out.getvalue() + capsys.readouterr().out
    assert "added key dev2" in shown
    for key in ring.keys.values():
        assert base64.b64encode(key).decode() not in shown
    with pytest.raises(KeyringError, match="already"):
        add_dev_key(settings, "dev2")
    third = add_dev_key(settings)
    assert Keyring.from_settings(settings).active_kid == third
    assert Keyring.from_settings(settings).keys["dev2"] == ring.keys["dev2"]
    configured = make_settings(tmp_path / "x", encryption_keys=key_entry("k1", KEY_A))
    with pytest.raises(KeyringError, match="ZIXLY_ENCRYPTION_KEYS"):
        add_dev_key(configured)
