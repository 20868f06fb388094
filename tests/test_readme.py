"""The README documents every setting and exactly the two set-up commands CI relies on."""

from __future__ import annotations

import re
from pathlib import Path

from zixly.core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_every_setting_is_in_the_configuration_table() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `(ZIXLY_[A-Z0-9_]+)` \|", readme, re.M))
    expected = {f"ZIXLY_{name.upper()}" for name in Settings.model_fields}
    assert documented == expected


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Set-up", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in setup.strip().splitlines()]
    assert commands == ["make dev", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()
