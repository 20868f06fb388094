"""The GraphQL-over-HTTP specification (https://graphql.github.io/graphql-over-http/), one
group of tests per section, against the app in-process (the audit suite runs against a real
uvicorn in tests/test_graphql_http_audit.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import World, make_settings, other_app
from zixly.embedded.stack import Endpoints

GQL = "application/graphql-response+json"
JSON = "application/json"
QUERY = "{ me { email } }"


def media_type(response: httpx.Response) -> str:
    return response.headers["content-type"].split(";")[0].strip()


def codes(response: httpx.Response) -> list[str]:
    body: dict[str, Any] = response.json()
    return [error["extensions"]["code"] for error in body["errors"]]


@pytest.fixture
async def viewer(world: World) -> dict[str, str]:
    tenant = await world.tenant("goh", clients=0)
    return world.headers(tenant.viewer)


# --- Media types and Accept -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, JSON),
        ("*/*", JSON),
        (JSON, JSON),
        (GQL, GQL),
        (f"{GQL}, {JSON};q=0.9", GQL),
        (f"{JSON}, {GQL};q=0.5", JSON),
        ("application/*", JSON),
    ],
)
async def test_the_response_media_type_follows_accept(
    client: httpx.AsyncClient, viewer: dict[str, str], accept: str | None, expected: str
) -> None:
    headers = {**viewer, **({"Accept": accept} if accept else {})}
    response = await client.post("/graphql", json={"query": QUERY}, headers=headers)
    assert response.status_code == 200
    assert media_type(response) == expected
    assert response.json()["data"]["me"]["email"].startswith("viewer@")


@pytest.mark.parametrize("accept", ["text/plain", "application/xml", f"{JSON};q=0, {GQL};q=0"])
async def test_an_accept_without_json_is_406_with_a_graphql_error(
    client: httpx.AsyncClient, viewer: dict[str, str], accept: str
) -> None:
    headers = {**viewer, "Accept": accept}
    for response in (
        await client.post("/graphql", json={"query": QUERY}, headers=headers),
        await client.get("/graphql", params={"query": QUERY}, headers=headers),
    ):
        assert response.status_code == 406
        assert media_type(response) == JSON
        assert codes(response) == ["NOT_ACCEPTABLE"]


# --- Request: GET ---------------------------------------------------------------------------


async def test_get_runs_queries_with_json_variables(
    client: httpx.AsyncClient, viewer: dict[str, str]
) -> None:
    params = {
        "query": "query T($n: String!) { __type(name: $n) { name } }",
        "variables": json.dumps({"n": "Query"}),
        "operationName": "T",
    }
    response = await client.get("/graphql", params=params, headers=viewer)
    assert response.status_code == 200
    assert response.json() == {"data": {"__type": {"name": "Query"}}}


async def test_a_mutation_over_get_is_405_and_never_runs(
    client: httpx.AsyncClient, world: World, owner: Any
) -> None:
    tenant = await world.tenant("goh-csrf", clients=0)
    mutation = 'mutation { upsertClient(input: {clientId: "CSRF", name: "x"}) { id } }'
    for accept in (JSON, GQL):
        response = await client.get(
            "/graphql",
            params={"query": mutation},
            headers={**world.headers(tenant.admin), "Accept": accept},
        )
        assert response.status_code == 405
        assert response.headers["allow"] == "POST"
        assert media_type(response) == accept
        assert codes(response) == ["METHOD_NOT_ALLOWED"]
    made = await owner.fetchval(
        "SELECT count(*) FROM client_kpis WHERE tenant_id = $1 AND client_id = 'CSRF'", tenant.id
    )
    assert made == 0


async def test_get_is_authenticated_like_post(client: httpx.AsyncClient) -> None:
    response = await client.get("/graphql", params={"query": QUERY}, headers={"Accept": GQL})
    assert response.status_code == 401
    assert media_type(response) == GQL
    assert codes(response) == ["UNAUTHENTICATED"]
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"query": QUERY, "variables": "{not json"}, "variables"),
        ({"query": QUERY, "variables": "[1]"}, "variables"),
        ({"query": QUERY, "extensions": '"text"'}, "extensions"),
    ],
)
async def test_get_parameters_that_are_not_json_objects_are_400(
    client: httpx.AsyncClient, viewer: dict[str, str], params: dict[str, str], field: str
) -> None:
    response = await client.get("/graphql", params=params, headers=viewer)
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "BAD_REQUEST"
    assert error["extensions"]["field"] == field


async def test_the_graphiql_page_is_still_served_to_browsers(client: httpx.AsyncClient) -> None:
    response = await client.get("/graphql", headers={"Accept": "text/html,*/*;q=0.8"})
    assert response.status_code == 200
    assert media_type(response) == "text/html"


# --- Request: POST and malformed requests ----------------------------------------------------


@pytest.mark.parametrize(
    ("method", "content", "content_type", "status"),
    [
        ("POST", b'{"query": ', JSON, 400),
        ("POST", b"[]", JSON, 400),
        ("POST", b'{"query": 1}', JSON, 400),
        ("POST", b'{"query": "{ me { email } }"}', "text/plain", 400),
        ("POST", b"", JSON, 400),
        ("PUT", b'{"query": "{ me { email } }"}', JSON, 405),
        ("DELETE", b"", JSON, 405),
    ],
)
async def test_malformed_requests_get_a_graphql_error_body(
    client: httpx.AsyncClient,
    viewer: dict[str, str],
    method: str,
    content: bytes,
    content_type: str,
    status: int,
) -> None:
    for accept in (JSON, GQL):
        response = await client.request(
            method,
            "/graphql",
            content=content,
            headers={**viewer, "Content-Type": content_type, "Accept": accept},
        )
        assert response.status_code == status, response.text
        assert media_type(response) == accept
        assert set(codes(response)) <= {"BAD_REQUEST", "METHOD_NOT_ALLOWED"}
        if status == 405:
            assert response.headers["allow"] == "GET, POST"


# --- Request parameters: operationName ------------------------------------------------------


async def test_operation_name_is_required_with_several_operations(
    client: httpx.AsyncClient, viewer: dict[str, str]
) -> None:
    document = "query A { __typename } query B { me { email } }"
    for accept, status in ((JSON, 200), (GQL, 400)):
        response = await client.post(
            "/graphql", json={"query": document}, headers={**viewer, "Accept": accept}
        )
        assert response.status_code == status
        assert codes(response) == ["BAD_REQUEST"]
        assert "operationName" in response.json()["errors"][0]["message"]
    response = await client.post(
        "/graphql", json={"query": document, "operationName": "B"}, headers=viewer
    )
    assert response.json()["data"]["me"]["email"].startswith("viewer@")


# --- Response: status codes by media type, extensions.code on every error -----------------


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"query": "{"}, "GRAPHQL_PARSE_FAILED"),
        ({"query": "{ noSuchField }"}, "GRAPHQL_VALIDATION_FAILED"),
        ({"query": "query($n: String!) { __type(name: $n) { name } }"}, "BAD_USER_INPUT"),
        ({"query": "subscription { syncEvents { provider } }"}, "BAD_REQUEST"),
    ],
)
async def test_request_errors_are_200_as_json_and_400_without_data_as_graphql_response(
    client: httpx.AsyncClient, viewer: dict[str, str], body: dict[str, Any], code: str
) -> None:
    as_json = await client.post("/graphql", json=body, headers={**viewer, "Accept": JSON})
    assert as_json.status_code == 200 and codes(as_json) == [code]
    as_gql = await client.post("/graphql", json=body, headers={**viewer, "Accept": GQL})
    assert as_gql.status_code == 400 and codes(as_gql) == [code]
    assert "data" not in as_gql.json()


@pytest.mark.parametrize("accept", [JSON, GQL, f"{GQL},{JSON};q=0.9"])
async def test_a_401_is_a_graphql_error_in_the_negotiated_media_type(
    client: httpx.AsyncClient, accept: str
) -> None:
    """Apollo Client 4 reads the errors of a non-2xx response only from
    application/graphql-response+json (tests/test_graphql_clients.py runs it)."""
    response = await client.post(
        "/graphql",
        json={"query": QUERY},
        headers={"Authorization": "Bearer not-a-jwt", "Accept": accept},
    )
    assert response.status_code == 401
    assert media_type(response) == (JSON if accept == JSON else GQL)
    assert codes(response) == ["UNAUTHENTICATED"]
    assert "data" not in response.json()


@pytest.mark.parametrize(
    "query_string", ["%71uery=%7B%20me%20%7B%20email%20%7D%20%7D", "query=%7Bme%7Bemail%7D%7D"]
)
async def test_nothing_runs_unauthenticated_behind_the_graphiql_page(
    client: httpx.AsyncClient, query_string: str
) -> None:
    """The page is public; a query sent as a browser would (Accept: text/html), however its
    parameter is spelt, is authenticated like any other."""
    headers = {"Accept": "text/html,*/*;q=0.8"}  # a browser's
    response = await client.get(f"/graphql?{query_string}", headers=headers)
    assert response.status_code == 401
    assert codes(response) == ["UNAUTHENTICATED"]


async def test_a_get_longer_than_the_body_limit_is_414(
    endpoints: Endpoints, data_dir: Path, world: World
) -> None:
    tenant = await world.tenant("goh-long", clients=0)
    settings = make_settings(data_dir, max_body_bytes=1024)
    async with other_app(endpoints, settings) as (_, client):
        for padding, status in ((900, 200), (1100, 414)):
            query = "{ __typename" + " " * padding + "}"
            response = await client.get(
                "/graphql", params={"query": query}, headers=world.headers(tenant.viewer)
            )
            assert response.status_code == status
    assert codes(response) == ["BAD_REQUEST"]
