"""What must hold before an operation touches a running instance.

An upgrade stops the instance to start the new version, so everything the new version needs
is checked first, while the old version still runs: for the process runtime, that n8n is
installed in that version; for the container runtime, that its image is present (pulled
first where the runtime may pull). A failed check is a typed client error
(``N8N_VERSION_UNAVAILABLE``) and the instance is left exactly as it was.

A runtime opts in by having ``version_problem(version)``: what is missing (a sentence), or
None when the version can run. A runtime without it is trusted to fail safely itself.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, runtime_checkable

from zixly.core.errors import ValidationError


class VersionUnavailableError(ValidationError):
    """The n8n version asked for cannot run here (not installed, no image)."""

    code = "N8N_VERSION_UNAVAILABLE"


@runtime_checkable
class ChecksVersions(Protocol):
    def version_problem(self, version: str) -> str | None: ...


async def ensure_version_runs(runtime: object, version: str) -> None:
    """Raise ``VersionUnavailableError`` unless ``runtime`` can start ``version``."""
    if not isinstance(runtime, ChecksVersions):
        return
    problem = await asyncio.to_thread(runtime.version_problem, version)
    if problem is not None:
        raise VersionUnavailableError(problem, field="version", version=version)
