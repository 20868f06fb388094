"""The vocabulary of instance operations: the operations and which desired states each may
be requested from (``REQUESTS``), the errors they raise, failure descriptions safe to store,
workflow templates as operations take them, and a row's runtime handle."""

from __future__ import annotations

import enum
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from zixly.core.errors import ConflictError, ValidationError, ZixlyError
from zixly.core.logging import redact_text
from zixly.db.session import Scope
from zixly.provisioning.instances import (
    DesiredState,
    InstanceRow,
    Step,
)
from zixly.provisioning.runtimes.base import (
    InstanceHandle,
)
from zixly.provisioning.templates import (
    bundled_manifest,
    template_id,
)

STAFF = Scope(tenant_id=None, staff=True)
ERROR_LIMIT = 500

Template = str | Path | Mapping[str, Any]
StepHook = Callable[[uuid.UUID, Step], Awaitable[None]]


class Operation(enum.StrEnum):
    PROVISION = "provision"
    START = "start"
    STOP = "stop"
    RESTART = "restart"
    SUSPEND = "suspend"
    RESUME = "resume"
    UPGRADE = "upgrade"
    DEPLOY_TEMPLATES = "deploy_templates"
    DEPROVISION = "deprovision"


_R, _S, _P, _A = (
    DesiredState.RUNNING,
    DesiredState.STOPPED,
    DesiredState.SUSPENDED,
    DesiredState.ABSENT,
)
# operation -> (desired states it may be requested from, the desired state it asks for).
# A suspended instance (billing hold) is left only by ``resume``; an instance being removed
# only by a new ``provision`` once it is DEPROVISIONED.
REQUESTS: Mapping[Operation, tuple[frozenset[DesiredState], DesiredState]] = {
    Operation.PROVISION: (frozenset({_R, _S}), _R),
    Operation.START: (frozenset({_R, _S}), _R),
    Operation.RESTART: (frozenset({_R, _S}), _R),
    Operation.STOP: (frozenset({_R, _S}), _S),
    Operation.SUSPEND: (frozenset({_R, _S, _P}), _P),
    Operation.RESUME: (frozenset({_R, _P}), _R),
    Operation.UPGRADE: (frozenset({_R}), _R),
    Operation.DEPLOY_TEMPLATES: (frozenset({_R}), _R),
    Operation.DEPROVISION: (frozenset({_R, _S, _P, _A}), _A),
}


class InstanceBusyError(ConflictError):
    """Another operation holds this tenant's instance lock."""

    code = "INSTANCE_BUSY"


class HealthCheckError(ZixlyError):
    """A started instance did not become healthy (it exited, or never answered)."""

    code = "INSTANCE_UNHEALTHY"
    http_status = 503


def describe(exc: BaseException) -> str:
    """A message safe to store and show: our errors' own messages (which never carry
    secrets), only the type of anything else."""
    if isinstance(exc, ZixlyError):
        text = f"{exc.code}: {exc.message}"
    else:
        text = type(exc).__name__
    return redact_text(text)[:ERROR_LIMIT]


def load_templates(sources: Sequence[Template]) -> list[dict[str, Any]]:
    """Workflow exports from JSON files or given as dicts; names must be unique (across the
    manifest templates, ``manifest:<id>``, too, which are rendered at deploy instead)."""
    loaded: list[dict[str, Any]] = []
    names: list[str] = []
    for source in sources:
        manifest_id = template_id(source)
        if manifest_id is not None:  # an unknown id raises TemplateError (a ValidationError)
            names.append(bundled_manifest().get(manifest_id).name)
            continue
        if isinstance(source, Mapping):
            workflow: Any = json.loads(json.dumps(source))
        else:
            try:
                workflow = json.loads(Path(source).read_text())
            except (OSError, ValueError) as exc:
                raise ValidationError(
                    f"workflow template {Path(source).name!r} is not a readable JSON file",
                    field="templates",
                ) from exc
        if not isinstance(workflow, dict) or not workflow.get("name"):
            raise ValidationError("a workflow template needs a name", field="templates")
        loaded.append(workflow)
    names += [str(w["name"]) for w in loaded]
    if len(set(names)) != len(names):
        raise ValidationError("workflow template names must be unique", field="templates")
    return loaded


def template_sources(sources: Sequence[Template]) -> list[Any]:
    """What the row keeps to redeploy later: absolute paths, the workflow JSON itself, or
    ``manifest:<id>`` (rendered for the tenant at each deploy)."""
    load_templates(sources)  # validate now rather than in the job
    return [_kept(s) for s in sources]


def _kept(source: Template) -> Any:
    if isinstance(source, Mapping):
        return json.loads(json.dumps(source))
    return source if template_id(source) is not None else str(Path(source).resolve())


def handle_of(row: InstanceRow) -> InstanceHandle | None:
    if not row.runtime_handle:
        return None
    stored = row.runtime_handle
    return InstanceHandle(
        runtime=str(stored["runtime"]),
        instance_id=str(stored["instance_id"]),
        tenant_id=str(stored["tenant_id"]),
        labels={str(k): str(v) for k, v in dict(stored.get("labels", {})).items()},
    )
