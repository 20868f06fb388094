"""``zixly tenant ...`` against the test session's PostgreSQL and Redis, with a real n8n.

The commands are parsed by the real ``zixly`` parser and run in-process (the lifecycle is
called directly, no worker), except ``--no-wait``, which only queues the job, and
``--enqueue``, which a worker in this process runs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from arq.connections import default_queue_name
from rich.console import Console

from tests.conftest import World, gql, make_settings
from tests.provisioning.conftest import READY_WITHIN
from tests.provisioning.instance_support import N8N_VERSION, SCHEDULE, SCHEDULE_NAME
from zixly.cli.main import build_parser
from zixly.cli.tenants import run_command
from zixly.container import Services
from zixly.core.errors import ConflictError, NotFoundError
from zixly.core.settings import Settings
from zixly.dev.demo import in_process_worker
from zixly.embedded.stack import Endpoints
from zixly.ingest.instance_tokens import INSTANCE_TOKEN_NAME
from zixly.ingest.tokens import well_formed
from zixly.provisioning.final_exports import PURGE_JOB, purge_final_exports
from zixly.provisioning.instances import InstanceRepository
from zixly.provisioning.operations import STAFF, handle_of
from zixly.provisioning.preconditions import VersionUnavailableError
from zixly.provisioning.runtimes.base import InstanceHandle, RuntimeState
from zixly.provisioning.runtimes.distributions import N8nDistribution
from zixly.provisioning.runtimes.process import ProcessRuntime
from zixly.provisioning.templates import bundled_manifest, template_id
from zixly.workers.settings import WorkerSettings

PROVISION_LINES = [
    "• provision requested",
    "• provisioning",
    *[
        f"✓ [{step}] step {step} done"
        for step in ("SECRETS", "CREATED", "STARTED", "READY", "BOOTSTRAPPED", "TEMPLATES")
    ],
    "• [DONE] provisioned",
]


@pytest.fixture(scope="module")
def cli_settings(
    tmp_path_factory: pytest.TempPathFactory, endpoints: Endpoints, n8n_dist: N8nDistribution
) -> Settings:
    return make_settings(
        tmp_path_factory.mktemp("tenant-cli"),
        database_url=endpoints.database_url,
        migrations_database_url=endpoints.migrations_database_url,
        redis_url=endpoints.redis_url,
        n8n_ready_timeout_seconds=READY_WITHIN,
    )


@pytest.fixture(scope="module")
def cli_runtime(cli_settings: Settings) -> ProcessRuntime:
    """The runtime the commands would build, kept for the module: it owns the n8n children
    it starts (a CLI process leaves them running when it exits)."""
    return ProcessRuntime(cli_settings.data_dir)


async def zixly(
    settings: Settings, *argv: str, runtime: ProcessRuntime | None = None
) -> tuple[int, str]:
    args = build_parser().parse_args(["tenant", *argv])
    out = io.StringIO()
    console = Console(file=out, width=200)
    code = await run_command(args.command, args, settings, console, runtime=runtime)
    return code, out.getvalue()


def progress(output: str) -> list[str]:
    """The progress lines without their times."""
    lines = [line for line in output.splitlines() if line[:1] in "•✓✗"]
    return [f"{line[0]}{line[10:]}" for line in lines]


async def test_create_provision_status_export_stop_deprovision(
    cli_settings: Settings,
    cli_runtime: ProcessRuntime,
    services: Services,
    owner: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    slug = f"cli-{uuid.uuid4().hex[:8]}"
    runtime = cli_runtime
    try:
        code, out = await zixly(cli_settings, "create", slug, "--name", "CLI Pty Ltd")
        tenant_id = await owner.fetchval("SELECT id FROM tenants WHERE slug = $1", slug)
        assert (code, out.strip()) == (0, f"created tenant {slug} {tenant_id}")

        code, out = await zixly(cli_settings, "list")
        [line] = [line for line in out.splitlines() if slug in line]
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        assert cells == [slug, str(tenant_id), "-", "-", "-", "-"]

        code, out = await zixly(
            cli_settings, "provision", slug, "--template", SCHEDULE, runtime=runtime
        )
        assert code == 0, out
        assert progress(out) == PROVISION_LINES
        url = await owner.fetchval(
            "SELECT editor_url FROM n8n_instances WHERE tenant_id = $1", tenant_id
        )
        assert out.splitlines()[-1] == (
            f"instance RUNNING (desired RUNNING, step DONE, n8n {N8N_VERSION}) {url}"
        )

        code, out = await zixly(cli_settings, "status", str(tenant_id), "--events", "2")
        lines = out.splitlines()
        assert code == 0 and lines[0].startswith("instance RUNNING (desired RUNNING")
        assert [line.split(" ", 4)[-1] for line in lines[1:]] == [
            "STEP [TEMPLATES] step TEMPLATES done",
            "TRANSITION [DONE] provisioned",
        ]

        target = tmp_path / "workflows.json"
        code, out = await zixly(cli_settings, "export", slug, "-o", str(target))
        exported = json.loads(target.read_text())
        assert (code, out.strip()) == (0, f"wrote 1 workflow(s) to {target}")
        assert isinstance(exported, list)  # `n8n import:workflow --input` takes the array
        assert [(w["name"], w["active"]) for w in exported] == [(SCHEDULE_NAME, True)]

        code, out = await zixly(cli_settings, "stop", slug, "--no-wait")
        job_id = f"stop:{tenant_id}"
        assert code == 0 and out.splitlines()[0] == (
            f"stop requested; job {job_id} queued (run `zixly worker`)"
        )
        assert await services.redis.zscore(default_queue_name, job_id) is not None
        await services.redis.zrem(default_queue_name, job_id)  # no worker runs it here
        await services.redis.delete(f"arq:job:{job_id}")
        desired = await owner.fetchval(
            "SELECT desired_state FROM n8n_instances WHERE tenant_id = $1", tenant_id
        )
        assert desired == "STOPPED"

        code, out = await zixly(cli_settings, "deprovision", slug, runtime=runtime)
        assert code == 0, out
        assert progress(out) == [
            "• deprovision requested",
            "• deprovisioning",
            "• [EXPORTED] exported 1 workflow(s)",
            "✓ [REMOVED] step REMOVED done",
            "• deprovisioned",
        ]
        assert out.splitlines()[-1].startswith("instance DEPROVISIONED (desired ABSENT")
        assert await runtime.list_managed() == []
    finally:
        for handle in await runtime.list_managed():
            await runtime.remove(handle)
        await owner.execute(
            "DELETE FROM n8n_instances WHERE tenant_id = (SELECT id FROM tenants WHERE slug = $1)",
            slug,
        )


async def test_enqueue_follows_the_job_a_worker_runs_until_it_ends(
    cli_settings: Settings,
    cli_runtime: ProcessRuntime,
    owner: asyncpg.Connection,
    endpoints: Endpoints,
    tmp_path: Path,
) -> None:
    """``--enqueue`` prints the job's progress as a real worker runs it and ends with the
    instance's state, exit 1 when the job failed; ``--no-wait`` (above) returns at once."""
    slug, bad = f"cli-q-{uuid.uuid4().hex[:8]}", f"cli-qbad-{uuid.uuid4().hex[:8]}"
    for name in (slug, bad):
        code, out = await zixly(cli_settings, "create", name, "--name", "Queue Pty Ltd")
        assert code == 0, out
    tenant_id = await owner.fetchval("SELECT id FROM tenants WHERE slug = $1", slug)
    bad_id = await owner.fetchval("SELECT id FROM tenants WHERE slug = $1", bad)
    try:
        async with in_process_worker(cli_settings, endpoints, runtime=cli_runtime, crons=False):
            code, out = await zixly(
                cli_settings, "provision", slug, "--template", SCHEDULE, "--enqueue"
            )
            assert code == 0, out
            queued = f"provision requested; job provision:{tenant_id} queued (run `zixly worker`)"
            assert queued in out.splitlines()
            assert progress(out) == PROVISION_LINES
            assert out.splitlines()[-1].startswith("instance RUNNING (desired RUNNING, step DONE")

            code, out = await zixly(cli_settings, "stop", slug, "--enqueue")
            assert code == 0, out
            assert progress(out)[0] == "• stop requested"
            assert out.splitlines()[-1].startswith("instance STOPPED (desired STOPPED")

            # A job that fails: n8n refuses the workflow, so the instance is FAILED: exit 1.
            broken = tmp_path / "broken.json"
            broken.write_text(json.dumps({"name": "Broken", "nodes": "none", "connections": 7}))
            code, out = await zixly(
                cli_settings, "provision", bad, "--template", str(broken), "--enqueue"
            )
            assert code == 1, out
            assert any(line.startswith("✗") for line in out.splitlines()), out
            assert "the job ended with the instance FAILED" in out
    finally:
        for name, tenant in ((slug, tenant_id), (bad, bad_id)):
            await zixly(cli_settings, "deprovision", name, runtime=cli_runtime)
            await owner.execute("DELETE FROM n8n_instances WHERE tenant_id = $1", tenant)


async def test_unknown_tenant_is_an_error(cli_settings: Settings) -> None:
    from zixly.core.errors import NotFoundError

    with pytest.raises(NotFoundError, match="no tenant 'nobody-here'"):
        await zixly(cli_settings, "status", "nobody-here")


# --- failing safe (issue 16): plan templates, ingest tokens, upgrade, deprovision, resolver ----

FINAL_EXPORT = "query($t: ID!) { finalExport(tenantId: $t) { id createdAt expiresAt bundle } }"


@dataclass
class Provisioned:
    slug: str
    tenant_id: uuid.UUID


@pytest.fixture(scope="module")
async def provisioned(
    cli_settings: Settings, cli_runtime: ProcessRuntime, owner: asyncpg.Connection
) -> AsyncIterator[Provisioned]:
    """A tenant created and provisioned through the CLI, naming no template."""
    slug = f"cli-plan-{uuid.uuid4().hex[:8]}"
    code, out = await zixly(cli_settings, "create", slug, "--name", "Plan Pty Ltd")
    assert code == 0, out
    tenant_id = await owner.fetchval("SELECT id FROM tenants WHERE slug = $1", slug)
    try:
        code, out = await zixly(cli_settings, "provision", slug, runtime=cli_runtime)
        assert code == 0, out
        yield Provisioned(slug, tenant_id)
    finally:
        for handle in await cli_runtime.list_managed():
            await cli_runtime.remove(handle)
        await owner.execute("DELETE FROM n8n_instances WHERE tenant_id = $1", tenant_id)


def _plan_names() -> list[str]:
    manifest = bundled_manifest()
    return sorted(
        manifest.get(str(template_id(ref))).name for ref in manifest.plan_defaults("standard")
    )


async def test_provision_without_templates_deploys_the_plans_default_templates(
    provisioned: Provisioned, owner: asyncpg.Connection, cli_settings: Settings
) -> None:
    assert len(_plan_names()) == 4
    templates = await owner.fetchval(
        "SELECT templates FROM n8n_instances WHERE tenant_id = $1", provisioned.tenant_id
    )
    assert json.loads(templates) == bundled_manifest().plan_defaults("standard")
    code, out = await zixly(cli_settings, "export", provisioned.slug, "-o", "-")
    assert code == 0, out


async def test_provision_no_templates_and_the_staff_mutation_defaults(
    cli_settings: Settings,
    services: Services,
    owner: asyncpg.Connection,
    client: httpx.AsyncClient,
    world: World,
) -> None:
    """Requests only (the jobs are queued, then dropped): what each asks to deploy."""
    none, api = await world.tenant("cli-none", clients=0), await world.tenant("cli-api", clients=0)
    try:
        code, out = await zixly(cli_settings, "provision", none.slug, "--no-templates", "--no-wait")
        assert code == 0, out
        body = await gql(
            client,
            "mutation($t: ID!) { provisionInstance(tenantId: $t) { status } }",
            {"t": str(api.id)},
            world.headers(await world.staff()),
        )
        assert body["data"]["provisionInstance"]["status"] == "PENDING", body
        rows = dict(
            await owner.fetch(
                "SELECT tenant_id, templates FROM n8n_instances WHERE tenant_id = ANY($1::uuid[])",
                [none.id, api.id],
            )
        )
        assert json.loads(rows[none.id]) == []
        assert json.loads(rows[api.id]) == bundled_manifest().plan_defaults("standard")
    finally:
        for tenant in (none, api):
            job_id = f"provision:{tenant.id}"
            await services.redis.zrem(default_queue_name, job_id)
            await services.redis.delete(f"arq:job:{job_id}")
        await owner.execute(
            "DELETE FROM n8n_instances WHERE tenant_id = ANY($1::uuid[])", [none.id, api.id]
        )


async def _heartbeat(client: httpx.AsyncClient, token: str) -> int:
    response = await client.post(
        "/ingest/v1/heartbeat", json={}, headers={"Authorization": f"Bearer {token}"}
    )
    return response.status_code


async def test_ingest_token_mint_and_rotate_print_the_token_once(
    provisioned: Provisioned,
    cli_settings: Settings,
    owner: asyncpg.Connection,
    client: httpx.AsyncClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out = await zixly(cli_settings, "ingest-token", "mint", provisioned.slug, "--name", "etl")
    minted = capsys.readouterr().out.strip()
    assert code == 0 and well_formed(minted) and minted not in out
    assert f"minted ingest token {minted[:12]}… ('etl')" in out
    assert await _heartbeat(client, minted) == 200

    before = await owner.fetchval(
        "SELECT id FROM ingest_tokens WHERE tenant_id = $1 AND name = $2 AND revoked_at IS NULL",
        provisioned.tenant_id,
        INSTANCE_TOKEN_NAME,
    )
    code, out = await zixly(cli_settings, "ingest-token", "rotate", provisioned.slug)
    rotated = capsys.readouterr().out.strip()
    assert code == 0 and well_formed(rotated) and rotated not in out, out
    assert await _heartbeat(client, rotated) == 200
    details = await owner.fetchval(
        "SELECT details FROM audit_log WHERE tenant_id = $1 AND action = 'ingest_token.rotated' "
        "ORDER BY id DESC LIMIT 1",
        provisioned.tenant_id,
    )
    # Pushed into the instance's "Zixly ingest token" credential, the old token revoked.
    assert json.loads(details)["credentials_updated"] == 1
    assert json.loads(details)["revoked"] == [str(before)]

    with pytest.raises(ConflictError, match="live token named 'etl'"):
        await zixly(cli_settings, "ingest-token", "mint", provisioned.slug, "--name", "etl")


async def test_upgrade_to_a_version_not_installed_leaves_the_instance_running(
    provisioned: Provisioned,
    cli_settings: Settings,
    cli_runtime: ProcessRuntime,
    services: Services,
) -> None:
    before = await cli_runtime.inspect(await _handle(services, provisioned.tenant_id))
    assert before.state is RuntimeState.RUNNING
    with pytest.raises(VersionUnavailableError, match=r"9\.9\.9") as raised:
        await zixly(cli_settings, "upgrade", provisioned.slug, "--version", "9.9.9")
    assert raised.value.code == "N8N_VERSION_UNAVAILABLE"
    after = await cli_runtime.inspect(await _handle(services, provisioned.tenant_id))
    assert (after.state, after.pid, after.started_at) == (
        RuntimeState.RUNNING,
        before.pid,
        before.started_at,
    )
    code, out = await zixly(cli_settings, "status", provisioned.slug, "--events", "1")
    assert code == 0
    assert out.splitlines()[0].startswith(
        f"instance RUNNING (desired RUNNING, step DONE, n8n {N8N_VERSION})"
    )
    assert "upgrade" not in out and "UPGRADING" not in out


async def _handle(services: Services, tenant_id: uuid.UUID) -> InstanceHandle:
    async with services.db.transaction(STAFF) as session:
        row = await InstanceRepository(session).get(tenant_id)
    assert row is not None
    handle = handle_of(row)
    assert handle is not None
    return handle


async def test_deprovision_revokes_every_token_and_keeps_the_final_export(
    provisioned: Provisioned,
    cli_settings: Settings,
    cli_runtime: ProcessRuntime,
    services: Services,
    owner: asyncpg.Connection,
    client: httpx.AsyncClient,
    world: World,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tenant_id = provisioned.tenant_id
    await zixly(cli_settings, "ingest-token", "mint", provisioned.slug, "--name", "script")
    token = capsys.readouterr().out.strip()
    assert await _heartbeat(client, token) == 200
    handle = await _handle(services, tenant_id)
    data = cli_runtime.instance_dir(handle.instance_id)
    assert data.is_dir()

    code, out = await zixly(cli_settings, "deprovision", provisioned.slug, runtime=cli_runtime)
    assert code == 0, out
    assert await _heartbeat(client, token) == 401  # revoked: no token of the tenant works
    live = await owner.fetchval(
        "SELECT count(*) FROM ingest_tokens WHERE tenant_id = $1 AND revoked_at IS NULL", tenant_id
    )
    assert live == 0
    secrets = await owner.fetchrow(
        "SELECT api_key_ciphertext, owner_password_ciphertext, encryption_key_ciphertext, url "
        "FROM n8n_instances WHERE tenant_id = $1",
        tenant_id,
    )
    assert tuple(secrets.values()) == (None, None, None, None)
    assert not data.exists()  # the instance's data (its credentials with the pushed tokens)

    target = tmp_path / "final.json"
    code, out = await zixly(cli_settings, "export", provisioned.slug, "--final", "-o", str(target))
    assert code == 0 and "final export of" in out, out
    workflows = json.loads(target.read_text())
    assert sorted(w["name"] for w in workflows) == _plan_names()
    capsys.readouterr()
    code, out = await zixly(cli_settings, "export", provisioned.slug, "--final", "-o", "-")
    assert code == 0 and json.loads(capsys.readouterr().out) == workflows

    staff = world.headers(await world.staff())
    body = await gql(client, FINAL_EXPORT, {"t": str(tenant_id)}, staff)
    kept = body["data"]["finalExport"]
    assert sorted(w["name"] for w in kept["bundle"]["workflows"]) == _plan_names()
    created, expires = (dt.datetime.fromisoformat(kept[k]) for k in ("createdAt", "expiresAt"))
    assert expires - created == dt.timedelta(days=cli_settings.final_export_retention_days)
    other = await world.tenant("cli-other", clients=0)
    body = await gql(client, FINAL_EXPORT, {"t": str(tenant_id)}, world.headers(other.admin))
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert body["data"] == {"finalExport": None}

    # Past the retention: retrievable no more, and the worker's cron deletes it.
    await owner.execute(
        "UPDATE workflow_exports SET created_at = now() - interval '31 days' "
        "WHERE tenant_id = $1 AND reason = 'DEPROVISION'",
        tenant_id,
    )
    body = await gql(client, FINAL_EXPORT, {"t": str(tenant_id)}, staff)
    assert body["data"]["finalExport"] is None
    with pytest.raises(NotFoundError, match="no final export"):
        await zixly(cli_settings, "export", provisioned.slug, "--final", "-o", "-")
    assert PURGE_JOB in {job.name for job in WorkerSettings.cron_jobs}
    ctx = {"settings": cli_settings, "db": services.db}
    assert (await purge_final_exports(ctx))["deleted"] >= 1
    left = await owner.fetchval(
        "SELECT count(*) FROM workflow_exports WHERE tenant_id = $1", tenant_id
    )
    assert left == 0


async def test_reconcile_takes_a_tenant_by_slug_and_refuses_an_unknown_one(
    endpoints: Endpoints, tmp_path: Path, world: World
) -> None:
    """Through the installed ``zixly`` entry point, as an operator runs it (a tenant without
    an instance: the pass has nothing to do for it)."""
    tenant = await world.tenant("cli-reconcile", clients=0)
    environ = {
        **os.environ,
        "ZIXLY_DATA_DIR": str(tmp_path),
        "ZIXLY_DATABASE_URL": endpoints.database_url,
        "ZIXLY_MIGRATIONS_DATABASE_URL": endpoints.migrations_database_url,
        "ZIXLY_REDIS_URL": endpoints.redis_url,
    }
    command = [str(Path(sys.executable).parent / "zixly"), "reconcile", "--tenant"]
    for ref in (tenant.slug, str(tenant.id)):
        done = await asyncio.to_thread(
            subprocess.run,
            [*command, ref],
            env=environ,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"counts": {}, "actions": []}
    for ref in ("no-such-tenant", "bad\x01ref"):
        done = await asyncio.to_thread(
            subprocess.run,
            [*command, ref],
            env=environ,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2, done.stderr
        assert f"no tenant {ref!r}" in done.stderr.replace("\n", "")
        assert "Traceback" not in done.stderr
