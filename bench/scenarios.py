"""What the benchmark asks: each scenario as a GraphQL request and as its baseline twin.

Every request uses a random tenant (its own token, or its id for the baseline) and a
random date window inside the seeded range, and every response is checked against the
number of rows that window holds (known from the data set's layout).
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from bench.dataset import SPAN_DAYS, START, BenchTenant
from bench.loadgen import Call, Check, Sampler

PAGE = 500
SUMMARY_DAYS = 730  # two years

FINANCIALS = """
query BenchFinancials($start: Date!, $end: Date!, $first: Int!) {
  financials(range: {start: $start, end: $end}, first: $first) {
    edges { cursor node { id clientId recordDate revenue expenses netProfit cashFlow currency } }
    pageInfo { hasNextPage endCursor }
  }
}
"""
SUMMARY = """
query BenchSummary($start: Date!, $end: Date!) {
  financialSummary(range: {start: $start, end: $end}, granularity: MONTH) {
    periodStart periodEnd revenue expenses netProfit cashFlow recordCount
  }
}
"""


@dataclass(frozen=True)
class Window:
    tenant: BenchTenant
    start: dt.date
    end: dt.date
    expected: int  # rows in the window

    @property
    def dates(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


class Workload:
    def __init__(self, tenants: list[BenchTenant], tokens: Mapping[uuid.UUID, str]) -> None:
        self.tenants = tenants
        self.tokens = tokens
        # Long enough for about 1.5 pages with the tenants' full-length clients.
        clients = max(1, max(len(t.client_days) for t in tenants))
        self.page_window_days = min(SPAN_DAYS, max(7, -(-3 * PAGE // (2 * clients))))

    def window(self, rng: random.Random, days: int) -> Window:
        tenant = rng.choice(self.tenants)
        days = min(days, SPAN_DAYS)
        start = START + dt.timedelta(days=rng.randrange(SPAN_DAYS - days + 1))
        end = start + dt.timedelta(days=days - 1)
        return Window(tenant, start, end, tenant.rows_between(start, end))

    def bearer(self, tenant: BenchTenant) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[tenant.id]}"}


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    graphql: Sampler
    baseline: Sampler
    needs_field: str  # the Query field the GraphQL side needs


# --- response checks -----------------------------------------------------------------


def _json(response: httpx.Response) -> tuple[Any, str | None]:
    if response.status_code != 200:
        return None, f"HTTP {response.status_code}"
    try:
        return response.json(), None
    except ValueError:
        return None, "invalid JSON"


def _graphql_data(response: httpx.Response, field: str) -> tuple[Any, str | None]:
    body, problem = _json(response)
    if problem is not None:
        return None, problem
    if body.get("errors"):
        error = body["errors"][0]
        code = (error.get("extensions") or {}).get("code", "GRAPHQL_VALIDATION")
        return None, f"GraphQL {code}: {error.get('message', '')[:120]}"
    return body["data"][field], None


def _page_problem(window: Window, rows: int, has_next: bool) -> str | None:
    if rows != min(PAGE, window.expected):
        return "wrong row count"
    if has_next != (window.expected > PAGE):
        return "wrong hasNextPage"
    return None


def _summary_problem(window: Window, counts: list[int]) -> str | None:
    return None if sum(counts) == window.expected else "wrong recordCount total"


# --- samplers --------------------------------------------------------------------------


def _graphql(query: str, variables: dict[str, Any], headers: dict[str, str], check: Check) -> Call:
    return Call(
        "POST", "/graphql", check, json={"query": query, "variables": variables}, headers=headers
    )


def financials_scenario(workload: Workload) -> Scenario:
    def graphql(rng: random.Random) -> Call:
        window = workload.window(rng, workload.page_window_days)

        def check(response: httpx.Response) -> str | None:
            data, problem = _graphql_data(response, "financials")
            if problem is not None:
                return problem
            return _page_problem(window, len(data["edges"]), data["pageInfo"]["hasNextPage"])

        variables = {**window.dates, "first": PAGE}
        return _graphql(FINANCIALS, variables, workload.bearer(window.tenant), check)

    def baseline(rng: random.Random) -> Call:
        window = workload.window(rng, workload.page_window_days)

        def check(response: httpx.Response) -> str | None:
            body, problem = _json(response)
            if problem is not None:
                return problem
            return _page_problem(window, len(body["rows"]), body["hasNextPage"])

        return Call(
            "GET",
            "/financials",
            check,
            params={**window.dates, "first": str(PAGE)},
            headers={"X-Tenant-Id": str(window.tenant.id)},
        )

    return Scenario(
        "financials",
        f"financials: one page of {PAGE} over a {workload.page_window_days}-day window",
        graphql,
        baseline,
        "financials",
    )


def summary_scenario(workload: Workload) -> Scenario:
    def graphql(rng: random.Random) -> Call:
        window = workload.window(rng, SUMMARY_DAYS)

        def check(response: httpx.Response) -> str | None:
            data, problem = _graphql_data(response, "financialSummary")
            if problem is not None:
                return problem
            return _summary_problem(window, [p["recordCount"] for p in data])

        return _graphql(SUMMARY, window.dates, workload.bearer(window.tenant), check)

    def baseline(rng: random.Random) -> Call:
        window = workload.window(rng, SUMMARY_DAYS)

        def check(response: httpx.Response) -> str | None:
            body, problem = _json(response)
            if problem is not None:
                return problem
            return _summary_problem(window, [p["recordCount"] for p in body["periods"]])

        return Call(
            "GET",
            "/financial-summary",
            check,
            params=window.dates,
            headers={"X-Tenant-Id": str(window.tenant.id)},
        )

    return Scenario(
        "summary",
        f"financialSummary: {SUMMARY_DAYS} days by MONTH",
        graphql,
        baseline,
        "financialSummary",
    )


def all_scenarios(workload: Workload) -> list[Scenario]:
    return [financials_scenario(workload), summary_scenario(workload)]
