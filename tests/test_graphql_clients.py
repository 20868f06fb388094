"""Zixly's GraphQL-over-HTTP answers as Apollo Client 4 and graphql-request 7 read them
(tests/clients/http-clients.mjs), against the app under uvicorn: a 401 is a GraphQL error
with ``extensions.code == "UNAUTHENTICATED"``, not a raw-text network error."""

from __future__ import annotations

from tests.conftest import World
from tests.node_clients import run_script


async def test_apollo_and_graphql_request_read_a_401_as_unauthenticated(
    live_server: str, world: World
) -> None:
    tenant = await world.tenant("clients", clients=0)
    lines = await run_script(
        "http-clients.mjs", f"{live_server}/graphql", world.token(tenant.viewer)
    )
    results = {(line["client"], line["case"]): line for line in lines}
    for client in ("apollo", "graphql-request"):
        ok = results[client, "authenticated"]
        assert ok["data"]["me"]["email"] == tenant.viewer, ok  # Apollo adds __typename
        refused = results[client, "bad-token"]
        assert refused["errorKind"] == "graphql", refused
        assert refused["graphQLCodes"] == ["UNAUTHENTICATED"], refused
    assert results["graphql-request", "bad-token"]["status"] == 401
