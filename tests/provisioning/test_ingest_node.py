"""The "Zixly Ingest" n8n node and its "Zixly Ingest API" credential against the real ingest
endpoint (contract C1): a real n8n instance (process runtime) posts to the Zixly app served
by uvicorn on loopback, backed by PostgreSQL (row-level security) and Redis.

Checked: the credential's test request (heartbeat) passes with the tenant's ingest token and
fails with an unknown one; records go out in batches with the workflow's and execution's
ids as lineage and land once (a replay changes nothing); a 422 fails the execution with the
endpoint's per-record errors mapped to the node's input items, and nothing of that batch is
written.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import TenantFixture, World
from tests.provisioning.conftest import Instance, launch, remove_all
from tests.provisioning.instance_support import webhook_split_workflow
from zixly.container import Services
from zixly.ingest.instance_tokens import issue_instance_token
from zixly.provisioning.n8n.client import AUTH_COOKIE
from zixly.provisioning.runtimes.process import ProcessRuntime


@pytest.fixture(scope="module")
async def instance(
    process_runtime: ProcessRuntime, n8n_http: httpx.AsyncClient
) -> AsyncIterator[Instance]:
    try:
        yield await launch(process_runtime, n8n_http, "ingestnode", [])
    finally:
        await remove_all(process_runtime)


def _workflow(path: str, credential: dict[str, str], batch_size: int) -> dict[str, Any]:
    ingest = {
        "parameters": {
            "kind": "financials",
            "sourceSystem": "n8n-test",
            "batchSize": batch_size,
            "options": {},
        },
        "name": "Ingest",
        "type": "CUSTOM.zixlyIngest",
        "typeVersion": 1,
        "credentials": {"zixlyIngestApi": credential},
    }
    return webhook_split_workflow(f"Zixly test: ingest {path}", path, "body.records", ingest)


def credential_data(url: str, token: str) -> dict[str, str]:
    """n8n adds "Allowed HTTP Request Domains" to every credential with an ``authenticate``
    block, and its public API then wants the choice spelled out."""
    return {"url": url, "token": token, "allowedHttpRequestDomains": "all"}


def financial(n: int, **changes: Any) -> dict[str, Any]:
    record = {
        "client_id": "C-0",
        "record_date": f"2026-02-{n + 1:02d}",
        "revenue": f"{1000 + n}.25",
        "expenses": 400 + n,
        "currency": "AUD",
        "external_id": f"n8n-{n}",
    }
    record.update(changes)
    return record


async def _test_credential(
    instance: Instance, http: httpx.AsyncClient, credential: dict[str, Any]
) -> dict[str, Any]:
    cookie = await instance.client.login(
        instance.secrets.owner_email, instance.secrets.owner_password
    )
    response = await http.post(
        f"{instance.url}/rest/credentials/test",
        json={"credentials": credential},
        headers={"Cookie": f"{AUTH_COOKIE}={cookie}"},
    )
    assert response.status_code == 200, response.text[:300]
    result: dict[str, Any] = response.json()["data"]
    return result


async def _financials(owner: asyncpg.Connection, tenant_id: uuid.UUID) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await owner.fetch(
        "SELECT external_id, revenue, expenses, source_system, source_workflow_id, "
        "source_execution_id FROM financials WHERE tenant_id = $1 ORDER BY external_id",
        tenant_id,
    )
    return rows


@pytest.fixture
async def tenant(world: World) -> TenantFixture:
    return await world.tenant("ingestnode", clients=1)


async def test_the_credential_test_calls_the_heartbeat(
    instance: Instance,
    n8n_http: httpx.AsyncClient,
    services: Services,
    live_server: str,
    tenant: TenantFixture,
) -> None:
    token = (await issue_instance_token(services.db, tenant.id)).reveal()
    data = credential_data(f"{live_server}/ingest/v1/", token)
    created = await instance.api.create_credential("Zixly ingest", "zixlyIngestApi", data)
    credential = {"id": created["id"], "name": created["name"], "type": "zixlyIngestApi"}
    good = await _test_credential(instance, n8n_http, {**credential, "data": data})
    assert good["status"] == "OK", good
    unknown = "zik_" + secrets.token_urlsafe(32)[:43].ljust(43, "A")
    bad = await _test_credential(
        instance, n8n_http, {**credential, "data": {**data, "token": unknown}}
    )
    assert bad["status"] == "Error", bad


async def test_items_are_ingested_in_batches_with_lineage_and_a_422_names_the_items(
    instance: Instance,
    n8n_http: httpx.AsyncClient,
    services: Services,
    live_server: str,
    owner: asyncpg.Connection,
    tenant: TenantFixture,
) -> None:
    token = (await issue_instance_token(services.db, tenant.id)).reveal()
    created = await instance.api.create_credential(
        "Zixly ingest", "zixlyIngestApi", credential_data(f"{live_server}/ingest/v1", token)
    )
    credential = {"id": str(created["id"]), "name": str(created["name"])}
    workflow = await instance.api.create_workflow(_workflow("zixly-ingest-fin", credential, 2))
    await instance.api.activate_workflow(str(workflow["id"]))
    hook = f"{instance.url}/webhook/zixly-ingest-fin"

    records = [financial(n) for n in range(5)]
    response = await n8n_http.post(hook, json={"records": records}, timeout=60)
    assert response.status_code == 200, response.text[:500]
    batches = response.json()
    assert [b["batch"] for b in batches] == [1, 2, 3]
    assert [b["received"] for b in batches] == [2, 2, 1]
    assert sum(b["inserted"] for b in batches) == 5
    execution = await instance.last_execution()
    rows = await _financials(owner, tenant.id)
    assert [r["external_id"] for r in rows] == [f"n8n-{n}" for n in range(5)]
    assert {r["source_workflow_id"] for r in rows} == {str(workflow["id"])}
    assert {r["source_execution_id"] for r in rows} == {str(execution["id"])}
    assert {r["source_system"] for r in rows} == {"n8n-test"}
    assert str(rows[0]["revenue"]) == "1000.25"

    again = await n8n_http.post(hook, json={"records": records}, timeout=60)
    assert sum(b["unchanged"] for b in again.json()) == 5  # a replay writes nothing new

    # Batch 2 (items 2-3) holds a bad record at item 3: batch 1 is written, batch 2 is not,
    # and the node fails naming item 3 and the field.
    fresh = [financial(n + 10) for n in range(5)]
    fresh[3]["revenue"] = "lots"
    failed = await n8n_http.post(hook, json={"records": fresh}, timeout=60)
    assert failed.status_code == 500
    error = (await instance.last_execution())["data"]["resultData"]["error"]
    assert error["node"]["name"] == "Ingest"
    assert "refused financials batch 2 of 3 (items 2-3)" in error["message"]
    assert "item 3, revenue" in error["message"]
    assert "Batches 1-1 were written" in (error.get("description") or "")
    ids = [r["external_id"] for r in await _financials(owner, tenant.id)]
    assert "n8n-10" in ids and "n8n-11" in ids  # batch 1
    assert "n8n-12" not in ids and "n8n-13" not in ids  # batch 2: nothing written


async def test_a_revoked_token_fails_the_node_with_the_endpoint_message(
    instance: Instance,
    n8n_http: httpx.AsyncClient,
    services: Services,
    live_server: str,
    tenant: TenantFixture,
) -> None:
    old = (await issue_instance_token(services.db, tenant.id)).reveal()
    await issue_instance_token(services.db, tenant.id)  # replaces (revokes) the old one
    created = await instance.api.create_credential(
        "Zixly ingest (old)", "zixlyIngestApi", credential_data(f"{live_server}/ingest/v1", old)
    )
    credential = {"id": str(created["id"]), "name": str(created["name"])}
    workflow = await instance.api.create_workflow(_workflow("zixly-ingest-old", credential, 10))
    await instance.api.activate_workflow(str(workflow["id"]))
    response = await n8n_http.post(
        f"{instance.url}/webhook/zixly-ingest-old", json={"records": [financial(0)]}, timeout=60
    )
    assert response.status_code == 500
    error = (await instance.last_execution())["data"]["resultData"]["error"]
    assert "answered 401" in error["message"]
    assert "update the Zixly Ingest API credential" in (error.get("description") or "")
