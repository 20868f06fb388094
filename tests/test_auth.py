"""Authentication failures, Zixly's own HS256 tokens and an external JWKS issuer."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc.jwk import RSAKey

from tests.conftest import JWT_SECRET, World, gql, make_settings, other_app
from tests.jwks_server import JwksIssuer
from zixly.container import Services
from zixly.core.settings import Settings
from zixly.embedded.stack import Endpoints
from zixly.security.tokens import mint_token
from zixly.security.verifier import TokenVerifier

ME = "{ me { email role tenant { slug } } }"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"


async def post_me(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    return await client.post("/graphql", json={"query": ME}, headers=headers)


def assert_unauthenticated(
    response: httpx.Response, message: str, bearer_error: str | None = "invalid_token"
) -> None:
    assert response.status_code == 401, response.text
    error = response.json()["errors"][0]
    assert error["message"] == message
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    assert error["extensions"]["requestId"] == response.headers["x-request-id"]
    challenge = response.headers["www-authenticate"]
    if bearer_error is None:
        assert challenge == 'Bearer realm="zixly"'
    else:
        description = message.replace('"', "'")
        assert challenge == (
            f'Bearer realm="zixly", error="{bearer_error}", error_description="{description}"'
        )


@pytest.fixture
async def anon(endpoints: Endpoints, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API from an address of its own: these failures must not use up the shared
    client's allowance of failed authentications (see test_protections)."""
    async with other_app(endpoints, settings, address=f"198.51.100.{uuid.uuid4().int % 250}") as (
        _,
        c,
    ):
        yield c


def own_token(
    settings: Settings, email: str, secret: bytes = JWT_SECRET.encode(), **kw: Any
) -> str:
    return mint_token(settings, secret, email=email, subject=email, **kw)


# --- Zixly's own tokens ---------------------------------------------------------------


async def test_missing_header(anon: httpx.AsyncClient) -> None:
    response = await post_me(anon, {})
    assert_unauthenticated(
        response, "missing bearer token: send 'Authorization: Bearer <jwt>'", bearer_error=None
    )


@pytest.mark.parametrize(
    "value", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "Token abc.def.ghi"]
)
async def test_not_a_bearer_header(anon: httpx.AsyncClient, value: str) -> None:
    response = await post_me(anon, {"Authorization": value})
    assert_unauthenticated(
        response,
        "malformed Authorization header: expected 'Bearer <jwt>'",
        bearer_error="invalid_request",
    )


NOT_JWS = "malformed token: not a compact JWS"


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("garbage", NOT_JWS),
        ("a.b.c", NOT_JWS),
        ("e30.e30.", NOT_JWS),  # a header without "alg"
        ("W10.e30.c2ln", NOT_JWS),  # a header that is a JSON array
        ("x" * 9000, "malformed token: too large"),
    ],
)
async def test_garbage_token(anon: httpx.AsyncClient, token: str, message: str) -> None:
    response = await post_me(anon, {"Authorization": f"Bearer {token}"})
    assert_unauthenticated(response, message)


async def test_expired_token(anon: httpx.AsyncClient, world: World, settings: Settings) -> None:
    tenant = await world.tenant("auth")
    # Issued two hours ago for one hour: expired an hour ago, far beyond the 30 s leeway.
    token = own_token(settings, tenant.viewer, now=int(time.time()) - 7200, ttl_seconds=3600)
    assert_unauthenticated(
        await post_me(anon, {"Authorization": f"Bearer {token}"}), "token expired"
    )


async def test_token_within_leeway_still_works(
    anon: httpx.AsyncClient, world: World, settings: Settings
) -> None:
    tenant = await world.tenant("auth")
    token = own_token(settings, tenant.viewer, now=int(time.time()) - 70, ttl_seconds=60)
    response = await post_me(anon, {"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.json()["data"]["me"]["email"] == tenant.viewer


async def test_bad_signature(anon: httpx.AsyncClient, world: World, settings: Settings) -> None:
    tenant = await world.tenant("auth")
    token = own_token(settings, tenant.viewer, secret=b"another-secret-" + b"y" * 40)
    response = await post_me(anon, {"Authorization": f"Bearer {token}"})
    assert_unauthenticated(response, "invalid token signature")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"jwt_audience": "someone-else"}, "token has the wrong audience"),
        ({"jwt_issuer": "https://evil.example"}, "token has the wrong issuer"),
    ],
)
async def test_wrong_audience_or_issuer(
    anon: httpx.AsyncClient,
    world: World,
    settings: Settings,
    override: dict[str, str],
    message: str,
) -> None:
    tenant = await world.tenant("auth")
    # Signed with the right secret, so only the claim can be what is rejected.
    token = own_token(settings.model_copy(update=override), tenant.viewer)
    assert_unauthenticated(await post_me(anon, {"Authorization": f"Bearer {token}"}), message)


async def test_alg_none(anon: httpx.AsyncClient, world: World, settings: Settings) -> None:
    tenant = await world.tenant("auth")
    now = int(time.time())
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "email": tenant.admin,
        "iat": now,
        "exp": now + 600,
    }
    token = unsigned({"alg": "none", "typ": "JWT"}, claims) + "."
    response = await post_me(anon, {"Authorization": f"Bearer {token}"})
    assert_unauthenticated(response, "unsupported token algorithm: 'none'")


async def test_unknown_email(anon: httpx.AsyncClient, settings: Settings) -> None:
    token = own_token(settings, f"nobody-{uuid.uuid4().hex[:8]}@nowhere.test")
    response = await post_me(anon, {"Authorization": f"Bearer {token}"})
    assert_unauthenticated(response, "unknown user: no Zixly account has this email")


async def test_tenant_header_for_a_tenant_the_user_is_not_in(
    anon: httpx.AsyncClient, world: World
) -> None:
    mine = await world.tenant("auth")
    theirs = await world.tenant("auth-other")
    headers = {**world.headers(mine.admin), "X-Zixly-Tenant": theirs.slug}
    response = await post_me(anon, headers)
    assert response.status_code == 403
    error = response.json()["errors"][0]
    assert error["message"] == "you are not a member of that tenant"
    assert error["extensions"]["code"] == "FORBIDDEN"
    assert "www-authenticate" not in response.headers

    # The same header naming their own tenant selects it.
    response = await post_me(anon, {**world.headers(mine.admin), "X-Zixly-Tenant": mine.slug})
    assert response.json()["data"]["me"]["tenant"] == {"slug": mine.slug}


async def test_viewer_cannot_run_an_editor_mutation(
    client: httpx.AsyncClient, world: World, owner: Any
) -> None:
    tenant = await world.tenant("auth")
    mutation = 'mutation { upsertClient(input: {clientId: "NEW-1", name: "New"}) { id } }'
    body = await gql(client, mutation, headers=world.headers(tenant.viewer))
    assert body["data"] is None
    error = body["errors"][0]
    assert error["extensions"]["code"] == "FORBIDDEN"
    assert error["message"] == "requires role EDITOR or higher; you are VIEWER"
    created = await owner.fetchval(
        "SELECT count(*) FROM client_kpis WHERE tenant_id = $1 AND client_id = 'NEW-1'", tenant.id
    )
    assert created == 0

    body = await gql(client, mutation, headers=world.headers(tenant.editor))
    assert "errors" not in body


# --- an external issuer (JWKS) -------------------------------------------------------


@pytest.fixture(scope="module")
def issuer() -> Iterator[JwksIssuer]:
    idp = JwksIssuer()
    idp.publish("RS256", "rsa-1")
    idp.publish("ES256", "ec-1")
    with idp.serving():
        yield idp


def external_settings(data_dir: Path, idp: JwksIssuer) -> Settings:
    return make_settings(
        data_dir,
        external_jwks_url=idp.url,
        external_issuer=idp.issuer,
        external_audience=idp.audience,
        tenant_claim="app_metadata.tenant_id",
    )


@pytest.fixture
async def external(
    issuer: JwksIssuer, data_dir: Path, endpoints: Endpoints
) -> AsyncIterator[tuple[Services, httpx.AsyncClient]]:
    """A fresh API (empty JWKS cache) that also trusts the issuer."""
    address = f"203.0.113.{uuid.uuid4().int % 250}"
    async with other_app(endpoints, external_settings(data_dir, issuer), address=address) as app:
        yield app


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("kid", ["rsa-1", "ec-1"])
async def test_external_tokens_work(
    external: tuple[Services, httpx.AsyncClient], issuer: JwksIssuer, world: World, kid: str
) -> None:
    _, client = external
    tenant = await world.tenant("ext")
    token = issuer.token(tenant.editor, kid, tenant=str(tenant.id))
    body = await gql(client, ME, headers=bearer(token))
    assert body == {
        "data": {"me": {"email": tenant.editor, "role": "EDITOR", "tenant": {"slug": tenant.slug}}}
    }


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"aud": "another-api"}, "token has the wrong audience"),
        ({"iss": "https://evil.example/"}, "token has the wrong issuer"),
        ({"iat": int(time.time()) - 7200, "exp": int(time.time()) - 3600}, "token expired"),
    ],
)
async def test_external_claims_are_checked(
    external: tuple[Services, httpx.AsyncClient],
    issuer: JwksIssuer,
    world: World,
    claims: dict[str, Any],
    message: str,
) -> None:
    _, client = external
    tenant = await world.tenant("ext")
    token = issuer.token(tenant.viewer, "rsa-1", tenant=str(tenant.id), **claims)
    assert_unauthenticated(await post_me(client, bearer(token)), message)


async def test_hs256_signed_with_the_issuers_public_key_is_rejected(
    external: tuple[Services, httpx.AsyncClient], issuer: JwksIssuer, world: World
) -> None:
    """Algorithm confusion: HS256 'signed' with the public RSA key the JWKS publishes."""
    _, client = external
    tenant = await world.tenant("ext")
    public_pem = issuer.published["rsa-1"].as_pem(private=False)
    signing_input = unsigned(
        {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"},
        issuer.claims(tenant.admin, tenant=str(tenant.id)),
    )
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{b64(signature)}"
    assert_unauthenticated(await post_me(client, bearer(token)), "invalid token signature")


async def test_rs256_header_on_the_ec_key_is_rejected(
    external: tuple[Services, httpx.AsyncClient], issuer: JwksIssuer, world: World
) -> None:
    _, client = external
    tenant = await world.tenant("ext")
    token = (
        unsigned({"alg": "RS256", "kid": "ec-1"}, issuer.claims(tenant.admin))
        + "."
        + b64(b"\0" * 256)
    )
    assert_unauthenticated(
        await post_me(client, bearer(token)), "token is signed with an unknown key (kid)"
    )


async def test_key_rotation_refetches_the_jwks_once(
    external: tuple[Services, httpx.AsyncClient], issuer: JwksIssuer, world: World
) -> None:
    _, client = external
    tenant = await world.tenant("ext")
    fetched = issuer.jwks_requests

    body = await gql(client, ME, headers=bearer(issuer.token(tenant.viewer, "rsa-1")))
    assert body["data"]["me"]["email"] == tenant.viewer
    assert issuer.jwks_requests == fetched + 1  # first use: the cache is filled

    body = await gql(client, ME, headers=bearer(issuer.token(tenant.viewer, "ec-1")))
    assert body["data"]["me"]["email"] == tenant.viewer
    assert issuer.jwks_requests == fetched + 1  # a known kid: served from the cache

    issuer.publish("RS256", "rsa-2")  # the issuer rotates
    try:
        for _ in range(3):
            body = await gql(client, ME, headers=bearer(issuer.token(tenant.viewer, "rsa-2")))
            assert body["data"]["me"]["email"] == tenant.viewer
        assert issuer.jwks_requests == fetched + 2  # one refetch for the new kid, then cached

        # A kid nobody publishes cannot make the API refetch again (cool-down).
        stranger = RSAKey.generate_key(2048, parameters={"kid": "rsa-x", "alg": "RS256"})
        token = issuer.sign(issuer.claims(tenant.viewer), "rsa-x", key=stranger)
        for _ in range(3):
            assert_unauthenticated(
                await post_me(client, bearer(token)), "token is signed with an unknown key (kid)"
            )
        assert issuer.jwks_requests == fetched + 2
    finally:
        issuer.retire("rsa-2")


async def test_own_tokens_still_work_alongside_the_issuer(
    external: tuple[Services, httpx.AsyncClient], world: World
) -> None:
    services, client = external
    tenant = await world.tenant("ext")
    token = mint_token(
        services.settings,
        JWT_SECRET.encode(),
        email=tenant.viewer,
        subject=tenant.viewer,
        tenant=str(tenant.id),  # a nested app_metadata.tenant_id claim in these settings
    )
    body = await gql(client, ME, headers=bearer(token))
    assert body["data"]["me"] == {
        "email": tenant.viewer,
        "role": "VIEWER",
        "tenant": {"slug": tenant.slug},
    }


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            {"external_audience": None},
            "ZIXLY_EXTERNAL_ISSUER and ZIXLY_EXTERNAL_AUDIENCE are required with "
            "ZIXLY_EXTERNAL_JWKS_URL",
        ),
        (
            {"external_issuer": None},
            "ZIXLY_EXTERNAL_ISSUER and ZIXLY_EXTERNAL_AUDIENCE are required with "
            "ZIXLY_EXTERNAL_JWKS_URL",
        ),
        (
            {"external_algorithms": ["RS256", "HS256"]},
            "ZIXLY_EXTERNAL_ALGORITHMS may only name asymmetric algorithms, not ['HS256']",
        ),
    ],
)
def test_an_external_issuer_must_be_pinned(
    data_dir: Path, issuer: JwksIssuer, override: dict[str, Any], message: str
) -> None:
    settings = external_settings(data_dir, issuer).model_copy(update=override)
    with pytest.raises(ValueError) as raised:
        TokenVerifier(settings, JWT_SECRET.encode())
    assert str(raised.value) == message


async def test_unreachable_issuer_is_unavailable_not_unauthenticated(
    data_dir: Path, endpoints: Endpoints, world: World
) -> None:
    idp = JwksIssuer()
    idp.publish("RS256", "rsa-1")
    with idp.serving():
        settings = external_settings(data_dir, idp)
    # The server is stopped: nothing listens on that port any more.
    tenant = await world.tenant("ext")
    async with other_app(endpoints, settings, address="192.0.2.10") as (_, client):
        response = await post_me(client, bearer(idp.token(tenant.viewer, "rsa-1")))
    assert response.status_code == 503
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "UNAVAILABLE"
    assert error["message"] == "the identity provider's JWKS could not be fetched"


def test_verified_tokens_expire_with_the_token_and_are_bounded() -> None:
    from zixly.security.verifier import VerifiedTokens

    cache = VerifiedTokens(max_age=60, leeway=0, size=2)
    now = time.time()
    cache.put("a", {"exp": now + 0.3})
    cache.put("b", {"exp": now + 600})
    assert cache.get("a") == {"exp": now + 0.3}
    time.sleep(0.35)
    assert cache.get("a") is None  # past its exp: verified afresh (and then refused)
    cache.put("c", {"exp": now + 600})
    cache.put("d", {"exp": now + 600})
    assert cache.get("b") is None  # least recently used, evicted at the bound
    assert cache.get("d") is not None
    short = VerifiedTokens(max_age=0.2, leeway=0)
    short.put("e", {"exp": now + 600})
    time.sleep(0.25)
    assert short.get("e") is None  # never longer than max_age, whatever exp says
