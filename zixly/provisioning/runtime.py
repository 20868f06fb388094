"""The interface every way of running a tenant's n8n implements (local processes, Docker...).

A runtime knows nothing of the database: the provisioning state machine calls it and the
reconciler compares what ``list_managed``/``inspect`` report with the desired state.
Operations are idempotent: starting a running instance or removing a missing one is a no-op.
"""

from __future__ import annotations

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
