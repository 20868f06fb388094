"""Alerts against a real SMTP server (aiosmtpd) and a real webhook receiver on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import asyncpg
import httpx
import pytest
from aiosmtpd.controller import Controller
from arq import create_pool
from arq.connections import RedisSettings

from tests.conftest import World, free_port
from zixly.alerts.channels import SmtpChannel, WebhookChannel
from zixly.alerts.destinations import WebhookTargets
from zixly.alerts.jobs import deliver_alerts
from zixly.alerts.service import AlertService
from zixly.core.queue import deserialize, serialize
from zixly.core.settings import Settings
from zixly.db.session import Database, Scope, create_engine
from zixly.embedded.stack import Endpoints
from zixly.security.crypto import Keyring, Secret


@dataclass
class Mail:
    recipients: list[str]
    subject: str
    body: str


class _Inbox:
    def __init__(self) -> None:
        self.mails: list[Mail] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content)
        body = message.get_payload(decode=True).decode()
        self.mails.append(Mail(list(envelope.rcpt_tos), str(message["Subject"]), body))
        return "250 OK"


@pytest.fixture(scope="module")
def smtp_server() -> Iterator[tuple[int, _Inbox]]:
    inbox = _Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield port, inbox
    controller.stop()


@dataclass
class Hooks:
    posts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # answers to give next; then 200


@pytest.fixture(scope="module")
def webhook_server() -> Iterator[tuple[int, Hooks]]:
    hooks = Hooks()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status = hooks.statuses.pop(0) if hooks.statuses else 200
            if status == 200:
                hooks.posts.append((self.path, json.loads(body)))
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], hooks
    server.shutdown()
    server.server_close()


@pytest.fixture
async def database(endpoints: Endpoints, settings: Settings) -> AsyncIterator[Database]:
    db = Database(create_engine(endpoints.database_url, settings), settings)
    yield db
    await db.dispose()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def make_service(
    db: Database, settings: Settings, http: httpx.AsyncClient, smtp_port: int, **kw: Any
) -> AlertService:
    smtp = SmtpChannel(
        host="127.0.0.1", port=smtp_port, sender="alerts@zixly.test", starttls=False, timeout=5
    )
    return AlertService(
        db,
        Keyring.from_settings(settings),
        smtp,
        WebhookChannel(http, timeout=5, targets=WebhookTargets(allow_loopback=True)),
        **kw,
    )


async def configure(
    service: AlertService,
    tenant_id: uuid.UUID,
    recipients: list[str],
    webhook_url: str | None,
    **kw: Any,
) -> None:
    async with service.db.transaction(Scope(tenant_id=None, staff=True)) as session:
        await service.settings.save(
            session,
            tenant_id,
            email_recipients=recipients,
            webhook_url=Secret(webhook_url) if webhook_url else None,
            **kw,
        )


def hook_url(port: int, token: str) -> str:
    return f"http://127.0.0.1:{port}/services/T000/B000/{token}"


async def test_persisting_alert_notifies_once_and_recovers_once(
    world: World,
    owner: asyncpg.Connection,
    database: Database,
    settings: Settings,
    http: httpx.AsyncClient,
    smtp_server: tuple[int, _Inbox],
    webhook_server: tuple[int, Hooks],
) -> None:
    (smtp_port, inbox), (hook_port, hooks) = smtp_server, webhook_server
    tenant = await world.tenant("alerts")
    token = uuid.uuid4().hex
    service = make_service(database, settings, http, smtp_port)
    await configure(service, tenant.id, [f"ops@{tenant.slug}.test"], hook_url(hook_port, token))
    mails, posts = len(inbox.mails), len(hooks.posts)

    outcomes = [
        await service.raise_alert(tenant.id, "sync:xero", "CRITICAL", "Xero sync failing", {"n": i})
        for i in range(5)
    ]
    assert [o.notified for o in outcomes] == [True, False, False, False, False]
    assert [o.occurrences for o in outcomes] == [1, 2, 3, 4, 5]
    assert len({o.alert_id for o in outcomes}) == 1
    new_mails, new_posts = inbox.mails[mails:], hooks.posts[posts:]
    assert [(m.recipients, m.subject) for m in new_mails] == [
        ([f"ops@{tenant.slug}.test"], "[Zixly CRITICAL] Xero sync failing")
    ]
    assert [p for p, _ in new_posts] == [f"/services/T000/B000/{token}"]
    payload = new_posts[0][1]["zixly"]
    assert payload["details"] == {"n": 0}
    assert (payload["kind"], payload["key"], payload["tenant_id"]) == (
        "NOTICE",
        "sync:xero",
        str(tenant.id),
    )
    row = await owner.fetchrow(
        "SELECT status, occurrences, notified_at IS NOT NULL AS notified FROM alerts "
        "WHERE tenant_id = $1",
        tenant.id,
    )
    assert dict(row) == {"status": "OPEN", "occurrences": 5, "notified": True}

    resolved = await service.resolve(tenant.id, "sync:xero")
    again = await service.resolve(tenant.id, "sync:xero")
    assert (resolved.notified, again.alert_id) == (True, None)
    new_mails, new_posts = inbox.mails[mails:], hooks.posts[posts:]
    assert [m.subject for m in new_mails] == [
        "[Zixly CRITICAL] Xero sync failing",
        "[Zixly RESOLVED] Xero sync failing",
    ]
    assert [p["zixly"]["kind"] for _, p in new_posts] == ["NOTICE", "RECOVERY"]

    reopened = await service.raise_alert(tenant.id, "sync:xero", "CRITICAL", "Xero sync failing")
    assert reopened.notified and reopened.alert_id != outcomes[0].alert_id
    assert len(inbox.mails) - mails == 3 and len(hooks.posts) - posts == 3
    counts = await owner.fetch(
        "SELECT status, count(*) AS n FROM alerts WHERE tenant_id = $1 GROUP BY status "
        "ORDER BY status",
        tenant.id,
    )
    assert [(r["status"], r["n"]) for r in counts] == [("OPEN", 1), ("RESOLVED", 1)]


async def test_alerts_go_only_to_their_tenants_recipients(
    world: World,
    database: Database,
    settings: Settings,
    http: httpx.AsyncClient,
    smtp_server: tuple[int, _Inbox],
    webhook_server: tuple[int, Hooks],
) -> None:
    (smtp_port, inbox), (hook_port, hooks) = smtp_server, webhook_server
    a, b = await world.tenant("alerta"), await world.tenant("alertb")
    service = make_service(database, settings, http, smtp_port)
    token_a, token_b = uuid.uuid4().hex, uuid.uuid4().hex
    await configure(service, a.id, [f"ops@{a.slug}.test"], hook_url(hook_port, token_a))
    await configure(service, b.id, [f"ops@{b.slug}.test"], hook_url(hook_port, token_b))
    mails, posts = len(inbox.mails), len(hooks.posts)

    await service.raise_alert(a.id, "instance:down", "WARNING", "n8n is down")
    below = await service.raise_alert(b.id, "instance:slow", "INFO", "n8n is slow")

    assert below.notified is False  # under B's threshold (WARNING)
    assert [m.recipients for m in inbox.mails[mails:]] == [[f"ops@{a.slug}.test"]]
    assert [p for p, _ in hooks.posts[posts:]] == [f"/services/T000/B000/{token_a}"]


async def test_failed_webhook_is_recorded_then_delivered_on_retry(
    world: World,
    owner: asyncpg.Connection,
    endpoints: Endpoints,
    database: Database,
    settings: Settings,
    http: httpx.AsyncClient,
    smtp_server: tuple[int, _Inbox],
    webhook_server: tuple[int, Hooks],
) -> None:
    (smtp_port, inbox), (hook_port, hooks) = smtp_server, webhook_server
    tenant = await world.tenant("alertretry")
    token = uuid.uuid4().hex
    service = make_service(database, settings, http, smtp_port, backoff=lambda _: 0.0)
    await configure(service, tenant.id, [f"ops@{tenant.slug}.test"], hook_url(hook_port, token))
    mails, posts = len(inbox.mails), len(hooks.posts)
    hooks.statuses[:] = [500]

    outcome = await service.raise_alert(tenant.id, "sync:hubspot", "CRITICAL", "HubSpot down")

    assert outcome.delivery.as_dict() == {"sent": 1, "failed": 1}
    assert len(inbox.mails) - mails == 1 and hooks.posts[posts:] == []
    rows = await owner.fetch(
        "SELECT channel, status, attempts, last_error FROM alert_deliveries "
        "WHERE tenant_id = $1 ORDER BY channel",
        tenant.id,
    )
    assert [tuple(r) for r in rows] == [
        ("email", "SENT", 1, None),
        ("webhook", "PENDING", 1, "ALERT_DELIVERY_FAILED: the webhook answered 500"),
    ]
    assert await owner.fetchval(
        "SELECT last_error FROM alerts WHERE tenant_id = $1", tenant.id
    ) == ("ALERT_DELIVERY_FAILED: the webhook answered 500")

    redis = await create_pool(
        RedisSettings.from_dsn(endpoints.redis_url),
        job_serializer=serialize,
        job_deserializer=deserialize,
    )
    try:
        result = await deliver_alerts({"alerts": service, "redis": redis})
    finally:
        await redis.aclose()

    assert result["sent"] >= 1
    assert [p for p, _ in hooks.posts[posts:]] == [f"/services/T000/B000/{token}"]
    assert await owner.fetchval(
        "SELECT status FROM alert_deliveries WHERE tenant_id = $1 AND channel = 'webhook'",
        tenant.id,
    ) == ("SENT")


async def test_unreachable_smtp_is_recorded_without_crashing(
    world: World,
    owner: asyncpg.Connection,
    database: Database,
    settings: Settings,
    http: httpx.AsyncClient,
) -> None:
    tenant = await world.tenant("alertsmtp")
    service = make_service(database, settings, http, free_port())  # nothing listens there
    await configure(service, tenant.id, [f"ops@{tenant.slug}.test"], None)

    outcome = await service.raise_alert(tenant.id, "backup", "CRITICAL", "Backup failed")

    assert (outcome.notified, outcome.delivery.as_dict()) == (True, {"sent": 0, "failed": 1})
    row = await owner.fetchrow(
        "SELECT status, attempts, last_error FROM alert_deliveries WHERE tenant_id = $1",
        tenant.id,
    )
    assert tuple(row) == (
        "PENDING",
        1,
        "ALERT_DELIVERY_FAILED: the SMTP server is unreachable (ConnectionRefusedError)",
    )


async def test_webhook_url_never_appears_in_logs(
    world: World,
    database: Database,
    settings: Settings,
    http: httpx.AsyncClient,
    smtp_server: tuple[int, _Inbox],
    webhook_server: tuple[int, Hooks],
    logs: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (smtp_port, _), (hook_port, hooks) = smtp_server, webhook_server
    tenant = await world.tenant("alertlog")
    token = uuid.uuid4().hex
    service = make_service(database, settings, http, smtp_port, backoff=lambda _: 0.0)
    await configure(service, tenant.id, [], hook_url(hook_port, token))
    hooks.statuses[:] = [503]

    with caplog.at_level(logging.DEBUG):
        await service.raise_alert(tenant.id, "sync:asana", "CRITICAL", "Asana down")
        await service.deliver_pending(tenant.id)

    assert [e["error"] for e in logs.events("alert.delivery_failed")] == [
        "ALERT_DELIVERY_FAILED: the webhook answered 503"
    ]
    assert len(logs.events("alert.delivered")) == 1
    assert "HTTP Request" in caplog.text  # httpx logged the requests...
    assert token not in logs.text and token not in caplog.text  # ...without the URL
