from __future__ import annotations

import httpx

from tests.conftest import World, gql


async def test_me_as_each_role(client: httpx.AsyncClient, world: World) -> None:
    tenant = await world.tenant()
    for email, role in (
        (tenant.admin, "ADMIN"),
        (tenant.editor, "EDITOR"),
        (tenant.viewer, "VIEWER"),
    ):
        body = await gql(
            client, "{ me { email role tenant { slug } } }", headers=world.headers(email)
        )
        assert body == {
            "data": {"me": {"email": email, "role": role, "tenant": {"slug": tenant.slug}}}
        }


async def test_clients_page(client: httpx.AsyncClient, world: World) -> None:
    tenant = await world.tenant(clients=3)
    body = await gql(
        client,
        "{ clients(first: 2) { nodes { name } pageInfo { hasNextPage endCursor } } }",
        headers=world.headers(tenant.viewer),
    )
    page = body["data"]["clients"]
    assert [n["name"] for n in page["nodes"]] == [
        f"Client 0 of {tenant.slug}",
        f"Client 1 of {tenant.slug}",
    ]
    assert page["pageInfo"]["hasNextPage"] is True
    body = await gql(
        client,
        "query($after: String) { clients(first: 2, after: $after) { nodes { name } pageInfo { hasNextPage } } }",
        {"after": page["pageInfo"]["endCursor"]},
        headers=world.headers(tenant.viewer),
    )
    assert [n["name"] for n in body["data"]["clients"]["nodes"]] == [f"Client 2 of {tenant.slug}"]
