"""Mutations: upsertClient (EDITOR), member administration (ADMIN), tenants (staff), audit."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import TenantFixture, World, gql
from zixly.container import Services
from zixly.core.errors import ConflictError
from zixly.db.session import Scope
from zixly.domain.audit import Actor
from zixly.domain.members import MemberAdmin
from zixly.security.principal import Role

UPSERT = """
mutation($input: UpsertClientInput!) {
  upsertClient(input: $input) { id clientId name industry }
}"""
INVITE = """
mutation($email: String!, $role: RoleEnum!) {
  inviteUser(email: $email, role: $role) { id email role status }
}"""
SET_ROLE = """
mutation($userId: ID!, $role: RoleEnum!) {
  setUserRole(userId: $userId, role: $role) { id email role }
}"""
REMOVE = "mutation($userId: ID!) { removeUser(userId: $userId) { id email role } }"
MEMBERS = """
query($first: Int, $after: String) {
  members(first: $first, after: $after) {
    nodes { id email role } pageInfo { hasNextPage endCursor }
  }
}"""
TENANTS = """
query($first: Int, $after: String) {
  tenants(first: $first, after: $after) {
    nodes { id slug name industry plan } pageInfo { hasNextPage endCursor }
  }
}"""
CREATE_TENANT = """
mutation($slug: String!, $name: String!, $industry: String) {
  createTenant(slug: $slug, name: $name, industry: $industry) { id slug name industry plan }
}"""


def error(body: dict[str, Any]) -> dict[str, Any]:
    """The extensions of the single error in a failed response."""
    assert body.get("data") is None, body
    assert len(body["errors"]) == 1, body
    extensions: dict[str, Any] = body["errors"][0]["extensions"]
    return extensions


async def user_id(owner: asyncpg.Connection, email: str) -> uuid.UUID:
    value = await owner.fetchval("SELECT id FROM users WHERE email = $1", email)
    assert value is not None, email
    return uuid.UUID(str(value))


async def roles(owner: asyncpg.Connection, tenant_id: uuid.UUID) -> dict[str, str]:
    rows = await owner.fetch(
        "SELECT u.email, m.role FROM memberships m JOIN users u ON u.id = m.user_id "
        "WHERE m.tenant_id = $1",
        tenant_id,
    )
    return {r["email"]: r["role"] for r in rows}


async def audit_rows(owner: asyncpg.Connection, tenant_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = await owner.fetch(
        "SELECT tenant_id, actor_user_id, action, target_type, target_id, details, request_id "
        "FROM audit_log WHERE tenant_id = $1 ORDER BY id",
        tenant_id,
    )
    return [{**dict(r), "details": json.loads(r["details"])} for r in rows]


def with_request_id(headers: dict[str, str], request_id: str) -> dict[str, str]:
    return {**headers, "X-Request-ID": request_id}


# --- upsertClient -------------------------------------------------------------------


async def test_upsert_client_creates_then_updates(
    client: httpx.AsyncClient, world: World, owner: asyncpg.Connection
) -> None:
    tenant = await world.tenant(clients=0)
    editor = world.headers(tenant.editor)
    created = await gql(
        client,
        UPSERT,
        {"input": {"clientId": " XERO-9 ", "name": "Bondi Bakes", "industry": "hospitality"}},
        editor,
    )
    node = created["data"]["upsertClient"]
    assert {k: node[k] for k in ("clientId", "name", "industry")} == {
        "clientId": "XERO-9",
        "name": "Bondi Bakes",
        "industry": "hospitality",
    }
    updated = await gql(
        client, UPSERT, {"input": {"clientId": "XERO-9", "name": "Bondi Bakery"}}, editor
    )
    assert updated["data"]["upsertClient"]["id"] == node["id"]
    rows = await owner.fetch(
        "SELECT id, client_id, client_name, industry FROM client_kpis WHERE tenant_id = $1",
        tenant.id,
    )
    assert [tuple(r.values()) for r in rows] == [
        (uuid.UUID(node["id"]), "XERO-9", "Bondi Bakery", None)
    ]


@pytest.mark.parametrize(
    ("client_id", "name", "field"),
    [
        ("", "Name", "clientId"),
        ("   ", "Name", "clientId"),
        ("x" * 101, "Name", "clientId"),
        ("C-1", "", "name"),
        ("C-1", "n" * 201, "name"),
    ],
)
async def test_upsert_client_validates_lengths(
    client: httpx.AsyncClient,
    world: World,
    owner: asyncpg.Connection,
    client_id: str,
    name: str,
    field: str,
) -> None:
    tenant = await world.tenant(clients=0)
    body = await gql(
        client,
        UPSERT,
        {"input": {"clientId": client_id, "name": name}},
        world.headers(tenant.editor),
    )
    extensions = error(body)
    assert (extensions["code"], extensions["field"]) == ("VALIDATION_ERROR", field)
    count = await owner.fetchval("SELECT count(*) FROM client_kpis WHERE tenant_id = $1", tenant.id)
    assert count == 0


async def test_upsert_client_accepts_the_maximum_lengths(
    client: httpx.AsyncClient, world: World
) -> None:
    tenant = await world.tenant(clients=0)
    body = await gql(
        client,
        UPSERT,
        {"input": {"clientId": "x" * 100, "name": "n" * 200}},
        world.headers(tenant.editor),
    )
    assert body["data"]["upsertClient"]["name"] == "n" * 200


async def test_viewer_cannot_upsert_client(client: httpx.AsyncClient, world: World) -> None:
    tenant = await world.tenant(clients=0)
    body = await gql(
        client,
        UPSERT,
        {"input": {"clientId": "C-1", "name": "Name"}},
        world.headers(tenant.viewer),
    )
    assert error(body)["code"] == "FORBIDDEN"


# --- member administration: roles -----------------------------------------------------


async def _admin_operations(
    owner: asyncpg.Connection, tenant: TenantFixture
) -> list[tuple[str, dict[str, Any]]]:
    viewer_id = str(await user_id(owner, tenant.viewer))
    return [
        (INVITE, {"email": f"new-{uuid.uuid4().hex[:8]}@example.test", "role": "VIEWER"}),
        (SET_ROLE, {"userId": viewer_id, "role": "ADMIN"}),
        (REMOVE, {"userId": viewer_id}),
        (MEMBERS, {}),
    ]


@pytest.mark.parametrize("role", ["viewer", "editor"])
async def test_admin_operations_are_forbidden_below_admin(
    client: httpx.AsyncClient, world: World, owner: asyncpg.Connection, role: str
) -> None:
    tenant = await world.tenant(clients=0)
    before = await roles(owner, tenant.id)
    headers = world.headers(getattr(tenant, role))
    for query, variables in await _admin_operations(owner, tenant):
        body = await gql(client, query, variables, headers)
        assert error(body)["code"] == "FORBIDDEN", query
    assert await roles(owner, tenant.id) == before
    assert await audit_rows(owner, tenant.id) == []


async def test_members_lists_the_tenant_by_email_with_pages(
    client: httpx.AsyncClient, world: World, owner: asyncpg.Connection
) -> None:
    tenant = await world.tenant(clients=0)
    other = await world.tenant(clients=0)
    headers = world.headers(tenant.admin)
    first = await gql(client, MEMBERS, {"first": 2}, headers)
    page = first["data"]["members"]
    assert page["pageInfo"]["hasNextPage"] is True
    second = await gql(
        client, MEMBERS, {"first": 2, "after": page["pageInfo"]["endCursor"]}, headers
    )
    rest = second["data"]["members"]
    assert rest["pageInfo"]["hasNextPage"] is False
    expected = [
        {"id": str(await user_id(owner, email)), "email": email, "role": role}
        for email, role in sorted(
            [(tenant.admin, "ADMIN"), (tenant.editor, "EDITOR"), (tenant.viewer, "VIEWER")]
        )
    ]
    assert page["nodes"] + rest["nodes"] == expected
    assert other.admin not in {n["email"] for n in page["nodes"] + rest["nodes"]}


# --- invitations ---------------------------------------------------------------------


async def test_invite_creates_a_pending_invitation_and_an_audit_row_but_no_membership(
    client: httpx.AsyncClient, world: World, owner: asyncpg.Connection
) -> None:
    tenant = await world.tenant(clients=0)
    email = f"new-{uuid.uuid4().hex[:8]}@example.test"
    body = await gql(
        client,
        INVITE,
        {"email": email.upper(), "role": "EDITOR"},
        with_request_id(world.headers(tenant.admin), "req-invite-0001"),
    )
    invitation_id = await owner.fetchval(
        "SELECT id FROM invitations WHERE tenant_id = $1 AND email = $2", tenant.id, email
    )
    assert body == {
        "data": {
            "inviteUser": {
                "id": str(invitation_id),
                "email": email,
                "role": "EDITOR",
                "status": "PENDING",
            }
        }
    }
    assert email not in await roles(owner, tenant.id)  # a member only once they accept
    assert await audit_rows(owner, tenant.id) == [
        {
            "tenant_id": tenant.id,
            "actor_user_id": await user_id(owner, tenant.admin),
            "action": "invitation.created",
            "target_type": "invitation",
            "target_id": str(invitation_id),
            "details": {"email": email, "role": "EDITOR"},
            "request_id": "req-invite-0001",
        }
    ]
    # Signed in, the invitee belongs to no tenant until they accept (tests/test_invitations).
    me = await gql(client, "{ me { role tenant { slug } } }", headers=world.headers(email))
    assert me == {"data": {"me": {"role": None, "tenant": None}}}


async def test_invite_of_an_existing_member_conflicts(
    client: httpx.AsyncClient, world: World, owner: asyncpg.Connection
) -> None:
    tenant = await world.tenant(clients=0)
    before = await roles(owner, tenant.id)
    body = await gql(
        client,
        INVITE,
        {"email": tenant.viewer, "role": "ADMIN"},
        world.headers(tenant.admin),
    )
    assert error(body)["code"] == "CONFLICT"
    assert await roles(owner, tenant.id) == before
    assert await audit_rows(owner, tenant.id) == []


@pytest.mark.parametrize("email", ["not-an-email", "two@@ats.test", "a b@example.test", ""])
async def test_invite_rejects_bad_emails(
    client: httpx.AsyncClient, world: World, owner: asyncpg.Connection, email: str
) -> None:
    tenant = await world.tenant(clients=0)
    body = await gql(
        client, INVITE, {"email": email, "role": "VIEWER"}, world.headers(tenant.admin)
    )
    extensions = error(body)
    assert (extensions["code"], extensions["field"]) == ("VALIDATION_ERROR", "email")
    assert len(await roles(owner, tenant.id)) == 3


# --- role changes and removals -------------------------------------------------------


async def test_set_role_and_remove_are_audited(
    client: httpx.AsyncClient, world: World, owner: asyncpg.Connection
) -> None:
    tenant = await world.tenant(clients=0)
    admin = world.headers(tenant.admin)
    editor_id = await user_id(owner, tenant.editor)
    viewer_id = await user_id(owner, tenant.viewer)
    changed = await gql(
        client,
        SET_ROLE,
        {"userId": str(editor_id), "role": "VIEWER"},
        with_request_id(admin, "req-set-role-01"),
    )
    assert changed == {
        "data": {"setUserRole": {"id": str(editor_id), "email": tenant.editor, "role": "VIEWER"}}
    }
    removed = await gql(
        client, REMOVE, {"userId": str(viewer_id)}, with_request_id(admin, "req-remove-001")
    )
    assert removed == {
        "data": {"removeUser": {"id": str(viewer_id), "email": tenant.viewer, "role": "VIEWER"}}
    }
    assert await roles(owner, tenant.id) == {tenant.admin: "ADMIN", tenant.editor: "VIEWER"}
    # The user row itself stays (users are global).
    assert await user_id(owner, tenant.viewer) == viewer_id
    actor = await user_id(owner, tenant.admin)
    assert await audit_rows(owner, tenant.id) == [
        {
            "tenant_id": tenant.id,
            "actor_user_id": actor,
            "action": "member.role_changed",
            "target_type": "user",
            "target_id": str(editor_id),
            "details": {"old_role": "EDITOR", "new_role": "VIEWER"},
            "request_id": "req-set-role-01",
        },
        {
            "tenant_id": tenant.id,
            "actor_user_id": actor,
            "action": "member.removed",
            "target_type": "user",
            "target_id": str(viewer_id),
            "details": {"old_role": "VIEWER"},
            "request_id": "req-remove-001",
        },
    ]
    # The removed user no longer gets into the tenant.
    body = await gql(
        client, "{ me { role tenant { slug } } }", headers=world.headers(tenant.viewer)
    )
    assert body == {"data": {"me": {"role": None, "tenant": None}}}


async def test_setting_the_same_role_changes_and_audits_nothing(
    client: httpx.AsyncClient, world: World, owner: asyncpg.Connection
) -> None:
    tenant = await world.tenant(clients=0)
    editor_id = await user_id(owner, tenant.editor)
    body = await gql(
        client,
        SET_ROLE,
        {"userId": str(editor_id), "role": "EDITOR"},
        world.headers(tenant.admin),
    )
    assert body["data"]["setUserRole"]["role"] == "EDITOR"
    assert await audit_rows(owner, tenant.id) == []


async def test_the_last_admin_cannot_demote_or_remove_themselves(
    client: httpx.AsyncClient, world: World, owner: asyncpg.Connection
) -> None:
    tenant = await world.tenant(clients=0)
    admin = world.headers(tenant.admin)
    admin_id = str(await user_id(owner, tenant.admin))
    before = await roles(owner, tenant.id)
    for query, variables in (
        (SET_ROLE, {"userId": admin_id, "role": "EDITOR"}),
        (REMOVE, {"userId": admin_id}),
    ):
        body = await gql(client, query, variables, admin)
        assert error(body)["code"] == "CONFLICT"
        assert body["errors"][0]["message"] == "tenant must keep at least one ADMIN"
    assert await roles(owner, tenant.id) == before
    assert await audit_rows(owner, tenant.id) == []

    # With a second ADMIN, stepping down is allowed.
    editor_id = str(await user_id(owner, tenant.editor))
    promoted = await gql(client, SET_ROLE, {"userId": editor_id, "role": "ADMIN"}, admin)
    assert promoted["data"]["setUserRole"]["role"] == "ADMIN"
    stepped_down = await gql(client, SET_ROLE, {"userId": admin_id, "role": "VIEWER"}, admin)
    assert stepped_down["data"]["setUserRole"]["role"] == "VIEWER"
    # ... and the new only ADMIN is protected in turn.
    body = await gql(client, REMOVE, {"userId": editor_id}, world.headers(tenant.editor))
    assert error(body)["code"] == "CONFLICT"
    assert await roles(owner, tenant.id) == {
        tenant.admin: "VIEWER",
        tenant.editor: "ADMIN",
        tenant.viewer: "VIEWER",
    }


async def test_user_ids_of_other_tenants_are_not_found(
    client: httpx.AsyncClient, world: World, owner: asyncpg.Connection
) -> None:
    tenant = await world.tenant(clients=0)
    other = await world.tenant(clients=0)
    other_before = await roles(owner, other.id)
    admin = world.headers(tenant.admin)
    for query, variables in (
        (SET_ROLE, {"userId": str(await user_id(owner, other.viewer)), "role": "ADMIN"}),
        (REMOVE, {"userId": str(await user_id(owner, other.admin))}),
        (SET_ROLE, {"userId": str(uuid.uuid4()), "role": "ADMIN"}),
        (REMOVE, {"userId": str(uuid.uuid4())}),
    ):
        body = await gql(client, query, variables, admin)
        extensions = error(body)
        assert (extensions["code"], extensions["field"]) == ("NOT_FOUND", "userId")
    malformed = await gql(client, REMOVE, {"userId": "nope"}, admin)
    assert error(malformed)["code"] == "VALIDATION_ERROR"
    assert await roles(owner, other.id) == other_before
    assert await audit_rows(owner, other.id) == []
    assert await audit_rows(owner, tenant.id) == []


async def test_a_role_change_applies_on_the_next_request(
    client: httpx.AsyncClient, world: World, owner: asyncpg.Connection
) -> None:
    tenant = await world.tenant(clients=0)
    viewer = world.headers(tenant.viewer)  # one token, used before and after
    variables = {"input": {"clientId": "C-NEXT", "name": "Next Request Pty Ltd"}}
    assert error(await gql(client, UPSERT, variables, viewer))["code"] == "FORBIDDEN"
    promoted = await gql(
        client,
        SET_ROLE,
        {"userId": str(await user_id(owner, tenant.viewer)), "role": "EDITOR"},
        world.headers(tenant.admin),
    )
    assert promoted["data"]["setUserRole"]["role"] == "EDITOR"
    body = await gql(client, UPSERT, variables, viewer)
    assert body["data"]["upsertClient"]["name"] == "Next Request Pty Ltd"


# --- staff: tenants ------------------------------------------------------------------


async def test_tenants_is_staff_only(client: httpx.AsyncClient, world: World) -> None:
    tenant = await world.tenant(clients=0)
    for email in (tenant.admin, tenant.viewer):
        assert error(await gql(client, TENANTS, {}, world.headers(email)))["code"] == "FORBIDDEN"


async def test_staff_pages_through_every_tenant(
    client: httpx.AsyncClient, world: World, owner: asyncpg.Connection
) -> None:
    await world.tenant(clients=0)
    await world.tenant(clients=0)
    staff = world.headers(await world.staff())
    expected = [
        {
            "id": str(r["id"]),
            "slug": r["slug"],
            "name": r["name"],
            "industry": r["industry"],
            "plan": r["plan"],
        }
        for r in await owner.fetch(
            "SELECT id, slug, name, industry, plan FROM tenants ORDER BY slug, id"
        )
    ]
    assert len(expected) >= 2
    seen: list[dict[str, Any]] = []
    after = None
    while True:
        body = await gql(client, TENANTS, {"first": 3, "after": after}, staff)
        page = body["data"]["tenants"]
        seen += page["nodes"]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == expected


async def test_create_tenant_is_staff_only(
    client: httpx.AsyncClient, world: World, owner: asyncpg.Connection
) -> None:
    tenant = await world.tenant(clients=0)
    slug = f"nope-{uuid.uuid4().hex[:8]}"
    body = await gql(
        client, CREATE_TENANT, {"slug": slug, "name": "Nope"}, world.headers(tenant.admin)
    )
    assert error(body)["code"] == "FORBIDDEN"
    assert await owner.fetchval("SELECT count(*) FROM tenants WHERE slug = $1", slug) == 0


async def test_staff_creates_a_tenant_with_an_audit_row(
    client: httpx.AsyncClient, world: World, owner: asyncpg.Connection
) -> None:
    staff_email = await world.staff()
    staff = with_request_id(world.headers(staff_email), "req-create-tenant")
    slug = f"new-{uuid.uuid4().hex[:8]}"
    body = await gql(
        client,
        CREATE_TENANT,
        {"slug": slug, "name": "  Newcastle Nurseries  ", "industry": "retail"},
        staff,
    )
    created = body["data"]["createTenant"]
    row = await owner.fetchrow("SELECT id, name, industry, plan FROM tenants WHERE slug = $1", slug)
    assert row is not None
    assert created == {
        "id": str(row["id"]),
        "slug": slug,
        "name": "Newcastle Nurseries",
        "industry": "retail",
        "plan": "standard",
    }
    assert (row["name"], row["industry"]) == ("Newcastle Nurseries", "retail")
    assert await audit_rows(owner, row["id"]) == [
        {
            "tenant_id": row["id"],
            "actor_user_id": await user_id(owner, staff_email),
            "action": "tenant.created",
            "target_type": "tenant",
            "target_id": str(row["id"]),
            "details": {"slug": slug, "name": "Newcastle Nurseries", "industry": "retail"},
            "request_id": "req-create-tenant",
        }
    ]
    duplicate = await gql(client, CREATE_TENANT, {"slug": slug, "name": "Again"}, staff)
    assert (error(duplicate)["code"], error(duplicate)["field"]) == ("CONFLICT", "slug")
    assert len(await audit_rows(owner, row["id"])) == 1


@pytest.mark.parametrize(
    ("slug", "name", "field"),
    [("Bad Slug", "Name", "slug"), ("-dash", "Name", "slug"), ("ok-slug", " ", "name")],
)
async def test_create_tenant_validates(
    client: httpx.AsyncClient,
    world: World,
    owner: asyncpg.Connection,
    slug: str,
    name: str,
    field: str,
) -> None:
    body = await gql(
        client, CREATE_TENANT, {"slug": slug, "name": name}, world.headers(await world.staff())
    )
    extensions = error(body)
    assert (extensions["code"], extensions["field"]) == ("VALIDATION_ERROR", field)
    assert await owner.fetchval("SELECT count(*) FROM tenants WHERE slug = $1", slug) == 0


async def test_concurrent_demotions_cannot_remove_the_last_admin(
    client: httpx.AsyncClient, world: World, owner: asyncpg.Connection, services: Services
) -> None:
    """Two ADMINs demote each other in overlapping transactions: the second waits for the
    first (the ADMIN memberships are locked) and then sees it would leave no ADMIN."""
    tenant = await world.tenant(clients=0)
    admin_id = await user_id(owner, tenant.admin)
    editor_id = await user_id(owner, tenant.editor)
    await gql(
        client, SET_ROLE, {"userId": str(editor_id), "role": "ADMIN"}, world.headers(tenant.admin)
    )

    async def demote(
        actor: uuid.UUID, target: uuid.UUID, changed: asyncio.Event, commit: asyncio.Event
    ) -> None:
        scope = Scope(tenant_id=tenant.id, user_id=actor)
        async with services.db.transaction(scope) as session:
            await MemberAdmin(session, Actor(tenant.id, actor, None)).set_role(target, Role.VIEWER)
            changed.set()
            await commit.wait()

    first_changed, first_commit = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(demote(admin_id, editor_id, first_changed, first_commit))
    await first_changed.wait()
    second_changed, second_commit = asyncio.Event(), asyncio.Event()
    second_commit.set()
    second = asyncio.create_task(demote(editor_id, admin_id, second_changed, second_commit))
    try:
        await asyncio.sleep(0.2)
        assert not second_changed.is_set()  # waiting for the first transaction's locks
    finally:
        first_commit.set()
        await first
    with pytest.raises(ConflictError, match="at least one ADMIN"):
        await second
    assert await roles(owner, tenant.id) == {
        tenant.admin: "ADMIN",
        tenant.editor: "VIEWER",
        tenant.viewer: "VIEWER",
    }
