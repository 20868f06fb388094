"""The interface every way of running a tenant's n8n implements (local processes, Docker...).

A runtime knows nothing of the database: the provisioning state machine calls it and the
reconciler compares what ``list_managed``/``inspect`` report with the desired state.
Operations are idempotent: starting a running instance or removing a missing one is a no-op.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

TENANT_LABEL = "zixly.tenant"
SLUG_LABEL = "zixly.tenant-slug"
VERSION_LABEL = "zixly.n8n-version"


class RuntimeState(enum.StrEnum):
    RUNNING = "RUNNING"  # the process/container is alive (not necessarily serving HTTP yet)
    STOPPED = "STOPPED"  # created, and not running because it was never started or was stopped
    EXITED = "EXITED"  # it was running and died without being stopped (crash, OOM, kill -9)
    MISSING = "MISSING"  # the runtime has no such instance


@dataclass(frozen=True)
class ResourceLimits:
    memory_mb: int | None = None
    cpus: float | None = None


@dataclass(frozen=True)
class InstanceSpec:
    """What to run for one tenant.

    ``env`` holds the instance's secrets (``N8N_ENCRYPTION_KEY``...), so it is kept out of
    the repr.
    """

    tenant_id: str
    tenant_slug: str
    version: str
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    limits: ResourceLimits = ResourceLimits()
    port: int | None = None  # None: the runtime picks a free one
    data_path: Path | None = None  # None: the runtime's default place for this tenant

    @property
    def labels(self) -> dict[str, str]:
        return {
            TENANT_LABEL: self.tenant_id,
            SLUG_LABEL: self.tenant_slug,
            VERSION_LABEL: self.version,
        }


@dataclass(frozen=True)
class InstanceHandle:
    """A runtime's reference to one instance; serialisable (ids only) for jobs."""

    runtime: str
    instance_id: str
    tenant_id: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RuntimeStatus:
    state: RuntimeState
    url: str | None = None
    pid: int | None = None
    container_id: str | None = None
    started_at: datetime | None = None
    exit_code: int | None = None  # None while running, or when the runtime cannot know


@runtime_checkable
class InstanceRuntime(Protocol):
    name: str

    async def create(self, spec: InstanceSpec) -> InstanceHandle:
        """Prepare the instance (data dir / container); the same spec twice is a no-op."""
        ...

    async def start(self, handle: InstanceHandle) -> RuntimeStatus: ...

    async def stop(self, handle: InstanceHandle, *, grace: float = 10.0) -> RuntimeStatus: ...

    async def remove(self, handle: InstanceHandle, *, keep_data: bool = False) -> None: ...

    async def inspect(self, handle: InstanceHandle) -> RuntimeStatus: ...

    async def logs(self, handle: InstanceHandle, tail: int = 100) -> list[str]: ...

    async def list_managed(self) -> list[InstanceHandle]: ...


class ThreadedRuntime:
    """The async ``InstanceRuntime`` over a runtime whose work is blocking (processes and
    files, the docker SDK): each call runs its synchronous ``_method`` in a worker thread.

    Subclasses implement ``_key`` (a handle to the runtime's own instance id, refusing
    handles of other runtimes) and the ``_create`` ... ``_list_managed`` methods.
    """

    name: str

    def _key(self, handle: InstanceHandle) -> str:
        raise NotImplementedError

    def _create(self, spec: InstanceSpec) -> InstanceHandle:
        raise NotImplementedError

    def _start(self, key: str) -> RuntimeStatus:
        raise NotImplementedError

    def _stop(self, key: str, grace: float) -> RuntimeStatus:
        raise NotImplementedError

    def _remove(self, key: str, keep_data: bool) -> None:
        raise NotImplementedError

    def _inspect(self, key: str) -> RuntimeStatus:
        raise NotImplementedError

    def _logs(self, key: str, tail: int) -> list[str]:
        raise NotImplementedError

    def _list_managed(self) -> list[InstanceHandle]:
        raise NotImplementedError

    async def create(self, spec: InstanceSpec) -> InstanceHandle:
        return await asyncio.to_thread(self._create, spec)

    async def start(self, handle: InstanceHandle) -> RuntimeStatus:
        return await asyncio.to_thread(self._start, self._key(handle))

    async def stop(self, handle: InstanceHandle, *, grace: float = 10.0) -> RuntimeStatus:
        return await asyncio.to_thread(self._stop, self._key(handle), grace)

    async def remove(self, handle: InstanceHandle, *, keep_data: bool = False) -> None:
        await asyncio.to_thread(self._remove, self._key(handle), keep_data)

    async def inspect(self, handle: InstanceHandle) -> RuntimeStatus:
        return await asyncio.to_thread(self._inspect, self._key(handle))

    async def logs(self, handle: InstanceHandle, tail: int = 100) -> list[str]:
        return await asyncio.to_thread(self._logs, self._key(handle), tail)

    async def list_managed(self) -> list[InstanceHandle]:
        return await asyncio.to_thread(self._list_managed)
