"""The provider sandbox's data APIs over HTTP (a real uvicorn on loopback): shapes, paging,
rate limits and their 429s, 401s for tokens the sandbox never issued or that expired,
injected faults, determinism, and the ``zixly sandbox`` command.

The shapes and limits checked here are the providers' own, from
docs/au-rules-and-provider-apis.md ("Provider API shapes and limits"): Xero's Reports rows
and ``/connections``, HubSpot CRM v3 ``paging.next.after`` and its rolling-window 429,
Asana's ``next_page {offset, path, uri}`` and Retry-After, Shopify's ``Link`` paging,
``X-Shopify-Shop-Api-Call-Limit`` bucket and ``Retry-After: 2.0``.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from zixly.dev.sandbox import xero
from zixly.dev.sandbox.common import ApiFault, DataApis, DataConfig
from zixly.dev.sandbox.oauth import ProviderSandbox
from zixly.dev.sandbox.server import RunningSandbox, serve_sandbox
from zixly.n8n_nodes.identifiers import validate_abn

TODAY = date(2025, 3, 12)  # a Wednesday; Sydney is on daylight time (+11:00) until April
LINK = re.compile(r'<([^>]+)>;\s*rel="(next|previous)"')


@dataclass
class Rig:
    running: RunningSandbox
    http: httpx.AsyncClient

    @property
    def sandbox(self) -> ProviderSandbox:
        return self.running.sandbox

    def url(self, provider: str, path: str) -> str:
        return f"{self.running.url}/{provider}{path}"

    def auth(self, provider: str, token: str | None = None) -> dict[str, str]:
        token = token or self.sandbox.issue_access_token(provider)
        if provider == "shopify":
            return {"X-Shopify-Access-Token": token}
        return {"Authorization": f"Bearer {token}"}

    async def get(
        self, provider: str, path: str, token: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = {**self.auth(provider, token), **kwargs.pop("headers", {})}
        return await self.http.get(self.url(provider, path), headers=headers, **kwargs)


@pytest.fixture
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    config = getattr(request, "param", {})
    sandbox = ProviderSandbox(data=DataApis(config=DataConfig(today=TODAY, **config)))
    async with serve_sandbox(sandbox) as running, httpx.AsyncClient(timeout=10) as http:
        yield Rig(running, http)


def limits(**values: Any) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("rig", [values], indirect=True)


# --- tokens -------------------------------------------------------------------------------------

DATA_PATHS = {
    "xero": "/connections",
    "hubspot": "/crm/v3/objects/deals",
    "asana": "/api/1.0/workspaces",
    "shopify": "/admin/api/2024-10/shop.json",
}


async def test_a_token_from_the_token_endpoint_opens_the_data_api(rig: Rig) -> None:
    for provider, path in DATA_PATHS.items():
        refresh = rig.sandbox.grant(provider)
        answer = await rig.http.post(
            rig.url(provider, _token_path(provider)),
            data={"grant_type": "refresh_token", "refresh_token": refresh},
        )
        assert answer.status_code == 200, answer.text
        token = answer.json()["access_token"]
        assert (await rig.get(provider, path, token)).status_code == 200, provider


def _token_path(provider: str) -> str:
    from zixly.providers.registry import PROVIDERS

    return PROVIDERS[provider].exchange_path


async def test_unknown_expired_and_foreign_tokens_get_the_providers_401(rig: Rig) -> None:
    expired = {p: rig.sandbox.issue_access_token(p, lifetime=-1) for p in DATA_PATHS}
    foreign = rig.sandbox.issue_access_token("asana")
    for provider, path in DATA_PATHS.items():
        for token in ("never-issued", expired[provider]):
            assert (await rig.get(provider, path, token)).status_code == 401
        if provider != "asana":
            assert (await rig.get(provider, path, foreign)).status_code == 401
    unknown = (await rig.get("xero", "/connections", "nope")).json()
    assert (unknown["Status"], unknown["Detail"]) == (401, "AuthenticationUnsuccessful")
    assert (await rig.get("xero", "/connections", expired["xero"])).json()["Detail"] == (
        "TokenExpired"
    )
    hub = await rig.get("hubspot", "/crm/v3/objects/deals", expired["hubspot"])
    assert hub.json()["category"] == "EXPIRED_AUTHENTICATION"
    asana = await rig.get("asana", "/api/1.0/workspaces", "nope")
    assert asana.json()["errors"][0]["message"] == "Not Authorized"
    # Shopify takes its token in X-Shopify-Access-Token, never as a bearer token.
    bearer = {"Authorization": f"Bearer {rig.sandbox.issue_access_token('shopify')}"}
    shop = await rig.http.get(rig.url("shopify", DATA_PATHS["shopify"]), headers=bearer)
    assert shop.status_code == 401 and "Invalid API key or access token" in shop.json()["errors"]
    assert [c.status for c in rig.sandbox.data.calls if c.provider == "shopify"][-1] == 401


# --- Xero ---------------------------------------------------------------------------------------


async def test_xero_connections_and_organisation(rig: Rig) -> None:
    connections = (await rig.get("xero", "/connections")).json()
    assert len(connections) == 2
    for connection in connections:
        assert set(connection) == {
            "id",
            "authEventId",
            "tenantId",
            "tenantType",
            "tenantName",
            "createdDateUtc",
            "updatedDateUtc",
        }
        assert connection["tenantType"] == "ORGANISATION"
        headers = {"xero-tenant-id": connection["tenantId"]}
        body = (await rig.get("xero", "/api.xro/2.0/Organisation", headers=headers)).json()
        [org] = body["Organisations"]
        assert (org["OrganisationID"], org["BaseCurrency"], org["CountryCode"]) == (
            connection["tenantId"],
            "AUD",
            "AU",
        )
        assert org["LegalName"] == connection["tenantName"]
        assert validate_abn(org["RegistrationNumber"]).valid


async def test_xero_profit_and_loss_has_xeros_report_shape(rig: Rig) -> None:
    [first, _] = (await rig.get("xero", "/connections")).json()
    headers = {"xero-tenant-id": first["tenantId"]}
    params = {"fromDate": "2025-03-01", "toDate": "2025-03-07"}
    answer = await rig.get(
        "xero", "/api.xro/2.0/Reports/ProfitAndLoss", headers=headers, params=params
    )
    assert answer.status_code == 200
    assert int(answer.headers["X-MinLimit-Remaining"]) == 59
    assert int(answer.headers["X-DayLimit-Remaining"]) == 4999
    body = answer.json()
    assert body["Status"] == "OK"
    [report] = body["Reports"]
    assert (report["ReportID"], report["ReportType"], report["ReportName"]) == (
        "ProfitAndLoss",
        "ProfitAndLoss",
        "Profit and Loss",
    )
    assert report["ReportTitles"] == [
        "Profit & Loss",
        first["tenantName"],
        "1 March 2025 to 7 March 2025",
    ]
    assert report["UpdatedDateUTC"].startswith("/Date(")
    rows = report["Rows"]
    assert rows[0] == {"RowType": "Header", "Cells": [{"Value": ""}, {"Value": "7 Mar 25"}]}
    sections = {r["Title"]: r for r in rows if r["RowType"] == "Section" and r["Title"]}
    assert list(sections) == ["Income", "Less Cost of Sales", "Less Operating Expenses"]
    totals = {}
    for title, section in sections.items():
        *accounts, summary = section["Rows"]
        assert summary["RowType"] == "SummaryRow"
        for account in accounts:
            assert account["RowType"] == "Row"
            name, value = account["Cells"]
            assert name["Attributes"][0]["Id"] == "account" and "(" in name["Value"]
            assert re.fullmatch(r"-?\d+\.\d\d", value["Value"])
        added = sum(Decimal(a["Cells"][1]["Value"]) for a in accounts)
        assert Decimal(summary["Cells"][1]["Value"]) == added
        totals[title] = added
    plain = {
        r["Rows"][0]["Cells"][0]["Value"]: Decimal(r["Rows"][0]["Cells"][1]["Value"])
        for r in rows
        if r["RowType"] == "Section" and not r["Title"]
    }
    gross = totals["Income"] - totals["Less Cost of Sales"]
    assert plain == {
        "Gross Profit": gross,
        "Net Profit": gross - totals["Less Operating Expenses"],
    }
    # A week's report is the sum of its days (what a daily sync adds up to).
    cfg = rig.sandbox.data.config
    org = next(
        o for o in xero.organisations(cfg.seed, cfg.today) if o.tenant_id == first["tenantId"]
    )
    days = [xero.totals(cfg.seed, org, date(2025, 3, d), date(2025, 3, d)) for d in range(1, 8)]
    assert totals["Income"] == sum(t.income for t in days)
    assert plain["Net Profit"] == sum(t.net_profit for t in days)


async def test_xero_reports_need_a_connected_tenant_and_valid_dates(rig: Rig) -> None:
    path = "/api.xro/2.0/Reports/ProfitAndLoss"
    assert (await rig.get("xero", path)).status_code == 403
    stranger = {"xero-tenant-id": "00000000-0000-4000-8000-000000000000"}
    assert (await rig.get("xero", path, headers=stranger)).json()["Detail"] == (
        "AuthorizationUnsuccessful"
    )
    [first, _] = (await rig.get("xero", "/connections")).json()
    tenant = {"xero-tenant-id": first["tenantId"]}
    backwards = {"fromDate": "2025-03-07", "toDate": "2025-03-01"}
    bad = await rig.get("xero", path, headers=tenant, params=backwards)
    assert bad.status_code == 400 and bad.json()["Type"] == "ValidationException"
    garbled = await rig.get("xero", path, headers=tenant, params={"fromDate": "March"})
    assert garbled.status_code == 400


@limits(xero_per_minute=3)
async def test_xero_limits_each_tenant_to_its_calls_a_minute(rig: Rig) -> None:
    first, second = (await rig.get("xero", "/connections")).json()
    token = rig.sandbox.issue_access_token("xero")
    path = "/api.xro/2.0/Reports/ProfitAndLoss"
    statuses = []
    for _ in range(4):
        answer = await rig.get("xero", path, token, headers={"xero-tenant-id": first["tenantId"]})
        statuses.append(answer.status_code)
    assert statuses == [200, 200, 200, 429]
    assert answer.headers["X-Rate-Limit-Problem"] == "minute"
    assert 1 <= int(answer.headers["Retry-After"]) <= 60
    other = await rig.get("xero", path, token, headers={"xero-tenant-id": second["tenantId"]})
    assert other.status_code == 200  # the limit is per organisation


@limits(xero_concurrent=2)
async def test_xero_refuses_a_sixth_concurrent_call_as_concurrent(rig: Rig) -> None:
    rig.sandbox.data.latency = 0.5
    [first, _] = (await rig.get("xero", "/connections")).json()
    token = rig.sandbox.issue_access_token("xero")
    headers = {"xero-tenant-id": first["tenantId"]}
    answers = await asyncio.gather(
        *(rig.get("xero", "/api.xro/2.0/Organisation", token, headers=headers) for _ in range(3))
    )
    refused = [a for a in answers if a.status_code == 429]
    assert len(refused) == 1 and refused[0].headers["X-Rate-Limit-Problem"] == "concurrent"


# --- HubSpot ------------------------------------------------------------------------------------


async def test_hubspot_deals_page_by_after_until_no_paging(rig: Rig) -> None:
    token = rig.sandbox.issue_access_token("hubspot")
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 100, "properties": "dealstage,amount,closedate"}
    pages = 0
    while True:
        body = (await rig.get("hubspot", "/crm/v3/objects/deals", token, params=params)).json()
        pages += 1
        for deal in body["results"]:
            assert set(deal) == {"id", "properties", "createdAt", "updatedAt", "archived"}
            assert set(deal["properties"]) == {
                "dealstage",
                "amount",
                "closedate",
                "createdate",
                "hs_lastmodifieddate",
                "hs_object_id",
            }
            assert deal["properties"]["amount"] is None or re.fullmatch(
                r"\d+(\.\d+)?", deal["properties"]["amount"]
            )
            seen.append(deal["id"])
        if "paging" not in body:
            break
        after = body["paging"]["next"]["after"]
        assert "after=" in body["paging"]["next"]["link"]
        params["after"] = after
    assert pages >= 3 and len(seen) == len(set(seen)) >= 230
    default = (await rig.get("hubspot", "/crm/v3/objects/deals", token)).json()
    assert len(default["results"]) == 10  # HubSpot's default page size
    assert set(default["results"][0]["properties"]) >= {"dealname", "pipeline", "dealstage"}
    too_big = await rig.get("hubspot", "/crm/v3/objects/deals", token, params={"limit": 101})
    assert too_big.status_code == 400
    bad_cursor = await rig.get("hubspot", "/crm/v3/objects/deals", token, params={"after": "%%"})
    assert bad_cursor.status_code == 400


async def test_hubspot_account_and_token_info_name_the_portal(rig: Rig) -> None:
    token = rig.sandbox.issue_access_token("hubspot")
    account = (await rig.get("hubspot", "/account-info/v3/details", token)).json()
    assert account["companyCurrency"] == "AUD" and isinstance(account["portalId"], int)
    info = await rig.http.get(rig.url("hubspot", f"/oauth/v1/access-tokens/{token}"))
    assert info.status_code == 200
    assert (info.json()["hub_id"], info.json()["token_type"]) == (account["portalId"], "access")
    assert 0 < info.json()["expires_in"] <= 1800
    unknown = await rig.http.get(rig.url("hubspot", "/oauth/v1/access-tokens/nope"))
    assert unknown.status_code == 404


@limits(hubspot_per_window=3, hubspot_window_seconds=1.0)
async def test_hubspot_answers_429_for_its_rolling_window_then_recovers(rig: Rig) -> None:
    token = rig.sandbox.issue_access_token("hubspot")
    answers = [await rig.get("hubspot", "/account-info/v3/details", token) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["X-HubSpot-RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
    refused = answers[-1]
    assert refused.json()["errorType"] == "RATE_LIMIT"
    assert refused.json()["policyName"] == "TEN_SECONDLY_ROLLING"
    assert refused.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "1000"
    assert "Retry-After" not in refused.headers  # HubSpot documents none
    await asyncio.sleep(1.05)
    assert (await rig.get("hubspot", "/account-info/v3/details", token)).status_code == 200


# --- Asana --------------------------------------------------------------------------------------


async def test_asana_pages_tasks_with_next_page_offset_path_and_uri(rig: Rig) -> None:
    token = rig.sandbox.issue_access_token("asana")
    [workspace] = (await rig.get("asana", "/api/1.0/workspaces", token)).json()["data"]
    assert workspace["resource_type"] == "workspace"
    projects = await rig.get(
        "asana", "/api/1.0/projects", token, params={"workspace": workspace["gid"], "limit": 100}
    )
    assert projects.json()["next_page"] is None
    first = projects.json()["data"][0]["gid"]
    params = {"project": first, "limit": 100, "opt_fields": "completed,completed_at"}
    body = (await rig.get("asana", "/api/1.0/tasks", token, params=params)).json()
    gids = [t["gid"] for t in body["data"]]
    assert len(gids) == 100
    assert set(body["data"][0]) == {"gid", "resource_type", "completed", "completed_at"}
    pages = 1
    while body["next_page"] is not None:
        page = body["next_page"]
        assert page["path"].startswith("/tasks?") and f"offset={page['offset']}" in page["path"]
        # The uri is the whole next request: following it gives the same as the offset.
        via_uri = (await rig.http.get(page["uri"], headers=rig.auth("asana", token))).json()
        body = (
            await rig.get(
                "asana", "/api/1.0/tasks", token, params={**params, "offset": page["offset"]}
            )
        ).json()
        assert via_uri == body
        gids += [t["gid"] for t in body["data"]]
        pages += 1
    assert pages == 3 and len(gids) == len(set(gids)) == 260  # the largest project
    moved = {**params, "project": projects.json()["data"][1]["gid"], "offset": page["offset"]}
    stale = await rig.get("asana", "/api/1.0/tasks", token, params=moved)
    assert stale.status_code == 400  # a cursor serves only the query it was issued for
    compact = (
        await rig.get("asana", "/api/1.0/tasks", token, params={"project": first, "limit": 1})
    ).json()
    assert set(compact["data"][0]) == {"gid", "name", "resource_type", "resource_subtype"}


async def test_asana_task_filters_as_asana_has_them(rig: Rig) -> None:
    token = rig.sandbox.issue_access_token("asana")
    [workspace] = (await rig.get("asana", "/api/1.0/workspaces", token)).json()["data"]
    bare = await rig.get("asana", "/api/1.0/tasks", token, params={"workspace": workspace["gid"]})
    assert bare.status_code == 400 and "exactly one of" in bare.json()["errors"][0]["message"]
    projects = (await rig.get("asana", "/api/1.0/projects", token)).json()["data"]
    base = {"project": projects[0]["gid"], "opt_fields": "completed,completed_at"}
    every = (await rig.get("asana", "/api/1.0/tasks", token, params=base)).json()["data"]
    since = datetime.combine(TODAY - timedelta(days=7), datetime.min.time(), tzinfo=UTC)
    recent = (
        await rig.get(
            "asana", "/api/1.0/tasks", token, params={**base, "completed_since": since.isoformat()}
        )
    ).json()["data"]
    assert recent == [
        t for t in every if not t["completed"] or datetime.fromisoformat(t["completed_at"]) >= since
    ]
    assert any(t["completed"] for t in recent) and len(recent) < len(every)
    open_only = (
        await rig.get("asana", "/api/1.0/tasks", token, params={**base, "completed_since": "now"})
    ).json()["data"]
    assert open_only and not any(t["completed"] for t in open_only)
    over = await rig.get("asana", "/api/1.0/tasks", token, params={**base, "limit": 101})
    assert over.status_code == 400


@limits(asana_per_minute=2)
async def test_asana_answers_429_with_retry_after(rig: Rig) -> None:
    token = rig.sandbox.issue_access_token("asana")
    answers = [await rig.get("asana", "/api/1.0/workspaces", token) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert 1 <= int(answers[-1].headers["Retry-After"]) <= 60
    assert "too many requests" in answers[-1].json()["errors"][0]["message"]
    other = rig.sandbox.issue_access_token("asana")  # the limit is per token
    assert (await rig.get("asana", "/api/1.0/workspaces", other)).status_code == 200


# --- Shopify ------------------------------------------------------------------------------------


async def test_shopify_orders_page_by_link_header(rig: Rig) -> None:
    token = rig.sandbox.issue_access_token("shopify")
    path = "/admin/api/2024-10/orders.json"
    since = "2025-03-01T00:00:00Z"
    answer = await rig.get(
        "shopify", path, token, params={"status": "any", "limit": 250, "created_at_min": since}
    )
    orders = answer.json()["orders"]
    assert len(orders) == 250
    assert re.fullmatch(r"\d+/40", answer.headers["X-Shopify-Shop-Api-Call-Limit"])
    links = dict((rel, url) for url, rel in LINK.findall(answer.headers["Link"]))
    assert set(links) == {"next"}
    pages = 1
    while "next" in links:
        assert "page_info=" in links["next"] and "status" not in links["next"]
        answer = await rig.http.get(links["next"], headers=rig.auth("shopify", token))
        orders += answer.json()["orders"]
        links = dict((rel, url) for url, rel in LINK.findall(answer.headers.get("Link", "")))
        assert "previous" in links
        pages += 1
    assert pages >= 2
    ids = [o["id"] for o in orders]
    assert len(ids) == len(set(ids)) and ids == sorted(ids, reverse=True)  # newest first
    floor = datetime.fromisoformat(since)
    assert all(datetime.fromisoformat(o["created_at"]) >= floor for o in orders)
    assert {o["created_at"][-6:] for o in orders} == {"+11:00"}  # Sydney in daylight time
    assert any(o["cancelled_at"] for o in orders)
    open_only = await rig.get(
        "shopify", path, token, params={"limit": 250, "created_at_min": since}
    )
    assert open_only.json()["orders"]  # without status Shopify lists open orders only
    assert all(
        o["cancelled_at"] is None and o["closed_at"] is None for o in open_only.json()["orders"]
    )


async def test_shopify_money_is_gst_inclusive_with_shop_and_presentment_sets(rig: Rig) -> None:
    token = rig.sandbox.issue_access_token("shopify")
    body = (
        await rig.get(
            "shopify",
            "/admin/api/2024-10/orders.json",
            token,
            params={"status": "any", "limit": 250},
        )
    ).json()
    currencies = set()
    for order in body["orders"]:
        total = Decimal(order["total_price"])
        shop_money = order["total_price_set"]["shop_money"]
        shown = order["total_price_set"]["presentment_money"]
        assert (order["currency"], shop_money["currency_code"]) == ("AUD", "AUD")
        assert Decimal(shop_money["amount"]) == total
        assert shown["currency_code"] == order["presentment_currency"]
        currencies.add(shown["currency_code"])
        if shown["currency_code"] != "AUD":
            assert Decimal(shown["amount"]) != total
        gst = (total / 11).quantize(Decimal("0.01"), rounding="ROUND_HALF_UP")
        assert Decimal(order["total_tax"]) == gst
    assert currencies == {"AUD", "NZD", "USD"}
    assert {"paid", "refunded", "voided"} <= {o["financial_status"] for o in body["orders"]}
    default = await rig.get("shopify", "/admin/api/2024-10/orders.json", token)
    assert len(default.json()["orders"]) == 50  # Shopify's default page size
    over = await rig.get("shopify", "/admin/api/2024-10/orders.json", token, params={"limit": 251})
    assert over.status_code == 400
    links = LINK.findall(
        (await rig.get("shopify", "/admin/api/2024-10/orders.json", token)).headers["Link"]
    )
    mixed = await rig.http.get(links[0][0] + "&status=any", headers=rig.auth("shopify", token))
    assert mixed.status_code == 400  # page_info takes only limit and fields along


@limits(shopify_bucket=3, shopify_leak_per_second=0.5)
async def test_shopify_bucket_overflows_into_429_retry_after_2(rig: Rig) -> None:
    token = rig.sandbox.issue_access_token("shopify")
    answers = [await rig.get("shopify", "/admin/api/2024-10/shop.json", token) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["X-Shopify-Shop-Api-Call-Limit"] for a in answers[:3]] == [
        "1/3",
        "2/3",
        "3/3",
    ]
    assert answers[-1].headers["Retry-After"] == "2.0"
    assert "Exceeded 2 calls per second" in answers[-1].json()["errors"]
    await asyncio.sleep(2.1)  # one call leaked out
    assert (await rig.get("shopify", "/admin/api/2024-10/shop.json", token)).status_code == 200


# --- faults, log, determinism -------------------------------------------------------------------


async def test_a_queued_fault_hits_the_matching_request_and_is_logged(rig: Rig) -> None:
    token = rig.sandbox.issue_access_token("shopify")
    rig.sandbox.data.faults.append(
        ApiFault(provider="shopify", path="/orders.json", skip=1, retry_after=3.5)
    )
    rig.sandbox.data.faults.append(ApiFault(provider="asana", status=503, delay=0.3))
    path = "/admin/api/2024-10/orders.json"
    assert (await rig.get("shopify", "/admin/api/2024-10/shop.json", token)).status_code == 200
    assert (await rig.get("shopify", path, token)).status_code == 200  # skipped once
    refused = await rig.get("shopify", path, token)
    assert (refused.status_code, refused.headers["Retry-After"]) == (429, "3.5")
    assert (await rig.get("shopify", path, token)).status_code == 200  # consumed
    started = time.monotonic()
    failing = await rig.get("asana", "/api/1.0/workspaces")
    assert failing.status_code == 503 and time.monotonic() - started >= 0.3
    assert rig.sandbox.data.faults == []
    log = [(c.provider, c.path, c.status, c.fault) for c in rig.sandbox.data.calls]
    assert log == [
        ("shopify", "/admin/api/2024-10/shop.json", 200, False),
        ("shopify", path, 200, False),
        ("shopify", path, 429, True),
        ("shopify", path, 200, False),
        ("asana", "/api/1.0/workspaces", 503, True),
    ]
    hub = ApiFault(provider="hubspot", retry_after=4)
    rig.sandbox.data.faults.append(hub)
    answer = await rig.get("hubspot", "/crm/v3/objects/deals")
    assert answer.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "4000"


async def test_the_same_request_gets_the_same_answer_and_the_seed_matters() -> None:
    async def fetch(seed: int) -> list[str]:
        """Each request's answer (made twice: the same both times), with the sandbox's own
        address (in paging links) taken out so two sandboxes compare."""
        sandbox = ProviderSandbox(data=DataApis(config=DataConfig(seed=seed, today=TODAY)))
        async with serve_sandbox(sandbox) as running, httpx.AsyncClient() as http:
            rig = Rig(running, http)
            [org, _] = (await rig.get("xero", "/connections")).json()
            report = "/api.xro/2.0/Reports/ProfitAndLoss?fromDate=2025-02-01&toDate=2025-02-28"
            requests = [
                ("hubspot", "/crm/v3/objects/deals?limit=100&after=eyJpIjoxMDB9", {}),
                ("shopify", "/admin/api/2024-10/orders.json?status=any&limit=30", {}),
                ("asana", "/api/1.0/tasks?project=" + await first_project(rig) + "&limit=5", {}),
                ("xero", report, {"xero-tenant-id": org["tenantId"]}),
            ]
            answers = []
            for provider, path, headers in requests:
                once, twice = [
                    (await rig.get(provider, path, headers=headers)).text for _ in range(2)
                ]
                assert once == twice
                answers.append(once.replace(running.url, "SANDBOX"))
            return answers

    first, again, other = await fetch(7), await fetch(7), await fetch(8)
    assert first == again
    assert all(a != b for a, b in zip(first, other, strict=True))


async def first_project(rig: Rig) -> str:
    return str((await rig.get("asana", "/api/1.0/projects")).json()["data"][0]["gid"])


async def test_the_sandbox_command_serves_and_prints_its_url() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "zixly.cli.main",
        "sandbox",
        "--port",
        "0",
        "--tokens",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "ZIXLY_LOG_LEVEL": "WARNING"},
    )
    try:
        assert process.stdout is not None
        lines = [(await asyncio.wait_for(process.stdout.readline(), 30)).decode() for _ in range(6)]
        url = re.search(r"provider sandbox at (http://127\.0\.0\.1:\d+)", lines[0])
        assert url is not None, lines
        assert lines[1].startswith("ZIXLY_PROVIDER_BASE_URLS=") and url.group(1) in lines[1]
        token = next(line.split()[-1] for line in lines if line.startswith("asana access token"))
        async with httpx.AsyncClient() as http:
            answer = await http.get(
                f"{url.group(1)}/asana/api/1.0/workspaces",
                headers={"Authorization": f"Bearer {token}"},
            )
        assert answer.status_code == 200 and answer.json()["data"]
    finally:
        process.terminate()
        await process.wait()
