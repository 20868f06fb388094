"""Enqueueing instance operations by name, with deterministic job ids.

Job ids are deterministic (``provision:<tenant>``, ``upgrade:<tenant>:<version>``...): arq
refuses a job whose id is queued or running, so enqueueing the same operation twice runs it
once. Jobs are named here (``JOB_NAMES``), and the worker registers the job functions of
``zixly.provisioning.jobs`` under these names: nothing that enqueues imports a job function.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from arq import ArqRedis
from arq.jobs import Job

from zixly.provisioning.operations import Operation, template_sources

JOB_NAMES: Mapping[Operation, str] = {
    Operation.PROVISION: "provision_instance",
    Operation.START: "start_instance",
    Operation.STOP: "stop_instance",
    Operation.RESTART: "restart_instance",
    Operation.SUSPEND: "suspend_instance",
    Operation.RESUME: "resume_instance",
    Operation.UPGRADE: "upgrade_instance",
    Operation.DEPLOY_TEMPLATES: "deploy_instance_templates",
    Operation.DEPROVISION: "deprovision_instance",
}


def job_id(operation: Operation, tenant_id: uuid.UUID | str, *parts: str) -> str:
    return ":".join((operation.value, str(tenant_id), *parts))


def templates_digest(templates: Sequence[Any]) -> str:
    """Identifies a template list in a job id (same list: same job)."""
    canonical = json.dumps(list(templates), sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


async def enqueue(
    pool: ArqRedis, operation: Operation, tenant_id: uuid.UUID, **kwargs: Any
) -> Job | None:
    """Enqueue ``operation`` for a tenant (after the request's commit). None: the same
    operation is already queued or running, so nothing new was queued."""
    if kwargs.get("templates") is not None:  # checked now; paths travel as absolute text
        kwargs["templates"] = template_sources(kwargs["templates"])
    return await pool.enqueue_job(
        JOB_NAMES[operation],
        str(tenant_id),
        _job_id=operation_job_id(operation, tenant_id, **kwargs),
        **kwargs,
    )


def operation_job_id(operation: Operation, tenant_id: uuid.UUID, **kwargs: Any) -> str:
    """The id ``enqueue`` gives the job of ``operation`` with these arguments (templates as
    ``template_sources`` keeps them), so whoever finds the same job already queued can still
    wait for it."""
    parts: list[str] = []
    if operation is Operation.UPGRADE:
        parts.append(str(kwargs["version"]))
    if operation is Operation.DEPLOY_TEMPLATES:
        parts.append(templates_digest(kwargs["templates"]))
    return job_id(operation, tenant_id, *parts)
