"""alertSettings / updateAlertSettings (ADMIN) and alerts (members) through GraphQL, with the
real database and the real alert service."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import World, gql
from tests.test_mutations import error
from zixly.alerts.channels import SmtpChannel, WebhookChannel
from zixly.alerts.service import AlertService
from zixly.container import Services
from zixly.security.crypto import Keyring

SETTINGS = """{ alertSettings { emailRecipients webhookConfigured channels minSeverity
  renotifyAfterSeconds } }"""
UPDATE = """
mutation($input: AlertSettingsInput!) {
  updateAlertSettings(input: $input) {
    emailRecipients webhookConfigured channels minSeverity renotifyAfterSeconds
  }
}"""
ALERTS = """
query($status: AlertStatus, $first: Int) {
  alerts(status: $status, first: $first) {
    key severity title status occurrences firstSeen lastSeen resolvedAt
  }
}"""


def alert_service(services: Services) -> AlertService:
    """Nothing configured to deliver to in these tests: alerts are only recorded."""
    smtp = SmtpChannel(host=None, port=25, sender="alerts@zixly.test")
    return AlertService(
        services.db,
        Keyring.from_settings(services.settings),
        smtp,
        WebhookChannel(services.http),
    )


async def test_settings_are_admin_only(
    client: httpx.AsyncClient, world: World, services: Services
) -> None:
    tenant = await world.tenant("alertset-roles", clients=0)
    for who in (tenant.viewer, tenant.editor):
        body = await gql(client, SETTINGS, headers=world.headers(who))
        assert error(body)["code"] == "FORBIDDEN"
        body = await gql(
            client,
            UPDATE,
            {"input": {"emailRecipients": ["x@example.com"]}},
            headers=world.headers(who),
        )
        assert error(body)["code"] == "FORBIDDEN"

    body = await gql(client, SETTINGS, headers=world.headers(tenant.admin))
    assert body["data"]["alertSettings"] == {
        "emailRecipients": [],
        "webhookConfigured": False,
        "channels": ["EMAIL", "WEBHOOK"],
        "minSeverity": "WARNING",
        "renotifyAfterSeconds": None,
    }


async def test_the_webhook_url_is_write_only(
    client: httpx.AsyncClient, world: World, owner: asyncpg.Connection
) -> None:
    tenant = await world.tenant("alertset-hook", clients=0)
    other = await world.tenant("alertset-other", clients=0)
    secret = uuid.uuid4().hex
    url = f"https://hooks.slack.example/services/T000/B000/{secret}"
    admin = world.headers(tenant.admin)
    body = await gql(
        client,
        UPDATE,
        {
            "input": {
                "emailRecipients": ["Ops@Example.com", "ops@example.com", "cfo@example.com"],
                "webhookUrl": url,
                "channels": ["WEBHOOK"],
                "minSeverity": "CRITICAL",
                "renotifyAfterSeconds": 3600,
            }
        },
        headers=admin,
    )
    assert body["data"]["updateAlertSettings"] == {
        "emailRecipients": ["ops@example.com", "cfo@example.com"],
        "webhookConfigured": True,
        "channels": ["WEBHOOK"],
        "minSeverity": "CRITICAL",
        "renotifyAfterSeconds": 3600,
    }
    assert secret not in json.dumps(body)
    stored = await owner.fetchval(
        "SELECT webhook_url_ciphertext FROM alert_settings WHERE tenant_id = $1", tenant.id
    )
    assert stored.startswith("v1.") and secret not in stored
    audit = await owner.fetchrow(
        "SELECT details FROM audit_log WHERE tenant_id = $1 AND action = "
        "'alert_settings.update' ORDER BY id DESC LIMIT 1",
        tenant.id,
    )
    assert secret not in audit["details"] and "ops@example.com" not in audit["details"]

    # Omitted: the stored URL stays. null: removed.
    body = await gql(client, UPDATE, {"input": {"emailRecipients": []}}, headers=admin)
    assert body["data"]["updateAlertSettings"]["webhookConfigured"] is True
    assert (
        await owner.fetchval(
            "SELECT webhook_url_ciphertext FROM alert_settings WHERE tenant_id = $1", tenant.id
        )
        == stored
    )
    body = await gql(client, SETTINGS, headers=world.headers(other.admin))
    assert body["data"]["alertSettings"]["webhookConfigured"] is False  # another tenant's
    body = await gql(
        client, UPDATE, {"input": {"emailRecipients": [], "webhookUrl": None}}, headers=admin
    )
    assert body["data"]["updateAlertSettings"]["webhookConfigured"] is False


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"emailRecipients": ["not an address"]}, "emailRecipients"),
        ({"emailRecipients": [f"u{i}@example.com" for i in range(21)]}, "emailRecipients"),
        ({"webhookUrl": "http://hooks.example.com/x"}, "webhookUrl"),
        ({"webhookUrl": "ftp://hooks.example.com/x"}, "webhookUrl"),
        ({"webhookUrl": "https:///no-host"}, "webhookUrl"),
        ({"webhookUrl": "https://example.com:port/x"}, "webhookUrl"),
        ({"webhookUrl": ""}, "webhookUrl"),
        ({"renotifyAfterSeconds": 0}, "renotifyAfterSeconds"),
    ],
)
async def test_invalid_settings_are_refused_with_the_field(
    client: httpx.AsyncClient,
    world: World,
    owner: asyncpg.Connection,
    change: dict[str, Any],
    field: str,
) -> None:
    tenant = await world.tenant("alertset-bad", clients=0)
    body = await gql(
        client,
        UPDATE,
        {"input": {"emailRecipients": [], **change}},
        headers=world.headers(tenant.admin),
    )
    extensions = error(body)
    assert (extensions["code"], extensions["field"]) == ("VALIDATION_ERROR", field)
    for value in change.values():
        if isinstance(value, str) and value:
            assert value not in json.dumps(body)  # a URL may carry a token: never echoed
    assert (
        await owner.fetchval("SELECT count(*) FROM alert_settings WHERE tenant_id = $1", tenant.id)
        == 0
    )


async def test_http_webhooks_are_allowed_to_loopback_only(
    client: httpx.AsyncClient, world: World
) -> None:
    tenant = await world.tenant("alertset-local", clients=0)
    for url in ("http://127.0.0.1:9999/hook", "http://localhost/hook", "http://[::1]:80/h"):
        body = await gql(
            client,
            UPDATE,
            {"input": {"emailRecipients": [], "webhookUrl": url}},
            headers=world.headers(tenant.admin),
        )
        assert body["data"]["updateAlertSettings"]["webhookConfigured"] is True, body


async def test_members_see_their_own_tenants_alerts(
    client: httpx.AsyncClient, world: World, services: Services
) -> None:
    a = await world.tenant("alerts-list-a", clients=0)
    b = await world.tenant("alerts-list-b", clients=0)
    service = alert_service(services)
    await service.raise_alert(a.id, "integration:xero:sync", "WARNING", "Xero sync is failing")
    await service.raise_alert(a.id, "integration:xero:sync", "CRITICAL", "Xero sync is failing")
    await service.raise_alert(a.id, "instance:unreachable", "CRITICAL", "n8n is not answering")
    await service.resolve(a.id, "instance:unreachable")
    await service.raise_alert(b.id, "integration:hubspot:stale", "WARNING", "HubSpot stale")

    body = await gql(client, ALERTS, headers=world.headers(a.viewer))
    listed = body["data"]["alerts"]
    assert [(x["key"], x["severity"], x["status"], x["occurrences"]) for x in listed] == [
        ("instance:unreachable", "CRITICAL", "RESOLVED", 1),
        ("integration:xero:sync", "CRITICAL", "OPEN", 2),
    ]
    assert listed[0]["resolvedAt"] is not None and listed[1]["resolvedAt"] is None
    assert listed[1]["firstSeen"] <= listed[1]["lastSeen"]

    body = await gql(client, ALERTS, {"status": "OPEN"}, headers=world.headers(a.viewer))
    assert [x["key"] for x in body["data"]["alerts"]] == ["integration:xero:sync"]
    body = await gql(client, ALERTS, {"first": 1}, headers=world.headers(a.viewer))
    assert len(body["data"]["alerts"]) == 1
    body = await gql(client, ALERTS, headers=world.headers(b.viewer))
    assert [x["key"] for x in body["data"]["alerts"]] == ["integration:hubspot:stale"]
