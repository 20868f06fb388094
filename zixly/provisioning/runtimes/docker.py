"""Tenant n8n instances as containers, through the Docker Engine API (Docker, or Podman's).

Per tenant (``<p>`` is the runtime's ``prefix``, default ``zixly-``)::

    container  <p>n8n-<slug>   the n8n image for spec.version, port 5678 published on
                                127.0.0.1:<free host port> only
    network    <p>net-<slug>   its own bridge: tenants cannot reach each other's n8n
    volume     <p>n8n-<slug>   /home/node/.n8n (n8n's SQLite database, settings, keys)

Everything carries ``zixly.managed=true`` and the runtime's ``zixly.deployment`` label, which
``list_managed`` filters on, plus the spec's tenant labels. The spec's env (it holds
``N8N_ENCRYPTION_KEY``) goes into the container's environment only: never into labels, log
lines or error messages. ``zixly.env-keys`` lists the variable *names*, and
``zixly.config-digest`` hashes the rest of the configuration, so ``create`` can tell whether
an existing container still matches its spec. A container that does not is replaced
(stopped if it runs, then created anew on the same volume and port): that is how a version
upgrade or a limit change is rolled out; the caller starts it again.

States: ``created`` is STOPPED; ``running``, ``restarting`` and ``paused`` are RUNNING;
a container that ended with exit code 0 (or 143, SIGTERM) shut down cleanly, as ``stop``
makes it, and is STOPPED; any other exit (137: killed or out of memory; 1: crashed) is
EXITED. The engine does not record who stopped a container, so an n8n that exits 0 by
itself also reads as STOPPED.

Restart policy ``on-failure`` with a few retries, not ``always``: the engine then absorbs a
crash burst, but an instance that keeps failing ends EXITED and the reconciler, which owns
the desired state, decides what happens next (and reports it); with ``always`` the engine
would loop a broken instance forever and restart instances the control plane had stopped.

Limits: ``memory_mb`` is the cgroup memory limit (no swap on top; Node sizes its heap from
the cgroup limit), ``cpus`` becomes ``nano_cpus``; open files and processes are capped at
4096 (Podman here may only lower rlimits), and the container gets at most ``pids_limit``
processes, no capabilities and no-new-privileges.

The image's HEALTHCHECK is repeated on the container (a node one-liner: minbase images have
no curl), so both the local image and the official one are checked the same way. Podman runs
healthchecks from systemd timers; without systemd (this sandbox) the status stays
``starting``, so nothing here depends on it: ``health`` reports it for display only.

The docker SDK is synchronous: every call runs in a worker thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import socket
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import docker
import docker.errors
import requests
from docker.models.containers import Container
from docker.types import Ulimit

from zixly.core.errors import ZixlyError
from zixly.core.logging import redact_text
from zixly.provisioning.n8n.versions import instance_env, webhook_env
from zixly.provisioning.runtimes.base import (
    TENANT_LABEL,
    InstanceHandle,
    InstanceSpec,
    RuntimeState,
    RuntimeStatus,
    ThreadedRuntime,
)
from zixly.provisioning.runtimes.errors import InstanceNotFoundError, RuntimeFailure
from zixly.provisioning.runtimes.podman import ULIMIT
from zixly.provisioning.runtimes.process import ENCRYPTION_KEY, LISTEN_ADDRESS

MANAGED_LABEL = "zixly.managed"
DEPLOYMENT_LABEL = "zixly.deployment"
ENV_KEYS_LABEL = "zixly.env-keys"
DIGEST_LABEL = "zixly.config-digest"
DEFAULT_IMAGE = "localhost/zixly/n8n:{version}"
CONTAINER_PORT = 5678
DATA_MOUNT = "/home/node/.n8n"
USER_FOLDER = "/home/node"  # n8n keeps its data in <N8N_USER_FOLDER>/.n8n
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")
_CLEAN_EXIT = (0, 143)  # exited by itself, or on stop's SIGTERM without handling it
_RUNNING = ("running", "restarting", "paused")
_SECONDS_DIGITS = re.compile(r"(\.\d{6})\d+")
_ZERO_TIME = "0001-01-01"

HEALTHCHECK_SCRIPT = (
    "require('http').get({host:'127.0.0.1',port:process.env.N8N_PORT||5678,"
    "path:'/healthz/readiness',timeout:4000},"
    "r=>process.exit(r.statusCode===200?0:1)).on('error',()=>process.exit(1))"
)


@contextlib.contextmanager
def engine_errors(action: str, *, failure: type[ZixlyError] = RuntimeFailure) -> Iterator[None]:
    """docker SDK and connection errors -> our errors; messages without request details."""
    try:
        yield
    except docker.errors.ImageNotFound as exc:
        raise failure(f"{action}: image not found ({_explain(exc)})") from exc
    except docker.errors.NotFound as exc:
        raise InstanceNotFoundError(f"{action}: not found ({_explain(exc)})") from exc
    except docker.errors.APIError as exc:
        raise failure(f"{action}: the container engine refused: {_explain(exc)}") from exc
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise failure(f"{action}: the container engine does not answer") from exc


def _explain(exc: docker.errors.APIError) -> str:
    return redact_text(str(exc.explanation or exc.status_code or "no details"))[:300]


class DockerRuntime(ThreadedRuntime):
    name = "docker"

    def __init__(
        self,
        client: docker.DockerClient,
        *,
        image: str = DEFAULT_IMAGE,
        prefix: str = "zixly-",
        deployment: str = "default",
        pull_missing: bool = False,
        restart_retries: int = 3,
        pids_limit: int = 512,
        ulimit: int = ULIMIT,
    ) -> None:
        self.client = client
        self.image = image  # "{version}" is replaced by the spec's n8n version
        self.prefix = prefix
        self.deployment = deployment
        self.pull_missing = pull_missing
        self.restart_retries = restart_retries
        self.pids_limit = pids_limit
        self.ulimit = ulimit

    # --- InstanceRuntime ------------------------------------------------------------------------
    async def health(self, handle: InstanceHandle) -> str | None:
        """The engine's healthcheck status (display only: see the module docstring)."""
        return await asyncio.to_thread(self._health, self._key(handle))

    # --- names ----------------------------------------------------------------------------------
    def container_name(self, slug: str) -> str:
        return f"{self.prefix}n8n-{slug}"

    def network_name(self, slug: str) -> str:
        return f"{self.prefix}net-{slug}"

    def volume_name(self, slug: str) -> str:
        return f"{self.prefix}n8n-{slug}"

    def _key(self, handle: InstanceHandle) -> str:
        slug = handle.instance_id.removeprefix(self.container_name(""))
        if handle.runtime != self.name or slug == handle.instance_id or not _SLUG.match(slug):
            raise InstanceNotFoundError(f"not a docker-runtime instance: {handle.instance_id!r}")
        return handle.instance_id

    def _slug(self, name: str) -> str:
        return name.removeprefix(self.container_name(""))

    def _owned_labels(self) -> dict[str, str]:
        return {MANAGED_LABEL: "true", DEPLOYMENT_LABEL: self.deployment}

    def _handle(self, container: Container) -> InstanceHandle:
        labels = {k: v for k, v in (container.labels or {}).items() if k.startswith("zixly.")}
        return InstanceHandle(
            runtime=self.name,
            instance_id=str(container.name),
            tenant_id=labels.get(TENANT_LABEL, ""),
            labels=labels,
        )

    # --- operations -----------------------------------------------------------------------------
    def _create(self, spec: InstanceSpec) -> InstanceHandle:
        if not _SLUG.match(spec.tenant_slug):
            raise RuntimeFailure(f"tenant slug unusable in container names: {spec.tenant_slug!r}")
        if not spec.env.get(ENCRYPTION_KEY):
            raise RuntimeFailure(f"the instance spec must set {ENCRYPTION_KEY} (one per tenant)")
        if spec.data_path is not None:
            raise RuntimeFailure("the docker runtime keeps n8n's data in a named volume")
        name = self.container_name(spec.tenant_slug)
        with engine_errors(f"creating {name}"):
            image = self._ensure_image(spec.version)
            existing = self._find(name)
            port = spec.port or _published_port(existing) or self._free_port(exclude=name)
            config = self._config(spec, image, port)
            if existing is not None:
                if _matches(existing, config):
                    return self._handle(existing)
                _discard(existing)  # replaced: the volume keeps the data
            self._ensure_network(spec)
            self._ensure_volume(spec)
            with _unless_conflict():  # a concurrent create won the name: use its container
                self.client.containers.create(**config)
            return self._handle(self.client.containers.get(name))

    def _start(self, name: str) -> RuntimeStatus:
        with engine_errors(f"starting {name}"):
            container = self.client.containers.get(name)
            if container.status not in _RUNNING:
                container.start()
        return self._inspect(name)

    def _stop(self, name: str, grace: float) -> RuntimeStatus:
        with engine_errors(f"stopping {name}"):
            container = self._find(name)
            if container is not None and container.status in _RUNNING:
                container.stop(timeout=max(1, round(grace)))
        return self._inspect(name)

    def _remove(self, name: str, keep_data: bool) -> None:
        slug = self._slug(name)
        with engine_errors(f"removing {name}"):
            container = self._find(name)
            if container is not None:
                _discard(container)
            with contextlib.suppress(docker.errors.NotFound):
                self.client.networks.get(self.network_name(slug)).remove()
            if not keep_data:
                with contextlib.suppress(docker.errors.NotFound):
                    self.client.volumes.get(self.volume_name(slug)).remove()

    def _inspect(self, name: str) -> RuntimeStatus:
        with engine_errors(f"inspecting {name}"):
            container = self._find(name)
        if container is None:
            return RuntimeStatus(state=RuntimeState.MISSING)
        state: Mapping[str, Any] = container.attrs.get("State") or {}
        port = _published_port(container)
        common: dict[str, Any] = {
            "url": f"http://{LISTEN_ADDRESS}:{port}" if port else None,
            "container_id": container.id,
            "started_at": _parse_time(state.get("StartedAt")),
        }
        status = str(state.get("Status") or container.status)
        if status in _RUNNING:
            return RuntimeStatus(
                state=RuntimeState.RUNNING, pid=int(state.get("Pid") or 0) or None, **common
            )
        if status in ("created", "configured"):
            return RuntimeStatus(state=RuntimeState.STOPPED, **common)
        code = int(state.get("ExitCode") or 0)
        kind = RuntimeState.STOPPED if code in _CLEAN_EXIT else RuntimeState.EXITED
        return RuntimeStatus(state=kind, exit_code=code, **common)

    def _logs(self, name: str, tail: int) -> list[str]:
        with engine_errors(f"reading the logs of {name}"):
            raw = self.client.containers.get(name).logs(stdout=True, stderr=True, tail=max(tail, 0))
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        return text.splitlines()

    def _list_managed(self) -> list[InstanceHandle]:
        filters = {"label": [f"{k}={v}" for k, v in self._owned_labels().items()]}
        with engine_errors("listing managed instances"):
            containers = self.client.containers.list(all=True, filters=filters)
        prefix = self.container_name("")
        handles = [self._handle(c) for c in containers if str(c.name).startswith(prefix)]
        return sorted(handles, key=lambda h: h.instance_id)

    def _health(self, name: str) -> str | None:
        with engine_errors(f"inspecting {name}"):
            state = self.client.containers.get(name).attrs.get("State") or {}
        health = state.get("Health") or {}
        return str(health["Status"]) if health.get("Status") else None

    # --- engine objects -------------------------------------------------------------------------
    def _find(self, name: str) -> Container | None:
        try:
            container: Container = self.client.containers.get(name)
        except docker.errors.NotFound:
            return None
        return container

    def version_problem(self, version: str) -> str | None:
        """Why ``version`` cannot start here (zixly.provisioning.preconditions), or None:
        its image is present, or pulled now where pulling is allowed."""
        try:
            self._ensure_image(version)
        except RuntimeFailure as exc:
            return exc.message
        except docker.errors.APIError as exc:
            return (
                f"image {self.image.format(version=version)} could not be pulled ({_explain(exc)})"
            )
        return None

    def _ensure_image(self, version: str) -> str:
        image = self.image.format(version=version)
        try:
            self.client.images.get(image)
        except docker.errors.ImageNotFound as exc:
            if not self.pull_missing:
                raise RuntimeFailure(
                    f"image {image} is not available (build it: `zixly n8n image --version "
                    f"{version}`, or pull it)"
                ) from exc
            self.client.images.pull(image)
        return image

    def _ensure_network(self, spec: InstanceSpec) -> None:
        name = self.network_name(spec.tenant_slug)
        try:
            self.client.networks.get(name)
        except docker.errors.NotFound:
            with _unless_conflict():  # a concurrent create made it
                self.client.networks.create(
                    name,
                    driver="bridge",
                    check_duplicate=True,
                    labels={**spec.labels, **self._owned_labels()},
                )

    def _ensure_volume(self, spec: InstanceSpec) -> None:
        name = self.volume_name(spec.tenant_slug)
        try:
            self.client.volumes.get(name)
        except docker.errors.NotFound:
            self.client.volumes.create(name, labels={**spec.labels, **self._owned_labels()})

    def _config(self, spec: InstanceSpec, image: str, port: int) -> dict[str, Any]:
        """Keyword arguments of ``containers.create``; the labels carry the digest of the rest."""
        env = {
            "LANG": "C.UTF-8",
            **instance_env(spec.version, user_folder=USER_FOLDER),
            **webhook_env(spec.version, f"http://{LISTEN_ADDRESS}:{port}/"),
            **{str(k): str(v) for k, v in spec.env.items()},
            # The runtime owns where n8n listens and keeps its data.
            "N8N_PORT": str(CONTAINER_PORT),
            "N8N_LISTEN_ADDRESS": "0.0.0.0",  # noqa: S104 - inside the container's namespace
            "N8N_PROTOCOL": "http",
            "N8N_USER_FOLDER": USER_FOLDER,
            "HOME": USER_FOLDER,
        }
        limits: dict[str, Any] = {}
        if spec.limits.memory_mb:
            limits["mem_limit"] = limits["memswap_limit"] = f"{spec.limits.memory_mb}m"
        if spec.limits.cpus:
            limits["nano_cpus"] = int(spec.limits.cpus * 1_000_000_000)
        slug = spec.tenant_slug
        config: dict[str, Any] = {
            "image": image,
            "name": self.container_name(slug),
            "hostname": f"n8n-{slug}",
            "environment": env,
            "network": self.network_name(slug),
            "ports": {f"{CONTAINER_PORT}/tcp": (LISTEN_ADDRESS, port)},
            "volumes": {self.volume_name(slug): {"bind": DATA_MOUNT, "mode": "rw"}},
            "restart_policy": {"Name": "on-failure", "MaximumRetryCount": self.restart_retries},
            "ulimits": [
                Ulimit(name="nofile", soft=self.ulimit, hard=self.ulimit),
                Ulimit(name="nproc", soft=self.ulimit, hard=self.ulimit),
            ],
            "pids_limit": self.pids_limit,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "healthcheck": {
                "test": ["CMD", "node", "-e", HEALTHCHECK_SCRIPT],
                "interval": 10_000_000_000,
                "timeout": 5_000_000_000,
                "start_period": 60_000_000_000,
                "retries": 3,
            },
            **limits,
        }
        digest = _digest({k: v for k, v in config.items() if k not in ("environment", "ulimits")})
        config["labels"] = {
            **spec.labels,
            **self._owned_labels(),
            ENV_KEYS_LABEL: ",".join(sorted(env)),
            DIGEST_LABEL: digest,
        }
        return config

    def _free_port(self, *, exclude: str) -> int:
        """A free loopback port that no other managed container has published."""
        reserved = {
            port
            for c in self.client.containers.list(
                all=True, filters={"label": f"{MANAGED_LABEL}=true"}
            )
            if c.name != exclude and (port := _published_port(c))
        }
        for _ in range(50):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((LISTEN_ADDRESS, 0))
                port = int(sock.getsockname()[1])
            if port not in reserved:
                return port
        raise RuntimeFailure("no free loopback port found")


def _discard(container: Container) -> None:
    """Remove a container, shutting n8n down cleanly first (SQLite; n8n waits 10 s at its
    next start after a crash)."""
    if container.status in _RUNNING:
        container.stop(timeout=10)
    container.remove(force=True, v=False)


@contextlib.contextmanager
def _unless_conflict() -> Iterator[None]:
    try:
        yield
    except docker.errors.APIError as exc:
        if exc.status_code != 409:
            raise


def _matches(container: Container, config: Mapping[str, Any]) -> bool:
    """Same digest, same variable names, and each value as the spec wants it."""
    labels = container.labels or {}
    wanted = config["labels"]
    if any(labels.get(k) != wanted[k] for k in (DIGEST_LABEL, ENV_KEYS_LABEL)):
        return False
    actual = dict(
        item.split("=", 1) for item in (container.attrs.get("Config") or {}).get("Env") or []
    )
    return all(actual.get(k) == v for k, v in config["environment"].items())


def _published_port(container: Container | None) -> int | None:
    if container is None:
        return None
    bindings = (container.attrs.get("HostConfig") or {}).get("PortBindings") or {}
    for binding in bindings.get(f"{CONTAINER_PORT}/tcp") or []:
        if str(binding.get("HostPort") or "").isdigit():
            return int(binding["HostPort"])
    return None


def _digest(value: Mapping[str, Any]) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _parse_time(value: object) -> datetime | None:
    """RFC 3339 with nanoseconds (what engines send) -> datetime; the zero time -> None."""
    if not isinstance(value, str) or not value or value.startswith(_ZERO_TIME):
        return None
    text = _SECONDS_DIGITS.sub(r"\1", value.replace("Z", "+00:00"))
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


__all__ = [
    "DEFAULT_IMAGE",
    "DEPLOYMENT_LABEL",
    "MANAGED_LABEL",
    "DockerRuntime",
    "engine_errors",
]
