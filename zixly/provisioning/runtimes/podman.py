"""A Podman API service for dev and tests, and the Docker client the ``docker`` runtime uses.

There is no Docker engine on the dev and CI machines; Podman serves the Docker-compatible
Engine API, which the ``docker`` SDK talks to unchanged. With ``DOCKER_HOST`` set (a real
Docker engine, or a Podman service run by someone else) that engine is used as it is.
Otherwise ``podman system service`` is started in the background on a socket under
``<dir>`` (default ``<data_dir>/podman``)::

    containers.conf   runc, cgroupfs and rlimits this sandbox allows (CONTAINERS_CONF)
    podman.sock       the API socket (DOCKER_HOST=unix://<dir>/podman.sock)
    podman.pid        the service's pid and start time, so a later CLI run finds it
    service.log       the service's output

Why the containers.conf: the sandbox has cgroup v1 without CAP_SYS_RESOURCE. crun fails on
cgroup hybrid mode (runc works), there is no systemd (cgroupfs, not the systemd manager),
and rlimits may only be lowered, never raised (hence 4096 open files and processes).
Images and containers live in Podman's normal storage, shared with the ``podman`` CLI.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import docker
import docker.errors
import psutil
import requests

from zixly.core.settings import Settings
from zixly.provisioning.runtimes.errors import RuntimeFailure
from zixly.provisioning.runtimes.locks import file_lock

ULIMIT = 4096  # the highest nofile/nproc a container may ask for here (see containers.conf)
CONTAINERS_CONF = f"""\
# Written by zixly (zixly/provisioning/podman.py); CONTAINERS_CONF points here.
[containers]
default_ulimits = ["nofile={ULIMIT}:{ULIMIT}", "nproc={ULIMIT}:{ULIMIT}"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""
_START_TIMEOUT = 30.0


def default_service_dir() -> Path:
    return (Settings().data_dir / "podman").expanduser().resolve()


def podman_available() -> bool:
    return shutil.which("podman") is not None


def podman_env(directory: Path) -> dict[str, str]:
    """This process's environment plus CONTAINERS_CONF, for podman commands and the service."""
    return {**os.environ, "CONTAINERS_CONF": str(write_containers_conf(directory))}


def write_containers_conf(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "containers.conf"
    if not path.is_file() or path.read_text() != CONTAINERS_CONF:
        path.write_text(CONTAINERS_CONF)
    return path


class PodmanService:
    """``podman system service`` on a private socket; ``start`` reuses a service already there.

    Use as a context manager (tests: started and stopped around the session), or ``start``
    alone (the CLI: the service outlives the command; ``zixly podman stop`` ends it).
    """

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = (directory or default_service_dir()).resolve()
        self.socket = self.directory / "podman.sock"
        self._pid_file = self.directory / "podman.pid"
        self._process: subprocess.Popen[bytes] | None = None  # when this object started it

    @property
    def base_url(self) -> str:
        return f"unix://{self.socket}"

    def client(self, *, timeout: int = 600) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.base_url, timeout=timeout)

    def running(self) -> bool:
        """Does something answer the Engine API on our socket?"""
        if not self.socket.exists():
            return False
        client = docker.DockerClient(base_url=self.base_url, timeout=5)
        try:
            return bool(client.ping())
        except (docker.errors.DockerException, requests.RequestException):
            return False
        finally:
            client.close()

    def pid(self) -> int | None:
        """The recorded service process, if it is still that process."""
        try:
            record = json.loads(self._pid_file.read_text())
            process = psutil.Process(int(record["pid"]))
            if abs(process.create_time() - float(record["create_time"])) > 0.05:
                return None
            return process.pid if process.status() != psutil.STATUS_ZOMBIE else None
        except (OSError, ValueError, KeyError, TypeError, psutil.Error):
            return None

    def start(self, *, timeout: float = _START_TIMEOUT) -> str:
        """Start the service unless one answers already; return its DOCKER_HOST url."""
        podman = shutil.which("podman")
        if podman is None:
            raise RuntimeFailure(
                "podman is not installed (run scripts/ci-setup-podman.sh, or set DOCKER_HOST)"
            )
        with file_lock(self.directory / ".service.lock", timeout=timeout):
            if self.running():
                return self.base_url
            self.socket.unlink(missing_ok=True)  # left by a service that died
            with open(self.directory / "service.log", "ab") as log:
                process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                    [podman, "system", "service", "--time=0", self.base_url],
                    env=podman_env(self.directory),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # outlives the CLI; Ctrl-C does not reach it
                )
            self._process = process
            record = {"pid": process.pid, "create_time": psutil.Process(process.pid).create_time()}
            self._pid_file.write_text(json.dumps(record))
            deadline = time.monotonic() + timeout
            while not self.running():
                if process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeFailure(
                        f"podman system service did not come up (see {self.directory}/service.log)"
                    )
                time.sleep(0.1)
        return self.base_url

    def stop(self, *, grace: float = 10.0) -> bool:
        """Stop the service we started (not one someone else runs); True if one was stopped."""
        pid = self.pid()
        if pid is None:
            return False
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(grace)
            except psutil.TimeoutExpired:
                process.kill()
                process.wait(5)
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(5)  # reap it
            self._process = None
        self._pid_file.unlink(missing_ok=True)
        self.socket.unlink(missing_ok=True)
        return True

    def __enter__(self) -> PodmanService:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def engine_url() -> str:
    """DOCKER_HOST if set, else our Podman service (started if needed)."""
    configured = os.environ.get("DOCKER_HOST")
    if configured:
        return configured
    return PodmanService().start()


def docker_client(*, timeout: int = 600) -> docker.DockerClient:
    """A client for the configured engine; RuntimeFailure if it does not answer."""
    url = engine_url()
    client = docker.DockerClient(base_url=url, timeout=timeout)
    try:
        client.ping()
    except (docker.errors.DockerException, requests.RequestException) as exc:
        client.close()
        raise RuntimeFailure(f"the container engine at {url} does not answer") from exc
    return client


@contextlib.contextmanager
def engine() -> Iterator[docker.DockerClient]:
    client = docker_client()
    try:
        yield client
    finally:
        client.close()


__all__ = [
    "CONTAINERS_CONF",
    "ULIMIT",
    "PodmanService",
    "docker_client",
    "engine",
    "engine_url",
    "podman_available",
    "podman_env",
]
