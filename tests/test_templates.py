"""The workflow templates in n8n-workflows/ against their manifest, and rendering."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from zixly.errors import ValidationError
from zixly.provisioning.lifecycle import load_templates, template_sources
from zixly.provisioning.templates import (
    MANIFEST,
    TEMPLATES_DIR,
    TemplateError,
    TenantValues,
    load_manifest,
    placeholders_in,
    render,
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
