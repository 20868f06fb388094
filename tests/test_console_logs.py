"""Log lines on a console: readable on a terminal, JSON otherwise, redacted either way, and
written through the console that shows the progress, so a spinner or a progress line is
never torn by a log line. The last test runs `zixly dev` on a real pseudo-terminal."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from tests.conftest import free_port
from zixly.core.logging import configure_logging, get_logger

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


@pytest.fixture(autouse=True)
def quiet_afterwards() -> Iterator[None]:
    yield
    configure_logging("WARNING", json=True)


def _console(terminal: bool) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, width=100), out


def test_a_terminal_gets_readable_redacted_lines() -> None:
    console, out = _console(terminal=True)
    configure_logging("INFO", None, console=console)
    get_logger("zixly.test").info("job.done", tenant_id="t1", authorization=f"Bearer {TOKEN}")
    logging.getLogger("uvicorn.error").warning("stdlib %s", "line")
    text = ANSI.sub("", out.getvalue())
    lines = text.splitlines()
    assert len(lines) == 2 and not any(line.lstrip().startswith("{") for line in lines)
    assert re.search(r"\[info\s*\] job\.done\s+\[zixly\.test\] authorization=\[redacted\]", text)
    assert "tenant_id=t1" in lines[0]
    assert re.search(r"\[warning\s*\] stdlib line\s+\[uvicorn\.error\]", lines[1])
    assert TOKEN not in text
    assert "\x1b[" in out.getvalue()  # coloured on a terminal


def test_anything_else_gets_json_lines_and_a_setting_overrides() -> None:
    console, out = _console(terminal=False)
    configure_logging("INFO", None, console=console)
    get_logger("zixly.test").info("job.done", token=TOKEN)
    [line] = out.getvalue().splitlines()
    assert json.loads(line)["token"] == "[redacted]"

    console, out = _console(terminal=True)
    configure_logging("INFO", True, console=console)  # ZIXLY_LOG_JSON=true on a terminal
    get_logger("zixly.test").info("job.done")
    assert json.loads(out.getvalue())["event"] == "job.done"

    console, out = _console(terminal=False)
    configure_logging("INFO", False, console=console)  # ZIXLY_LOG_JSON=false in a pipe
    get_logger("zixly.test").info("job.done")
    assert "job.done" in out.getvalue() and not out.getvalue().startswith("{")
    assert "\x1b[" not in out.getvalue()  # no colours where no terminal reads them


def test_log_lines_go_above_a_live_spinner_whole() -> None:
    console, out = _console(terminal=True)
    configure_logging("INFO", False, console=console)
    with console.status("working…"):
        console.print("✓ 10:00:00 [READY] step READY done")
        get_logger("zixly.test").warning("during.the.spinner", n=1)
        console.print("✓ 10:00:01 [DONE] provisioned")
    # Each line is whole once the spinner's redraws (carriage returns, erase-line) are gone.
    lines = [ANSI.sub("", part).strip() for part in re.split(r"[\r\n]", out.getvalue())]
    shown = [line for line in lines if line and "working…" not in line]
    assert shown[0] == "✓ 10:00:00 [READY] step READY done"
    assert re.fullmatch(r"\S+ \[warning\s*\] during\.the\.spinner\s+\[zixly\.test\] n=1", shown[1])
    assert shown[2] == "✓ 10:00:01 [DONE] provisioned"


def _read_until(fd: int, needle: str, within: float) -> str:
    seen, deadline = "", time.monotonic() + within
    while needle not in seen:
        left = deadline - time.monotonic()
        assert left > 0, seen
        ready, _, _ = select.select([fd], [], [], min(left, 1.0))
        if ready:
            try:
                seen += os.read(fd, 65536).decode(errors="replace")
            except OSError:  # the child closed the terminal
                raise AssertionError(seen) from None
    return seen


def test_zixly_dev_on_a_terminal_shows_readable_logs_and_no_json(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "ZIXLY_DATA_DIR": str(tmp_path / "data"),
        "ZIXLY_PORT": str(port),
        "ZIXLY_LOG_LEVEL": "INFO",
        "COLUMNS": "200",
        "TERM": "xterm",
    }
    for key in ("ZIXLY_DATABASE_URL", "ZIXLY_REDIS_URL", "ZIXLY_LOG_JSON", "ZIXLY_SMTP_HOST"):
        env.pop(key, None)
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "zixly.cli.main", "dev"],
        env=env,
        stdin=follower,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    try:
        seen = _read_until(leader, "Ctrl-C stops everything", 180)
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 200
        seen += _read_until(leader, "http.request", 30)
        process.send_signal(signal.SIGINT)
        seen += _read_until(leader, "left running", 60)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(leader)
    assert process.returncode == 0, seen
    text = ANSI.sub("", seen)
    lines = [line.strip() for line in re.split(r"[\r\n]", text) if line.strip()]
    assert not [line for line in lines if line.startswith("{")], text
    [request] = [line for line in lines if "http.request" in line]
    assert re.search(r"\[info\s*\] http\.request\s+\[zixly\.http\]", request)
    assert "route=/readyz" in request and "status=200" in request
    assert "Zixly is up." in text
