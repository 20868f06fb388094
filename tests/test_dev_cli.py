"""`zixly dev` as a newcomer runs it: start, use the printed tokens, Ctrl-C, start again."""

from __future__ import annotations

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

from tests.conftest import free_port
from zixly.embedded.stack import Endpoints

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


def _stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=60)
    assert process.returncode == 0, rest


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
