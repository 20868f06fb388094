"""`zixly dev` as a newcomer runs it: start, use the printed tokens, Ctrl-C, start again."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from email import message_from_bytes
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import free_port
from zixly.embedded.stack import Endpoints
from zixly.provisioning.runtimes.distributions import (
    DEFAULT_N8N_VERSION,
    NotInstalledError,
    ensure_n8n,
)

TOKEN_LINE = re.compile(
    r"^(STAFF|ADMIN|EDITOR|VIEWER)\s+(\S+@\S+)\n(eyJ[\w-]+\.[\w-]+\.[\w-]+)$", re.M
)


def _start(
    data_dir: Path,
    port: int,
    servers: dict[str, str] | None = None,
    *,
    args: tuple[str, ...] = (),
    within: float = 120,
) -> tuple[subprocess.Popen[str], str]:
    env = {
        **os.environ,
        "ZIXLY_DATA_DIR": str(data_dir),
        "ZIXLY_PORT": str(port),
        "ZIXLY_LOG_LEVEL": "WARNING",
        "COLUMNS": "200",
    }
    for key in ("ZIXLY_DATABASE_URL", "ZIXLY_REDIS_URL", "ZIXLY_JWT_SECRET", "ZIXLY_SMTP_HOST"):
        env.pop(key, None)
    env.update(servers or {})
    process = subprocess.Popen(
        [sys.executable, "-m", "zixly.cli.main", "dev", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    output = ""
    deadline = time.monotonic() + within
    while "Zixly is up" not in output:
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"zixly dev exited early:\n{output}")
        output += line
        assert time.monotonic() < deadline, output
    # The lines after "Zixly is up" (URLs) are not needed.
    return process, output


def _stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=60)
    assert process.returncode == 0, rest
    return rest


def _postgres_running(data_dir: Path) -> bool:
    needle = str((data_dir / "pg").resolve())
    for proc in psutil.process_iter(["cmdline"]):
        if needle in " ".join(proc.info["cmdline"] or []):
            return True
    return False


def test_dev_serves_each_printed_token_and_stops_cleanly(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    process, output = _start(data_dir, port)
    try:
        tokens = TOKEN_LINE.findall(output)
        assert [t[0] for t in tokens] == ["STAFF", "ADMIN", "EDITOR", "VIEWER"], output
        assert f"http://127.0.0.1:{port}/graphql" in output
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10) as http:
            assert http.get("/readyz").json()["status"] == "ready"
            for role, email, token in tokens:
                body = http.post(
                    "/graphql",
                    json={"query": "{ me { email role isStaff tenant { slug } } }"},
                    headers={"Authorization": f"Bearer {token}"},
                ).json()
                me = body["data"]["me"]
                assert me["email"] == email
                if role == "STAFF":
                    assert me["isStaff"] is True
                else:
                    assert (me["role"], me["tenant"]["slug"]) == (role, "demo")
            viewer_token = tokens[3][2]
            clients = http.post(
                "/graphql",
                json={"query": "{ clients { nodes { name latestFinancial { recordDate } } } }"},
                headers={"Authorization": f"Bearer {viewer_token}"},
            ).json()["data"]["clients"]["nodes"]
            assert len(clients) >= 3
            assert all(c["latestFinancial"] for c in clients)
    finally:
        _stop(process)
    assert not _postgres_running(data_dir)

    # A second start reuses the data (and the signing key): the old token still works.
    process, _ = _start(data_dir, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            body = http.post(
                "/graphql",
                json={"query": "{ clients { nodes { id } } }"},
                headers={"Authorization": f"Bearer {viewer_token}"},
            ).json()
        assert len(body["data"]["clients"]["nodes"]) == len(clients)
    finally:
        _stop(process)
    assert not _postgres_running(data_dir)


def test_dev_sends_invitation_mail_to_its_mail_sink(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    process, output = _start(data_dir, port)
    try:
        admin = next(token for role, _, token in TOKEN_LINE.findall(output) if role == "ADMIN")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            body = http.post(
                "/graphql",
                json={
                    "query": 'mutation { inviteUser(email: "new@example.test", role: VIEWER) '
                    "{ status } }"
                },
                headers={"Authorization": f"Bearer {admin}"},
            ).json()
        assert body == {"data": {"inviteUser": {"status": "PENDING"}}}
        mails = [message_from_bytes(p.read_bytes()) for p in (data_dir / "mail").glob("*.eml")]
        assert [m["To"] for m in mails] == ["new@example.test"]
        text = mails[0].get_payload(decode=True).decode()
        assert f"http://127.0.0.1:{port}/invitations/accept?token=" in text
    finally:
        _stop(process)


def test_dev_uses_the_servers_named_by_url(tmp_path: Path, endpoints: Endpoints) -> None:
    """With the URLs set, nothing embedded starts: the API runs on those servers."""
    data_dir = tmp_path / "data"
    port = free_port()
    servers = {
        "ZIXLY_DATABASE_URL": endpoints.database_url,
        "ZIXLY_MIGRATIONS_DATABASE_URL": endpoints.migrations_database_url,
        "ZIXLY_REDIS_URL": endpoints.redis_url,
    }
    process, output = _start(data_dir, port, servers)
    try:
        tokens = TOKEN_LINE.findall(output)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            assert http.get("/readyz").json()["status"] == "ready"
            body = http.post(
                "/graphql",
                json={"query": "{ me { email role } }"},
                headers={"Authorization": f"Bearer {tokens[1][2]}"},
            ).json()
        assert body["data"]["me"] == {"email": "admin@demo.zixly.dev", "role": "ADMIN"}
    finally:
        _stop(process)
    assert not (data_dir / "pg").exists()
    assert not (data_dir / "redis").exists()


def test_dev_refuses_a_database_url_without_the_owner_url(
    tmp_path: Path, endpoints: Endpoints
) -> None:
    env = {
        **os.environ,
        "ZIXLY_DATA_DIR": str(tmp_path),
        "ZIXLY_DATABASE_URL": endpoints.database_url,
    }
    env.pop("ZIXLY_MIGRATIONS_DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "zixly.cli.main", "dev"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "ZIXLY_MIGRATIONS_DATABASE_URL is not" in result.stderr


def test_a_killed_dev_leaves_a_stack_the_next_start_adopts_and_stops(tmp_path: Path) -> None:
    """kill -9 leaves PostgreSQL running; the next `zixly dev` adopts it and Ctrl-C stops it."""
    data_dir = tmp_path / "data"
    port = free_port()
    process, _ = _start(data_dir, port)
    process.kill()
    process.communicate(timeout=30)
    assert _postgres_running(data_dir)  # the orphan the next start must take over
    process, output = _start(data_dir, port)
    try:
        viewer = TOKEN_LINE.findall(output)[3][2]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            body = http.post(
                "/graphql",
                json={"query": "{ me { role } }"},
                headers={"Authorization": f"Bearer {viewer}"},
            ).json()
        assert body == {"data": {"me": {"role": "VIEWER"}}}
    finally:
        _stop(process)
    assert not _postgres_running(data_dir)


PROVISION_DEMO = ("tenant", "provision", "demo", "--no-templates")


def _n8n_installed() -> None:
    try:
        ensure_n8n(DEFAULT_N8N_VERSION, install=False)
    except NotInstalledError:
        reason = f"n8n {DEFAULT_N8N_VERSION} is not installed: run `zixly n8n install` first"
        if os.environ.get("ZIXLY_REQUIRE_N8N"):  # CI: a missing install is a failure
            pytest.fail(reason)
        pytest.skip(reason)


def _n8n_pids(data_dir: Path) -> list[int]:
    states = [json.loads(p.read_text()) for p in (data_dir / "n8n").glob("*/state.json")]
    return [int(state["pid"]) for state in states if not state.get("stopped")]


def _cli(data_dir: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """A `zixly` command from another terminal, against the same data directory."""
    return subprocess.run(
        [sys.executable, "-m", "zixly.cli.main", *argv],
        env={**os.environ, "ZIXLY_DATA_DIR": str(data_dir), "ZIXLY_LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_sigterm_stops_the_n8n_a_cli_started_meanwhile_and_says_so(tmp_path: Path) -> None:
    """An n8n instance provisioned from another terminal while `zixly dev` runs is stopped
    with it (its record says STOPPED), and the last lines say what stopped and that nothing
    is left running; one that was running before `zixly dev` started is left running, named
    with the command that stops it, and that command does."""
    _n8n_installed()
    data_dir = tmp_path / "data"
    port = free_port()
    process, _ = _start(data_dir, port)
    try:
        cli = _cli(data_dir, *PROVISION_DEMO)
        assert cli.returncode == 0, cli.stderr
        [pid] = _n8n_pids(data_dir)
        assert psutil.Process(pid).is_running()  # the CLI exited; its n8n did not
    finally:
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=120)
    assert process.returncode == 0, rest
    assert "SIGTERM: stopping everything zixly dev started" in rest
    assert "stopped: n8n of tenant demo" in rest
    assert rest.rstrip().endswith("nothing that zixly dev started is left running"), rest
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert _n8n_pids(data_dir) == []
    assert not _postgres_running(data_dir)
    status = _cli(data_dir, "tenant", "status", "demo", "--events", "0")
    lines = status.stderr.splitlines()
    assert any(line.startswith("instance STOPPED (desired STOPPED") for line in lines), lines

    # Started while no `zixly dev` ran: the next one leaves it running and says how to stop it.
    assert _cli(data_dir, "tenant", "start", "demo").returncode == 0
    [pid] = _n8n_pids(data_dir)
    process, _ = _start(data_dir, port)
    rest = _stop(process)
    assert "left running:\n  n8n of tenant demo (running since before zixly dev started): " in rest
    assert rest.rstrip().endswith("`zixly tenant stop demo`"), rest
    assert psutil.Process(pid).is_running()
    stop = _cli(data_dir, "tenant", "stop", "demo")
    assert stop.returncode == 0, stop.stderr
    assert _n8n_pids(data_dir) == []


def test_ctrl_c_while_starting_stops_what_already_started(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {**os.environ, "ZIXLY_DATA_DIR": str(data_dir), "ZIXLY_PORT": str(free_port())}
    for key in ("ZIXLY_DATABASE_URL", "ZIXLY_REDIS_URL"):
        env.pop(key, None)
    process = subprocess.Popen(
        [sys.executable, "-m", "zixly.cli.main", "dev"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not _postgres_running(data_dir):  # started: migrations and the seed come next
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGINT)  # a second Ctrl-C does not cut the clean-up short
    output, _ = process.communicate(timeout=60)
    assert "Zixly is up" not in output, "started before the signal; nothing was tested"
    assert process.returncode == 130, output
    assert "SIGINT: stopping everything zixly dev started" in output
    assert not _postgres_running(data_dir)
