"""Tenant n8n instances as local processes (the embedded default for ``zixly dev``).

Each instance lives in ``<data_dir>/n8n/<tenant_id>/``::

    spec.json    what to run: version, ports, limits, env (holds N8N_ENCRYPTION_KEY: mode 0600)
    state.json   the last start: pid, its create time, port, started_at; stopped / exit code
    n8n.log      stdout and stderr of every start, appended
    user/        N8N_USER_FOLDER (n8n keeps its SQLite database and settings in user/.n8n)

The files make ``inspect`` and ``list_managed`` work across restarts of the control plane.
A pid from ``state.json`` counts as the instance only if that process has the recorded create
time and runs the recorded n8n, so a recycled pid is never mistaken for it.

Every instance loads Zixly's n8n nodes (``zixly/n8n_nodes/package``) through
``N8N_CUSTOM_EXTENSIONS``, as the container image does.

n8n runs in its own session (process group) because it spawns task-runner children; ``stop``
signals the whole group, SIGTERM first and SIGKILL after the grace period. The child gets a
fresh environment (not ours, which holds Zixly's own secrets) with the install's Node first on
PATH, since n8n starts its task runner as plain ``node``. What the environment holds per n8n
version is in zixly.provisioning.n8n.versions.

Limits: ``memory_mb`` caps the V8 heap (``--max-old-space-size``, 3/4 of it); a process runtime
cannot enforce CPU shares, so ``cpus`` is recorded only. Use the container runtime for hard
limits.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from zixly.n8n_nodes.export import PACKAGE_DIR as NODES_PACKAGE_DIR
from zixly.provisioning.n8n.versions import FILES_FOLDER, webhook_env
from zixly.provisioning.n8n.versions import instance_env as version_env
from zixly.provisioning.runtimes.base import (
    InstanceHandle,
    InstanceSpec,
    ResourceLimits,
    RuntimeState,
    RuntimeStatus,
    ThreadedRuntime,
)
from zixly.provisioning.runtimes.distributions import N8nDistribution, ensure_n8n
from zixly.provisioning.runtimes.errors import InstallError, InstanceNotFoundError, RuntimeFailure
from zixly.provisioning.runtimes.locks import LockTimeout, file_lock

LISTEN_ADDRESS = "127.0.0.1"
ENCRYPTION_KEY = "N8N_ENCRYPTION_KEY"
_INSTANCE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_LOCK_TIMEOUT = 120.0

DistributionResolver = Callable[[str], N8nDistribution]


def installed_only(version: str) -> N8nDistribution:
    """The default resolver: use an installed n8n, never install during a start."""
    return ensure_n8n(version, install=False)


class ProcessRuntime(ThreadedRuntime):
    name = "process"

    def __init__(
        self, data_dir: Path, *, distribution: DistributionResolver = installed_only
    ) -> None:
        self.root = (Path(data_dir) / "n8n").resolve()
        self._distribution = distribution
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._children_guard = threading.Lock()

    def version_problem(self, version: str) -> str | None:
        """Why ``version`` cannot start here (zixly.provisioning.preconditions), or None."""
        try:
            self._distribution(version)
        except InstallError as exc:
            return exc.message
        return None

    # --- InstanceRuntime ------------------------------------------------------------------------
    # --- paths and files ------------------------------------------------------------------------
    def instance_dir(self, instance_id: str) -> Path:
        return self.root / instance_id

    def _key(self, handle: InstanceHandle) -> str:
        if handle.runtime != self.name or not _INSTANCE_ID.match(handle.instance_id):
            raise InstanceNotFoundError(f"not a process-runtime instance: {handle.instance_id!r}")
        return handle.instance_id

    @contextlib.contextmanager
    def _locked(self, instance_id: str) -> Iterator[None]:
        try:
            with file_lock(self.root / ".locks" / f"{instance_id}.lock", timeout=_LOCK_TIMEOUT):
                yield
        except LockTimeout as exc:
            raise RuntimeFailure(f"instance {instance_id} is busy (lock held)") from exc

    def _read(self, instance_id: str, name: str) -> dict[str, Any] | None:
        try:
            value = json.loads((self.instance_dir(instance_id) / name).read_text())
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def _write(self, instance_id: str, name: str, value: Mapping[str, Any]) -> None:
        path = self.instance_dir(instance_id) / name
        tmp = path.with_name(f".{name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(value, handle, indent=2)
        tmp.replace(path)

    def _handle(self, spec: Mapping[str, Any]) -> InstanceHandle:
        labels = {str(k): str(v) for k, v in dict(spec.get("labels", {})).items()}
        return InstanceHandle(
            runtime=self.name,
            instance_id=str(spec["instance_id"]),
            tenant_id=str(spec["tenant_id"]),
            labels=labels,
        )

    # --- operations -----------------------------------------------------------------------------
    def _create(self, spec: InstanceSpec) -> InstanceHandle:
        instance_id = spec.tenant_id
        if not _INSTANCE_ID.match(instance_id):
            raise RuntimeFailure(f"tenant id unusable as a directory name: {instance_id!r}")
        if not spec.env.get(ENCRYPTION_KEY):
            raise RuntimeFailure(f"the instance spec must set {ENCRYPTION_KEY} (one per tenant)")
        with self._locked(instance_id):
            directory = self.instance_dir(instance_id)
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            previous = self._read(instance_id, "spec.json") or {}
            user_folder = Path(spec.data_path or directory / "user").resolve()
            user_folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            (user_folder / FILES_FOLDER).mkdir(exist_ok=True, mode=0o700)  # 2.x file nodes
            port = spec.port or previous.get("port") or self._free_port(exclude=instance_id)
            broker = previous.get("broker_port") or self._free_port(
                exclude=instance_id, also={port}
            )
            record = {
                "instance_id": instance_id,
                "tenant_id": spec.tenant_id,
                "tenant_slug": spec.tenant_slug,
                "version": spec.version,
                "env": dict(spec.env),
                "memory_mb": spec.limits.memory_mb,
                "cpus": spec.limits.cpus,
                "port": port,
                "auto_port": spec.port is None,
                "broker_port": broker,
                "user_folder": str(user_folder),
                "labels": spec.labels,
                "created_at": previous.get("created_at") or _now(),
            }
            if record != previous:
                self._write(instance_id, "spec.json", record)
            return self._handle(record)

    def _start(self, instance_id: str) -> RuntimeStatus:
        with self._locked(instance_id):
            status = self._inspect(instance_id)
            if status.state is RuntimeState.MISSING:
                raise InstanceNotFoundError(f"no n8n instance {instance_id}")
            if status.state is RuntimeState.RUNNING:
                return status
            self._kill_leftovers(instance_id)
            spec = self._read(instance_id, "spec.json")
            assert spec is not None
            dist = self._distribution(str(spec["version"]))
            spec = self._ensure_ports(instance_id, spec)
            directory = self.instance_dir(instance_id)
            with open(directory / "n8n.log", "ab") as log:
                log.write(f"--- zixly: starting n8n {dist.version} at {_now()} ---\n".encode())
                log.flush()
                child = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                    dist.command("start"),
                    cwd=spec["user_folder"],
                    env=instance_env(spec, dist),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                created = psutil.Process(child.pid).create_time()
            except psutil.NoSuchProcess:
                created = 0.0
            with self._children_guard:
                self._children[instance_id] = child
            self._write(
                instance_id,
                "state.json",
                {
                    "pid": child.pid,
                    "create_time": created,
                    "n8n_bin": str(dist.n8n_bin),
                    "dist_root": str(dist.root),
                    "version": dist.version,
                    "port": spec["port"],
                    "started_at": _now(),
                    "stopped": False,
                    "exit_code": None,
                },
            )
            return self._inspect(instance_id)

    def _stop(self, instance_id: str, grace: float) -> RuntimeStatus:
        with self._locked(instance_id):
            status = self._inspect(instance_id)
            if status.state is RuntimeState.MISSING:
                return status
            state = self._read(instance_id, "state.json")
            if state is None:
                return status
            code = status.exit_code
            if status.state is RuntimeState.RUNNING:
                code = self._terminate(instance_id, state, grace)
            self._kill_leftovers(instance_id)
            if not state.get("stopped"):
                state.update(stopped=True, exit_code=code, stopped_at=_now())
                self._write(instance_id, "state.json", state)
            return self._inspect(instance_id)

    def _remove(self, instance_id: str, keep_data: bool) -> None:
        if self._read(instance_id, "spec.json") is None:
            return
        self._stop(instance_id, grace=10.0)
        with self._locked(instance_id):
            directory = self.instance_dir(instance_id)
            spec = self._read(instance_id, "spec.json") or {}
            if keep_data:
                for name in ("spec.json", "state.json"):
                    (directory / name).unlink(missing_ok=True)
            else:
                user_folder = Path(str(spec.get("user_folder", directory / "user")))
                if user_folder.exists() and not user_folder.is_relative_to(directory):
                    shutil.rmtree(user_folder)
                shutil.rmtree(directory, ignore_errors=True)
            with self._children_guard:
                self._children.pop(instance_id, None)

    def _inspect(self, instance_id: str) -> RuntimeStatus:
        spec = self._read(instance_id, "spec.json")
        if spec is None:
            return RuntimeStatus(state=RuntimeState.MISSING)
        state = self._read(instance_id, "state.json")
        if state is None:
            return RuntimeStatus(state=RuntimeState.STOPPED)
        url = f"http://{LISTEN_ADDRESS}:{state['port']}"
        started = _parse_time(state.get("started_at"))
        if state.get("stopped"):
            return RuntimeStatus(
                state=RuntimeState.STOPPED,
                url=url,
                started_at=started,
                exit_code=state.get("exit_code"),
            )
        alive, code = self._leader_alive(instance_id, state)
        if alive:
            return RuntimeStatus(
                state=RuntimeState.RUNNING, url=url, pid=int(state["pid"]), started_at=started
            )
        if code is not None and state.get("exit_code") is None:
            state["exit_code"] = code
            self._write(instance_id, "state.json", state)
        return RuntimeStatus(
            state=RuntimeState.EXITED,
            url=url,
            pid=int(state["pid"]),
            started_at=started,
            exit_code=state.get("exit_code"),
        )

    def _logs(self, instance_id: str, tail: int) -> list[str]:
        path = self.instance_dir(instance_id) / "n8n.log"
        if self._read(instance_id, "spec.json") is None:
            raise InstanceNotFoundError(f"no n8n instance {instance_id}")
        if not path.is_file():
            return []
        with open(path, encoding="utf-8", errors="replace") as handle:
            return [line.rstrip("\n") for line in deque(handle, maxlen=max(tail, 0))]

    def _list_managed(self) -> list[InstanceHandle]:
        if not self.root.is_dir():
            return []
        handles = []
        for directory in sorted(self.root.iterdir()):
            if directory.name.startswith(".") or not directory.is_dir():
                continue
            spec = self._read(directory.name, "spec.json")
            if spec is not None:
                handles.append(self._handle(spec))
        return handles

    # --- processes ------------------------------------------------------------------------------
    def _leader_alive(self, instance_id: str, state: Mapping[str, Any]) -> tuple[bool, int | None]:
        """Is the recorded n8n process still running? Else its exit code, when knowable."""
        pid = int(state["pid"])
        with self._children_guard:
            child = self._children.get(instance_id)
        if child is not None and child.pid == pid:
            code = child.poll()
            return (True, None) if code is None else (False, _exit_code(code))
        try:
            process = psutil.Process(pid)
            if abs(process.create_time() - float(state.get("create_time", 0))) > 0.05:
                return False, None  # the pid was recycled
            if process.status() == psutil.STATUS_ZOMBIE:
                return False, None
            return str(state.get("n8n_bin")) in process.cmdline(), None
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False, None

    def _terminate(self, instance_id: str, state: Mapping[str, Any], grace: float) -> int | None:
        pgid = int(state["pid"])
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not self._leader_alive(instance_id, state)[0]:
                break
            time.sleep(0.1)
        else:
            _signal_group(pgid, signal.SIGKILL)
        with self._children_guard:
            child = self._children.get(instance_id)
        if child is not None and child.pid == pgid:
            try:
                return _exit_code(child.wait(timeout=10))
            except subprocess.TimeoutExpired:
                return None
        return None

    def _kill_leftovers(self, instance_id: str) -> None:
        """Kill what is left of a previous run's group (task runners outliving a killed n8n).

        A group id cannot be handed out again while any member lives, and members must also
        run from the recorded n8n tree, so this never hits an unrelated process.
        """
        state = self._read(instance_id, "state.json")
        if state is None:
            return
        members = _group_members(int(state["pid"]), str(state.get("dist_root", "\0")))
        for process in members:
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(members, timeout=5)

    def _ensure_ports(self, instance_id: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Re-pick auto ports another program took meanwhile; a fixed busy port is an error."""
        changed = False
        if not _port_free(int(spec["port"])):
            if not spec.get("auto_port"):
                raise RuntimeFailure(f"port {spec['port']} for instance {instance_id} is in use")
            spec["port"] = self._free_port(exclude=instance_id)
            changed = True
        if not _port_free(int(spec["broker_port"])):
            spec["broker_port"] = self._free_port(exclude=instance_id, also={spec["port"]})
            changed = True
        if changed:
            self._write(instance_id, "spec.json", spec)
        return spec

    def _free_port(self, *, exclude: str, also: set[int] | None = None) -> int:
        """A free loopback port that no other managed instance has reserved."""
        reserved = set(also or ())
        for handle in self._list_managed():
            if handle.instance_id != exclude:
                other = self._read(handle.instance_id, "spec.json") or {}
                reserved.update(int(other[k]) for k in ("port", "broker_port") if other.get(k))
        for _ in range(50):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((LISTEN_ADDRESS, 0))
                port = int(sock.getsockname()[1])
            if port not in reserved:
                return port
        raise RuntimeFailure("no free loopback port found")


def instance_env(spec: Mapping[str, Any], dist: N8nDistribution) -> dict[str, str]:
    """The child's whole environment: defaults < the spec's env < what the runtime owns."""
    version, port = dist.version, int(spec["port"])  # the n8n that runs decides
    env = {"LANG": "C.UTF-8", **version_env(version, user_folder=str(spec["user_folder"]))}
    memory = spec.get("memory_mb")
    if memory:
        env["NODE_OPTIONS"] = f"--max-old-space-size={max(64, int(memory) * 3 // 4)}"
    env.update({str(k): str(v) for k, v in dict(spec.get("env", {})).items()})
    env.update(
        {
            "PATH": os.pathsep.join([str(dist.node_bin.parent), "/usr/local/bin:/usr/bin:/bin"]),
            "HOME": str(spec["user_folder"]),
            "N8N_USER_FOLDER": str(spec["user_folder"]),
            "N8N_LISTEN_ADDRESS": LISTEN_ADDRESS,
            "N8N_HOST": LISTEN_ADDRESS,
            "N8N_PORT": str(port),
            "N8N_PROTOCOL": "http",
            **webhook_env(version, f"http://{LISTEN_ADDRESS}:{port}/"),
            "N8N_RUNNERS_BROKER_LISTEN_ADDRESS": LISTEN_ADDRESS,
            "N8N_RUNNERS_BROKER_PORT": str(spec["broker_port"]),
            # Zixly's community nodes (zixly/n8n_nodes/package) load in every instance; a
            # spec may add directories of its own (n8n splits the variable on ';').
            "N8N_CUSTOM_EXTENSIONS": ";".join(
                filter(None, [str(NODES_PACKAGE_DIR), env.get("N8N_CUSTOM_EXTENSIONS")])
            ),
        }
    )
    return env


def _group_members(pgid: int, dist_root: str) -> list[psutil.Process]:
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) != pgid or process.status() == psutil.STATUS_ZOMBIE:
                continue
            command = process.cmdline()
            # An exiting process no longer shows its command line; the group id suffices.
            if not command or any(dist_root in part for part in command):
                members.append(process)
        except (OSError, psutil.Error):
            continue
    return members


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LISTEN_ADDRESS, port))
        except OSError:
            return False
    return True


def _exit_code(returncode: int) -> int:
    """Popen's -N (killed by signal N) as the shell and Docker report it: 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


__all__ = ["ProcessRuntime", "ResourceLimits", "installed_only", "instance_env"]
