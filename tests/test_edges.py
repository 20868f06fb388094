"""The edges of the API: /metrics, failed-authentication lockouts, token lifetime, what the
schema discloses, and what reaches the logs (issue 16, item 6)."""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import OctKey
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from tests.conftest import (
    JWT_SECRET,
    LogLines,
    World,
    app_with_broken_data_path,
    gql,
    make_settings,
    other_app,
    served,
)
from tests.jwks_server import JwksIssuer
from zixly.app import create_app
from zixly.cli.main import main
from zixly.container import Services
from zixly.core.errors import ValidationError
from zixly.core.logging import get_logger
from zixly.core.settings import Settings
from zixly.embedded.stack import Endpoints
from zixly.graphql.schema import build_schema
from zixly.security.guard import (
    ACCOUNT_FAILURES_PER_WINDOW,
    ADDRESS_FAILURES_PER_WINDOW,
    AUTH_FAILURES_PER_WINDOW,
)
from zixly.security.tokens import mint_token

ME = "{ me { email } }"
METRICS_TOKEN = "metrics-" + secrets.token_hex(16)


def production(data_dir: Path, endpoints: Endpoints, **overrides: Any) -> Settings:
    """Settings of a deployment: an external database (here the tests' own, by URL)."""
    return make_settings(data_dir, database_url=endpoints.database_url, **overrides)


def address() -> str:
    """An address of the test's own (failed authentications are counted per address)."""
    return f"198.18.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"


@contextlib.asynccontextmanager
async def clients(services: Services, *addresses: str) -> AsyncIterator[list[httpx.AsyncClient]]:
    """One app over ``services``, reached from each of ``addresses``."""
    app = create_app(services)
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app, client=(host, 40000)),
                    base_url="http://testserver",
                )
            )
            for host in addresses
        ]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def forged(email: str) -> str:
    """A well-formed token naming ``email``, signed with a key that is not Zixly's."""
    now = int(time.time())
    claims = {"iss": "zixly", "aud": "zixly-api", "sub": email, "email": email}
    claims |= {"iat": now, "exp": now + 600}
    return jwt.encode({"alg": "HS256"}, claims, OctKey.import_key(secrets.token_bytes(32)))


def own(claims: dict[str, Any]) -> str:
    """A token signed with Zixly's own key, with exactly ``claims``."""
    return jwt.encode({"alg": "HS256"}, claims, OctKey.import_key(JWT_SECRET.encode()))


async def me(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    return await client.post("/graphql", json={"query": ME}, headers=headers)


# --- /metrics ---------------------------------------------------------------------------


def samples(exposition: str, name: str) -> list[dict[str, str]]:
    return [
        s.labels
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
        if s.name == name
    ]


async def test_metrics_need_the_token_and_carry_no_operation_names(
    data_dir: Path, endpoints: Endpoints, world: World
) -> None:
    tenant = await world.tenant("edge-metrics")
    settings = production(data_dir, endpoints, metrics_token=METRICS_TOKEN)
    async with other_app(endpoints, settings, address=address()) as (_, client):
        # A client-chosen operation name: a tenant's name, say.
        secret_name = f"AcmeHoldings{uuid.uuid4().hex[:8]}Payroll"
        body = await gql(
            client,
            f"query {secret_name} {{ me {{ email }} }}",
            headers=world.headers(tenant.viewer),
        )
        assert body == {"data": {"me": {"email": tenant.viewer}}}
        await gql(
            client,
            "query Other { clients(first: 0) { nodes { id } } }",
            headers=world.headers(tenant.viewer),
        )

        for headers in ({}, bearer("wrong"), {"Authorization": METRICS_TOKEN}):
            response = await client.get("/metrics", headers=headers)
            assert response.status_code == 401, response.text
            assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
            assert secret_name not in response.text

        response = await client.get("/metrics", headers=bearer(METRICS_TOKEN))
        assert response.status_code == 200
        exposition = response.text
    assert secret_name not in exposition
    latency = samples(exposition, "zixly_graphql_request_duration_seconds_count")
    assert {"root_field": "me", "type": "query"} in latency
    assert all("operation" not in labels for labels in latency)
    errors = samples(exposition, "zixly_graphql_errors_total")
    assert {"root_field": "clients", "code": "VALIDATION_ERROR"} in errors
    # Every label value is a root field of the schema (or one of the bounded fallbacks).
    roots = {"invalid", "multiple", "__typename", "__schema", "__type"}
    schema = build_schema(settings)._schema
    for root in (schema.query_type, schema.mutation_type, schema.subscription_type):
        assert root is not None
        roots |= set(root.fields)
    assert {labels["root_field"] for labels in latency + errors} <= roots


async def test_metrics_without_a_token_are_absent_outside_development(
    data_dir: Path, endpoints: Endpoints
) -> None:
    async with other_app(endpoints, production(data_dir, endpoints)) as (_, client):
        response = await client.get("/metrics")
        assert response.status_code == 404
        assert response.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"
        assert "zixly_" not in response.text
    # In development (the embedded database) they stay open, as `zixly dev` prints them.
    async with other_app(endpoints, make_settings(data_dir)) as (_, client):
        assert (await client.get("/metrics")).status_code == 200


# --- failed authentications: per account and address, not per address ----------------------


async def test_a_flood_of_bad_tokens_does_not_lock_out_the_address(
    data_dir: Path, endpoints: Endpoints, services: Services, world: World
) -> None:
    tenant = await world.tenant("edge-nat")
    attacker = f"attacker-{uuid.uuid4().hex[:8]}@edge.test"
    nat = address()
    async with clients(services, nat) as (client,):
        # Forged tokens naming the attacker's account, garbage, and a guessed bearer.
        for _ in range(AUTH_FAILURES_PER_WINDOW):
            assert (await me(client, bearer(forged(attacker)))).status_code == 401
            assert (await me(client, bearer("not-a-jwt"))).status_code == 401
        # That account from that address is now refused before its token is checked ...
        refused = await me(client, bearer(forged(attacker)))
        assert refused.status_code == 429
        assert refused.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        # ... while a customer behind the same NAT is let in.
        response = await me(client, world.headers(tenant.viewer))
        assert response.status_code == 200, response.text
        assert response.json() == {"data": {"me": {"email": tenant.viewer}}}

        # Garbage has a ceiling of its own, far higher; past it only garbage is refused.
        for _ in range(ADDRESS_FAILURES_PER_WINDOW - AUTH_FAILURES_PER_WINDOW):
            assert (await me(client, bearer("not-a-jwt"))).status_code == 401
        assert (await me(client, bearer("not-a-jwt"))).status_code == 429
        assert (await me(client, world.headers(tenant.editor))).status_code == 200


async def test_the_account_limit_spans_addresses_but_forgeries_cannot_trigger_it(
    services: Services, world: World
) -> None:
    tenant = await world.tenant("edge-account")
    spread = [address() for _ in range(ACCOUNT_FAILURES_PER_WINDOW // AUTH_FAILURES_PER_WINDOW + 2)]
    async with clients(services, *spread) as many:
        # The victim's name in forged tokens, from every address up to its pair limit:
        # more failures than the account limit, none of them the account's own token.
        for client in many[:-1]:
            for _ in range(AUTH_FAILURES_PER_WINDOW):
                assert (await me(client, bearer(forged(tenant.admin)))).status_code == 401
        assert (await me(many[-1], world.headers(tenant.admin))).status_code == 200

        # The account's genuine (expired) token, replayed from many addresses, does count.
        expired = world.token(tenant.editor, now=int(time.time()) - 7200, ttl_seconds=3600)
        statuses = [
            (await me(many[n % (len(many) - 1)], bearer(expired))).status_code
            for n in range(ACCOUNT_FAILURES_PER_WINDOW)
        ]
        assert statuses == [401] * ACCOUNT_FAILURES_PER_WINDOW
        # Now refused from an address that never failed, even with a fresh token ...
        assert (await me(many[-1], world.headers(tenant.editor))).status_code == 429
        # ... while the rest of the tenant is not.
        assert (await me(many[-1], world.headers(tenant.viewer))).status_code == 200


# --- maximum token lifetime --------------------------------------------------------------


async def test_tokens_over_the_maximum_lifetime_are_refused(
    data_dir: Path, endpoints: Endpoints, world: World
) -> None:
    tenant = await world.tenant("edge-ttl")
    settings = make_settings(data_dir, jwt_ttl_seconds=600, jwt_max_lifetime_seconds=3600)
    now = int(time.time())
    base = {"iss": "zixly", "aud": "zixly-api", "sub": tenant.viewer, "email": tenant.viewer}
    cases = [
        (
            base | {"iat": now, "exp": now + 3601},
            "token lifetime (exp - iat) of 3601s exceeds the maximum of 3600s",
        ),
        # Issued long ago with a far expiry: also too long, though nowhere near expired.
        (
            base | {"iat": now - 86400 * 365, "exp": now + 60},
            f"token lifetime (exp - iat) of {86400 * 365 + 60}s exceeds the maximum of 3600s",
        ),
        (
            base | {"iat": now},
            "token is missing a required claim: 'exp'",
        ),
        (
            base | {"exp": now + 600},
            "token is missing a required claim: 'iat'",
        ),
    ]
    async with other_app(endpoints, settings, address=address()) as (_, client):
        for claims, message in cases:
            response = await me(client, bearer(own(claims)))
            assert response.status_code == 401, claims
            error = response.json()["errors"][0]
            assert error["extensions"]["code"] == "UNAUTHENTICATED"
            assert error["message"] == message
        ok = await me(client, bearer(own(base | {"iat": now, "exp": now + 3600})))
        assert ok.status_code == 200, ok.text


async def test_external_tokens_over_the_maximum_lifetime_are_refused(
    data_dir: Path, endpoints: Endpoints, world: World
) -> None:
    tenant = await world.tenant("edge-ext-ttl")
    idp = JwksIssuer()
    idp.publish("RS256", "rsa-1")
    with idp.serving():
        settings = make_settings(
            data_dir,
            external_jwks_url=idp.url,
            external_issuer=idp.issuer,
            external_audience=idp.audience,
            tenant_claim="app_metadata.tenant_id",
        )
        now = int(time.time())
        async with other_app(endpoints, settings, address=address()) as (_, client):
            week = idp.token(
                tenant.editor, "rsa-1", tenant=str(tenant.id), iat=now, exp=now + 7 * 86400
            )
            response = await me(client, bearer(week))
            assert response.status_code == 401
            assert response.json()["errors"][0]["message"] == (
                f"token lifetime (exp - iat) of {7 * 86400}s exceeds the maximum of 86400s"
            )
            no_iat = idp.claims(tenant.editor, tenant=str(tenant.id))
            del no_iat["iat"]
            response = await me(client, bearer(idp.sign(no_iat, "rsa-1")))
            assert response.status_code == 401
            day = idp.token(tenant.editor, "rsa-1", tenant=str(tenant.id), iat=now, exp=now + 86400)
            assert (await me(client, bearer(day))).status_code == 200


def test_minting_refuses_a_ttl_over_the_maximum(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(data_dir, jwt_ttl_seconds=600, jwt_max_lifetime_seconds=3600)
    with pytest.raises(ValidationError, match="between 1 and 3600s"):
        mint_token(settings, JWT_SECRET.encode(), email="a@b.test", subject="a", ttl_seconds=3601)
    # The command refuses before it starts anything (no embedded stack is needed for this).
    assert main(["token", "--email", "a@b.test", "--ttl", str(30 * 86400)]) == 2
    printed = capsys.readouterr()
    assert printed.out == ""  # no token
    assert "a token lifetime must be between 1 and 86400s" in " ".join(printed.err.split())
    with pytest.raises(ValueError, match="ZIXLY_JWT_TTL_SECONDS"):
        make_settings(data_dir, jwt_ttl_seconds=7200, jwt_max_lifetime_seconds=3600)


# --- introspection and suggestions -------------------------------------------------------

INTROSPECT = "{ __schema { queryType { name } } }"
TYPO = "{ mee { email } }"


async def test_introspection_and_suggestions_are_off_in_production(
    data_dir: Path, endpoints: Endpoints, world: World
) -> None:
    tenant = await world.tenant("edge-intro")
    headers = world.headers(tenant.viewer)
    async with other_app(endpoints, production(data_dir, endpoints)) as (_, client):
        body = await gql(client, INTROSPECT, headers=headers)
        assert "data" not in body or body["data"] is None
        assert "introspection has been disabled" in body["errors"][0]["message"]
        body = await gql(client, '{ __type(name: "Query") { name } }', headers=headers)
        assert "introspection has been disabled" in body["errors"][0]["message"]
        body = await gql(client, TYPO, headers=headers)
        assert body["errors"][0]["message"] == "Cannot query field 'mee' on type 'Query'."
        # Variable coercion words its hints the same way (an enum value here).
        query = "query($s: AlertStatus) { alerts(status: $s) { key } }"
        body = await gql(client, query, {"s": "OPNE"}, headers=headers)
        assert body["errors"], body
        assert all("Did you mean" not in e["message"] for e in body["errors"])
        assert (await gql(client, "{ __typename }", headers=headers)) == {
            "data": {"__typename": "Query"}
        }
    # Each can be switched back on explicitly.
    opened = production(data_dir, endpoints, graphql_introspection=True, graphql_suggestions=True)
    async with other_app(endpoints, opened) as (_, client):
        body = await gql(client, INTROSPECT, headers=headers)
        assert body == {"data": {"__schema": {"queryType": {"name": "Query"}}}}
        body = await gql(client, TYPO, headers=headers)
        assert "Did you mean 'me'?" in body["errors"][0]["message"]


async def test_introspection_and_suggestions_are_on_in_development(
    data_dir: Path, endpoints: Endpoints, world: World
) -> None:
    tenant = await world.tenant("edge-intro-dev")
    headers = world.headers(tenant.viewer)
    async with other_app(endpoints, make_settings(data_dir)) as (_, client):
        body = await gql(client, INTROSPECT, headers=headers)
        assert body == {"data": {"__schema": {"queryType": {"name": "Query"}}}}
        body = await gql(client, TYPO, headers=headers)
        assert "Did you mean 'me'?" in body["errors"][0]["message"]


# --- logs of an attack run ---------------------------------------------------------------


@pytest.fixture
def stdlib_records(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Whatever the standard library's loggers emit at WARNING and above (strawberry,
    uvicorn, SQLAlchemy): a handler configured by an operator would write all of it."""
    caplog.set_level(logging.WARNING)
    yield caplog


async def test_an_attack_run_leaves_no_secrets_or_values_in_the_logs(
    data_dir: Path,
    endpoints: Endpoints,
    services: Services,
    owner: Any,
    world: World,
    logs: LogLines,
    stdlib_records: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    tenant = await world.tenant("edge-attack")
    marker = uuid.uuid4().hex[:12]
    password = f"hunter2-{marker}"
    sqlish = f"x'; DROP TABLE tenants; -- {marker}"
    ingest_token = "zik_" + secrets.token_urlsafe(32)
    valid = world.token(tenant.editor)
    expired = world.token(tenant.editor, now=int(time.time()) - 7200, ttl_seconds=3600)
    forgery = forged(tenant.admin)
    secrets_used = [password, sqlish, marker, ingest_token, valid, expired, forgery]
    good = world.headers(tenant.viewer)
    requests: list[tuple[str, dict[str, Any], dict[str, str]]] = [
        ("/graphql", {"query": ME}, bearer(forgery)),
        ("/graphql", {"query": ME}, bearer(expired)),
        ("/graphql", {"query": ME}, bearer(f"{password}.{marker}.x")),
        ("/graphql", {"query": ME}, {"Authorization": f"Basic {password}"}),
        ("/graphql", {"query": ME}, bearer(ingest_token)),
        ("/ingest/v1/heartbeat", {}, bearer(ingest_token)),
        ("/ingest/v1/heartbeat", {}, bearer(valid)),
        # Values that fail coercion: graphql-core quotes them in its messages.
        (
            "/graphql",
            {
                "query": "query($f: Int) { clients(first: $f) { nodes { id } } }",
                "variables": {"f": password},
            },
            good,
        ),
        (
            "/graphql",
            {
                "query": "query($s: AlertStatus) { alerts(status: $s) { key } }",
                "variables": {"s": sqlish},
            },
            good,
        ),
        (
            "/graphql",
            {
                "query": "query($s: String) { clients(search: $s) { nodes { id } } }",
                "variables": {"s": sqlish, "password": password},
            },
            good,
        ),
        ("/graphql", {"query": f'{{ clients(search: "{sqlish}") {{ nodes {{ id }} }} }}'}, good),
        (
            "/graphql",
            {"query": ME, "variables": {"password": password, "token": ingest_token}},
            bearer(valid),
        ),
    ]
    async with other_app(endpoints, production(data_dir, endpoints), address=address()) as (
        built,
        client,
    ):
        for path, body, headers in requests * 3:
            response = await client.post(path, json=body, headers=headers)
            assert response.status_code < 500, (path, response.text)
        async with served(built) as url:  # over a real socket too, uvicorn's loggers included
            async with httpx.AsyncClient(base_url=url) as real:
                for path, body, headers in requests:
                    await real.post(path, json=body, headers=headers)
    # An internal error whose request carried the values.
    async with app_with_broken_data_path(services, owner) as broken:
        response = await broken.post(
            "/graphql",
            json={
                "query": "query($s: String) { clients(search: $s) { nodes { id } } }",
                "variables": {"s": sqlish},
            },
            headers=bearer(valid),
        )
        assert response.json()["errors"][0]["extensions"]["code"] == "INTERNAL"
    # A real driver error quoting a parameter, logged the way the app logs errors.
    try:
        async with services.db.engine.connect() as connection:
            await connection.execute(text("SELECT CAST(:v AS integer) + 1"), {"v": password})
    except Exception as exc:
        get_logger("zixly.test").error("attack.driver_error", error=repr(exc), exc_info=exc)
    else:
        raise AssertionError("the driver accepted a string for an integer")

    captured = capfd.readouterr()
    output = "\n".join((logs.text, captured.out, captured.err, stdlib_records.text))
    # The run was logged (a test that could not see the logs would prove nothing) ...
    assert logs.events("auth.rejected")
    assert logs.events("graphql.unexpected_error")
    (driver,) = logs.events("attack.driver_error")
    assert "Traceback" in driver["exception"]
    # ... and none of it carries a secret, a token or a value the attacker sent.
    for secret in secrets_used:
        assert secret not in output, secret
    assert "hunter2" not in output
    # Tracebacks carry no local variables (rich's and structlog's renderings of them).
    for mark in ("locals", "╭", "frame_locals"):
        assert mark not in output
