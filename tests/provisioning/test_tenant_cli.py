"""``zixly tenant ...`` against the test session's PostgreSQL and Redis, with a real n8n.

The commands are parsed by the real ``zixly`` parser and run in-process (the lifecycle is
called directly, no worker), except ``--enqueue``, which only queues the job.
"""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import asyncpg
import pytest
from arq.connections import default_queue_name
from rich.console import Console

from tests.conftest import make_settings
from tests.provisioning.conftest import READY_WITHIN
from tests.provisioning.instance_support import N8N_VERSION, SCHEDULE, SCHEDULE_NAME
from zixly.cli import build_parser
from zixly.embedded import Endpoints
from zixly.provisioning.distributions import N8nDistribution
from zixly.provisioning.process_runtime import ProcessRuntime
from zixly.services import Services
from zixly.settings import Settings
from zixly.tenants_cli import run_command

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

        code, out = await zixly(cli_settings, "stop", slug, "--enqueue")
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


async def test_unknown_tenant_is_an_error(cli_settings: Settings) -> None:
    from zixly.errors import NotFoundError

    with pytest.raises(NotFoundError, match="no tenant 'nobody-here'"):
        await zixly(cli_settings, "status", "nobody-here")
