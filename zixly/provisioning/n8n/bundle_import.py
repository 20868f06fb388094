"""Importing a bundle (``bundle_format``) into a tenant's n8n, workflow by workflow.

Valid workflows are created through the public API, invalid ones are not. Differences from
n8n's own CLI import, all forced by the public API: every workflow gets a new id (the CLI
upserts by id, so on the source instance it overwrites the originals); ``pinData``,
``staticData``, ``description`` and node or settings fields the API's schema does not know are
not carried over, and each imported workflow lists them in ``dropped``. Ids that workflows use
to point at each other (``settings.errorWorkflow``, Execute Workflow nodes) keep their old
values.

Imported workflows stay inactive unless ``activate=True``, and then only those that were active
in the export: their credentials may not exist in the target yet. A failed activation leaves
the workflow created and inactive, reported in ``activation_error``. A workflow whose tags
could not be attached is deleted again, so none is left half-imported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from zixly.provisioning.n8n.bundle_format import (
    API_NODE_FIELDS,
    API_PATH,
    API_SETTINGS_FIELDS,
    NOT_IMPORTABLE,
    ImportedWorkflow,
    ImportReport,
    PathPart,
    WorkflowProblem,
    field_path,
    read_bundle,
)
from zixly.provisioning.n8n.client import N8nClient
from zixly.provisioning.n8n.errors import N8nError, N8nRejectedError

# --- import ---------------------------------------------------------------------------------


async def import_bundle(
    client: N8nClient, bundle: object, *, activate: bool = False
) -> ImportReport:
    """Create the bundle's valid workflows as new workflows; report the rest."""
    workflows, problems = read_bundle(bundle)
    report = ImportReport(problems=problems)
    if workflows is None:
        return report
    invalid = {p.index for p in problems}
    tags = _TagResolver(client)
    stopped: str | None = None
    for index, workflow in enumerate(workflows):
        if index in invalid:
            continue
        name = str(workflow["name"])
        if stopped is not None:
            report.problems.append(WorkflowProblem(index, name, "", stopped))
            continue
        try:
            imported = await _import_one(client, tags, index, workflow, activate=activate)
        except _Rejected as exc:
            report.problems.append(WorkflowProblem(index, name, exc.path, exc.message))
            continue
        except N8nError as exc:  # unreachable, unauthorized, a server error: stop here
            report.problems.append(WorkflowProblem(index, name, "", exc.message))
            stopped = f"not attempted: the import stopped at workflow {index} ({exc.message})"
            continue
        report.imported.append(imported)
    return report


class _Rejected(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


async def _import_one(
    client: N8nClient,
    tags: _TagResolver,
    index: int,
    workflow: Mapping[str, Any],
    *,
    activate: bool,
) -> ImportedWorkflow:
    body, dropped = api_body(workflow)
    tag_names = list(dict.fromkeys(t["name"] for t in workflow.get("tags") or []))
    try:
        created = await client.create_workflow(body)
    except N8nRejectedError as exc:
        raise _Rejected(*_rejection(exc.message)) from exc
    new_id = str(created["id"])
    if tag_names:
        try:
            await client.set_workflow_tags(new_id, await tags.ids(tag_names))
        except N8nError as exc:
            raise _Rejected("tags", await _undo(client, new_id, exc)) from exc
    active, activation_error = False, None
    if activate and workflow.get("active") is True:
        try:
            active = bool((await client.activate_workflow(new_id)).get("active", True))
        except N8nError as exc:
            activation_error = exc.message
    source_id = workflow.get("id")
    return ImportedWorkflow(
        index=index,
        name=str(workflow["name"]),
        id=new_id,
        source_id=str(source_id) if source_id is not None else None,
        active=active,
        tags=tuple(tag_names),
        dropped=tuple(dropped),
        activation_error=activation_error,
    )


async def _undo(client: N8nClient, workflow_id: str, cause: N8nError) -> str:
    message = f"the tags could not be attached ({cause.message})"
    try:
        await client.delete_workflow(workflow_id)
    except N8nError as exc:
        return f"{message}; removing workflow {workflow_id} failed too ({exc.message})"
    return f"{message}; the workflow was not kept"


def api_body(workflow: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """What POST /api/v1/workflows accepts of a (validated) workflow, and the dropped paths."""
    dropped: list[str] = []
    nodes = []
    for i, node in enumerate(workflow["nodes"]):
        nodes.append({k: v for k, v in node.items() if k in API_NODE_FIELDS})
        dropped.extend(field_path("nodes", i, k) for k in node if k not in API_NODE_FIELDS)
    settings = dict(workflow.get("settings") or {})
    dropped.extend(field_path("settings", k) for k in settings if k not in API_SETTINGS_FIELDS)
    dropped.extend(key for key in NOT_IMPORTABLE if workflow.get(key))
    body = {
        "name": workflow["name"],
        "nodes": nodes,
        "connections": workflow["connections"],
        "settings": {k: v for k, v in settings.items() if k in API_SETTINGS_FIELDS},
    }
    return body, dropped


class _TagResolver:
    """Tag names to ids in the target instance, creating missing tags (listed once)."""

    def __init__(self, client: N8nClient) -> None:
        self._client = client
        self._known: dict[str, str] | None = None

    async def ids(self, names: Sequence[str]) -> list[str]:
        if not names:
            return []
        if self._known is None:
            self._known = await self._listed()
        for name in names:
            if name not in self._known:
                try:
                    created = await self._client.create_tag(name)
                except N8nRejectedError as exc:
                    if exc.status != 409:  # 409: made meanwhile by someone else
                        raise
                    self._known = await self._listed()
                    if name not in self._known:
                        raise
                else:
                    self._known[name] = str(created["id"])
        return [self._known[name] for name in names]

    async def _listed(self) -> dict[str, str]:
        return {str(t["name"]): str(t["id"]) for t in await self._client.all_tags()}


def _rejection(message: str) -> tuple[str, str]:
    """n8n's "n8n POST /api/v1/workflows: request/body/nodes/0 must ..." as (path, message)."""
    match = API_PATH.search(message)
    if not match:
        return "", f"n8n refused the workflow: {message}"
    parts: list[PathPart] = [int(p) if p.isdigit() else p for p in match.group(1).split("/") if p]
    return field_path(*parts), f"n8n refused the workflow: {match.group(2) or message}"
