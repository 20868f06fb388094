"""Invitations with consent and the explicit tenant choice, against the real stack: the
app over the embedded PostgreSQL and Redis, mail through a real aiosmtpd server on loopback
(the development stack's mail sink, zixly.dev.mail)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import pytest

from tests.conftest import World, gql, make_settings, other_app
from zixly.container import Services
from zixly.dev.mail import MailSink, mail_sink
from zixly.embedded.stack import Endpoints

PUBLIC_URL = "https://zixly.example.test"
INVITE = """
mutation($email: String!, $role: RoleEnum!) {
  inviteUser(email: $email, role: $role) { id email role status expiresAt createdAt }
}"""
ACCEPT = "mutation($token: String!) { acceptInvitation(token: $token) { tenantSlug role } }"
REVOKE = "mutation($id: ID!) { revokeInvitation(id: $id) { id email status } }"
LIST = """
query($first: Int, $after: String, $status: InvitationStatus) {
  invitations(first: $first, after: $after, status: $status) {
    nodes { id email role status } pageInfo { hasNextPage endCursor }
  }
}"""
ME = "{ me { email displayName role tenant { slug } } }"
CLIENTS = "{ clients { nodes { clientId } } }"


@pytest.fixture(scope="module")
def sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailSink]:
    with mail_sink(tmp_path_factory.mktemp("mail")) as running:
        yield running


@pytest.fixture(scope="module")
async def app(
    endpoints: Endpoints, data_dir: Path, sink: MailSink
) -> AsyncIterator[tuple[Services, httpx.AsyncClient]]:
    settings = make_settings(
        data_dir,
        smtp_host=sink.host,
        smtp_port=sink.port,
        smtp_starttls=False,
        public_url=PUBLIC_URL,
    )
    async with other_app(endpoints, settings) as built:
        yield built


@pytest.fixture
def client(app: tuple[Services, httpx.AsyncClient]) -> httpx.AsyncClient:
    return app[1]


def error(body: dict[str, Any]) -> dict[str, Any]:
    assert body.get("data") is None, body
    assert len(body["errors"]) == 1, body
    extensions: dict[str, Any] = body["errors"][0]["extensions"]
    return {"message": body["errors"][0]["message"], **extensions}


async def invite(
    client: httpx.AsyncClient, world: World, admin: str, email: str, role: str = "VIEWER"
) -> dict[str, Any]:
    return await gql(client, INVITE, {"email": email, "role": role}, world.headers(admin))


def link_sent_to(sink: MailSink, email: str) -> str:
    """The accept link of the latest mail to ``email``."""
    mails = [m for m in sink.messages() if m["To"] == email]
    assert mails, f"no mail to {email}"
    body = mails[-1].get_payload(decode=True).decode()
    found = re.search(r"https?://\S+", body)
    assert found is not None, body
    return found.group(0)


def token_of(link: str) -> str:
    return parse_qs(urlsplit(link).query)["token"][0]


async def accept(
    client: httpx.AsyncClient, world: World, email: str, token: str, **kw: Any
) -> dict[str, Any]:
    return await gql(client, ACCEPT, {"token": token}, world.headers(email, **kw))


async def memberships(owner: asyncpg.Connection, email: str) -> dict[str, str]:
    rows = await owner.fetch(
        "SELECT t.slug, m.role FROM memberships m JOIN users u ON u.id = m.user_id "
        "JOIN tenants t ON t.id = m.tenant_id WHERE u.email = $1",
        email,
    )
    return {r["slug"]: r["role"] for r in rows}


async def age_memberships(owner: asyncpg.Connection, email: str) -> None:
    """Make the user's memberships an hour old (they existed before any token below)."""
    await owner.execute(
        "UPDATE memberships SET created_at = now() - interval '1 hour' "
        "WHERE user_id = (SELECT id FROM users WHERE email = $1)",
        email,
    )


def shape(invitation: dict[str, Any]) -> dict[str, Any]:
    """What an answer says beyond the invitation's own id, email and times."""
    return {
        k: v for k, v in invitation.items() if k not in {"id", "email", "expiresAt", "createdAt"}
    }


# --- inviting reveals nothing and adds nobody ------------------------------------------


async def test_inviting_another_tenants_user_reveals_nothing_and_adds_no_membership(
    client: httpx.AsyncClient, world: World, owner: asyncpg.Connection
) -> None:
    ours = await world.tenant("inv", clients=0)
    theirs = await world.tenant("inv", clients=0)
    await owner.execute(
        "UPDATE users SET display_name = 'Secret Name' WHERE email = $1", theirs.editor
    )
    their_id = str(await owner.fetchval("SELECT id FROM users WHERE email = $1", theirs.editor))
    fresh = f"nobody-{uuid.uuid4().hex[:8]}@example.test"

    existing = await invite(client, world, ours.admin, theirs.editor)
    unknown = await invite(client, world, ours.admin, fresh)

    answer = existing["data"]["inviteUser"]
    assert (
        shape(answer)
        == shape(unknown["data"]["inviteUser"])
        == {
            "role": "VIEWER",
            "status": "PENDING",
        }
    )
    assert answer["email"] == theirs.editor and answer["id"] != their_id
    assert their_id not in json.dumps(existing) and "Secret Name" not in json.dumps(existing)
    assert await memberships(owner, theirs.editor) == {theirs.slug: "EDITOR"}


async def test_inviting_a_staff_email_answers_the_same_and_staff_can_never_join(
    client: httpx.AsyncClient, world: World, owner: asyncpg.Connection, sink: MailSink
) -> None:
    tenant = await world.tenant("inv", clients=0)
    staff = await world.staff()
    body = await invite(client, world, tenant.admin, staff, role="ADMIN")
    assert shape(body["data"]["inviteUser"]) == {"role": "ADMIN", "status": "PENDING"}

    refused = error(await accept(client, world, staff, token_of(link_sent_to(sink, staff))))
    assert refused["code"] == "FORBIDDEN"
    assert tenant.slug not in json.dumps(refused) and str(tenant.id) not in json.dumps(refused)
    assert await memberships(owner, staff) == {}


async def test_inviting_an_already_invited_email_answers_the_same_and_supersedes_the_link(
    client: httpx.AsyncClient, world: World, owner: asyncpg.Connection, sink: MailSink
) -> None:
    tenant = await world.tenant("inv", clients=0)
    email = f"twice-{uuid.uuid4().hex[:8]}@example.test"
    first = await invite(client, world, tenant.admin, email)
    old_token = token_of(link_sent_to(sink, email))
    second = await invite(client, world, tenant.admin, email)
    new_token = token_of(link_sent_to(sink, email))
    assert shape(first["data"]["inviteUser"]) == shape(second["data"]["inviteUser"])
    assert old_token != new_token

    assert error(await accept(client, world, email, old_token))["reason"] == "REVOKED"
    assert (await accept(client, world, email, new_token))["data"]["acceptInvitation"] == {
        "tenantSlug": tenant.slug,
        "role": "VIEWER",
    }
    assert await memberships(owner, email) == {tenant.slug: "VIEWER"}


async def test_inviting_a_member_of_ones_own_tenant_conflicts(
    client: httpx.AsyncClient, world: World, owner: asyncpg.Connection
) -> None:
    tenant = await world.tenant("inv", clients=0)
    body = await invite(client, world, tenant.admin, tenant.viewer.upper(), role="ADMIN")
    assert error(body)["code"] == "CONFLICT"
    assert (
        await owner.fetchval("SELECT count(*) FROM invitations WHERE tenant_id = $1", tenant.id)
        == 0
    )


# --- the mail and its link --------------------------------------------------------------


async def test_the_mail_arrives_with_a_link_that_works(
    client: httpx.AsyncClient, world: World, owner: asyncpg.Connection, sink: MailSink
) -> None:
    tenant = await world.tenant("inv", clients=0)
    email = f"mailed-{uuid.uuid4().hex[:8]}@example.test"
    invitation = (await invite(client, world, tenant.admin, email, role="EDITOR"))["data"]

    link = link_sent_to(sink, email)
    assert link.startswith(f"{PUBLIC_URL}/invitations/accept?token=")
    token = token_of(link)
    assert len(token) >= 43  # 256 bits, URL-safe
    stored = await owner.fetchrow(
        "SELECT * FROM invitations WHERE id = $1", uuid.UUID(invitation["inviteUser"]["id"])
    )
    assert stored["token_hash"] == hashlib.sha256(token.encode()).digest()
    assert token not in json.dumps({k: str(v) for k, v in dict(stored).items()})

    page = await client.get(urlsplit(link).path + "?" + urlsplit(link).query)
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert token not in page.text and "acceptInvitation" in page.text

    accepted = await accept(client, world, email.upper(), token)
    assert accepted == {"data": {"acceptInvitation": {"tenantSlug": tenant.slug, "role": "EDITOR"}}}
    me = await gql(client, ME, headers=world.headers(email))
    assert me["data"]["me"]["role"] == "EDITOR"
    assert me["data"]["me"]["tenant"] == {"slug": tenant.slug}


async def test_expired_revoked_used_unknown_and_foreign_links_are_refused(
    client: httpx.AsyncClient, world: World, owner: asyncpg.Connection, sink: MailSink
) -> None:
    tenant = await world.tenant("inv", clients=0)
    emails = {
        name: f"{name}-{uuid.uuid4().hex[:8]}@example.test"
        for name in ("expired", "revoked", "used")
    }
    ids = {}
    for name, email in emails.items():
        ids[name] = (await invite(client, world, tenant.admin, email))["data"]["inviteUser"]["id"]
    tokens = {name: token_of(link_sent_to(sink, email)) for name, email in emails.items()}
    await owner.execute(
        "UPDATE invitations SET expires_at = now() - interval '1 second' WHERE id = $1",
        uuid.UUID(ids["expired"]),
    )
    revoked = await gql(client, REVOKE, {"id": ids["revoked"]}, world.headers(tenant.admin))
    assert revoked["data"]["revokeInvitation"]["status"] == "REVOKED"
    assert "data" in await accept(client, world, emails["used"], tokens["used"])

    attempts = {
        "EXPIRED": await accept(client, world, emails["expired"], tokens["expired"]),
        "REVOKED": await accept(client, world, emails["revoked"], tokens["revoked"]),
        "USED": await accept(client, world, emails["used"], tokens["used"]),
        "UNKNOWN": await accept(client, world, emails["used"], "x" * 43),
    }
    for reason, body in attempts.items():
        refused = error(body)
        assert (refused["code"], refused["reason"]) == ("INVITATION_INVALID", reason)
        assert tenant.slug not in json.dumps(body) and str(tenant.id) not in json.dumps(body)
    # A link forwarded to someone else does not work for them.
    other = await world.tenant("inv", clients=0)
    fresh = f"fresh-{uuid.uuid4().hex[:8]}@example.test"
    await invite(client, world, tenant.admin, fresh)
    forwarded = error(
        await accept(client, world, other.viewer, token_of(link_sent_to(sink, fresh)))
    )
    assert forwarded["code"] == "FORBIDDEN" and tenant.slug not in json.dumps(forwarded)
    assert await memberships(owner, emails["expired"]) == {}
    assert await memberships(owner, emails["revoked"]) == {}
    assert await memberships(owner, other.viewer) == {other.slug: "VIEWER"}


# --- revoking, listing, auditing -------------------------------------------------------


async def test_revocation_and_the_listing_of_pending_invitations(
    client: httpx.AsyncClient, world: World
) -> None:
    tenant = await world.tenant("inv", clients=0)
    other = await world.tenant("inv", clients=0)
    admin = world.headers(tenant.admin)
    emails = sorted(f"{n}-{uuid.uuid4().hex[:6]}@example.test" for n in ("a", "b", "c"))
    ids = [
        (await invite(client, world, tenant.admin, e))["data"]["inviteUser"]["id"] for e in emails
    ]
    await invite(client, world, other.admin, f"theirs-{uuid.uuid4().hex[:6]}@example.test")

    page = (await gql(client, LIST, {"first": 2}, admin))["data"]["invitations"]
    rest = (await gql(client, LIST, {"first": 2, "after": page["pageInfo"]["endCursor"]}, admin))[
        "data"
    ]["invitations"]
    assert page["pageInfo"]["hasNextPage"] and not rest["pageInfo"]["hasNextPage"]
    assert [n["email"] for n in page["nodes"] + rest["nodes"]] == emails

    by_id = {i: e for i, e in zip(ids, emails, strict=True)}
    revoked = await gql(client, REVOKE, {"id": ids[1]}, admin)
    assert revoked == {
        "data": {"revokeInvitation": {"id": ids[1], "email": by_id[ids[1]], "status": "REVOKED"}}
    }
    assert error(await gql(client, REVOKE, {"id": ids[1]}, admin))["code"] == "CONFLICT"
    pending = (await gql(client, LIST, {}, admin))["data"]["invitations"]["nodes"]
    assert [n["id"] for n in pending] == [ids[0], ids[2]]
    gone = (await gql(client, LIST, {"status": "REVOKED"}, admin))["data"]["invitations"]
    assert [n["id"] for n in gone["nodes"]] == [ids[1]]
    everything = (await gql(client, LIST, {"status": None}, admin))["data"]["invitations"]
    assert len(everything["nodes"]) == 3
    editor = await gql(client, LIST, {}, world.headers(tenant.editor))
    assert error(editor)["code"] == "FORBIDDEN"


async def test_another_tenants_admin_can_neither_see_nor_revoke_an_invitation(
    client: httpx.AsyncClient, world: World, owner: asyncpg.Connection
) -> None:
    tenant = await world.tenant("inv", clients=0)
    other = await world.tenant("inv", clients=0)
    email = f"target-{uuid.uuid4().hex[:8]}@example.test"
    invitation_id = (await invite(client, world, tenant.admin, email))["data"]["inviteUser"]["id"]

    theirs = world.headers(other.admin)
    listed = await gql(client, LIST, {"status": None}, theirs)
    assert listed["data"]["invitations"]["nodes"] == []
    assert error(await gql(client, REVOKE, {"id": invitation_id}, theirs))["code"] == "NOT_FOUND"
    status = await owner.fetchval(
        "SELECT revoked_at IS NULL FROM invitations WHERE id = $1", uuid.UUID(invitation_id)
    )
    assert status is True


async def test_invited_accepted_and_revoked_are_audited(
    client: httpx.AsyncClient, world: World, owner: asyncpg.Connection, sink: MailSink
) -> None:
    tenant = await world.tenant("inv", clients=0)
    joins = f"joins-{uuid.uuid4().hex[:8]}@example.test"
    dropped = f"dropped-{uuid.uuid4().hex[:8]}@example.test"
    joining = (await invite(client, world, tenant.admin, joins, "EDITOR"))["data"]["inviteUser"]
    dropping = (await invite(client, world, tenant.admin, dropped))["data"]["inviteUser"]
    await gql(client, REVOKE, {"id": dropping["id"]}, world.headers(tenant.admin))
    await gql(
        client,
        ACCEPT,
        {"token": token_of(link_sent_to(sink, joins))},
        {**world.headers(joins), "X-Request-ID": "req-accept-0001"},
    )
    rows = await owner.fetch(
        "SELECT a.action, a.target_type, a.target_id, a.details, a.request_id, u.email AS actor "
        "FROM audit_log a JOIN users u ON u.id = a.actor_user_id WHERE a.tenant_id = $1 "
        "ORDER BY a.id",
        tenant.id,
    )
    assert [(r["action"], r["target_id"], r["actor"], json.loads(r["details"])) for r in rows] == [
        ("invitation.created", joining["id"], tenant.admin, {"email": joins, "role": "EDITOR"}),
        ("invitation.created", dropping["id"], tenant.admin, {"email": dropped, "role": "VIEWER"}),
        ("invitation.revoked", dropping["id"], tenant.admin, {"email": dropped}),
        (
            "invitation.accepted",
            joining["id"],
            joins,
            {"email": joins, "role": "EDITOR", "already_member": False},
        ),
    ]
    assert {r["target_type"] for r in rows} == {"invitation"}
    assert rows[-1]["request_id"] == "req-accept-0001"


# --- several tenants: an explicit choice ----------------------------------------------


async def test_tokens_issued_before_a_second_membership_keep_working(
    client: httpx.AsyncClient, world: World, owner: asyncpg.Connection, sink: MailSink
) -> None:
    home = await world.tenant("inv", clients=1)
    other = await world.tenant("inv", clients=0)
    await age_memberships(owner, home.editor)
    earlier = world.headers(home.editor, now=int(time.time()) - 60)  # no tenant claim

    await invite(client, world, other.admin, home.editor, role="VIEWER")
    joined = await accept(client, world, home.editor, token_of(link_sent_to(sink, home.editor)))
    assert joined["data"]["acceptInvitation"]["tenantSlug"] == other.slug

    me = await gql(client, ME, headers=earlier)
    assert me["data"]["me"]["tenant"] == {"slug": home.slug}
    assert me["data"]["me"]["role"] == "EDITOR"
    clients = await gql(client, CLIENTS, headers=earlier)
    assert clients == {"data": {"clients": {"nodes": [{"clientId": "C-0"}]}}}
    # Naming a tenant always works.
    chosen = await gql(client, ME, headers=world.headers(home.editor, tenant=other.slug))
    assert chosen["data"]["me"]["role"] == "VIEWER"


async def test_a_missing_choice_with_several_memberships_is_tenant_required(
    client: httpx.AsyncClient, world: World, owner: asyncpg.Connection
) -> None:
    first = await world.tenant("inv", clients=1)
    second = await world.tenant("inv", clients=0)
    unrelated = await world.tenant("inv", clients=0)
    await owner.execute(
        "INSERT INTO memberships (tenant_id, user_id, role) "
        "SELECT $1, id, 'VIEWER' FROM users WHERE email = $2",
        second.id,
        first.admin,
    )
    await owner.execute("UPDATE users SET display_name = 'Ada' WHERE email = $1", first.admin)
    headers = world.headers(first.admin)  # issued after both memberships, no choice

    refused = error(await gql(client, CLIENTS, headers=headers))
    assert refused["code"] == "TENANT_REQUIRED"
    assert refused["tenants"] == sorted([first.slug, second.slug])
    assert unrelated.slug not in json.dumps(refused)
    # Who they are still answers (no tenant), with the display name read under RLS.
    me = await gql(client, ME, headers=headers)
    assert me == {
        "data": {"me": {"email": first.admin, "displayName": "Ada", "role": None, "tenant": None}}
    }
    by_header = await gql(client, CLIENTS, headers={**headers, "X-Zixly-Tenant": first.slug})
    assert by_header == {"data": {"clients": {"nodes": [{"clientId": "C-0"}]}}}
    by_claim = await gql(client, ME, headers=world.headers(first.admin, tenant=str(second.id)))
    assert by_claim["data"]["me"]["tenant"] == {"slug": second.slug}


# --- the database functions --------------------------------------------------------------


async def test_the_definer_functions_are_locked_down_and_the_look_up_returns_only_what_auth_needs(
    owner: asyncpg.Connection, services: Services
) -> None:
    app_role, staff_role = services.settings.app_role, services.settings.staff_role
    rows = await owner.fetch(
        "SELECT p.oid::regprocedure::text AS name, p.proconfig, pg_get_function_result(p.oid) "
        "AS result, pg_get_userbyid(p.proowner) AS owner, "
        "has_function_privilege($1, p.oid, 'EXECUTE') AS app, "
        "has_function_privilege($2, p.oid, 'EXECUTE') AS staff, "
        "has_function_privilege('public', p.oid, 'EXECUTE') AS public "
        "FROM pg_proc p WHERE p.proname IN ('zixly_auth_principal', 'zixly_accept_invitation')",
        app_role,
        staff_role,
    )
    assert {r["name"] for r in rows} == {
        "zixly_auth_principal(text,text,timestamp with time zone)",
        "zixly_accept_invitation(bytea,uuid,text)",
    }
    for row in rows:
        assert row["proconfig"] == ["search_path=pg_catalog, public, pg_temp"], row
        assert (row["app"], row["staff"], row["public"]) == (True, False, False), row
        assert row["owner"] == "zixly_definer"  # migration 0006: the definer role
    look_up = next(r for r in rows if r["name"].startswith("zixly_auth_principal"))
    assert "email" not in look_up["result"] and "display_name" not in look_up["result"]


async def test_concurrent_invitations_of_one_email_leave_one_open_and_never_fail(
    client: httpx.AsyncClient, world: World, owner: asyncpg.Connection
) -> None:
    tenant = await world.tenant("inv", clients=0)
    email = f"racing-{uuid.uuid4().hex[:8]}@example.test"
    bodies = await asyncio.gather(*(invite(client, world, tenant.admin, email) for _ in range(6)))
    assert [shape(b["data"]["inviteUser"]) for b in bodies] == [
        {"role": "VIEWER", "status": "PENDING"}
    ] * 6
    states = await owner.fetch(
        "SELECT revoked_at IS NULL AS open FROM invitations WHERE tenant_id = $1", tenant.id
    )
    assert sorted(r["open"] for r in states) == [False] * 5 + [True]


async def test_a_token_issued_before_any_membership_keeps_the_first_after_a_second(
    client: httpx.AsyncClient, world: World, owner: asyncpg.Connection, sink: MailSink
) -> None:
    first = await world.tenant("inv", clients=0)
    second = await world.tenant("inv", clients=0)
    email = f"newcomer-{uuid.uuid4().hex[:8]}@example.test"
    await invite(client, world, first.admin, email, role="EDITOR")
    signed_in = world.headers(email, now=int(time.time()) - 7200)  # before any membership
    await gql(client, ACCEPT, {"token": token_of(link_sent_to(sink, email))}, signed_in)
    await age_memberships(owner, email)  # the first came well before the second
    assert (await gql(client, ME, headers=signed_in))["data"]["me"]["role"] == "EDITOR"

    await invite(client, world, second.admin, email)
    await gql(client, ACCEPT, {"token": token_of(link_sent_to(sink, email))}, signed_in)
    me = await gql(client, ME, headers=signed_in)
    assert (me["data"]["me"]["role"], me["data"]["me"]["tenant"]) == (
        "EDITOR",
        {"slug": first.slug},
    )
    fresh = error(await gql(client, CLIENTS, headers=world.headers(email)))
    assert (fresh["code"], fresh["tenants"]) == (
        "TENANT_REQUIRED",
        sorted([first.slug, second.slug]),
    )


async def test_the_editor_proxy_recheck_reads_the_named_membership_of_a_multi_tenant_user(
    services: Services, world: World, owner: asyncpg.Connection
) -> None:
    from zixly.http.editor_proxy import EditorProxy, EditorSession

    first = await world.tenant("inv", clients=0)
    second = await world.tenant("inv", clients=0)
    await owner.execute(
        "INSERT INTO memberships (tenant_id, user_id, role) "
        "SELECT $1, id, 'VIEWER' FROM users WHERE email = $2",
        second.id,
        first.editor,
    )
    proxy = EditorProxy(services)
    try:

        def session(tenant_id: uuid.UUID, slug: str) -> EditorSession:
            return EditorSession(str(tenant_id), slug, "", first.editor, time.time() + 60, 0.0)

        assert await proxy._still_member(session(first.id, first.slug)) is True
        assert await proxy._still_member(session(second.id, second.slug)) is False  # a VIEWER
    finally:
        await proxy.http.aclose()
