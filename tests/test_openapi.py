"""/openapi.json: the committed copy matches the served document, it is valid OpenAPI 3.1
built from the validating models, and schemathesis finds no 5xx and no answer that breaks it.

The schemathesis run is bounded (``EXAMPLES`` per operation and generation mode, a fixed
seed) against the real app served by uvicorn, with a real ADMIN JWT and a real ingest token
so authenticated paths are reached. /graphql is left out: its contract is the SDL, and it has
its own property tests (tests/test_input_fuzz.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import World
from tests.test_ingest import token_for
from zixly.container import Services
from zixly.http.openapi import DOCUMENT_FILE, build_document, render
from zixly.ingest.models import FinancialRecord, FinancialsRequest

# Per operation and mode; more for a deeper local run (the CI run takes about 40 s).
EXAMPLES = int(os.environ.get("ZIXLY_SCHEMATHESIS_EXAMPLES", "25"))
SEED = 18
SKIPPED = {"/graphql"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def test_committed_document_matches_the_code() -> None:
    assert DOCUMENT_FILE.exists(), "run `python -m zixly.http.openapi --write` and commit it"
    assert DOCUMENT_FILE.read_text() == render(), (
        "the REST contract changed: review the diff, then run "
        "`python -m zixly.http.openapi --write`"
    )


def test_the_ingest_schema_is_the_validating_models() -> None:
    document = build_document()
    schemas = document["components"]["schemas"]
    body = document["paths"]["/ingest/v1/financials"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/FinancialsRequest"
    }
    record = FinancialRecord.model_json_schema()
    assert schemas["FinancialRecord"] == record
    assert record["additionalProperties"] is False
    assert set(record["required"]) == {"client_id", "record_date", "revenue", "expenses"}
    assert record["properties"]["client_id"]["maxLength"] == 200
    request = FinancialsRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    assert schemas["FinancialsRequest"] == {k: v for k, v in request.items() if k != "$defs"}


async def test_served_document(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    assert document == build_document()
    assert document["openapi"].startswith("3.1")
    schema = schemathesis.openapi.from_dict(document)
    schema.validate()  # against the OpenAPI 3.1 meta-schema
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {
        "/ingest/v1/financials",
        "/ingest/v1/lead-events",
        "/ingest/v1/custom-metrics",
        "/ingest/v1/heartbeat",
        "/export/financials.csv",
        "/oauth/{provider}/callback",
        "/invitations/accept",
        "/editor/{slug}/login",
        "/healthz",
        "/readyz",
        "/metrics",
        "/graphql",
    }


@dataclass
class Run:
    cases: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    by_operation: dict[str, dict[int, int]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    unsatisfiable: list[str] = field(default_factory=list)


def _fuzz(
    document: dict[str, Any],
    base_url: str,
    tokens: dict[str, str],
    pinned: dict[str, dict[str, dict[str, str]]],
) -> Run:
    """Every operation, positive and negative data, ``EXAMPLES`` each (blocking: run it in a
    thread while the server runs on the tests' loop). ``tokens`` by security scheme;
    ``pinned``: by path, values fixed in positive data (the tenant the tokens are for), as
    ``as_strategy`` keyword arguments (path_parameters, headers)."""
    schema = schemathesis.openapi.from_dict(document)
    run = Run()
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in SKIPPED:
            continue
        scheme = next(iter(operation.definition.raw.get("security", [{}])[0]), None)
        headers = {"Authorization": f"Bearer {tokens[scheme]}"} if scheme in tokens else {}
        name = f"{operation.method.upper()} {operation.path}"
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            positive = mode is GenerationMode.POSITIVE
            fixed = pinned.get(operation.path, {}) if positive else {}
            strategy = operation.as_strategy(generation_mode=mode, **fixed)
            try:
                _examples(strategy, base_url, headers, run, run.by_operation.setdefault(name, {}))
            except Unsatisfiable:  # nothing to make invalid (no parameters, no body)
                run.unsatisfiable.append(f"{name} ({mode})")
            except (FailureGroup, AssertionError) as failure:
                run.failures.append(f"{name} ({mode}): {failure}")
    return run


def _examples(
    strategy: Any, base_url: str, headers: dict[str, str], run: Run, seen: dict[int, int]
) -> None:
    """``EXAMPLES`` cases of one operation, each sent and checked; raises the failures.
    Negative cases may leave the credentials out on purpose (a 401 is what they expect)."""

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @seed(SEED)
    @given(case=strategy)
    def check(case: Any) -> None:
        run.cases += 1
        if headers and case.headers:
            for name in [k for k in case.headers if k.lower() == "authorization"]:
                del case.headers[name]
        response = case.call(base_url=base_url, headers=headers, timeout=30, allow_redirects=False)
        status = response.status_code
        run.by_status[status] = run.by_status.get(status, 0) + 1
        seen[status] = seen.get(status, 0) + 1
        case.validate_response(response, checks=CHECKS, headers=headers)

    check()


async def test_schemathesis_finds_no_server_error_and_no_nonconformance(
    live_server: str, services: Services, world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    tenant = await world.tenant("openapi-fuzz")
    tokens = {
        "bearerJWT": world.token(tenant.admin),
        "ingestToken": await token_for(services, tenant.id),
    }
    document = json.loads(render())
    started = time.monotonic()
    pinned = {
        "/editor/{slug}/login": {"path_parameters": {"slug": tenant.slug}},
        "/export/financials.csv": {"headers": {"X-Zixly-Tenant": tenant.slug}},
    }
    run = await asyncio.to_thread(_fuzz, document, live_server, tokens, pinned)
    elapsed = time.monotonic() - started
    with capsys.disabled():  # the case count belongs in CI's output
        print(
            f"\nschemathesis: {run.cases} cases in {elapsed:.1f}s, statuses "
            f"{sorted(run.by_status.items())}; no negative data for: "
            f"{', '.join(run.unsatisfiable)}"
        )
        for name, statuses in sorted(run.by_operation.items()):
            print(f"  {name}: {sorted(statuses.items())}")
    assert run.cases > 0
    assert not run.failures, "\n\n".join(run.failures)
    # Authenticated paths were reached: batches written, the editor opened, a CSV sent.
    reached = {name: statuses for name, statuses in run.by_operation.items()}
    for kind in ("financials", "lead-events", "custom-metrics", "heartbeat"):
        assert reached[f"POST /ingest/v1/{kind}"].get(200), kind
    assert reached["GET /editor/{slug}/login"].get(303)
    assert reached["GET /export/financials.csv"].get(200)


async def test_the_routers_refusals_are_json_errors(client: httpx.AsyncClient) -> None:
    """Found by schemathesis: a path Starlette's router cannot match (a mount's pattern stops
    at a newline) was a text/plain 404; every refusal now has the API's error body."""
    for path in ("/editor/a%0Ab/login", "/no-such-route"):
        response = await client.get(path)
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/json"
        [error] = response.json()["errors"]
        assert error["extensions"]["code"] == "NOT_FOUND"
        assert error["extensions"]["requestId"] == response.headers["x-request-id"]
    response = await client.post("/healthz")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert response.json()["errors"][0]["extensions"]["code"] == "METHOD_NOT_ALLOWED"
