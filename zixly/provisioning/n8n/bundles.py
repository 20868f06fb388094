"""Workflow export bundles: what a customer downloads from their n8n, and validated re-import.

A bundle is an envelope around a list of workflows::

    {"format": "zixly.n8n-bundle", "version": 1, "exportedAt": "...", "n8nVersion": "1.123.81",
     "workflows": [...]}

``bundle["workflows"]`` (``n8n_workflows(bundle)``) is exactly the file format of
``n8n export:workflow --all``, so ``n8n import:workflow --input=<file>`` takes it as it is, and
each element alone is a document for the editor's "Import from File" (which takes one object,
not an array). Each workflow carries what the editor's own download carries: ``id``, ``name``,
``active``, ``nodes``, ``connections``, ``settings``, ``pinData``, ``meta``, ``tags`` (by name
only, which is how both the CLI and the editor match tags), plus ``description``. Left out:

- ``staticData``: runtime state of the source instance (poll cursors, webhook registrations
  with third parties, some of which hold the registration's secret). The editor leaves it out
  too; a re-imported trigger registers itself afresh when it is activated.
- ``meta.instanceId``: a hash derived from the source instance's encryption key.
- ``shared``, ``activeVersion``, timestamps, counters: the public API's view of ownership
  (project names carry the owner's email) and history, meaningless elsewhere.

Nodes reference credentials by ``{"id", "name"}`` only; n8n never stores credential data in a
workflow, and ``_exported_node`` keeps nothing else under ``credentials``. The API key only
ever travels in a request header, never in a body this module reads.

Import (``import_bundle``) accepts the envelope, the bare array, a single workflow object, or
JSON text/bytes of any of these (and the deprovisioning export of ``lifecycle``). Each workflow
is validated on its own and reported with its index, name and a field path; valid ones are
created through the public API, invalid ones are not. Differences from n8n's own CLI import,
all forced by the public API: every workflow gets a new id (the CLI upserts by id, so on the
source instance it overwrites the originals); ``pinData``, ``staticData``, ``description``
and node or settings fields the API's schema does not know are not carried over, and each
imported workflow lists them in ``dropped``. Ids that workflows use to point at each other
(``settings.errorWorkflow``, Execute Workflow nodes) keep their old values.

Imported workflows stay inactive unless ``activate=True``, and then only those that were active
in the export: their credentials may not exist in the target yet. A failed activation leaves
the workflow created and inactive, reported in ``activation_error``. A workflow whose tags
could not be attached is deleted again, so none is left half-imported.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeGuard

from zixly.core.errors import NotFoundError
from zixly.provisioning.n8n.client import N8nClient
from zixly.provisioning.n8n.errors import N8nError, N8nNotFoundError, N8nRejectedError

BUNDLE_FORMAT = "zixly.n8n-bundle"
BUNDLE_VERSION = 1
LIFECYCLE_FORMAT = "zixly.n8n-workflows/v1"  # lifecycle's deprovisioning export; import only
MAX_BUNDLE_BYTES = 5 * 1024 * 1024
MAX_WORKFLOWS = 200
MAX_PROBLEMS_PER_WORKFLOW = 25
MAX_DEPTH = 200
NAME_LIMIT = 128  # n8n's workflow name column
TAG_NAME_LIMIT = 24  # n8n's tag name column

# What n8n 1.123's public API stores for a node and for settings (its OpenAPI schema says
# additionalProperties: false and rejects a whole workflow over one unknown key).
API_NODE_FIELDS = frozenset(
    {
        "id",
        "name",
        "webhookId",
        "disabled",
        "notesInFlow",
        "notes",
        "type",
        "typeVersion",
        "executeOnce",
        "alwaysOutputData",
        "retryOnFail",
        "maxTries",
        "waitBetweenTries",
        "continueOnFail",
        "onError",
        "position",
        "parameters",
        "credentials",
    }
)
API_SETTINGS_FIELDS = frozenset(
    {
        "saveExecutionProgress",
        "saveManualExecutions",
        "saveDataErrorExecution",
        "saveDataSuccessExecution",
        "executionTimeout",
        "errorWorkflow",
        "timezone",
        "executionOrder",
        "callerPolicy",
        "callerIds",
        "timeSavedPerExecution",
        "availableInMCP",
    }
)
# Kept in a bundle but not writable through the public API: reported as dropped on import.
_NOT_IMPORTABLE = ("description", "pinData", "staticData")
_WORKFLOW_ID = re.compile(r"^[A-Za-z0-9_-]{1,36}$")
_API_PATH = re.compile(r"request/body/?(\S*)\s*(.*)")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

PathPart = str | int


class UnknownWorkflowsError(NotFoundError):
    """Some requested workflow ids do not exist in the instance (``ids`` names them all)."""

    def __init__(self, ids: Sequence[str]) -> None:
        super().__init__(f"no such workflow(s): {', '.join(ids)}", ids=list(ids))
        self.ids = list(ids)


@dataclass(frozen=True)
class WorkflowProblem:
    """Why one workflow (``index``; None: the bundle as a whole) cannot be imported.

    ``path`` points into that workflow (``nodes[2].typeVersion``), or into the bundle when
    ``index`` is None.
    """

    index: int | None
    name: str | None
    path: str
    message: str


@dataclass(frozen=True)
class ImportedWorkflow:
    index: int
    name: str
    id: str  # the new id in the target instance
    source_id: str | None
    active: bool
    tags: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()  # paths of bundle fields the public API could not store
    activation_error: str | None = None


@dataclass(frozen=True)
class ImportReport:
    imported: list[ImportedWorkflow] = field(default_factory=list)
    problems: list[WorkflowProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(w.activation_error is None for w in self.imported)


# --- export ---------------------------------------------------------------------------------


async def export_bundle(
    client: N8nClient, ids: Sequence[str] | None = None, *, n8n_version: str | None = None
) -> dict[str, Any]:
    """The instance's workflows (``ids``, in that order; None: all that are not archived)."""
    if ids is None:
        listed = [w for w in await client.all_workflows() if not w.get("isArchived")]
        found = sorted(listed, key=lambda w: (str(w.get("name")), str(w.get("id"))))
    else:
        found = await _fetch(client, ids)
    return envelope([exported_workflow(w) for w in found], n8n_version=n8n_version)


def envelope(workflows: list[dict[str, Any]], *, n8n_version: str | None) -> dict[str, Any]:
    return {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "exportedAt": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "n8nVersion": n8n_version,
        "workflows": workflows,
    }


def n8n_workflows(bundle: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The array for ``n8n import:workflow --input=<file>``."""
    workflows: list[dict[str, Any]] = bundle["workflows"]
    return workflows


def exported_workflow(workflow: Mapping[str, Any]) -> dict[str, Any]:
    """One workflow as the public API returned it, reduced to the export format."""
    out: dict[str, Any] = {
        "id": str(workflow["id"]),
        "name": workflow["name"],
        "active": bool(workflow.get("active")),
        "nodes": [_exported_node(n) for n in workflow.get("nodes") or [] if isinstance(n, dict)],
        "connections": copy.deepcopy(workflow.get("connections") or {}),
        "settings": copy.deepcopy(workflow.get("settings") or {}),
    }
    if workflow.get("description"):
        out["description"] = workflow["description"]
    if workflow.get("pinData"):
        out["pinData"] = copy.deepcopy(workflow["pinData"])
    meta = {k: v for k, v in (workflow.get("meta") or {}).items() if k != "instanceId"}
    if meta:
        out["meta"] = copy.deepcopy(meta)
    tags = workflow.get("tags") or []
    names = {t["name"] for t in tags if isinstance(t, dict) and isinstance(t.get("name"), str)}
    out["tags"] = [{"name": name} for name in sorted(names)]  # n8n lists them in no set order
    return out


def _exported_node(node: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(node))
    credentials = node.get("credentials")
    if isinstance(credentials, dict):
        out["credentials"] = {
            kind: {k: ref[k] for k in ("id", "name") if k in ref}
            for kind, ref in credentials.items()
            if isinstance(ref, dict)
        }
    return out


async def _fetch(client: N8nClient, ids: Sequence[str]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    missing: list[str] = []
    for workflow_id in dict.fromkeys(ids):
        if not _WORKFLOW_ID.match(workflow_id):  # also keeps odd ids out of the URL path
            missing.append(workflow_id)
            continue
        try:
            found.append(await client.get_workflow(workflow_id))
        except N8nNotFoundError:
            missing.append(workflow_id)
    if missing:
        raise UnknownWorkflowsError(missing)
    return found


# --- validation -----------------------------------------------------------------------------


def validate_bundle(bundle: object) -> list[WorkflowProblem]:
    """Every problem of the bundle, per workflow; empty when all of it can be imported."""
    return _read(bundle)[1]


def _read(bundle: object) -> tuple[list[Any] | None, list[WorkflowProblem]]:
    """The workflows and their problems; None when the bundle as a whole is unusable."""
    if isinstance(bundle, (bytes, bytearray, str)):
        size = len(bundle.encode() if isinstance(bundle, str) else bundle)
        if size > MAX_BUNDLE_BYTES:
            return None, [_too_big(size)]
        try:
            bundle = json.loads(bundle, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            return None, [WorkflowProblem(None, None, "", f"not valid JSON: {_short(exc)}")]
    workflows, problem = _unwrap(bundle)
    if workflows is None:
        return None, [problem] if problem else []
    if len(workflows) > MAX_WORKFLOWS:
        message = f"{len(workflows)} workflows; a bundle holds at most {MAX_WORKFLOWS}"
        return None, [WorkflowProblem(None, None, "workflows", message)]
    problems: list[WorkflowProblem] = []
    size = 0
    for index, workflow in enumerate(workflows):
        encoded, junk = _encoded(workflow)
        size += encoded
        found = [junk] if junk else _workflow_problems(workflow)
        name = _name_of(workflow)
        if len(found) > MAX_PROBLEMS_PER_WORKFLOW:
            more = len(found) - MAX_PROBLEMS_PER_WORKFLOW
            found = [*found[:MAX_PROBLEMS_PER_WORKFLOW], ("", f"and {more} more problems")]
        problems.extend(WorkflowProblem(index, name, path, message) for path, message in found)
    if size > MAX_BUNDLE_BYTES:
        return None, [_too_big(size)]
    return workflows, problems


def _unwrap(bundle: object) -> tuple[list[Any] | None, WorkflowProblem | None]:
    if isinstance(bundle, list):
        return bundle, None
    if not isinstance(bundle, dict):
        message = "a bundle is a JSON object or an array of workflows"
        return None, WorkflowProblem(None, None, "", message)
    if "format" not in bundle:
        return [bundle], None  # one workflow, as n8n's import takes it too
    fmt, version = bundle.get("format"), bundle.get("version")
    if fmt == BUNDLE_FORMAT and version != BUNDLE_VERSION:
        message = f"unsupported bundle version {version!r} (this build reads {BUNDLE_VERSION})"
        return None, WorkflowProblem(None, None, "version", message)
    if fmt not in (BUNDLE_FORMAT, LIFECYCLE_FORMAT):
        return None, WorkflowProblem(
            None, None, "format", f"unknown bundle format {str(fmt)[:80]!r}"
        )
    workflows = bundle.get("workflows")
    if not isinstance(workflows, list):
        return None, WorkflowProblem(None, None, "workflows", "must be an array of workflows")
    return workflows, None


def _workflow_problems(workflow: object) -> list[tuple[str, str]]:
    if not isinstance(workflow, dict):
        return [("", "a workflow must be a JSON object")]
    problems: list[tuple[str, str]] = []
    name = workflow.get("name")
    if "name" not in workflow:
        problems.append(("name", "missing"))
    elif not isinstance(name, str) or not name.strip():
        problems.append(("name", "must be a non-empty string"))
    elif _js_length(name) > NAME_LIMIT:
        problems.append(("name", f"longer than {NAME_LIMIT} characters"))
    nodes = workflow.get("nodes")
    names: set[str] = set()
    if not isinstance(nodes, list):
        problems.append(("nodes", "missing" if "nodes" not in workflow else "must be an array"))
    else:
        problems.extend(_node_problems(nodes, names))
    connections = workflow.get("connections")
    if not isinstance(connections, dict):
        missing = "connections" not in workflow
        problems.append(("connections", "missing" if missing else "must be an object"))
    elif isinstance(nodes, list):
        problems.extend(_connection_problems(connections, names))
    for key in ("settings", "pinData", "staticData", "meta"):
        if workflow.get(key) is not None and not isinstance(workflow[key], dict):
            problems.append((key, "must be an object"))
    if "active" in workflow and not isinstance(workflow["active"], bool):
        problems.append(("active", "must be true or false"))
    problems.extend(_tag_problems(workflow.get("tags")))
    return problems


def _node_problems(nodes: list[Any], names: set[str]) -> Iterator[tuple[str, str]]:
    first: dict[str, int] = {}
    for i, node in enumerate(nodes):
        if not isinstance(node, dict):
            yield _path("nodes", i), "a node must be an object"
            continue
        for key in ("name", "type"):
            value = node.get(key)
            if not isinstance(value, str) or not value.strip():
                yield _path("nodes", i, key), "missing" if key not in node else "must be text"
        version = node.get("typeVersion")
        if not _number(version) or version <= 0:
            yield _path("nodes", i, "typeVersion"), "must be a positive number"
        position = node.get("position")
        if not (isinstance(position, list) and len(position) == 2 and all(map(_number, position))):
            yield _path("nodes", i, "position"), "must be an array of two numbers [x, y]"
        for key in ("parameters", "credentials"):
            if key in node and not isinstance(node[key], dict):
                yield _path("nodes", i, key), "must be an object"
        name = node.get("name")
        if isinstance(name, str) and name.strip():
            if name in first:
                yield (
                    _path("nodes", i, "name"),
                    f"{name!r} is also the name of nodes[{first[name]}]",
                )
            first.setdefault(name, i)
            names.add(name)


def _connection_problems(connections: dict[str, Any], names: set[str]) -> Iterator[tuple[str, str]]:
    for source, kinds in connections.items():
        if source not in names:
            yield _path("connections", source), f"no node named {source!r}"
            continue
        if not isinstance(kinds, dict):
            yield _path("connections", source), "must be an object of connection types"
            continue
        for kind, outputs in kinds.items():
            if not isinstance(outputs, list):
                yield _path("connections", source, kind), "must be an array of outputs"
                continue
            for o, targets in enumerate(outputs):
                if targets is None:
                    continue
                if not isinstance(targets, list):
                    yield _path("connections", source, kind, o), "must be an array or null"
                    continue
                for t, target in enumerate(targets):
                    yield from _target_problems(target, names, ("connections", source, kind, o, t))


def _target_problems(
    target: object, names: set[str], at: tuple[PathPart, ...]
) -> Iterator[tuple[str, str]]:
    if not isinstance(target, dict):
        yield _path(*at), "must be an object {node, type, index}"
        return
    node = target.get("node")
    if not isinstance(node, str):
        yield _path(*at, "node"), "must be a node name"
    elif node not in names:
        yield _path(*at, "node"), f"no node named {node!r}"
    if not isinstance(target.get("type"), str):
        yield _path(*at, "type"), "must be text"
    index = target.get("index")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        yield _path(*at, "index"), "must be a whole number >= 0"


def _tag_problems(tags: object) -> Iterator[tuple[str, str]]:
    if tags is None:
        return
    if not isinstance(tags, list):
        yield "tags", "must be an array"
        return
    for i, tag in enumerate(tags):
        name = tag.get("name") if isinstance(tag, dict) else None
        if not isinstance(name, str) or not name.strip():
            yield _path("tags", i, "name"), "must be a non-empty string"
        elif _js_length(name) > TAG_NAME_LIMIT:
            yield _path("tags", i, "name"), f"longer than {TAG_NAME_LIMIT} characters"


# --- import ---------------------------------------------------------------------------------


async def import_bundle(
    client: N8nClient, bundle: object, *, activate: bool = False
) -> ImportReport:
    """Create the bundle's valid workflows as new workflows; report the rest."""
    workflows, problems = _read(bundle)
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
        dropped.extend(_path("nodes", i, k) for k in node if k not in API_NODE_FIELDS)
    settings = dict(workflow.get("settings") or {})
    dropped.extend(_path("settings", k) for k in settings if k not in API_SETTINGS_FIELDS)
    dropped.extend(key for key in _NOT_IMPORTABLE if workflow.get(key))
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
    match = _API_PATH.search(message)
    if not match:
        return "", f"n8n refused the workflow: {message}"
    parts: list[PathPart] = [int(p) if p.isdigit() else p for p in match.group(1).split("/") if p]
    return _path(*parts), f"n8n refused the workflow: {match.group(2) or message}"


# --- helpers --------------------------------------------------------------------------------


def _path(*parts: PathPart) -> str:
    """``nodes[1].name``; keys that are not identifiers are quoted: ``connections["A b"]``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _js_length(text: str) -> int:
    """Length as n8n's validators count it (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


def _name_of(workflow: object) -> str | None:
    name = workflow.get("name") if isinstance(workflow, dict) else None
    return name if isinstance(name, str) else None


def _encoded(workflow: object) -> tuple[int, tuple[str, str] | None]:
    """The workflow's size as JSON, or where it holds something JSON cannot represent."""
    try:
        return len(json.dumps(workflow, allow_nan=False).encode()), None
    except (TypeError, ValueError, RecursionError):
        return 0, _junk(workflow)


def _junk(value: object) -> tuple[str, str]:
    stack: list[tuple[object, tuple[PathPart, ...]]] = [(value, ())]
    while stack:
        item, at = stack.pop()
        if len(at) > MAX_DEPTH:
            return _path(*at), f"nested deeper than {MAX_DEPTH} levels"
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    return _path(*at), f"has a key that is not text: {key!r}"[:200]
                stack.append((child, (*at, key)))
        elif isinstance(item, (list, tuple)):
            stack.extend((child, (*at, i)) for i, child in enumerate(item))
        elif isinstance(item, float) and not math.isfinite(item):
            return _path(*at), f"{item} is not a JSON number"
        elif item is not None and not isinstance(item, (str, int, float, bool)):
            return _path(*at), f"a {type(item).__name__} is not a JSON value"
    return "", "cannot be written as JSON"


def _too_big(size: int) -> WorkflowProblem:
    limit = MAX_BUNDLE_BYTES // (1024 * 1024)
    return WorkflowProblem(None, None, "", f"the bundle is {size} bytes; at most {limit} MB")


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _short(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__)[:200]


__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "ImportReport",
    "ImportedWorkflow",
    "UnknownWorkflowsError",
    "WorkflowProblem",
    "api_body",
    "export_bundle",
    "exported_workflow",
    "import_bundle",
    "n8n_workflows",
    "validate_bundle",
]
