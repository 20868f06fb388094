"""Workflow bundles against real n8n: export from one instance, import by n8n's own CLI into a
fresh user folder and by ``import_bundle`` into a second instance; malformed bundles."""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.provisioning.conftest import N8N_VERSION, Instance, launch, load_workflow, renamed
from zixly.provisioning.n8n.bundle_export import export_bundle, n8n_workflows
from zixly.provisioning.n8n.bundle_format import (
    BUNDLE_FORMAT,
    MAX_BUNDLE_BYTES,
    MAX_WORKFLOWS,
    UnknownWorkflowsError,
    WorkflowProblem,
    validate_bundle,
)
from zixly.provisioning.n8n.bundle_import import import_bundle
from zixly.provisioning.n8n.client import N8nClient
from zixly.provisioning.runtimes.distributions import N8nDistribution
from zixly.provisioning.runtimes.process import ProcessRuntime, instance_env

SCHEDULE = load_workflow("schedule-noop.json")
WEBHOOK = load_workflow("webhook-noop.json")
CREDENTIAL = "Accounting API key"
SECRET = "hdr-secret-4f1c9a77e2"
RICH_NAME = "Invoice sync (bundle test)"
RICH_TAGS = ["finance", "nightly"]
RICH_SETTINGS = {
    "executionOrder": "v1",
    "timezone": "Australia/Brisbane",
    "saveManualExecutions": False,
    "saveDataSuccessExecution": "none",
    "callerPolicy": "any",
    "executionTimeout": 300,
}
NODE_FIELDS = ("id", "name", "type", "typeVersion", "position", "parameters", "disabled", "notes")


def rich_workflow(credential_id: str) -> dict[str, Any]:
    """Six nodes: a trigger, an authenticated request, a branch, two ends and a sticky note."""
    return {
        "name": RICH_NAME,
        "nodes": [
            {
                "id": "a1000000-0000-4000-8000-000000000001",
                "name": "Nightly",
                "type": "n8n-nodes-base.scheduleTrigger",
                "typeVersion": 1.2,
                "position": [0, 0],
                "parameters": {
                    "rule": {"interval": [{"field": "cronExpression", "expression": "0 2 * * *"}]}
                },
            },
            {
                "id": "a1000000-0000-4000-8000-000000000002",
                "name": "Fetch invoices",
                "type": "n8n-nodes-base.httpRequest",
                "typeVersion": 4.2,
                "position": [220, 0],
                "parameters": {
                    "url": "https://accounting.example.com/api/invoices",
                    "authentication": "genericCredentialType",
                    "genericAuthType": "httpHeaderAuth",
                    "options": {},
                },
                "credentials": {"httpHeaderAuth": {"id": credential_id, "name": CREDENTIAL}},
            },
            {
                "id": "a1000000-0000-4000-8000-000000000003",
                "name": "Any overdue?",
                "type": "n8n-nodes-base.if",
                "typeVersion": 2.2,
                "position": [440, 0],
                "parameters": {
                    "conditions": {
                        "options": {
                            "caseSensitive": True,
                            "typeValidation": "strict",
                            "version": 2,
                        },
                        "conditions": [
                            {
                                "id": "c1",
                                "leftValue": "={{ $json.overdue }}",
                                "rightValue": 0,
                                "operator": {"type": "number", "operation": "gt"},
                            }
                        ],
                        "combinator": "and",
                    },
                    "options": {},
                },
            },
            {
                "id": "a1000000-0000-4000-8000-000000000004",
                "name": "Flag overdue",
                "type": "n8n-nodes-base.set",
                "typeVersion": 3.4,
                "position": [660, -100],
                "parameters": {
                    "assignments": {
                        "assignments": [
                            {"id": "s1", "name": "flag", "value": "overdue", "type": "string"}
                        ]
                    },
                    "options": {},
                },
                "notes": "Marks the batch for the morning report",
            },
            {
                "id": "a1000000-0000-4000-8000-000000000005",
                "name": "All paid",
                "type": "n8n-nodes-base.noOp",
                "typeVersion": 1,
                "position": [660, 100],
                "parameters": {},
                "disabled": True,
            },
            {
                "id": "a1000000-0000-4000-8000-000000000006",
                "name": "Read me",
                "type": "n8n-nodes-base.stickyNote",
                "typeVersion": 1,
                "position": [0, -240],
                "parameters": {"content": "## Invoices\nRuns nightly at 02:00 Brisbane time."},
            },
        ],
        "connections": {
            "Nightly": {"main": [[{"node": "Fetch invoices", "type": "main", "index": 0}]]},
            "Fetch invoices": {"main": [[{"node": "Any overdue?", "type": "main", "index": 0}]]},
            "Any overdue?": {
                "main": [
                    [{"node": "Flag overdue", "type": "main", "index": 0}],
                    [{"node": "All paid", "type": "main", "index": 0}],
                ]
            },
        },
        "settings": RICH_SETTINGS,
    }


@dataclass
class Source:
    instance: Instance
    credential_id: str
    rich_id: str


@pytest.fixture(scope="module")
async def source(
    process_runtime: ProcessRuntime, n8n_http: httpx.AsyncClient
) -> AsyncIterator[Source]:
    instance = await launch(process_runtime, n8n_http, "bundle-src", [SCHEDULE, WEBHOOK])
    try:
        api = instance.api
        credential = await api.create_credential(
            CREDENTIAL, "httpHeaderAuth", {"name": "X-Api-Key", "value": SECRET}
        )
        rich = await api.create_workflow(rich_workflow(str(credential["id"])))
        tag_ids = [str((await api.create_tag(name))["id"]) for name in RICH_TAGS]
        await api.set_workflow_tags(str(rich["id"]), tag_ids)
        yield Source(instance, str(credential["id"]), str(rich["id"]))
    finally:
        await process_runtime.remove(instance.handle)


@pytest.fixture(scope="module")
async def target(
    process_runtime: ProcessRuntime, n8n_http: httpx.AsyncClient
) -> AsyncIterator[Instance]:
    instance = await launch(process_runtime, n8n_http, "bundle-dst", [])
    try:
        yield instance
    finally:
        await process_runtime.remove(instance.handle)


@pytest.fixture(scope="module")
async def bundle(source: Source) -> dict[str, Any]:
    return await export_bundle(source.instance.api, n8n_version=N8N_VERSION)


def by_name(workflows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(w["name"]): w for w in workflows}


def node_view(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: n.get(k) for k in NODE_FIELDS} for n in workflow["nodes"]]


def tag_names(workflow: dict[str, Any]) -> list[str]:
    return sorted(t["name"] for t in workflow["tags"])


def problems_at(problems: list[WorkflowProblem]) -> set[tuple[int | None, str | None, str]]:
    return {(p.index, p.name, p.path) for p in problems}


async def n8n_cli(
    dist: N8nDistribution, user_folder: Path, encryption_key: str, *args: str
) -> None:
    """Run an n8n CLI command offline on the SQLite database in ``user_folder``."""
    spec = {
        "env": {"N8N_ENCRYPTION_KEY": encryption_key},
        "port": 5678,  # the CLI commands used here do not listen
        "broker_port": 5679,
        "user_folder": str(user_folder),
    }
    process = await asyncio.create_subprocess_exec(
        *dist.command(*args),
        env=instance_env(spec, dist),
        cwd=user_folder,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    tail = output.decode(errors="replace")[-2000:]
    assert process.returncode == 0, f"n8n {args[0]} failed:\n{tail}"


# --- export ---------------------------------------------------------------------------------


async def test_export_has_every_workflow_and_no_secrets(
    source: Source, bundle: dict[str, Any]
) -> None:
    started = datetime.now(UTC)
    assert bundle["format"] == BUNDLE_FORMAT and bundle["version"] == 1
    assert bundle["n8nVersion"] == N8N_VERSION
    exported_at = datetime.fromisoformat(bundle["exportedAt"])
    assert started - timedelta(minutes=5) < exported_at <= started
    workflows = by_name(n8n_workflows(bundle))
    assert sorted(workflows) == [RICH_NAME, SCHEDULE["name"], WEBHOOK["name"]]
    ids = source.instance.boot.workflow_ids
    assert {name: w["id"] for name, w in workflows.items()} == {
        RICH_NAME: source.rich_id,
        SCHEDULE["name"]: ids[SCHEDULE["name"]],
        WEBHOOK["name"]: ids[WEBHOOK["name"]],
    }
    # bootstrap activated the templates; the rich workflow was never activated
    assert {n: w["active"] for n, w in workflows.items()} == {
        RICH_NAME: False,
        SCHEDULE["name"]: True,
        WEBHOOK["name"]: True,
    }
    rich = workflows[RICH_NAME]
    assert rich["tags"] == [{"name": "finance"}, {"name": "nightly"}]
    assert rich["settings"].items() >= RICH_SETTINGS.items()
    assert node_view(rich) == node_view(rich_workflow(source.credential_id))
    fetch = next(n for n in rich["nodes"] if n["name"] == "Fetch invoices")
    assert fetch["credentials"] == {
        "httpHeaderAuth": {"id": source.credential_id, "name": CREDENTIAL}
    }
    assert rich["connections"] == rich_workflow(source.credential_id)["connections"]
    text = json.dumps(bundle)
    secrets = source.instance.secrets
    assert secrets.api_key and secrets.api_key not in text
    for secret in (SECRET, secrets.owner_email, secrets.owner_password, secrets.encryption_key):
        assert secret not in text
    for workflow in workflows.values():
        assert not {"staticData", "shared", "activeVersion", "versionId"} & set(workflow)
        assert "instanceId" not in workflow.get("meta", {})


async def test_export_by_ids_keeps_their_order_and_names_unknown_ones(source: Source) -> None:
    api = source.instance.api
    schedule_id = source.instance.boot.workflow_ids[SCHEDULE["name"]]
    picked = await export_bundle(api, [source.rich_id, schedule_id, source.rich_id])
    assert [w["id"] for w in n8n_workflows(picked)] == [source.rich_id, schedule_id]
    assert picked["n8nVersion"] is None
    with pytest.raises(UnknownWorkflowsError) as caught:
        await export_bundle(api, ["NoSuchWorkflow01", schedule_id, "../workflows"])
    assert caught.value.ids == ["NoSuchWorkflow01", "../workflows"]
    assert caught.value.code == "NOT_FOUND"
    assert caught.value.extensions["ids"] == ["NoSuchWorkflow01", "../workflows"]


# --- n8n's own import -----------------------------------------------------------------------


async def test_n8n_cli_imports_the_array_into_a_fresh_instance(
    source: Source,
    bundle: dict[str, Any],
    n8n_dist: N8nDistribution,
    tmp_path: Path,
) -> None:
    folder = tmp_path / "fresh-n8n"
    folder.mkdir()
    bundle_file = tmp_path / "workflows.json"
    bundle_file.write_text(json.dumps(n8n_workflows(bundle)))
    key = source.instance.secrets.encryption_key
    await n8n_cli(n8n_dist, folder, key, "import:workflow", f"--input={bundle_file}")
    back_file = tmp_path / "back.json"
    await n8n_cli(n8n_dist, folder, key, "export:workflow", "--all", f"--output={back_file}")

    back = by_name(json.loads(back_file.read_text()))
    assert sorted(back) == [RICH_NAME, SCHEDULE["name"], WEBHOOK["name"]]
    for name, original in by_name(n8n_workflows(bundle)).items():
        imported = back[name]
        assert imported["id"] == original["id"]  # n8n's import keeps the ids
        assert imported["active"] is False  # and leaves everything inactive
        assert node_view(imported) == node_view(original)
        assert imported["connections"] == original["connections"]
        assert imported["settings"] == original["settings"]
        assert tag_names(imported) == tag_names(original)
    fetch = next(n for n in back[RICH_NAME]["nodes"] if n["name"] == "Fetch invoices")
    assert fetch["credentials"] == {
        "httpHeaderAuth": {"id": source.credential_id, "name": CREDENTIAL}
    }


# --- import_bundle --------------------------------------------------------------------------


async def test_import_recreates_the_workflows_in_another_instance(
    source: Source, target: Instance, bundle: dict[str, Any]
) -> None:
    api = target.api
    # the customer re-created the credential in the new instance under the same name
    credential = await api.create_credential(
        CREDENTIAL, "httpHeaderAuth", {"name": "X-Api-Key", "value": "new-instance-value"}
    )
    report = await import_bundle(api, bundle)
    assert report.ok and report.problems == []
    exported = n8n_workflows(bundle)
    assert [(w.index, w.name, w.source_id) for w in report.imported] == [
        (i, w["name"], w["id"]) for i, w in enumerate(exported)
    ]
    assert all(w.active is False and w.dropped == () for w in report.imported)
    for imported in report.imported:
        original = await source.instance.api.get_workflow(str(imported.source_id))
        created = await api.get_workflow(imported.id)
        assert created["id"] != original["id"]
        assert created["name"] == original["name"]
        assert created["active"] is False
        assert node_view(created) == node_view(original)
        assert created["connections"] == original["connections"]
        assert created["settings"] == original["settings"]
        assert tag_names(created) == tag_names(original)
        assert list(imported.tags) == tag_names(original)
    rich = next(w for w in report.imported if w.name == RICH_NAME)
    created_rich = await api.get_workflow(rich.id)
    assert created_rich["settings"].items() >= RICH_SETTINGS.items()
    fetch = next(n for n in created_rich["nodes"] if n["name"] == "Fetch invoices")
    # n8n re-points a reference to an unknown credential id at the one with its name and type
    assert fetch["credentials"] == {"httpHeaderAuth": {"id": credential["id"], "name": CREDENTIAL}}
    # tags already in the target are reused, not duplicated
    again = await import_bundle(api, {**bundle, "workflows": [exported[0]]})
    assert again.ok
    assert sorted(t["name"] for t in await api.all_tags()) == sorted(RICH_TAGS)


async def test_activate_turns_on_what_was_active_and_reports_failures(
    target: Instance, bundle: dict[str, Any]
) -> None:
    exported = by_name(n8n_workflows(bundle))
    no_trigger = {
        "name": "Active but without a trigger",
        "active": True,
        "nodes": [
            {
                "name": "Nothing",
                "type": "n8n-nodes-base.noOp",
                "typeVersion": 1,
                "position": [0, 0],
                "parameters": {},
            }
        ],
        "connections": {},
    }
    workflows = [exported[SCHEDULE["name"]], exported[RICH_NAME], no_trigger]
    report = await import_bundle(target.api, workflows, activate=True)
    assert report.problems == [] and report.ok is False
    results = {w.name: w for w in report.imported}
    assert results[SCHEDULE["name"]].active is True
    assert results[SCHEDULE["name"]].activation_error is None
    assert results[RICH_NAME].active is False and results[RICH_NAME].activation_error is None
    failed = results["Active but without a trigger"]
    assert failed.active is False
    assert failed.activation_error is not None
    # n8n 1.x: "has no node to start the workflow"; 2.x: "has no trigger node"
    assert re.search(r"has no (node to start the workflow|trigger node)", failed.activation_error)
    states = {w.name: (await target.api.get_workflow(w.id))["active"] for w in report.imported}
    assert states == {
        SCHEDULE["name"]: True,
        RICH_NAME: False,
        "Active but without a trigger": False,
    }
    await target.api.deactivate_workflow(results[SCHEDULE["name"]].id)


async def test_fields_the_api_cannot_store_are_dropped_and_listed(target: Instance) -> None:
    workflow = renamed(SCHEDULE, "with extras")
    workflow["nodes"][0]["extendsCredential"] = "someApi"
    workflow["settings"] = {"executionOrder": "v1", "binaryMode": "separate"}
    workflow["pinData"] = {"Every hour": [{"json": {"pinned": True}}]}
    workflow["staticData"] = {"node:Every hour": {"recurrenceRules": []}}
    workflow["description"] = "kept in the bundle, not writable through the API"
    report = await import_bundle(target.api, [workflow])
    assert report.ok
    (imported,) = report.imported
    assert imported.dropped == (
        "nodes[0].extendsCredential",
        "settings.binaryMode",
        "description",
        "pinData",
        "staticData",
    )
    created = await target.api.get_workflow(imported.id)
    assert created["settings"]["executionOrder"] == "v1"
    assert "binaryMode" not in created["settings"]
    assert node_view(created) == node_view(SCHEDULE)


async def test_the_deprovisioning_export_of_raw_api_objects_imports_too(
    source: Source, target: Instance
) -> None:
    """lifecycle keeps workflows exactly as the public API returns them."""
    raw = await source.instance.api.get_workflow(source.rich_id)
    assert {"shared", "activeVersion", "versionId"} <= set(raw)
    lifecycle = {"format": "zixly.n8n-workflows/v1", "workflows": [raw]}
    report = await import_bundle(target.api, lifecycle)
    assert report.ok
    (imported,) = report.imported
    created = await target.api.get_workflow(imported.id)
    assert node_view(created) == node_view(raw)
    assert created["connections"] == raw["connections"]
    assert created["settings"] == raw["settings"]
    assert tag_names(created) == tag_names(raw) == RICH_TAGS


class RacingTagCreation(httpx.AsyncBaseTransport):
    """Real n8n; right after the first tag listing, someone else creates the tag "raced"."""

    def __init__(self) -> None:
        self._real = httpx.AsyncHTTPTransport()
        self.raced_id: str | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._real.handle_async_request(request)
        if request.method == "GET" and request.url.path == "/api/v1/tags" and not self.raced_id:
            await response.aread()
            other = httpx.Request(
                "POST",
                request.url.copy_with(query=None),
                headers={"X-N8N-API-KEY": request.headers["X-N8N-API-KEY"]},
                json={"name": "raced"},
            )
            created = await self._real.handle_async_request(other)
            await created.aread()
            assert created.status_code == 201
            self.raced_id = str(created.json()["id"])
        return response

    async def aclose(self) -> None:
        await self._real.aclose()


async def test_a_tag_created_meanwhile_is_used_not_duplicated(target: Instance) -> None:
    workflow = {**renamed(SCHEDULE, "raced tag"), "tags": [{"name": "raced"}]}
    transport = RacingTagCreation()
    async with httpx.AsyncClient(transport=transport) as http:
        api = N8nClient(target.url, http, api_key=target.secrets.api_key)
        report = await import_bundle(api, [workflow])
    assert report.ok and transport.raced_id is not None
    created = await target.api.get_workflow(report.imported[0].id)
    assert [(t["id"], t["name"]) for t in created["tags"]] == [(transport.raced_id, "raced")]
    assert [t["name"] for t in await target.api.all_tags()].count("raced") == 1


# --- malformed bundles ----------------------------------------------------------------------


def malformed() -> list[Any]:
    valid_nodes = copy.deepcopy(SCHEDULE["nodes"])
    broken_connections = renamed(SCHEDULE, "bad connections")
    broken_connections["connections"] = {
        "Ghost": {"main": [[{"node": "Nothing to do", "type": "main", "index": 0}]]},
        "Every hour": {"main": [[{"node": "Nowhere", "type": "main", "index": 0}]]},
    }
    junk = renamed(SCHEDULE, "junk value")
    junk["nodes"][1]["parameters"] = {"when": datetime(2026, 1, 1, tzinfo=UTC)}
    not_a_number = renamed(SCHEDULE, "nan position")
    not_a_number["nodes"][0]["position"] = [0, float("nan")]
    return [
        renamed(SCHEDULE, "bundle ok first"),  # 0
        "not a workflow",  # 1
        {"nodes": valid_nodes, "connections": {}},  # 2
        {"name": "nodes not a list", "nodes": {"a": 1}, "connections": {}},  # 3
        {  # 4
            "name": "incomplete node",
            "nodes": [valid_nodes[0], {"name": "Broken", "parameters": {}}],
            "connections": {},
        },
        {  # 5
            "name": "duplicate names",
            "nodes": [
                {**valid_nodes[0], "name": "Same"},
                {**valid_nodes[1], "name": "Same"},
            ],
            "connections": {},
        },
        broken_connections,  # 6
        junk,  # 7
        not_a_number,  # 8
        renamed(WEBHOOK, "bundle ok last"),  # 9
        {  # 10
            **renamed(SCHEDULE, "bad settings and tags"),
            "settings": "v1",
            "tags": [{"name": "x" * 25}, "plain"],
        },
    ]


def test_each_problem_is_reported_with_its_workflow_and_path() -> None:
    problems = validate_bundle(malformed())
    assert problems_at(problems) == {
        (1, None, ""),
        (2, None, "name"),
        (3, "nodes not a list", "nodes"),
        (4, "incomplete node", "nodes[1].type"),
        (4, "incomplete node", "nodes[1].typeVersion"),
        (4, "incomplete node", "nodes[1].position"),
        (5, "duplicate names", "nodes[1].name"),
        (6, "bad connections", "connections.Ghost"),
        (6, "bad connections", 'connections["Every hour"].main[0][0].node'),
        (7, "junk value", "nodes[1].parameters.when"),
        (8, "nan position", "nodes[0].position[1]"),
        (10, "bad settings and tags", "settings"),
        (10, "bad settings and tags", "tags[0].name"),
        (10, "bad settings and tags", "tags[1].name"),
    }
    assert len(problems) == 14
    messages = {(p.index, p.path): p.message for p in problems}
    assert messages[(1, "")] == "a workflow must be a JSON object"
    assert messages[(2, "name")] == "missing"
    assert messages[(3, "nodes")] == "must be an array"
    assert messages[(4, "nodes[1].type")] == "missing"
    assert messages[(5, "nodes[1].name")] == "'Same' is also the name of nodes[0]"
    assert messages[(6, "connections.Ghost")] == "no node named 'Ghost'"
    assert messages[(7, "nodes[1].parameters.when")] == "a datetime is not a JSON value"
    assert messages[(8, "nodes[0].position[1]")] == "nan is not a JSON number"
    assert messages[(10, "tags[0].name")] == "longer than 24 characters"


async def test_valid_siblings_are_imported_and_invalid_ones_are_not(target: Instance) -> None:
    before = {w["id"] for w in await target.api.all_workflows()}
    report = await import_bundle(target.api, malformed())
    assert problems_at(report.problems) == problems_at(validate_bundle(malformed()))
    assert [(w.index, w.name) for w in report.imported] == [
        (0, "bundle ok first"),
        (9, "bundle ok last"),
    ]
    after = {w["id"]: w["name"] for w in await target.api.all_workflows()}
    new = {after[i] for i in set(after) - before}
    assert new == {"bundle ok first", "bundle ok last"}


async def test_a_workflow_n8n_refuses_is_reported_at_its_field(target: Instance) -> None:
    refused = renamed(SCHEDULE, "refused by n8n")
    refused["settings"] = {"saveDataErrorExecution": "sometimes"}
    report = await import_bundle(target.api, [refused, renamed(SCHEDULE, "accepted sibling")])
    [problem] = report.problems
    assert (problem.index, problem.name, problem.path) == (
        0,
        "refused by n8n",
        "settings.saveDataErrorExecution",
    )
    # n8n's own words: 1.x "must be equal to one of the allowed values: all, none",
    # 2.x "Invalid enum value. Expected 'all' | 'none', received 'sometimes'"
    assert problem.message.startswith("n8n refused the workflow: ")
    assert re.search(r"all.*none", problem.message)
    assert [w.name for w in report.imported] == ["accepted sibling"]
    assert await target.api.all_workflows(name="refused by n8n") == []


class FailingWorkflowTags(httpx.AsyncBaseTransport):
    """Real n8n, except that attaching tags to a workflow fails (n8n cannot be made to)."""

    def __init__(self) -> None:
        self._real = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT" and request.url.path.endswith("/tags"):
            return httpx.Response(500, json={"message": "tag storage exploded"})
        return await self._real.handle_async_request(request)

    async def aclose(self) -> None:
        await self._real.aclose()


async def test_a_workflow_whose_tags_fail_is_not_left_behind(target: Instance) -> None:
    tagged = {**renamed(SCHEDULE, "tags will fail"), "tags": [{"name": "doomed"}]}
    async with httpx.AsyncClient(transport=FailingWorkflowTags()) as http:
        api = N8nClient(target.url, http, api_key=target.secrets.api_key)
        untagged = {**renamed(SCHEDULE, "untagged sibling"), "tags": []}
        report = await import_bundle(api, [tagged, untagged])
    assert problems_at(report.problems) == {(0, "tags will fail", "tags")}
    message = report.problems[0].message
    assert message.startswith("the tags could not be attached (n8n PUT /api/v1/workflows/")
    assert message.endswith("/tags: tag storage exploded); the workflow was not kept")
    assert [w.name for w in report.imported] == ["untagged sibling"]
    assert await target.api.all_workflows(name="tags will fail") == []


# --- bundle-level problems (no n8n is reached) ----------------------------------------------


@pytest.fixture
async def unreachable() -> AsyncIterator[N8nClient]:
    """A client for a port nothing listens on, without retries: any call would be reported."""
    async with httpx.AsyncClient() as http:
        yield N8nClient("http://127.0.0.1:9", http, api_key="unused", retry_for=0)


@pytest.mark.parametrize(
    ("bundle", "path", "message"),
    [
        (
            [{"name": "w", "nodes": [], "connections": {}}] * (MAX_WORKFLOWS + 1),
            "workflows",
            f"{MAX_WORKFLOWS + 1} workflows; a bundle holds at most {MAX_WORKFLOWS}",
        ),
        (
            b"[" + b" " * MAX_BUNDLE_BYTES + b"]",
            "",
            f"the bundle is {MAX_BUNDLE_BYTES + 2} bytes; at most 5 MB",
        ),
        (
            [{**SCHEDULE, "pinData": {"Every hour": [{"json": {"blob": "x" * MAX_BUNDLE_BYTES}}]}}],
            "",
            "at most 5 MB",
        ),
        ({"format": BUNDLE_FORMAT, "version": 2, "workflows": []}, "version", "unsupported"),
        ({"format": "someone.else", "workflows": []}, "format", "unknown bundle format"),
        ({"format": BUNDLE_FORMAT, "version": 1, "workflows": {}}, "workflows", "must be an array"),
        ("[{]", "", "not valid JSON"),
        ('[{"name": NaN}]', "", "NaN is not a JSON number"),
        (42, "", "a bundle is a JSON object or an array of workflows"),
    ],
    ids=[
        "too-many",
        "too-many-bytes",
        "too-big-object",
        "version",
        "format",
        "no-array",
        "bad-json",
        "nan",
        "number",
    ],
)
async def test_unusable_bundles_import_nothing(
    unreachable: N8nClient, bundle: object, path: str, message: str
) -> None:
    report = await import_bundle(unreachable, bundle)
    assert report.imported == []
    assert [(p.index, p.name, p.path) for p in report.problems] == [(None, None, path)]
    assert message in report.problems[0].message


def test_text_single_objects_and_the_lifecycle_export_are_read(bundle: dict[str, Any]) -> None:
    assert validate_bundle(bundle) == []
    assert validate_bundle(json.dumps(bundle)) == []
    assert validate_bundle(json.dumps(n8n_workflows(bundle)).encode()) == []
    assert validate_bundle(n8n_workflows(bundle)[0]) == []
    lifecycle = {"format": "zixly.n8n-workflows/v1", "workflows": n8n_workflows(bundle)}
    assert validate_bundle(lifecycle) == []
    single = validate_bundle({"name": "lonely"})
    assert problems_at(single) == {(0, "lonely", "nodes"), (0, "lonely", "connections")}
