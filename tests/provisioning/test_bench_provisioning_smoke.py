"""The provisioning benchmark runs end to end (process runtime, one repetition, short waits).

Structure only, not timings: this keeps ``python -m bench.provisioning`` from rotting.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.provisioning import TEMPLATES_DIR, main
from bench.provisioning_report import PHASES, TARGET_RATIO
from zixly.provisioning.runtimes.distributions import N8nDistribution


def test_one_quick_process_run_reports_every_measurement_and_leaves_nothing(
    tmp_path: Path, n8n_dist: N8nDistribution, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--runtime", "process", "--repetitions", "1", "--settle", "0.5", "--no-warmup"]
    assert main([*argv, "--results-dir", str(tmp_path)]) == 0

    [path] = tmp_path.glob("provisioning-*.json")
    data = json.loads(path.read_text())
    assert data["config"]["runtimes"] == ["process"]
    assert data["config"]["version"] == n8n_dist.version
    templates = sorted(json.loads(p.read_text())["name"] for p in TEMPLATES_DIR.glob("*.json"))
    assert sorted(data["templates"]) == templates

    [result] = data["runtimes"]
    assert (result["runtime"], result["skipped"], result["error"]) == ("process", None, None)
    bare, full = result["starts"]
    assert (bare["kind"], full["kind"]) == ("bare", "full")
    assert list(bare["phases"]) == ["create", "start", "ready"]
    assert list(full["phases"]) == list(PHASES)
    assert (bare["workflows_active"], full["workflows_active"]) == (0, len(templates))
    for start in (bare, full):
        assert start["seconds"] == pytest.approx(sum(start["phases"].values()), abs=0.005)
        assert start["n8n_cpu_s"] > 0
    assert result["ratio_full_over_bare"] == round(full["seconds"] / bare["seconds"], 3)
    assert result["ratio_ok"] is (result["ratio_full_over_bare"] <= TARGET_RATIO)
    after_ready = full["phases"]["bootstrap"] + full["phases"]["verify"]
    assert result["provisioning_overhead_s"] == pytest.approx(after_ready, abs=0.001)
    assert result["wall_s"]["bare"] == {
        "median": bare["seconds"],
        "min": bare["seconds"],
        "max": bare["seconds"],
        "runs": 1,
    }

    memory = result["idle_memory"]
    assert memory["settle_s"] == 0.5
    assert memory["processes"] >= 2  # n8n and its task runner
    assert 0 < memory["tree_pss"] <= memory["tree_rss"]
    [(idle_for, rss)] = memory["settling_rss"]  # one sample at once: the settle is under 5 s
    assert idle_for == 0.0 and rss > 0
    assert memory["cgroup_usage"] is None  # a container-only figure

    assert result["cleanup"]["leftovers"] == []
    assert result["cleanup"]["processes_checked_gone"] >= 2  # at least each n8n itself

    printed = capsys.readouterr().out
    assert "process: full/bare" in printed
    assert "idle memory of one provisioned instance" in printed
    assert f"results: {path}" in printed
