"""Ingest tokens: storage (digest only), row-level security, GraphQL for ADMIN and staff,
template rendering of ``ingest:token``. Rotation into a live n8n instance is exercised in
tests/provisioning/test_ingest_rotation.py."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tests.conftest import World, gql
from zixly.app import create_app
from zixly.container import Services
from zixly.db.session import Scope
from zixly.ingest.instance_tokens import INSTANCE_TOKEN_NAME, issue_instance_token
from zixly.ingest.tokens import TOKEN_PATTERN, resolve
from zixly.provisioning.templates import (
    INGEST_TOKEN,
    TenantValues,
    bundled_manifest,
    render,
    values_for,
)

FIELDS = "id name prefix createdAt lastUsedAt expiresAt revokedAt"
LIST = f"query($all: Boolean! = false) {{ ingestTokens(includeRevoked: $all) {{ {FIELDS} }} }}"
REVOKE = f"mutation($id: ID!) {{ revokeIngestToken(id: $id) {{ {FIELDS} }} }}"
ROTATE = f"mutation($t: ID!) {{ rotateIngestToken(tenantId: $t) {{ {FIELDS} }} }}"


@pytest.fixture(scope="module")
async def ingest_client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(services), client=("198.51.100.20", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def heartbeat(client: httpx.AsyncClient, token: str) -> int:
    response = await client.post(
        "/ingest/v1/heartbeat", json={}, headers={"Authorization": f"Bearer {token}"}
    )
    return response.status_code


def code(body: dict[str, Any]) -> str:
    return str(body["errors"][0]["extensions"]["code"])


async def test_only_a_digest_and_a_display_prefix_are_stored(
    services: Services, owner: asyncpg.Connection, world: World
) -> None:
    tenant = await world.tenant("tok-store")
    token = (await issue_instance_token(services.db, tenant.id)).reveal()
    assert TOKEN_PATTERN.fullmatch(token) and len(token) == 47
    row = await owner.fetchrow("SELECT * FROM ingest_tokens WHERE tenant_id = $1", tenant.id)
    assert row["token_hash"] == hashlib.sha256(token.encode()).digest()
    assert row["prefix"] == token[:12]
    assert row["name"] == INSTANCE_TOKEN_NAME
    stored = json.dumps([str(v) for v in row.values()])
    assert token not in stored and token[12:] not in stored
    audit = await owner.fetchrow(
        "SELECT action, details FROM audit_log WHERE tenant_id = $1 AND target_id = $2",
        tenant.id,
        str(row["id"]),
    )
    assert audit["action"] == "ingest_token.issued"
    assert token[12:] not in audit["details"]


async def test_row_level_security_on_ingest_tokens(
    services: Services, owner: asyncpg.Connection, world: World
) -> None:
    a, b = await world.tenant("tok-rls-a"), await world.tenant("tok-rls-b")
    a_token = (await issue_instance_token(services.db, a.id)).reveal()
    await issue_instance_token(services.db, b.id)
    db = services.db
    async with db.transaction(Scope(tenant_id=a.id)) as session:
        seen = (await session.execute(text("SELECT tenant_id FROM ingest_tokens"))).all()
        assert {r.tenant_id for r in seen} == {a.id}
        b_id = await owner.fetchval("SELECT id FROM ingest_tokens WHERE tenant_id = $1", b.id)
        updated = await session.execute(
            text("UPDATE ingest_tokens SET revoked_at = now() WHERE id = :id RETURNING id"),
            {"id": b_id},
        )
        assert updated.all() == []
    with pytest.raises(DBAPIError, match="row-level security"):
        async with db.transaction(Scope(tenant_id=a.id)) as session:
            await session.execute(
                text(
                    "INSERT INTO ingest_tokens (tenant_id, name, prefix, token_hash) "
                    "VALUES (:t, 'planted', 'zik_x', :h)"
                ),
                {"t": b.id, "h": b"\x00" * 32},
            )
    async with db.transaction(Scope.system()) as session:
        assert (await session.execute(text("SELECT count(*) FROM ingest_tokens"))).scalar() == 0
        # The look-up before any tenant is set goes through the definer function only.
        found = await resolve(session, a_token)
        assert found is not None and (found.tenant_id, found.tenant_slug) == (a.id, a.slug)
    assert await owner.fetchval("SELECT revoked_at FROM ingest_tokens WHERE id = $1", b_id) is None


async def test_admins_list_and_revoke_their_tokens(
    client: httpx.AsyncClient,
    ingest_client: httpx.AsyncClient,
    services: Services,
    owner: asyncpg.Connection,
    world: World,
) -> None:
    tenant = await world.tenant("tok-admin")
    replaced = (await issue_instance_token(services.db, tenant.id)).reveal()
    token = (await issue_instance_token(services.db, tenant.id)).reveal()
    assert await heartbeat(ingest_client, token) == 200
    admin = world.headers(tenant.admin, tenant.slug)

    body = await gql(client, LIST, headers=admin)
    [listed] = body["data"]["ingestTokens"]
    assert listed["name"] == INSTANCE_TOKEN_NAME
    assert listed["prefix"] == token[:12]
    assert listed["lastUsedAt"] is not None and listed["revokedAt"] is None
    every = (await gql(client, LIST, {"all": True}, headers=admin))["data"]["ingestTokens"]
    assert [t["prefix"] for t in every] == [token[:12], replaced[:12]]
    assert every[1]["revokedAt"] is not None
    assert token[12:] not in json.dumps(every)

    revoked = (await gql(client, REVOKE, {"id": listed["id"]}, headers=admin))["data"]
    assert revoked["revokeIngestToken"]["revokedAt"] is not None
    assert await heartbeat(ingest_client, token) == 401
    again = (await gql(client, REVOKE, {"id": listed["id"]}, headers=admin))["data"]
    assert again == revoked  # idempotent: the first revocation stands
    assert (await gql(client, LIST, headers=admin))["data"]["ingestTokens"] == []
    audit = await owner.fetch(
        "SELECT a.action, u.email FROM audit_log a JOIN users u ON u.id = a.actor_user_id "
        "WHERE a.tenant_id = $1 AND a.target_id = $2",
        tenant.id,
        listed["id"],
    )
    assert [(r["action"], r["email"]) for r in audit] == [("ingest_token.revoked", tenant.admin)]


async def test_editors_viewers_and_other_tenants_are_refused(
    client: httpx.AsyncClient,
    ingest_client: httpx.AsyncClient,
    services: Services,
    world: World,
) -> None:
    mine, theirs = await world.tenant("tok-mine"), await world.tenant("tok-theirs")
    await issue_instance_token(services.db, mine.id)
    their_token = (await issue_instance_token(services.db, theirs.id)).reveal()
    their_list = await gql(client, LIST, headers=world.headers(theirs.admin, theirs.slug))
    [their_row] = their_list["data"]["ingestTokens"]
    for email in (mine.editor, mine.viewer):
        headers = world.headers(email, mine.slug)
        assert code(await gql(client, LIST, headers=headers)) == "FORBIDDEN"
        assert code(await gql(client, REVOKE, {"id": their_row["id"]}, headers=headers)) == (
            "FORBIDDEN"
        )
    admin = world.headers(mine.admin, mine.slug)
    body = await gql(client, REVOKE, {"id": their_row["id"]}, headers=admin)
    assert code(body) == "NOT_FOUND"
    assert code(await gql(client, REVOKE, {"id": str(uuid.uuid4())}, headers=admin)) == (
        "NOT_FOUND"
    )
    assert code(await gql(client, REVOKE, {"id": "nope"}, headers=admin)) == "VALIDATION_ERROR"
    assert await heartbeat(ingest_client, their_token) == 200
    assert code(await gql(client, ROTATE, {"t": str(mine.id)}, headers=admin)) == "FORBIDDEN"


async def test_staff_rotate_a_token_of_a_tenant_without_an_instance(
    client: httpx.AsyncClient,
    ingest_client: httpx.AsyncClient,
    services: Services,
    owner: asyncpg.Connection,
    world: World,
) -> None:
    tenant = await world.tenant("tok-rotate")
    old = (await issue_instance_token(services.db, tenant.id)).reveal()
    old_id = await owner.fetchval("SELECT id FROM ingest_tokens WHERE tenant_id = $1", tenant.id)
    staff = world.headers(await world.staff())
    body = await gql(client, ROTATE, {"t": str(tenant.id)}, headers=staff)
    rotated = body["data"]["rotateIngestToken"]
    assert rotated["name"] == INSTANCE_TOKEN_NAME and rotated["id"] != str(old_id)
    assert rotated["revokedAt"] is None and rotated["prefix"].startswith("zik_")
    # No instance holds the old token: it is revoked at once.
    assert await heartbeat(ingest_client, old) == 401
    stored = await owner.fetch(
        "SELECT id, name, revoked_at FROM ingest_tokens WHERE tenant_id = $1 ORDER BY created_at",
        tenant.id,
    )
    assert [(str(r["id"]), r["revoked_at"] is None) for r in stored] == [
        (str(old_id), False),
        (rotated["id"], True),
    ]
    assert stored[0]["name"].startswith(f"{INSTANCE_TOKEN_NAME} (replaced ")
    [audit] = await owner.fetch(
        "SELECT details FROM audit_log WHERE tenant_id = $1 AND action = 'ingest_token.rotated'",
        tenant.id,
    )
    details = json.loads(audit["details"])
    assert details["revoked"] == [str(old_id)] and details["credentials_updated"] == 0
    # Unknown tenants and malformed ids.
    assert code(await gql(client, ROTATE, {"t": str(uuid.uuid4())}, headers=staff)) == ("NOT_FOUND")
    assert code(await gql(client, ROTATE, {"t": "x"}, headers=staff)) == "VALIDATION_ERROR"


def test_ingest_token_placeholders_render_the_issued_token() -> None:
    spec = bundled_manifest().get("zixly-heartbeat")
    [credential] = spec.credentials
    assert {p.source for p in spec.placeholders if p.name == "INGEST_TOKEN"} == {INGEST_TOKEN}
    tenant = TenantValues(uuid.UUID(int=7), "acme", "Acme")
    values = values_for(spec, tenant, {}, {INGEST_TOKEN: "zik_issued"})
    assert render(credential.data, values) == {
        "name": "Authorization",
        "value": "Bearer zik_issued",
    }
    assert "INGEST_TOKEN" not in values_for(spec, tenant, {})
