"""The ingest benchmark (bench/ingest.py) at a minuscule size, so it cannot rot. No timing
is asserted: only that every path ran, wrote what it should and reported it."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import asyncpg
from rich.console import Console

from bench.ingest import SLUG_PREFIX, IngestConfig, bodies, records, run_benchmark
from zixly.embedded.stack import Endpoints


def the_only_result(directory: Path) -> dict[str, Any]:
    [written] = list(directory.glob("ingest-*.json"))
    loaded: dict[str, Any] = json.loads(written.read_text())
    return loaded


def leftover_logs(directory: Path) -> list[Path]:
    return list(directory.glob("ingest-*-logs"))


def test_the_data_is_valid_and_spread_over_clients_and_days() -> None:
    config = IngestConfig(rows=250, batch=100, clients=3)
    rows = records(config)
    assert len(rows) == 250
    assert len({r["client_id"] for r in rows}) == 3
    assert len({(r["client_id"], r["record_date"]) for r in rows}) == 250
    payloads = [json.loads(b) for b in bodies(config, rows)]
    assert [len(p["records"]) for p in payloads] == [100, 100, 50]


async def test_a_small_run_writes_replays_and_reports(
    endpoints: Endpoints, owner: asyncpg.Connection, tmp_path: Path
) -> None:
    config = IngestConfig(
        rows=600, batch=200, clients=4, concurrency=2, per_record_rows=20, results_dir=tmp_path
    )
    report = await run_benchmark(config, endpoints, Console(file=io.StringIO(), width=160))
    runs = report.runs
    assert runs["endpoint"].outcome == {"inserted": 600, "updated": 0, "unchanged": 0}
    assert runs["replay"].outcome == {"inserted": 0, "updated": 0, "unchanged": 600}
    assert runs["baseline"].outcome == {"written": 600}
    assert runs["per_record"].outcome == {"inserted": 20, "updated": 0, "unchanged": 0}
    assert [runs[k].requests for k in ("endpoint", "replay", "baseline", "per_record")] == [
        3,
        3,
        3,
        20,
    ]
    assert report.notes == []
    saved = the_only_result(tmp_path)
    assert [r["name"] for r in saved["runs"]] == ["endpoint", "replay", "per-record", "baseline"]
    assert set(saved["verdicts"]) >= {
        "endpoint_rows_per_s",
        "ratio",
        "rows_per_s_ok",
        "ratio_ok",
        "per_record_ratio",
        "per_record_ratio_ok",
    }
    assert saved["machine"]["nproc"] >= 1
    assert not leftover_logs(tmp_path)
    # The bench tenants (and so their rows) are gone again.
    left = await owner.fetchval(
        "SELECT count(*) FROM tenants WHERE slug LIKE $1", SLUG_PREFIX + "%"
    )
    assert left == 0
