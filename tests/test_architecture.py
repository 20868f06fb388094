"""The architecture check (tests/architecture.py) holds for the code as it is, and it catches
what it claims to: a cycle, an import against the layer order, a package cycle, a job module
imported by a resolver, a module that grew too long."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests import architecture
from tests.architecture import ROOT, check, cycles, layer_of


def test_the_code_follows_the_architecture() -> None:
    report = check()
    assert report.ok, "\n".join(report.lines())
    assert len(report.graph.modules) > 150  # it read the whole package


def test_every_module_has_a_layer() -> None:
    for module in check().graph.modules:
        layer_of(module)  # raises for a module no layer names


def test_layers_are_ordered_entry_to_core() -> None:
    assert [name for name, _ in architecture.LAYERS] == [
        "entry",
        "interface",
        "composition",
        "service",
        "domain",
        "core",
    ]
    assert layer_of("zixly.cli.main")[1] == "entry"
    assert layer_of("zixly.graphql.api.instances")[1] == "interface"
    assert layer_of("zixly.provisioning.jobs")[1] == "interface"
    assert layer_of("zixly.container")[1] == "composition"
    assert layer_of("zixly.provisioning.lifecycle")[1] == "service"
    assert layer_of("zixly.provisioning.n8n.client")[1] == "domain"
    assert layer_of("zixly.core.settings")[1] == "core"


def test_cycles_finds_loops_and_only_loops() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.fixture
def copy_of_the_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(ROOT / "zixly", tmp_path / "zixly", ignore=shutil.ignore_patterns("package"))
    monkeypatch.setattr(architecture, "ROOT", tmp_path)
    return tmp_path


def _append(root: Path, module: str, line: str) -> None:
    path = root / Path(*module.split(".")).with_suffix(".py")
    path.write_text(path.read_text() + "\n" + line + "\n")


def test_a_lazy_import_that_closes_a_cycle_fails(copy_of_the_code: Path) -> None:
    # core.queue is imported by provisioning.control (through control's enqueue path)
    _append(
        copy_of_the_code,
        "zixly.core.errors",
        "def _later() -> None:\n    from zixly.core.settings import Settings  # noqa\n",
    )
    _append(
        copy_of_the_code,
        "zixly.core.settings",
        "def _later() -> None:\n    from zixly.core.errors import ZixlyError  # noqa\n",
    )
    report = check(copy_of_the_code)
    assert not report.ok
    assert ["zixly.core.errors", "zixly.core.settings"] in report.module_cycles


def test_a_resolver_that_imports_the_worker_fails(copy_of_the_code: Path) -> None:
    _append(copy_of_the_code, "zixly.graphql.api.instances", "import zixly.workers.settings")
    _append(copy_of_the_code, "zixly.graphql.api.members", "from zixly.provisioning import jobs")
    report = check(copy_of_the_code)
    assert any(
        "zixly.graphql.api.instances (interface) imports zixly.workers.settings" in v
        for v in report.layer_violations
    )
    assert "zixly.graphql.api.members imports zixly.provisioning.jobs" in report.job_imports


def test_a_type_checking_import_does_not_count(copy_of_the_code: Path) -> None:
    _append(
        copy_of_the_code,
        "zixly.core.errors",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from zixly.container import Services",
    )
    assert check(copy_of_the_code).ok


def test_packages_that_import_each_other_fail(copy_of_the_code: Path) -> None:
    # both in the service layer, so only the package rule can catch it
    _append(copy_of_the_code, "zixly.provisioning.control", "import zixly.integrations.sync")
    report = check(copy_of_the_code)
    assert ["zixly.integrations", "zixly.provisioning"] in report.package_cycles


def test_a_long_module_fails(copy_of_the_code: Path) -> None:
    _append(copy_of_the_code, "zixly.core.bounds", "\n" * architecture.MAX_LINES)
    assert any(v.startswith("zixly.core.bounds ") for v in check(copy_of_the_code).oversized)
