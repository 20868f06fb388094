"""The n8n community-node package (zixly/n8n_nodes/package): generated data, layout, shipping.

The rule tables the JavaScript nodes compute with are generated from the Python library
(``python -m zixly.n8n_nodes.export``); the committed JSON must be exactly what the Python
tables give today. The package must be loadable both ways n8n loads nodes: by scanning an
N8N_CUSTOM_EXTENSIONS directory for ``*.node.js`` / ``*.credentials.js`` (what Zixly uses)
and as an installed community package through package.json's ``n8n`` section; and it must
ship inside the Python package so every install can point n8n at it.
"""

from __future__ import annotations

import json
import re
import warnings
from decimal import Decimal
from pathlib import Path

import pytest

from zixly.n8n_nodes import export, payg, super_guarantee
from zixly.n8n_nodes.export import DATA_FILE, PACKAGE_DIR, render, rules_data

REPO = Path(__file__).resolve().parents[1]


def test_the_committed_rules_json_is_what_the_python_tables_give() -> None:
    assert DATA_FILE.read_text() == render(), (
        "zixly/n8n_nodes/package/lib/au-rules-data.json is stale: "
        "run python -m zixly.n8n_nodes.export"
    )
    assert export.main(["--check"]) == 0


def test_a_changed_table_is_caught_as_drift(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(super_guarantee._SG_RATES, 2024, Decimal("0.116"))
    assert export.main(["--check"]) == 1
    assert "out of date" in capsys.readouterr().out
    monkeypatch.undo()
    changed = dict(payg.COEFFICIENTS)
    first = changed[payg.Scale.NO_TAX_FREE_THRESHOLD]
    changed[payg.Scale.NO_TAX_FREE_THRESHOLD] = (first[0]._replace(b=Decimal("0.1601")), *first[1:])
    monkeypatch.setattr(payg, "COEFFICIENTS", changed)
    assert render() != DATA_FILE.read_text()


def test_the_data_carries_every_table_as_exact_decimals() -> None:
    data = rules_data()
    scale_1 = data["payg"]["scales"]["1"]
    assert scale_1[2] == {"lessThan": 515, "a": "0.1890", "b": "-0.6702"}
    assert scale_1[-1]["lessThan"] is None
    assert set(data["payg"]["scales"]) == {"1", "2"}
    assert data["gst"]["rate"] == "0.10"
    assert data["superGuarantee"]["rateFrom"] == {"financialYear": 2025, "rate": "0.12"}

    def floats(value: object) -> list[float]:
        if isinstance(value, float):
            return [value]
        if isinstance(value, dict):
            return [f for v in value.values() for f in floats(v)]
        if isinstance(value, list):
            return [f for v in value for f in floats(v)]
        return []

    assert floats(json.loads(DATA_FILE.read_text())) == []  # no binary floats anywhere


def _package_json() -> dict[str, object]:
    loaded: dict[str, object] = json.loads((PACKAGE_DIR / "package.json").read_text())
    return loaded


def test_package_json_is_a_community_node_package() -> None:
    package = _package_json()
    assert package["name"] == "n8n-nodes-zixly"
    assert package["keywords"] == ["n8n-community-node-package"]
    section = package["n8n"]
    assert isinstance(section, dict)
    assert section["n8nNodesApiVersion"] == 1
    # Both loaders must find the same files: the package loader reads this list, the
    # custom-directory loader (N8N_CUSTOM_EXTENSIONS) globs **/*.node.js and
    # **/*.credentials.js.
    scanned_nodes = sorted(
        p.relative_to(PACKAGE_DIR).as_posix() for p in PACKAGE_DIR.rglob("*.node.js")
    )
    scanned_credentials = sorted(
        p.relative_to(PACKAGE_DIR).as_posix() for p in PACKAGE_DIR.rglob("*.credentials.js")
    )
    assert (
        sorted(section["nodes"])
        == scanned_nodes
        == [
            "nodes/ZixlyAuRules/ZixlyAuRules.node.js",
            "nodes/ZixlyIngest/ZixlyIngest.node.js",
        ]
    )
    assert (
        sorted(section["credentials"])
        == scanned_credentials
        == ["credentials/ZixlyIngestApi.credentials.js"]
    )
    assert not list(PACKAGE_DIR.rglob("node_modules"))  # the directory scan would load them


@pytest.mark.parametrize(
    "relative",
    [
        "nodes/ZixlyAuRules/ZixlyAuRules.node.js",
        "nodes/ZixlyIngest/ZixlyIngest.node.js",
        "credentials/ZixlyIngestApi.credentials.js",
    ],
)
def test_each_file_exports_the_class_n8n_looks_for(relative: str) -> None:
    """n8n instantiates ``require(file).<first part of the file name>``; plain CommonJS, no
    n8n package required when the file loads (the error helper requires it lazily)."""
    text = (PACKAGE_DIR / relative).read_text()
    class_name = Path(relative).name.split(".")[0]
    assert re.search(rf"^class {class_name} ", text, re.M)
    assert re.search(rf"^module\.exports = \{{ {class_name} \}};", text, re.M)
    top_level_requires = re.findall(r"^const .*require\('([^']+)'\)", text, re.M)
    assert all(name.startswith(".") for name in top_level_requires), top_level_requires


def test_the_package_ships_inside_the_python_package(tmp_path: Path) -> None:
    """setuptools' build_py with pyproject's package-data copies every package file."""
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings(), pytest.MonkeyPatch.context() as patch:
        warnings.simplefilter("ignore")
        patch.chdir(REPO)
        dist = apply_configuration(Distribution({"script_name": "setup.py"}), "pyproject.toml")
        command = dist.get_command_obj("build_py")
        command.build_lib = str(tmp_path)
        command.ensure_finalized()
        command.run()
    built = tmp_path / "zixly" / "n8n_nodes" / "package"
    expected = sorted(
        p.relative_to(PACKAGE_DIR).as_posix()
        for p in PACKAGE_DIR.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    shipped = sorted(p.relative_to(built).as_posix() for p in built.rglob("*") if p.is_file())
    assert shipped == expected
    assert "lib/au-rules-data.json" in shipped and "package.json" in shipped


def test_the_images_copy_the_package_and_point_n8n_at_it() -> None:
    dockerfile = (REPO / "infra/n8n/Dockerfile").read_text()
    local = (REPO / "infra/n8n/Containerfile.local").read_text()
    ignore = (REPO / "infra/n8n/Dockerfile.dockerignore").read_text()
    assert "COPY --chown=root:root zixly/n8n_nodes/package/ /opt/zixly/custom-nodes/" in dockerfile
    assert "!zixly/n8n_nodes/package/" in ignore
    assert "COPY --chown=0:0 n8n-nodes-zixly/ /opt/zixly/custom-nodes/n8n-nodes-zixly/" in local
    for text in (dockerfile, local):
        assert "ENV N8N_CUSTOM_EXTENSIONS=/opt/zixly/custom-nodes" in text
