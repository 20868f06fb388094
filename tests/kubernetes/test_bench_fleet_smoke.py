"""The fleet benchmark (bench/fleet.py) at a minuscule size on the tests' control plane, so it
cannot rot. No timing is asserted: that the real reconciler went over every tenant with the
expected outcome, that the server's count of its API calls agrees with the client's, and that
the fleet is gone again."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
from lightkube import AsyncClient
from lightkube.resources.core_v1 import Namespace, Node
from rich.console import Console

from bench.fleet import NODE_PREFIX, QUICK, SLUG_PREFIX, run_benchmark
from tests import kube
from zixly.embedded.stack import Endpoints


def the_only_result(directory: Path) -> dict[str, Any]:
    [written] = list(directory.glob("fleet-*.json"))
    loaded: dict[str, Any] = json.loads(written.read_text())
    return loaded


async def test_a_small_fleet_is_reconciled_counted_and_removed(
    kube_env: kube.KubeTestEnv,
    endpoints: Endpoints,
    owner: asyncpg.Connection,
    kube_client: AsyncClient,
    tmp_path: Path,
) -> None:
    config = replace(QUICK, sizes=(4, 8), results_dir=tmp_path)
    out = io.StringIO()
    report = await run_benchmark(
        config, endpoints, kube_env, Console(file=out, width=200), clean_cluster=True
    )

    assert [p.tenants for p in report.passes] == [4, 8]
    for p in report.passes:
        # One in four desired STOPPED (inspected: ok); the running ones' probe is refused
        # and recorded (unhealthy). Other tests' rows, if any, belong to other runtimes.
        assert (p.running, p.stopped) == (p.tenants * 3 // 4, p.tenants // 4)
        assert p.counts["ok"] == p.stopped and p.counts["unhealthy"] == p.running
        # Per tenant: GET namespace + GET deployment, LIST pods when it runs; one LIST
        # of the namespaces for the orphan pass. The server counts what the client sent,
        # and the odd read of a controller meanwhile (this control plane is shared).
        assert p.client_calls == 2 * p.tenants + p.running + 1
        assert p.client_calls <= p.server_reads <= p.client_calls + 3
        assert p.cpu_s > 0 and p.wall_s > 0 and p.rss_peak_mb >= p.rss_before_mb
    assert report.growth()["tenants"] == 2.0
    printed = out.getvalue()
    assert "growth, last size vs first" in printed and "health probe" in printed

    saved = the_only_result(tmp_path)
    assert [p["tenants"] for p in saved["passes"]] == [4, 8]

    # Gone again: rows, tenants, namespaces (terminating or deleted) and nodes.
    left = await owner.fetchval(
        "SELECT count(*) FROM tenants WHERE slug LIKE $1", SLUG_PREFIX + "%"
    )
    assert left == 0
    async for namespace in kube_client.list(Namespace, labels={"zixly.deployment": "fleet"}):
        assert namespace.status is not None and namespace.status.phase == "Terminating"
    nodes = [n.metadata.name async for n in kube_client.list(Node) if n.metadata]
    assert not [n for n in nodes if n and n.startswith(NODE_PREFIX)]
