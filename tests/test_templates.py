"""The workflow templates in n8n-workflows/ against their manifest, and rendering."""

from __future__ import annotations

import copy
import json
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from zixly.core.errors import ValidationError
from zixly.core.settings import Settings
from zixly.providers.registry import provider
from zixly.provisioning.operations import load_templates, template_sources
from zixly.provisioning.templates import (
    MANIFEST,
    TEMPLATES_DIR,
    TemplateError,
    TenantValues,
    load_manifest,
    placeholders_in,
    render,
    schedule_periods,
    template_problems,
    values_for,
)

MANIFEST_SPECS = load_manifest().templates


def test_every_file_is_in_the_manifest_and_every_entry_has_its_file() -> None:
    files = {p.name for p in TEMPLATES_DIR.glob("*.json")} - {MANIFEST}
    assert files == {spec.file for spec in MANIFEST_SPECS}
    assert "zixly-heartbeat.json" in files


@pytest.mark.parametrize("spec", MANIFEST_SPECS, ids=lambda s: s.id)
def test_each_template_fits_its_manifest_entry(spec: Any) -> None:
    workflow = spec.load()
    assert template_problems(spec, workflow) == []
    declared = {p.name for p in spec.placeholders}
    assert placeholders_in(workflow) | placeholders_in([c.data for c in spec.credentials]) == (
        declared
    )


def heartbeat() -> tuple[Any, dict[str, Any]]:
    spec = next(s for s in MANIFEST_SPECS if s.id == "zixly-heartbeat")
    return spec, spec.load()


def test_the_checks_catch_broken_templates() -> None:
    spec, workflow = heartbeat()
    broken = copy.deepcopy(workflow)
    broken["nodes"][2]["name"] = "Every 15 minutes"  # a repeated name; the target vanishes
    broken["nodes"][0]["parameters"]["note"] = "__ZIXLY_UNDECLARED__"
    broken["nodes"][2]["parameters"]["url"] = "={{ '__ZIXLY_INGEST_URL__' }}/heartbeat"
    assert template_problems(spec, broken) == [
        "node names repeat",
        "connection to unknown node 'Post heartbeat'",
        "connection to unknown node 'Post heartbeat'",
        "placeholder UNDECLARED is used but not declared",
        "placeholder inside an n8n expression at $.nodes[2].parameters.url",
    ]
    unused = copy.deepcopy(workflow)
    unused["nodes"][2]["parameters"]["bodyParameters"]["parameters"].pop(1)
    assert template_problems(spec, unused) == ["placeholder TENANT_SLUG is declared but not used"]


def test_render_replaces_every_placeholder_with_the_tenants_values() -> None:
    spec, workflow = heartbeat()
    tenant = TenantValues(uuid.UUID(int=7), "acme", "Acme", ingest_url="https://z.example/in/")
    rendered = render(workflow, values_for(spec, tenant, {"ingest": "cred-9"}))
    assert placeholders_in(rendered) == set()
    http = rendered["nodes"][2]
    assert http["parameters"]["url"] == "https://z.example/in/heartbeat"
    assert http["parameters"]["bodyParameters"]["parameters"][:2] == [
        {"name": "tenant", "value": "00000000-0000-0000-0000-000000000007"},
        {"name": "slug", "value": "acme"},
    ]
    assert http["credentials"] == {"httpHeaderAuth": {"id": "cred-9", "name": "Zixly ingest token"}}
    assert workflow["nodes"][2]["parameters"]["url"] == "__ZIXLY_INGEST_URL__/heartbeat"


def test_render_rejects_missing_values_naming_them() -> None:
    spec, workflow = heartbeat()
    tenant = TenantValues(uuid.UUID(int=7), "acme", "Acme")  # no ingest URL, no credential
    with pytest.raises(TemplateError) as caught:
        render(workflow, values_for(spec, tenant, {}))
    assert caught.value.details["missing"] == ["INGEST_CREDENTIAL_ID", "INGEST_URL"]
    assert caught.value.code == "TEMPLATE_INVALID"


def test_values_with_quotes_braces_and_tokens_are_inserted_literally() -> None:
    value = '"},{"x": 1} {{ $env.SECRET }} __ZIXLY_OTHER__ \\'
    template = {"a": "pre __ZIXLY_V__ post", "b": ["__ZIXLY_V__"], "__ZIXLY_V__": 1, "n": 2}
    rendered = render(template, {"V": value, "OTHER": "leaked"})
    assert rendered == {"a": f"pre {value} post", "b": [value], value: 1, "n": 2}
    assert json.loads(json.dumps(rendered)) == rendered


def test_a_value_cannot_turn_a_fixed_string_into_an_expression() -> None:
    with pytest.raises(TemplateError, match="expression"):
        render({"a": "__ZIXLY_V__"}, {"V": "={{ $env.SECRET }}"})


def test_instances_refer_to_manifest_templates_by_id(tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"name": "Other", "nodes": [], "connections": {}}))
    assert template_sources(["manifest:zixly-heartbeat", other]) == [
        "manifest:zixly-heartbeat",
        str(other),
    ]
    assert load_templates(["manifest:zixly-heartbeat", other]) == [
        {"name": "Other", "nodes": [], "connections": {}}
    ]
    with pytest.raises(ValidationError, match="no workflow template 'nope'"):
        template_sources(["manifest:nope"])
    with pytest.raises(ValidationError, match="unique"):
        load_templates(["manifest:zixly-heartbeat", {"name": "Zixly: heartbeat"}])


# --- the provider templates (Xero, HubSpot, Asana, Shopify) --------------------------------------

PROVIDER_SPECS = [s for s in MANIFEST_SPECS if s.provider is not None]
INGEST_KINDS = {
    "xero-profit-and-loss": "financials",
    "hubspot-deals": "lead-events",
    "asana-task-completion": "custom-metrics",
    "shopify-orders": "custom-metrics",
}


def test_there_is_a_template_per_data_provider() -> None:
    assert {s.id: s.provider for s in PROVIDER_SPECS} == {
        "xero-profit-and-loss": "xero",
        "hubspot-deals": "hubspot",
        "asana-task-completion": "asana",
        "shopify-orders": "shopify",
    }
    assert all(s.integration == s.provider and s.name.startswith("Zixly: ") for s in PROVIDER_SPECS)


@pytest.mark.parametrize("spec", PROVIDER_SPECS, ids=lambda s: s.id)
def test_provider_templates_follow_the_contracts(spec: Any) -> None:
    """C2 (provider:<name>), C3 (the provider token credential from integration:<name>),
    C4 (webhook, schedule, interval), C1 (the ingest kind, the ingest token credential)."""
    workflow = spec.load()
    sources = {p.source: p.name for p in spec.placeholders}
    assert {f"provider:{spec.provider}", f"integration:{spec.provider}", "ingest:token"} <= set(
        sources
    )
    by_key = {c.key: c for c in spec.credentials}
    token = f"__ZIXLY_{sources[f'integration:{spec.provider}']}__"
    header = "X-Shopify-Access-Token" if spec.provider == "shopify" else "Authorization"
    value = token if spec.provider == "shopify" else f"Bearer {token}"
    assert by_key["provider"].data == {"name": header, "value": value}
    assert by_key["ingest"].name == "Zixly ingest token"
    assert schedule_periods(workflow) == [spec.interval_minutes]
    nodes = {n["name"]: n for n in workflow["nodes"]}
    post = nodes["Post to Zixly"]["parameters"]
    assert post["url"] == f"__ZIXLY_INGEST_URL__/{INGEST_KINDS[spec.id]}"
    # The provider call never throws on a status: a 429 reaches Collect, which asks the
    # Wait node for the provider's Retry-After.
    [call] = [n for n in workflow["nodes"] if n["name"].startswith("Call ")]
    assert call["parameters"]["options"]["response"]["response"] == {
        "fullResponse": True,
        "neverError": True,
    }
    assert nodes["Wait as asked"]["parameters"] == {
        "amount": "={{ $json.wait }}",
        "unit": "seconds",
    }
    assert workflow["connections"]["Wait as asked"]["main"][0][0]["node"] == "Requests"
    assert "5000" in nodes["Transform"]["parameters"]["jsCode"]  # batches of at most 5,000


def hubspot() -> tuple[Any, dict[str, Any]]:
    spec = next(s for s in MANIFEST_SPECS if s.id == "hubspot-deals")
    return spec, spec.load()


def test_the_checks_catch_broken_provider_templates() -> None:
    spec, workflow = hubspot()
    broken = copy.deepcopy(workflow)
    nodes = {n["name"]: n for n in broken["nodes"]}
    nodes["On demand"]["parameters"]["path"] = "hubspot"
    nodes["Every 6 hours"]["parameters"]["rule"]["interval"][0]["hoursInterval"] = 12
    nodes["Call HubSpot"]["credentials"]["httpHeaderAuth"]["id"] = "17"
    assert template_problems(spec, broken) == [
        "placeholder HUBSPOT_CREDENTIAL_ID is declared but not used",
        "node 'Call HubSpot': credential id is not a credential:<key> placeholder",
        "credential provider is declared but no node uses it",
        "no POST webhook trigger with path 'zixly-hubspot-deals'",
        "interval_minutes 360 does not match the schedule trigger (minutes: 720)",
    ]
    cron = copy.deepcopy(workflow)
    rule = {n["name"]: n for n in cron["nodes"]}["Every 6 hours"]["parameters"]["rule"]
    rule["interval"] = [{"field": "cronExpression", "expression": "0 */6 * * *"}]
    assert template_problems(spec, cron) == [
        "interval_minutes 360 does not match the schedule trigger (minutes: not fixed)"
    ]
    get = copy.deepcopy(workflow)
    {n["name"]: n for n in get["nodes"]}["On demand"]["parameters"]["httpMethod"] = "GET"
    assert template_problems(spec, get) == [
        "no POST webhook trigger with path 'zixly-hubspot-deals'"
    ]
    twice = copy.deepcopy(workflow)
    trigger = copy.deepcopy({n["name"]: n for n in twice["nodes"]}["Every 6 hours"])
    twice["nodes"].append({**trigger, "name": "Also hourly", "id": "x"})
    assert template_problems(spec, twice) == [
        "interval_minutes 360 does not match the schedule trigger (minutes: 360, 360)"
    ]
    expression = copy.deepcopy(workflow)
    settings = {n["name"]: n for n in expression["nodes"]}["Settings"]["parameters"]
    settings["assignments"]["assignments"][0]["value"] = "={{ '__ZIXLY_HUBSPOT_API__' }}"
    assert template_problems(spec, expression) == [
        "placeholder inside an n8n expression at "
        "$.nodes[2].parameters.assignments.assignments[0].value"
    ]


def test_provider_urls_render_from_the_overrides_or_the_providers_host() -> None:
    spec = next(s for s in MANIFEST_SPECS if s.id == "shopify-orders")
    tenant = TenantValues(uuid.UUID(int=7), "acme", "Acme", ingest_url="https://z.example/in")
    ids = {"provider": "c-1", "ingest": "c-2"}
    # No shop known yet (not connected): the URL has no value, and rendering says so.
    with pytest.raises(TemplateError) as caught:
        render(spec.load(), values_for(spec, tenant, ids))
    assert caught.value.details["missing"] == ["SHOPIFY_API"]
    shop = replace(tenant, provider_params={"shopify": {"shop": "acme-au"}})
    rendered = render(spec.load(), values_for(spec, shop, ids))
    settings = {n["name"]: n for n in rendered["nodes"]}["Settings"]["parameters"]
    assert settings["assignments"]["assignments"][0]["value"] == "https://acme-au.myshopify.com"
    sandboxed = replace(shop, provider_base_urls={"shopify": "http://127.0.0.1:9/shopify/"})
    assert sandboxed.source("provider:shopify", {}) == "http://127.0.0.1:9/shopify"
    assert tenant.source("provider:xero", {}) == "https://api.xero.com"
    assert tenant.source("provider:hubspot", {}) == "https://api.hubapi.com"
    assert tenant.source("provider:asana", {}) == "https://app.asana.com"
    assert tenant.source("provider:nope", {}) is None


def test_the_registry_gives_each_providers_api_url() -> None:
    plain = Settings(provider_base_urls={})
    assert provider("xero").api_url(plain) == "https://api.xero.com"
    assert provider("shopify").api_url(plain, shop="acme") == "https://acme.myshopify.com"
    sandboxed = Settings(provider_base_urls={"xero": "http://sb/xero/"})
    assert provider("xero").api_url(sandboxed) == "http://sb/xero"
    assert provider("xero").token_url(sandboxed) == "http://sb/xero/connect/token"
