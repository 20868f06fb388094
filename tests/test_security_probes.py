"""Attacks on this week's surfaces: the ingest endpoint, provider connect, alert webhooks and
the sync-health monitor's error text, against the real app, PostgreSQL, Redis and sockets.

Each test is an attempt to break something: corrupt or cross a tenant's data through the
ingest body, crash the endpoint into a 500 with values PostgreSQL or Python cannot take,
inject into the connect flow's URLs and page, make the alert webhook reach this machine or
a private network, or read a credential back out of an error message.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import LogLines, World, gql, make_settings, other_app
from tests.test_ingest import envelope, financial, token_for
from tests.test_integration_connect import Rig, rig  # noqa: F401 - the connect rig fixture
from zixly.alerts.channels import Notice, SmtpChannel, WebhookChannel
from zixly.alerts.config import AlertSettingsRepository
from zixly.alerts.destinations import WebhookTargets
from zixly.alerts.errors import AlertDeliveryError
from zixly.alerts.service import AlertService
from zixly.app import create_app
from zixly.cli.main import build_parser
from zixly.container import Services
from zixly.db.session import Scope
from zixly.dev.sandbox.server import serve_sandbox
from zixly.embedded.stack import Endpoints
from zixly.ingest.tokens import new_token
from zixly.monitor.executions import failure_message, safe_message
from zixly.security.crypto import Keyring, Secret

INGEST = "/ingest/v1"


@pytest.fixture(scope="module")
async def probe(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    """The app, reached from an address of its own (bad tokens count per address)."""
    transport = httpx.ASGITransport(app=create_app(services), client=("198.51.100.66", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def post(client: httpx.AsyncClient, kind: str, token: str, body: Any) -> httpx.Response:
    """``body`` as JSON with ASCII escapes, so lone surrogates travel as a client sends them."""
    return await post_raw(client, kind, token, json.dumps(body).encode())


async def post_raw(client: httpx.AsyncClient, kind: str, token: str, body: bytes) -> httpx.Response:
    headers = bearer(token) | {"Content-Type": "application/json"}
    return await client.post(f"{INGEST}/{kind}", content=body, headers=headers)


def lead(n: int, **changes: Any) -> dict[str, Any]:
    record = {
        "client_id": "C-0",
        "lead_id": f"deal-{n}",
        "stage": "qualified",
        "status": "open",
        "event_date": f"2026-03-01T{n % 24:02d}:00:00+10:00",
        "value": 100,
        "external_id": f"hs-{n}",
    }
    return record | changes


def metric(n: int, **changes: Any) -> dict[str, Any]:
    record = {
        "client_id": "C-0",
        "metric_name": "orders",
        "metric_value": n,
        "unit": "orders",
        "record_date": f"2026-03-01T{n % 24:02d}:00:00Z",
    }
    return record | changes


RECORD = {"financials": financial, "lead-events": lead, "custom-metrics": metric}
STRING_FIELDS = {
    "financials": ("client_id", "client_name", "external_id"),
    "lead-events": ("client_id", "client_name", "lead_id", "stage", "status", "external_id"),
    "custom-metrics": ("client_id", "client_name", "unit"),
}


async def table_rows(owner: asyncpg.Connection, tenant_id: uuid.UUID) -> dict[str, int]:
    counts = {}
    for table in ("client_kpis", "financials", "lead_events", "custom_metrics"):
        query = f"SELECT count(*) FROM {table} WHERE tenant_id = $1"
        counts[table] = int(await owner.fetchval(query, tenant_id))
    return counts


# --- ingest: strings ----------------------------------------------------------------------------

# A lone surrogate cannot be encoded for PostgreSQL; C0 and C1 control characters (the
# writer's column separators among them) have no place in a name or an id.
UNSTORABLE = {
    "lone surrogate": "ab\ud800cd",
    "low surrogate": "\udc00",
    "NEL (C1)": "x\x85y",
    "CSI (C1)": "x\x9b31my",
    "unit separator": "caf\u00e9\x1fz",
    "record separator alone": "\x1e",
    "NUL after non-ASCII": "\u00e9\x00",
}


@pytest.mark.parametrize("kind", list(RECORD))
async def test_unstorable_characters_are_refused_in_every_string_field(
    probe: httpx.AsyncClient, owner: asyncpg.Connection, world: World, services: Services, kind: str
) -> None:
    tenant = await world.tenant("probe-chars")
    token = await token_for(services, tenant.id)
    before = await table_rows(owner, tenant.id)
    expected = []
    records = []
    for field in STRING_FIELDS[kind]:
        for value in UNSTORABLE.values():
            expected.append((len(records), field))
            records.append(RECORD[kind](len(records), **{field: value}))
    response = await post(probe, kind, token, envelope(records))
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert [(e["index"], e["field"]) for e in errors] == expected
    assert {e["message"] for e in errors} == {"must not contain control characters"}
    for name in ("workflow_id", "execution_id"):
        response = await post(probe, kind, token, envelope([], **{name: "wf\ud800"}))
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == name
    assert await table_rows(owner, tenant.id) == before


async def test_errors_quoting_the_request_survive_lone_surrogates(
    probe: httpx.AsyncClient, world: World, services: Services
) -> None:
    """A 422 names unknown fields and repeats values that are no date: with a lone surrogate
    in them the error itself must still be rendered (escaped), not become a 500."""
    tenant = await world.tenant("probe-echo")
    token = await token_for(services, tenant.id)
    not_a_date = "\ud800\ud800\ud800\ud800-\ud800\ud800-\ud800\ud800"
    for kind, body, field in (
        ("financials", envelope([financial(0)], **{"\ud800": 1}), "\ud800"),
        ("financials", envelope([financial(0, **{"x\udc00": 1})]), "x\udc00"),
        ("financials", envelope([financial(0, record_date=not_a_date)]), "record_date"),
        ("lead-events", envelope([lead(0, event_date="2026-03-01T09:30\ud800")]), "event_date"),
    ):
        response = await post(probe, kind, token, body)
        assert response.status_code == 422, response.text
        assert response.content.isascii()
        assert [e["field"] for e in json.loads(response.content)["errors"]] == [field]


TRICKY = [
    "'; DROP TABLE financials; --",
    'Robert"); DELETE FROM client_kpis; --',
    '{a,"b"}',
    "{}",
    "back\\slash \\N",
    "NULL",
    "x,y;z|w",
    "café ☕ 🍰 Ōtautahi",
    "مرحبا بالعالم",
    "👩\u200d💻 zero-width joiner",
    "  padded  ",
    "$1 :tenant %s {0}",
]


async def test_sql_and_array_syntax_in_values_is_stored_verbatim(
    probe: httpx.AsyncClient, owner: asyncpg.Connection, world: World, services: Services
) -> None:
    tenant = await world.tenant("probe-verbatim")
    token = await token_for(services, tenant.id)
    records = [
        financial(n, client=f"T-{n}", client_name=value, external_id=value)
        for n, value in enumerate(TRICKY)
    ]
    response = await post(probe, "financials", token, envelope(records, workflow_id=TRICKY[0]))
    assert response.status_code == 200, response.text
    assert response.json()["inserted"] == len(TRICKY)
    stored = await owner.fetch(
        "SELECT c.client_id, c.client_name, f.external_id, f.source_workflow_id "
        "FROM financials f JOIN client_kpis c ON c.id = f.client_kpi_id "
        "WHERE f.tenant_id = $1 ORDER BY f.record_date",
        tenant.id,
    )
    assert [(r["client_id"], r["client_name"], r["external_id"]) for r in stored] == [
        (f"T-{n}", value, value) for n, value in enumerate(TRICKY)
    ]
    assert {r["source_workflow_id"] for r in stored} == {TRICKY[0]}
    assert await owner.fetchval("SELECT count(*) FROM financials") > 0  # still there


# --- ingest: numbers and dates ------------------------------------------------------------------


async def test_amounts_in_any_notation_are_stored_exactly_or_refused(
    probe: httpx.AsyncClient, owner: asyncpg.Connection, world: World, services: Services
) -> None:
    tenant = await world.tenant("probe-numbers")
    token = await token_for(services, tenant.id)
    # Zero and whole amounts written with exponents or very many zeros are valid amounts;
    # PostgreSQL refuses such text (exponents beyond 1000, more than 16383 decimals).
    accepted = [
        (b"0e5000", Decimal("0.00")),
        (b'"-0E-5000"', Decimal("0.00")),
        (b"1." + b"0" * 20000, Decimal("1.00")),
        (b'"1e5"', Decimal("100000.00")),
        (b"12.50e0", Decimal("12.50")),
    ]
    records = []
    for n, (raw, _) in enumerate(accepted):
        day = (dt.date(2026, 1, 1) + dt.timedelta(days=n)).isoformat()
        records.append(
            f'{{"client_id": "C-0", "record_date": "{day}", "revenue": '.encode()
            + raw
            + b', "expenses": 0}'
        )
    body = b'{"source_system": "xero", "records": [' + b",".join(records) + b"]}"
    response = await post_raw(probe, "financials", token, body)
    assert response.status_code == 200, response.text
    stored = await owner.fetch(
        "SELECT revenue, net_profit FROM financials WHERE tenant_id = $1 ORDER BY record_date",
        tenant.id,
    )
    assert [(r["revenue"], r["net_profit"]) for r in stored] == [(v, v) for _, v in accepted]

    metric_body = (
        b'{"source_system": "shopify", "records": [{"client_id": "C-0", "metric_name": "x", '
        b'"metric_value": 0E-99999, "record_date": "2026-03-01T00:00:00Z"}]}'
    )
    response = await post_raw(probe, "custom-metrics", token, metric_body)
    assert response.status_code == 200, response.text

    refused = ["1e400", "-1e400", "1e-400", "Infinity", "-inf", "sNaN", "NaN", "1_000", "0x10"]
    response = await post(
        probe,
        "financials",
        token,
        envelope([financial(n, revenue=v) for n, v in enumerate(refused)]),
    )
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["revenue"] * len(refused)
    for constant in (b"NaN", b"Infinity", b"-Infinity", b"1" * 5000):
        body = b'{"source_system": "xero", "records": [{"revenue": ' + constant + b"}]}"
        response = await post_raw(probe, "financials", token, body)
        assert response.status_code == 400, (constant[:10], response.text)


@pytest.mark.parametrize("kind", ["lead-events", "custom-metrics"])
async def test_instants_at_the_ends_of_time_are_refused_not_a_crash(
    probe: httpx.AsyncClient, world: World, services: Services, kind: str
) -> None:
    tenant = await world.tenant("probe-instants")
    token = await token_for(services, tenant.id)
    field = "event_date" if kind == "lead-events" else "record_date"
    values = [
        "9999-12-31T23:59:59-10:00",  # past year 9999 in UTC
        "0001-01-01T00:00:00+10:00",  # before year 1 in UTC
        "0001-01-01T00:00:00Z",
        "2026-03-01T24:00:00Z",
        "2026-03-01T09:30:00+25:00",
        "2026-03-01T09:30:00",
    ]
    records = [RECORD[kind](n, **{field: v}) for n, v in enumerate(values)]
    response = await post(probe, kind, token, envelope(records))
    assert response.status_code == 422, response.text
    assert [(e["index"], e["field"]) for e in response.json()["errors"]] == [
        (n, field) for n in range(len(values))
    ]


# --- ingest: tenants and tokens -------------------------------------------------------------------


async def test_a_token_speaks_for_its_own_tenant_whatever_the_body_says(
    probe: httpx.AsyncClient, owner: asyncpg.Connection, world: World, services: Services
) -> None:
    a, b = await world.tenant("probe-a"), await world.tenant("probe-b")
    a_token = await token_for(services, a.id)
    await token_for(services, b.id)
    b_before = await table_rows(owner, b.id)
    attempts = [
        envelope([financial(0)], tenant_id=str(b.id)),
        envelope([financial(0)], tenant=b.slug),
        envelope([financial(0, tenant_id=str(b.id))]),
        envelope([financial(0, client_kpi_id=str(b.client_ids[0]))]),
        envelope([financial(0, id=1)]),
    ]
    for body in attempts:
        response = await post(probe, "financials", a_token, body)
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["message"] == "unknown field"
    response = await post(probe, "heartbeat", a_token, {"tenant": str(b.id)})
    assert response.status_code == 400
    assert await table_rows(owner, b.id) == b_before
    assert (
        await owner.fetchval(
            "SELECT last_used_at FROM ingest_tokens WHERE tenant_id = $1 AND revoked_at IS NULL",
            b.id,
        )
        is None
    )


async def test_unknown_revoked_and_expired_tokens_get_the_same_answer(
    probe: httpx.AsyncClient, owner: asyncpg.Connection, world: World, services: Services
) -> None:
    tenant = await world.tenant("probe-tokens")
    revoked = await token_for(services, tenant.id)
    expired = await token_for(services, tenant.id)  # revokes the first
    await owner.execute(
        "UPDATE ingest_tokens SET expires_at = now() - interval '1 second' "
        "WHERE tenant_id = $1 AND revoked_at IS NULL",
        tenant.id,
    )
    answers = []
    for token in (new_token(), revoked, expired):
        response = await post(probe, "financials", token, envelope([financial(0)]))
        body = response.json()
        del body["requestId"]
        answers.append((response.status_code, response.headers["www-authenticate"], body))
    assert answers[0] == answers[1] == answers[2]
    assert answers[0][0] == 401
    # A live token's display prefix with the rest guessed is just another unknown token.
    live = await token_for(services, tenant.id)
    guessed = live[:12] + new_token()[12:]
    response = await post(probe, "financials", guessed, envelope([financial(0)]))
    assert response.status_code == 401
    assert (
        await owner.fetchval("SELECT count(*) FROM financials WHERE tenant_id = $1", tenant.id) == 0
    )


async def test_lineage_ids_are_bounded_and_typed(
    probe: httpx.AsyncClient, owner: asyncpg.Connection, world: World, services: Services
) -> None:
    tenant = await world.tenant("probe-lineage")
    token = await token_for(services, tenant.id)
    for name in ("workflow_id", "execution_id"):
        for value in ("x" * 101, 10**100, True, 1.5, {"$gt": ""}, ["1"], ""):
            response = await post(
                probe, "financials", token, envelope([financial(0)], **{name: value})
            )
            assert response.status_code == 422, (name, value)
            assert [e["field"] for e in response.json()["errors"]] == [name]
    body = envelope([financial(0)], workflow_id="w" * 100, execution_id=10**99)
    assert (await post(probe, "financials", token, body)).status_code == 200
    stored = await owner.fetchrow(
        "SELECT source_workflow_id, source_execution_id FROM financials WHERE tenant_id = $1",
        tenant.id,
    )
    assert (stored["source_workflow_id"], stored["source_execution_id"]) == ("w" * 100, str(10**99))


async def test_json_bombs_within_the_body_limit_are_refused_cleanly(
    probe: httpx.AsyncClient, owner: asyncpg.Connection, world: World, services: Services
) -> None:
    tenant = await world.tenant("probe-bombs")
    token = await token_for(services, tenant.id)
    limit = services.settings.ingest_max_body_bytes
    n = limit // 3 - 100
    bombs = {
        "empty objects": (b'{"source_system": "xero", "records": [' + b"{}," * n + b"{}]}", 413),
        "empty arrays": (b'{"source_system": "xero", "records": [' + b"[]," * n + b"[]]}", 413),
        "nested deep": (b'{"records": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", 400),
        "a huge string": (
            b'{"source_system": "xero", "records": [], "workflow_id": "'
            + b"a" * (limit - 100)
            + b'"}',
            422,
        ),
        "arrays in a field": (
            b'{"source_system": "xero", "records": [], "execution_id": [' + b"[]," * n + b"[]]}",
            422,
        ),
    }
    for name, (body, status) in bombs.items():
        assert len(body) <= limit, name
        response = await post_raw(probe, "financials", token, body)
        assert response.status_code == status, (name, response.text[:200])
        assert len(response.content) < 2000, name  # nothing of the body is echoed back
    assert await table_rows(owner, tenant.id) == {
        "client_kpis": 2,
        "financials": 0,
        "lead_events": 0,
        "custom_metrics": 0,
    }


# --- provider connect ---------------------------------------------------------------------------


async def test_a_shop_name_cannot_smuggle_a_line_break_into_the_provider_host(
    rig: Rig,  # noqa: F811 - the imported fixture
) -> None:
    tenant = await rig.world.tenant("probe-shop", clients=0)
    for shop in ("corner-store\n", "corner-store\n.evil.example", "corner-store\r\n", "a\x00b"):
        body = await rig.start(tenant, "shopify", shop=shop)
        assert body.get("errors"), (shop, body)
        extensions = body["errors"][0]["extensions"]
        assert (extensions["code"], extensions["field"]) == ("VALIDATION_ERROR", "shop"), shop
    started = await rig.start(tenant, "shopify", shop="corner-store")
    assert urlsplit(started["authorizeUrl"]).path.endswith("/admin/oauth/authorize")


async def test_the_callback_redirects_only_where_configured_and_reflects_nothing(
    rig: Rig,  # noqa: F811 - the imported fixture
    logs: LogLines,
) -> None:
    rig.sandbox.consent = True
    tenant = await rig.world.tenant("probe-callback", clients=0)
    back = "https://app.zixly.test/integrations?tab=providers"
    evil = '"><script>alert(1)</script>'
    rig.settings.oauth_return_url = back
    try:
        started = await rig.start(tenant)
        callback, _ = await rig.code_for(started)
        response = await rig.browser.get(
            callback,
            params={
                "state": started["state"],
                "error": "access_denied\n",
                "error_description": evil,
                "next": "https://evil.example/",
                "redirect_uri": "https://evil.example/",
                "return_url": "//evil.example",
                "provider": evil,
                "status": "connected",
            },
            follow_redirects=False,
        )
    finally:
        rig.settings.oauth_return_url = None
    assert response.status_code == 303
    assert response.headers["location"] == (
        f"{back}&provider=xero&status=failed&reason=provider_error"
    )
    assert "evil" not in response.text and "script" not in response.text
    [refused] = logs.events("integration.connect.refused")
    assert refused["error"] == "unknown"  # not "access_denied\n": only a whole code counts
    assert await rig.row(tenant) is None

    # Without a return URL: a static page; oversized values are no answer at all.
    started = await rig.start(tenant)
    for params, reason in (
        ({"state": "s" * 10_000, "code": "c"}, "invalid_state"),
        ({"state": started["state"], "code": "c" * 5000}, "invalid_request"),
        ({"state": started["state"], "code": "c"}, "invalid_state"),  # spent by the last one
    ):
        page = await rig.browser.get(callback, params=params | {"x": evil})
        assert page.status_code == 400 and f"({reason})" in page.text, params.keys()
        assert "evil" not in page.text and "<script" not in page.text
        assert page.headers["content-security-policy"] == "default-src 'none'"
        assert page.headers["cache-control"] == "no-store"


# --- alert webhooks -----------------------------------------------------------------------------

UPDATE_ALERTS = """
mutation($input: AlertSettingsInput!) {
  updateAlertSettings(input: $input) { webhookConfigured }
}"""
# Private, link-local, reserved and loopback targets, in the spellings resolvers accept.
NOT_PUBLIC = [
    "https://169.254.169.254/latest/meta-data/",
    "https://10.0.0.5/hook",
    "https://172.16.3.4/hook",
    "https://192.168.1.1/hook",
    "https://100.64.0.1/hook",
    "https://0.0.0.0/hook",
    "https://224.0.0.1/hook",
    "https://[fe80::1]/hook",
    "https://[fd00::1]/hook",
    "https://[::]/hook",
    "https://[::ffff:169.254.169.254]/hook",
    "https://[64:ff9b::a9fe:a9fe]/hook",
    "https://[2002:a9fe:a9fe::1]/hook",
    "https://2852039166/hook",  # 169.254.169.254 as one number
    "https://0xa9.0xfe.0xa9.0xfe/hook",
    "https://10.1/hook",
]
LOOPBACK = [
    "https://127.0.0.1/hook",
    "https://127.1/hook",
    "https://2130706433/hook",
    "https://0x7f.0.0.1/hook",
    "https://[::1]/hook",
    "https://[::ffff:127.0.0.1]/hook",
    "https://[0:0:0:0:0:ffff:7f00:1]/hook",
    "https://localhost/hook",
    "https://localhost./hook",
    "https://api.localhost/hook",
    "http://127.0.0.1:5678/webhook/zixly-xero-profit-and-loss",
    "http://localhost:8000/graphql",
]


@pytest.fixture(scope="module")
async def strict_app(
    endpoints: Endpoints, data_dir: Path
) -> AsyncIterator[tuple[Services, httpx.AsyncClient]]:
    """The app as deployed: alert webhooks may not reach this machine."""
    settings = make_settings(data_dir, alert_webhook_allow_loopback=False)
    async with other_app(endpoints, settings, address="192.0.2.166") as built:
        yield built


async def test_webhook_urls_into_private_networks_or_this_machine_are_refused(
    strict_app: tuple[Services, httpx.AsyncClient],
    client: httpx.AsyncClient,
    owner: asyncpg.Connection,
    world: World,
) -> None:
    _, strict = strict_app
    tenant = await world.tenant("probe-ssrf", clients=0)
    admin = world.headers(tenant.admin)
    for url in NOT_PUBLIC + LOOPBACK:
        body = await gql(
            strict, UPDATE_ALERTS, {"input": {"emailRecipients": [], "webhookUrl": url}}, admin
        )
        assert body["data"] is None, url
        extensions = body["errors"][0]["extensions"]
        assert (extensions["code"], extensions["field"]) == ("VALIDATION_ERROR", "webhookUrl"), url
        assert url not in json.dumps(body)
    # Where loopback is allowed (development), private networks still are not.
    for url in NOT_PUBLIC:
        body = await gql(
            client, UPDATE_ALERTS, {"input": {"emailRecipients": [], "webhookUrl": url}}, admin
        )
        assert body["errors"][0]["extensions"]["field"] == "webhookUrl", url
    assert (
        await owner.fetchval("SELECT count(*) FROM alert_settings WHERE tenant_id = $1", tenant.id)
        == 0
    )
    for url in (
        "https://hooks.slack.com/services/T000/B000/XXXX",
        "https://8.8.8.8/hook",
        "https://[2606:4700:4700::1111]/hook",
    ):
        body = await gql(
            strict, UPDATE_ALERTS, {"input": {"emailRecipients": [], "webhookUrl": url}}, admin
        )
        assert body["data"]["updateAlertSettings"]["webhookConfigured"] is True, (url, body)


class Listener:
    """A raw TCP server on 127.0.0.1 that counts connections and answers with ``reply``."""

    def __init__(
        self,
        reply: Callable[[asyncio.StreamWriter], Awaitable[None]] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.reply = reply
        self.tls = tls
        self.connections = 0
        self.requests: list[bytes] = []
        self.sent = 0
        self.server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            self.requests.append(await reader.readuntil(b"\r\n\r\n"))
            if self.reply is not None:
                await self.reply(writer)
        except (
            ConnectionError,
            ssl.SSLError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> Listener:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.tls)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


def notice(tenant_id: uuid.UUID) -> Notice:
    return Notice("NOTICE", tenant_id, "probe", "CRITICAL", "Probe", 1, dt.datetime.now(dt.UTC))


async def test_delivery_never_connects_to_this_machine_whatever_the_name_resolves_to(
    services: Services, owner: asyncpg.Connection, world: World, logs: LogLines
) -> None:
    tenant = await world.tenant("probe-rebind", clients=0)
    keyring = Keyring.from_settings(services.settings)
    strict = WebhookChannel(services.http, timeout=5)  # the default: no loopback
    async with Listener() as listener:
        secret = uuid.uuid4().hex
        # Saved while the name pointed elsewhere (or saved where loopback was allowed): the
        # delivery decides on what the name resolves to now.
        for host in ("localhost", "127.1", "[::ffff:127.0.0.1]", "2130706433"):
            url = f"https://{host}:{listener.port}/services/T/B/{secret}"
            with pytest.raises(AlertDeliveryError) as raised:
                await strict.send(Secret(url), notice(tenant.id))
            assert "not a public address" in raised.value.message
        assert listener.connections == 0

        # Through the service: the failure is recorded and logged without the URL.
        service = AlertService(
            services.db,
            keyring,
            SmtpChannel(host=None, port=25, sender="alerts@zixly.test"),
            strict,
        )
        permissive = AlertSettingsRepository(keyring, WebhookTargets(allow_loopback=True))
        port = listener.port
        url = f"https://localhost:{port}/services/T/B/{secret}"
        async with services.db.transaction(Scope(tenant_id=None, staff=True)) as session:
            await permissive.save(session, tenant.id, webhook_url=Secret(url), channels=["webhook"])
        outcome = await service.raise_alert(tenant.id, "probe", "CRITICAL", "Probe")
        assert outcome.delivery.as_dict() == {"sent": 0, "failed": 1}
        assert listener.connections == 0
    last_error = await owner.fetchval(
        "SELECT last_error FROM alert_deliveries WHERE tenant_id = $1", tenant.id
    )
    assert last_error == (
        "ALERT_DELIVERY_FAILED: the webhook's host is not a public address; nothing was sent"
    )
    assert secret not in logs.text and f":{port}" not in logs.text


def certificate(directory: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for the DNS name ``name`` only (no IP address in it): the
    server's context, and a client context that trusts it."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / f"{name}.crt", directory / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client


async def test_a_pinned_delivery_still_checks_the_hosts_certificate(
    world: World, tmp_path: Path
) -> None:
    """The connection goes to the checked address, but TLS (SNI, certificate name) and the
    Host header are still the URL's host."""
    tenant = await world.tenant("probe-tls", clients=0)
    server_tls, client_tls = certificate(tmp_path, "localhost")

    async def ok(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    async with (
        httpx.AsyncClient(verify=client_tls) as http,
        Listener(ok, tls=server_tls) as receiver,
    ):
        local = WebhookChannel(http, timeout=5, targets=WebhookTargets(allow_loopback=True))
        await local.send(Secret(f"https://localhost:{receiver.port}/hook"), notice(tenant.id))
        [request] = receiver.requests
        assert f"host: localhost:{receiver.port}".encode() in request.lower()
        # The same server reached by its address: the certificate names no address.
        with pytest.raises(AlertDeliveryError, match="unreachable"):
            await local.send(Secret(f"https://127.0.0.1:{receiver.port}/hook"), notice(tenant.id))


async def test_a_webhook_cannot_redirect_stream_or_stall_the_delivery(
    services: Services, world: World
) -> None:
    tenant = await world.tenant("probe-hook-answers", clients=0)
    local = WebhookChannel(services.http, timeout=2, targets=WebhookTargets(allow_loopback=True))

    async with Listener() as elsewhere:

        async def redirect(writer: asyncio.StreamWriter) -> None:
            location = f"http://127.0.0.1:{elsewhere.port}/stolen"
            writer.write(
                f"HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\n"
                "Content-Length: 0\r\n\r\n".encode()
            )
            await writer.drain()

        async with Listener(redirect) as redirector:
            with pytest.raises(AlertDeliveryError, match="answered 307"):
                await local.send(Secret(f"http://127.0.0.1:{redirector.port}/h"), notice(tenant.id))
        assert elsewhere.connections == 0

    async def endless(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\n")
        chunk = b"x" * 65536
        while True:
            writer.write(chunk)
            await writer.drain()
            streaming.sent += len(chunk)

    async with Listener(endless) as streaming:
        async with asyncio.timeout(10):
            await local.send(Secret(f"http://127.0.0.1:{streaming.port}/h"), notice(tenant.id))
        assert streaming.sent < 64 * 1024 * 1024  # what the socket buffers took, not more

    async def drip(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\n")
        while True:  # a header byte every half second: no single read ever times out
            await asyncio.sleep(0.5)
            writer.write(b"X")
            await writer.drain()

    async with Listener(drip) as dripping:
        started = asyncio.get_running_loop().time()
        with pytest.raises(AlertDeliveryError, match="timed out"):
            async with asyncio.timeout(20):
                await local.send(Secret(f"http://127.0.0.1:{dripping.port}/h"), notice(tenant.id))
        assert asyncio.get_running_loop().time() - started < 5


# --- the sync-health monitor's error text -------------------------------------------------------

# (what a failed run's message said, the credential in it). n8n's task runner shows the text
# after the last colon only, so the templates' Code nodes turn colons into spaces: a JSON
# body quoted in a message arrives as {"access_token" "..."}; JSON inside a JSON string
# arrives escaped; providers use camelCase keys.
LEAKS = [
    ('Xero answered 400 to token ({\\"access_token\\":\\"ya29.short\\"})', "ya29.short"),
    ("HubSpot answered 401 to deals ({'client_secret': 'shh-its-secret'})", "shh-its-secret"),
    ('Asana answered 400 to tasks ({"refresh_token" "r3fr3sh-short"})', "r3fr3sh-short"),
    ('Shopify answered 401 to orders ({"accessToken":"abcDEF123"})', "abcDEF123"),
    ('HubSpot answered 400 to deals ({"apiKey" "k-9f8e7d"})', "k-9f8e7d"),
    ("GET https://api.hubapi.com/deals?hapikey=deadbeef-1234&limit=100 failed", "deadbeef-1234"),
    ("request failed with Authorization: Basic dXNlcjpodW50ZXIy", "dXNlcjpodW50ZXIy"),
    ("request failed with Authorization Basic dXNlcjpodW50ZXIy", "dXNlcjpodW50ZXIy"),
    ('{"password":"hunter2","user":"ops"}', "hunter2"),
    ("Bearer  abc.def-ghi", "abc.def-ghi"),
]


@pytest.mark.parametrize(("message", "secret"), LEAKS, ids=[s for _, s in LEAKS])
def test_last_error_keeps_no_credential(message: str, secret: str) -> None:
    execution = {
        "status": "error",
        "data": {"resultData": {"error": {"message": message, "node": {"name": "Collect"}}}},
    }
    cleaned = failure_message(execution)
    assert secret not in cleaned, cleaned
    assert cleaned.startswith("Collect: ")


def test_last_error_stays_readable() -> None:
    for message in (
        "Xero answered 401 to report (TokenExpired token expired)",
        "the access token is invalid; reconnect",
        "Shopify kept answering 429 to orders (attempt 5, asked to wait 2s)",
        "Basic accounting plan does not include reports",
    ):
        assert safe_message(message) == message


async def test_alert_recipients_cannot_carry_line_breaks_controls_or_surrogates(
    client: httpx.AsyncClient, owner: asyncpg.Connection, world: World
) -> None:
    tenant = await world.tenant("probe-recipients", clients=0)
    for address in (
        "ops\ud800@example.com",
        "ops\x00@example.com",
        "ops@example.com\x0bBcc: all@example.com",
        "ops@exam\x85ple.com",
        "ops@exam\u2028ple.com",
    ):
        request = {"query": UPDATE_ALERTS, "variables": {"input": {"emailRecipients": [address]}}}
        response = await client.post(
            "/graphql",
            content=json.dumps(request).encode(),  # ASCII escapes: a lone surrogate travels
            headers=world.headers(tenant.admin) | {"Content-Type": "application/json"},
        )
        body = response.json()
        extensions = body["errors"][0]["extensions"]
        assert (extensions["code"], extensions["field"]) == (
            "VALIDATION_ERROR",
            "emailRecipients",
        ), repr(address)
    assert (
        await owner.fetchval("SELECT count(*) FROM alert_settings WHERE tenant_id = $1", tenant.id)
        == 0
    )


# --- the sandbox --------------------------------------------------------------------------------


def listening_on(port: int) -> set[str]:
    """The local addresses with a socket listening on ``port`` (the kernel's own table)."""
    found = set()
    for table, size in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        with open(table) as lines:
            next(lines)
            for line in lines:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if state != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                    continue
                raw = bytes.fromhex(address)
                # the kernel prints each 32-bit word in host (little-endian) order
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, size, 4))
                found.add(str(ipaddress.ip_address(words)))
    return found


async def test_the_sandbox_listens_on_loopback_only() -> None:
    """It issues tokens to anyone who asks: reachable from anywhere but this machine, it
    would be a token mint for whoever finds the port."""
    async with serve_sandbox() as running:
        port = urlsplit(running.url).port
        assert port is not None
        assert listening_on(port) == {"127.0.0.1"}
    for option in ("--host", "--bind"):  # and the command offers no other address
        with pytest.raises(SystemExit):
            build_parser().parse_args(["sandbox", option, "0.0.0.0"])
