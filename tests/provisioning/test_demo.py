"""`zixly dev --demo` as a newcomer runs it: the demo tenant's own n8n pulls sandbox data
into the dashboards' GraphQL, the printed link opens its editor, Ctrl-C stops everything
(n8n included), and a second start brings the same instance back with its data."""

from __future__ import annotations

import re
import time
from datetime import date, timedelta
from pathlib import Path

import httpx
import psutil

from tests.conftest import free_port
from tests.test_dev_cli import TOKEN_LINE, _postgres_running, _start, _stop
from zixly.provisioning.runtimes.distributions import N8nDistribution

ROWS_LINE = re.compile(
    r"^✓ (xero|hubspot|asana|shopify): (\d+) rows in (\w+) \(run \d+: success\)$", re.M
)
EDITOR_LINE = re.compile(r"(http://\S+/editor/demo/login\?token=\S+)")
DEMO_WITHIN = 300.0
QUERY = """
query($range: DateRangeInput!) {
  financials(range: $range, first: 500) { edges { node { sourceSystem } } }
  integrations { provider status }
}
"""
RANGE = {
    "start": (date.today() - timedelta(days=60)).isoformat(),
    "end": (date.today() + timedelta(days=1)).isoformat(),
}


def _n8n_running(data_dir: Path) -> bool:
    needle = str(data_dir.resolve())
    for proc in psutil.process_iter(["cmdline", "cwd", "environ"]):
        try:
            text = " ".join(proc.info["cmdline"] or []) + str(proc.info.get("cwd") or "")
            environ = proc.info.get("environ") or {}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if "n8n" in text and any(needle in str(v) for v in environ.values()):
            return True
    return False


def _start_demo(data_dir: Path, port: int, sandbox_port: int) -> tuple[object, str]:
    return _start(
        data_dir, port, args=("--demo", "--sandbox-port", str(sandbox_port)), within=DEMO_WITHIN
    )


def test_the_demo_pulls_sandbox_data_through_the_tenants_own_n8n(
    tmp_path: Path, n8n_dist: N8nDistribution
) -> None:
    data_dir = tmp_path / "data"
    port, sandbox_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    process, output = _start_demo(data_dir, port, sandbox_port)
    try:
        rows = {provider: int(n) for provider, n, _ in ROWS_LINE.findall(output)}
        assert set(rows) == {"xero", "hubspot", "asana", "shopify"}, output
        assert all(n > 0 for n in rows.values()), output
        assert time.monotonic() - started < DEMO_WITHIN
        tokens = {role: token for role, _, token in TOKEN_LINE.findall(output)}
        [editor_link] = EDITOR_LINE.findall(output)
        with httpx.Client(base_url=base, timeout=30) as http:
            body = http.post(
                "/graphql",
                json={"query": QUERY, "variables": {"range": RANGE}},
                headers={"Authorization": f"Bearer {tokens['VIEWER']}"},
            ).json()
            assert "errors" not in body, body
            sources = {e["node"]["sourceSystem"] for e in body["data"]["financials"]["edges"]}
            assert "xero" in sources
            statuses = {i["provider"]: i["status"] for i in body["data"]["integrations"]}
            assert all(statuses[p] == "ACTIVE" for p in rows), statuses

            # The printed link logs the ADMIN into the tenant's own n8n editor.
            entry = http.get(editor_link, follow_redirects=False)
            assert entry.status_code == 303
            editor = http.get("/editor/demo/")  # with the session cookie it set
            assert editor.status_code == 200 and "n8n" in editor.text.lower()
        assert _n8n_running(data_dir)
    finally:
        _stop(process)  # type: ignore[arg-type]
    assert not _postgres_running(data_dir)
    assert not _n8n_running(data_dir)

    # A second start brings the same instance back (not a new one) and connects again.
    process, output = _start_demo(data_dir, port, sandbox_port)
    try:
        assert "provision requested" not in output, output
        again = {provider: int(n) for provider, n, _ in ROWS_LINE.findall(output)}
        assert again == rows, output  # the same deterministic sandbox data: nothing doubled
    finally:
        _stop(process)  # type: ignore[arg-type]
    assert not _n8n_running(data_dir)
