"""Installing n8n: detection, failures with npm's output, the lock, the CLI and its progress."""

from __future__ import annotations

import io
import re
import shutil
import socket
import time
from pathlib import Path

import pytest
from rich.console import Console

from tests.provisioning.conftest import N8N_VERSION
from zixly.cli.main import main
from zixly.provisioning.runtimes.distributions import (
    MARKER,
    N8nDistribution,
    directory_size,
    ensure_n8n,
    find_n8n,
)
from zixly.provisioning.runtimes.errors import InstallBusyError, InstallError, NotInstalledError
from zixly.provisioning.runtimes.locks import file_lock
from zixly.provisioning.runtimes.progress import RichInstallProgress, describe_npm_line

VERSION = N8N_VERSION


def test_a_missing_version_is_not_installed_and_nothing_is_written(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(
        NotInstalledError, match=re.escape(f"zixly n8n install --version {VERSION}")
    ):
        ensure_n8n(VERSION, install=False, cache_dir=cache)
    assert not cache.exists()


def test_a_version_must_look_like_one(tmp_path: Path) -> None:
    with pytest.raises(InstallError, match="not an n8n version"):
        ensure_n8n("../../etc", install=False, cache_dir=tmp_path)


def test_a_half_install_is_never_taken_for_a_finished_one(tmp_path: Path) -> None:
    partial = tmp_path / f"{VERSION}.partial" / "node_modules" / "n8n" / "bin"
    partial.mkdir(parents=True)
    (partial / "n8n").write_text("// unfinished")
    assert find_n8n(VERSION, tmp_path) is None
    # A final directory whose marker points at a node that does not answer is not trusted.
    final = tmp_path / VERSION
    shutil.copytree(tmp_path / f"{VERSION}.partial", final)
    (final / MARKER).write_text('{"node_bin": "/bin/false"}')
    assert find_n8n(VERSION, tmp_path) is None


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
def test_an_unreachable_registry_fails_with_npms_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    monkeypatch.setenv("npm_config_registry", f"http://127.0.0.1:{dead}/")
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "npm-cache"))
    monkeypatch.setenv("npm_config_fetch_retries", "0")
    cache = tmp_path / "cache"
    started = time.monotonic()
    with pytest.raises(InstallError) as caught:
        ensure_n8n(VERSION, cache_dir=cache)
    assert time.monotonic() - started < 60
    error = caught.value
    assert error.code == "N8N_INSTALL_FAILED"
    assert "registry reachable" in error.message
    assert "ECONNREFUSED" in error.output_tail
    assert "ECONNREFUSED" in str(error)
    assert not (cache / VERSION).exists()
    assert not list(cache.glob(f"*/{MARKER}"))


def test_a_concurrent_install_waits_for_the_lock(tmp_path: Path) -> None:
    lock = tmp_path / ".locks" / f"n8n-{VERSION}.lock"
    with file_lock(lock), pytest.raises(InstallBusyError):
        ensure_n8n(VERSION, cache_dir=tmp_path, lock_timeout=0.3)
    with file_lock(lock, timeout=1):  # released again
        pass


def test_status_exits_1_when_the_version_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ZIXLY_N8N_CACHE_DIR", str(tmp_path))
    assert main(["n8n", "status"]) == 1
    assert f"cache: {tmp_path}" in capsys.readouterr().err


def test_install_and_status_of_the_installed_version(
    n8n_dist: N8nDistribution, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    assert main(["n8n", "install", "--version", VERSION]) == 0
    assert time.monotonic() - started < 10
    assert f"n8n {VERSION} is already installed in {n8n_dist.root}" in capsys.readouterr().err
    assert main(["n8n", "status", "--version", VERSION]) == 0
    out = capsys.readouterr().err
    assert f"n8n {VERSION}: installed" in out
    assert ensure_n8n(VERSION) == n8n_dist
    assert n8n_dist.node_bin.is_file() and n8n_dist.n8n_bin.is_file()


def test_progress_reports_step_size_and_npm_activity(tmp_path: Path) -> None:
    assert describe_npm_line("npm http fetch GET 200 https://registry.npmjs.org/n8n 9ms") == (
        "downloading packages"
    )
    assert (
        describe_npm_line(
            "npm info run sqlite3@5.1.7 install node_modules/sqlite3 node-gyp rebuild"
        )
        == "running install script of sqlite3"
    )
    assert (
        describe_npm_line("npm info run @n8n/task-runner@1.0.0 postinstall node_modules/x")
        == "running postinstall script of @n8n/task-runner"
    )

    watched = tmp_path / "node_modules"
    (watched / "pkg").mkdir(parents=True)
    (watched / "pkg" / "blob").write_bytes(b"\1" * 3_000_000)
    assert 3_000_000 <= directory_size(watched) < 3_100_000

    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=False)
    with RichInstallProgress(console, size_every=0.05, log_every=0) as progress:
        progress.phase("installing n8n", watch=watched)
        time.sleep(0.3)
        progress.output("npm http fetch GET 200 https://registry.npmjs.org/n8n 9ms")
        progress.output("npm info run sqlite3@5.1.7 install node_modules/sqlite3 x")
    lines = out.getvalue().splitlines()
    assert lines[0] == "installing n8n"
    assert "node_modules 3 MB" in lines[-1]
    assert "1 npm requests" in lines[-1]
    assert lines[-1].endswith("running install script of sqlite3")
