"""Every ``zixly`` command's ``--help`` runs and documents every argument; the help says what
the commands take (``--template``) and do (``--enqueue`` waits, ``--no-wait`` does not)."""

from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from zixly.cli.main import build_parser
from zixly.provisioning.templates import bundled_manifest


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from commands(sub, (*path, name))


COMMANDS = dict(commands(build_parser()))


def help_of(path: tuple[str, ...]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exited:
        build_parser().parse_args([*path, "--help"])
    assert exited.value.code == 0
    return out.getvalue()


def test_every_command_is_seen() -> None:
    top = {path[0] for path in COMMANDS}
    assert top == {
        "dev", "token", "db", "schema", "n8n", "podman", "tenant", "keys", "worker",
        "reconcile", "sandbox", "graphiql", "serve",
    }  # fmt: skip
    assert len(COMMANDS) > 30


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_help_runs_and_documents_every_argument(path: tuple[str, ...]) -> None:
    text = help_of(path)
    assert text.startswith(f"usage: zixly {' '.join(path)}")
    parser = COMMANDS[path]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            assert all(choice.help for choice in action._choices_actions), path
        else:
            assert action.help, f"zixly {' '.join(path)}: {action.dest} has no help"


def test_the_entry_point_answers_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "zixly.cli.main", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "usage: zixly" in result.stdout


def test_template_takes_a_bundled_id_or_a_workflow_file(tmp_path: Path) -> None:
    text = " ".join(help_of(("tenant", "provision")).split())
    assert "bundled template by id" in text and "workflow JSON file" in text
    ids = [spec.id for spec in bundled_manifest().templates]
    parse = build_parser().parse_args
    for given in ("xero-profit-and-loss", "manifest:xero-profit-and-loss"):
        args = parse(["tenant", "provision", "acme", "--template", given])
        assert args.template == ["manifest:xero-profit-and-loss"]
    workflow = tmp_path / "flow.json"
    workflow.write_text('{"name": "mine", "nodes": [], "connections": {}}')
    assert parse(["tenant", "provision", "acme", "--template", str(workflow)]).template == [
        str(workflow)
    ]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exited:
        parse(["tenant", "provision", "acme", "--template", "xero"])
    assert exited.value.code == 2
    message = " ".join(err.getvalue().split())
    assert "'xero' is neither a workflow JSON file nor a bundled template id" in message
    assert all(template in message for template in ids)


@pytest.mark.parametrize(
    "path",
    [
        p
        for p in sorted(COMMANDS)
        if any("--enqueue" in a.option_strings for a in COMMANDS[p]._actions)
    ],
    ids=" ".join,
)
def test_every_enqueueing_command_waits_unless_told_not_to(path: tuple[str, ...]) -> None:
    text = " ".join(help_of(path).split())
    assert "--no-wait" in text and "return once the job is queued" in text
    assert "until it ends" in text


def test_a_batch_size_below_one_is_a_usage_error() -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["keys", "rotate", "--batch-size", "0"])
    assert exited.value.code == 2 and "must be at least 1" in err.getvalue()
