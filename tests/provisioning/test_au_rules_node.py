"""The "Zixly AU Rules" n8n node, loaded by a real n8n instance, against the published vectors.

The node (zixly/n8n_nodes/package) computes in JavaScript; the Python library is the
reference. Both are checked against tests/au_rules_vectors.json (published values with
their sources): here every vector is run through a real workflow, Webhook -> Split Out ->
Zixly AU Rules, on an instance started by the process runtime (which sets
N8N_CUSTOM_EXTENSIONS), and every output must equal the Python library's answer and the
published value. Invalid inputs must fail the node with a clear message naming the field,
leave the instance serving, and with "On Error: Continue" come out as the item's error.
The JavaScript library is also run directly under Node for the same vectors (fast, and it
covers the error reasons field by field).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.au_rules_reference import evaluate, load_vectors
from tests.provisioning.conftest import Instance, launch, remove_all
from tests.provisioning.instance_support import webhook_split_workflow
from zixly.core.errors import ValidationError
from zixly.n8n_nodes.export import PACKAGE_DIR
from zixly.provisioning.n8n.client import AUTH_COOKIE
from zixly.provisioning.runtimes.distributions import N8nDistribution
from zixly.provisioning.runtimes.process import ProcessRuntime

VECTORS = load_vectors()
NODE_TYPE = "CUSTOM.zixlyAuRules"  # N8N_CUSTOM_EXTENSIONS loads nodes as CUSTOM.<name>

# How each operation's node parameters read the fields of a vector's input.
PARAMETERS: dict[str, dict[str, Any]] = {
    "validateAbn": {"value": "={{ $json.value }}"},
    "validateAcn": {"value": "={{ $json.value }}"},
    "validateTfn": {"value": "={{ $json.value }}"},
    "gstFromInclusive": {"amount": "={{ $json.amount }}"},
    "gstFromExclusive": {"amount": "={{ $json.amount }}"},
    "paygWithholding": {
        "earnings": "={{ $json.earnings }}",
        "period": "={{ $json.period }}",
        "taxFreeThreshold": "={{ $json.taxFreeThreshold }}",
    },
    "superGuarantee": {"paymentDate": "={{ $json.date }}"},
    "basGstSummary": {"g7": "={{ $json.g7 ?? 0 }}", "g18": "={{ $json.g18 ?? 0 }}"},
}


def _workflow(op: str, path: str, *, on_error: str | None = None) -> dict[str, Any]:
    """Webhook (respond when the last node finishes, all entries) -> Split Out -> AU Rules."""
    rules: dict[str, Any] = {
        "parameters": {"operation": op, **PARAMETERS[op]},
        "name": "AU Rules",
        "type": NODE_TYPE,
        "typeVersion": 1,
    }
    if on_error:
        rules["onError"] = on_error
    return webhook_split_workflow(f"Zixly test: AU rules {path}", path, "body.items", rules)


@pytest.fixture(scope="module")
async def instance(
    process_runtime: ProcessRuntime, n8n_http: httpx.AsyncClient
) -> AsyncIterator[Instance]:
    try:
        yield await launch(process_runtime, n8n_http, "aurules", [])
    finally:
        await remove_all(process_runtime)


class Hooks:
    """Activated AU-rules workflows on the instance, one per (operation, on-error mode)."""

    def __init__(self, instance: Instance, http: httpx.AsyncClient) -> None:
        self.instance = instance
        self.http = http
        self.paths: dict[tuple[str, str | None], str] = {}

    async def path(self, op: str, on_error: str | None = None) -> str:
        key = (op, on_error)
        if key not in self.paths:
            path = f"zixly-au-{op.lower()}-{'continue' if on_error else 'fail'}"
            created = await self.instance.api.create_workflow(
                _workflow(op, path, on_error=on_error)
            )
            await self.instance.api.activate_workflow(str(created["id"]))
            self.paths[key] = path
        return self.paths[key]

    async def post(self, op: str, items: list[Any], on_error: str | None = None) -> httpx.Response:
        path = await self.path(op, on_error)
        url = f"{self.instance.url}/webhook/{path}"
        return await self.http.post(url, json={"items": items}, timeout=60.0)


@pytest.fixture(scope="module")
async def hooks(instance: Instance, n8n_http: httpx.AsyncClient) -> Hooks:
    return Hooks(instance, n8n_http)


async def _cookie(instance: Instance) -> str:
    return await instance.client.login(
        instance.secrets.owner_email, instance.secrets.owner_password
    )


def _by_op() -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for vector in VECTORS["vectors"]:
        grouped.setdefault(vector["op"], []).append(vector)
    return grouped


# --- the JavaScript library alone (node, no n8n) ------------------------------------------------

_JS_RUNNER = r"""
const rules = require(process.argv[1]);
const cases = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const run = ({op, input}) => {
  switch (op) {
    case 'validateAbn': return rules.validateAbn(input.value);
    case 'validateAcn': return rules.validateAcn(input.value);
    case 'validateTfn': return rules.validateTfn(input.value);
    case 'gstFromInclusive': return rules.gstFromInclusive(input.amount);
    case 'gstFromExclusive': return rules.gstFromExclusive(input.amount);
    case 'basGstSummary': return rules.basGstSummary(input.lines, {g7: input.g7, g18: input.g18});
    case 'paygWithholding':
      return rules.paygWithholding(input.earnings, input.period, input.taxFreeThreshold);
    case 'superGuarantee': return rules.superGuarantee(input.date);
  }
  throw new Error('unknown op ' + op);
};
const out = cases.map((c) => {
  try { return {result: run(c)}; }
  catch (e) {
    if (!(e instanceof rules.RuleError)) throw e;
    return {error: {message: e.message, field: e.field, reason: e.reason}};
  }
});
process.stdout.write(JSON.stringify(out));
"""


def _run_js(n8n_dist: N8nDistribution, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    completed = subprocess.run(
        [str(n8n_dist.node_bin), "-e", _JS_RUNNER, str(PACKAGE_DIR / "lib" / "au-rules.js")],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    answers: list[dict[str, Any]] = json.loads(completed.stdout)
    return answers


def test_the_javascript_rules_give_every_published_value(n8n_dist: N8nDistribution) -> None:
    vectors = VECTORS["vectors"]
    answers = _run_js(n8n_dist, vectors)
    assert len(answers) == len(vectors)
    for vector, answer in zip(vectors, answers, strict=True):
        assert "result" in answer, (vector["id"], answer)
        python = evaluate(vector["op"], vector["input"])
        assert answer["result"] == python, vector["id"]
        assert {k: python[k] for k in vector["expected"]} == vector["expected"], vector["id"]


def test_the_javascript_rules_refuse_what_python_refuses(n8n_dist: N8nDistribution) -> None:
    invalid = VECTORS["invalid"]
    for vector, answer in zip(invalid, _run_js(n8n_dist, invalid), strict=True):
        with pytest.raises(ValidationError) as raised:
            evaluate(vector["op"], vector["input"])
        assert "error" in answer, (vector["id"], answer)
        assert (
            answer["error"]["field"] == vector["error"]["field"] == raised.value.extensions["field"]
        )
        if "reason" in vector["error"]:
            assert answer["error"]["reason"] == vector["error"]["reason"]


def test_json_numbers_are_taken_at_their_shortest_decimal_form(n8n_dist: N8nDistribution) -> None:
    cases = [
        {"op": "gstFromExclusive", "input": {"amount": 10.25}},  # "10.25": exact
        {"op": "gstFromExclusive", "input": {"amount": 0.1 + 0.2}},  # 0.30000000000000004
        {"op": "gstFromExclusive", "input": {"amount": True}},
        {"op": "gstFromExclusive", "input": {"amount": None}},
    ]
    first, second, third, fourth = _run_js(n8n_dist, cases)
    assert first["result"]["gst"] == "1.03"
    assert second["error"]["reason"] == "precision"
    assert third["error"]["reason"] == fourth["error"]["reason"] == "type"


# --- through a real n8n instance -----------------------------------------------------------------


async def test_the_instance_lists_the_zixly_nodes_and_credential(
    instance: Instance, n8n_http: httpx.AsyncClient
) -> None:
    cookie = await _cookie(instance)
    headers = {"Cookie": f"{AUTH_COOKIE}={cookie}"}
    nodes = await n8n_http.get(f"{instance.url}/types/nodes.json", headers=headers)
    assert nodes.status_code == 200, nodes.text[:300]
    by_name = {n["name"]: n for n in nodes.json()}
    assert NODE_TYPE in by_name
    assert "CUSTOM.zixlyIngest" in by_name
    assert by_name[NODE_TYPE]["displayName"] == "Zixly AU Rules"
    credentials = await n8n_http.get(f"{instance.url}/types/credentials.json", headers=headers)
    assert "zixlyIngestApi" in {c["name"] for c in credentials.json()}
    schema = await instance.api.get_credential_schema("zixlyIngestApi")
    assert {"url", "token"} <= set(schema.get("properties", {}))


@pytest.mark.parametrize("op", sorted(_by_op()))
async def test_every_vector_through_n8n_equals_python_and_the_published_value(
    hooks: Hooks, op: str
) -> None:
    vectors = _by_op()[op]
    if op == "basGstSummary":
        for vector in vectors:  # one summary per request: every item is one line
            lines = vector["input"]["lines"]
            items = [{**line, "g7": vector["input"].get("g7", 0)} for line in lines]
            for item in items:
                item["g18"] = vector["input"].get("g18", 0)
            response = await hooks.post(op, items)
            assert response.status_code == 200, response.text[:500]
            (out,) = response.json()
            python = evaluate(op, vector["input"])
            assert out["result"] == python, vector["id"]
            assert out["lines"] == len(lines)
            assert {k: python[k] for k in vector["expected"]} == vector["expected"]
        return
    response = await hooks.post(op, [v["input"] for v in vectors])
    assert response.status_code == 200, response.text[:500]
    outputs = response.json()
    assert len(outputs) == len(vectors)
    for vector, out in zip(vectors, outputs, strict=True):
        python = evaluate(op, vector["input"])
        assert out["result"] == python, (vector["id"], out)
        assert {k: out["result"][k] for k in vector["expected"]} == vector["expected"]
        for key, value in vector["input"].items():  # the input fields are kept
            assert out[key] == value


def _items_for(vector: dict[str, Any]) -> list[dict[str, Any]]:
    given = vector["input"]
    if vector["op"] == "basGstSummary":
        extra = {k: given[k] for k in ("g7", "g18") if k in given}
        return [{**line, **extra} for line in given["lines"]]
    return [given]


@pytest.mark.parametrize("vector", VECTORS["invalid"], ids=lambda v: v["id"])
async def test_invalid_input_fails_the_node_clearly_and_the_instance_keeps_serving(
    hooks: Hooks, instance: Instance, n8n_http: httpx.AsyncClient, vector: dict[str, Any]
) -> None:
    response = await hooks.post(vector["op"], _items_for(vector))
    assert response.status_code == 500, response.text[:300]  # the workflow failed
    execution = await instance.last_execution()
    assert execution["status"] == "error"
    error = execution["data"]["resultData"]["error"]
    assert error["node"]["name"] == "AU Rules"
    text = f"{error['message']} {error.get('description') or ''}"
    assert f"field: {vector['error']['field']}" in text, text
    assert error["name"] == "NodeOperationError", error["name"]
    # the instance is unharmed and still answers
    health = await n8n_http.get(f"{instance.url}/healthz")
    assert health.status_code == 200
    ok = await hooks.post("gstFromInclusive", [{"amount": "110"}])
    assert ok.status_code == 200 and ok.json()[0]["result"]["gst"] == "10.00"


GOOD_INPUTS: dict[str, dict[str, Any]] = {
    "gstFromInclusive": {"amount": "110"},
    "gstFromExclusive": {"amount": "100"},
    "paygWithholding": {"earnings": "1000", "period": "weekly", "taxFreeThreshold": True},
    "superGuarantee": {"date": "2025-07-01"},
}


@pytest.mark.parametrize(
    "vector",
    [v for v in VECTORS["invalid"] if v["op"] != "basGstSummary"],
    ids=lambda v: v["id"],
)
async def test_with_continue_on_error_a_bad_item_carries_its_error(
    hooks: Hooks, vector: dict[str, Any]
) -> None:
    good = GOOD_INPUTS[vector["op"]]
    response = await hooks.post(
        vector["op"], [good, vector["input"], good], on_error="continueRegularOutput"
    )
    assert response.status_code == 200, response.text[:300]
    first, bad, third = response.json()
    assert first["result"] == third["result"] == evaluate(vector["op"], good)
    assert "result" not in bad
    assert bad["errorField"] == vector["error"]["field"]
    assert bad["errorReason"] == vector["error"].get("reason", bad["errorReason"])
    assert bad["error"]


async def test_an_abn_with_bad_characters_is_reported_or_fails_on_request(
    hooks: Hooks, instance: Instance, n8n_http: httpx.AsyncClient
) -> None:
    response = await hooks.post("validateAbn", [{"value": "51-824-753-556"}])
    (out,) = response.json()
    assert out["result"]["valid"] is False and out["result"]["reason"] == "non_digits"
    workflow = _workflow("validateAbn", "zixly-au-abn-strict")
    workflow["nodes"][2]["parameters"]["failOnInvalid"] = True
    created = await instance.api.create_workflow(workflow)
    await instance.api.activate_workflow(str(created["id"]))
    failed = await n8n_http.post(
        f"{instance.url}/webhook/zixly-au-abn-strict",
        json={"items": [{"value": "51 824 753 556"}, {"value": "51-824-753-556"}]},
    )
    assert failed.status_code == 500
    error = (await instance.last_execution())["data"]["resultData"]["error"]
    assert "contains characters other than digits and spaces" in error["message"]
    assert "item 1" in error["message"]
