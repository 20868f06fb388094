"""Workflow export bundles: their format, limits, report types and validation.

A bundle is an envelope around a list of workflows::

    {"format": "zixly.n8n-bundle", "version": 1, "exportedAt": "...", "n8nVersion": "1.123.81",
     "workflows": [...]}

``bundle["workflows"]`` (``n8n_workflows(bundle)``) is exactly the file format of
``n8n export:workflow --all``, so ``n8n import:workflow --input=<file>`` takes it as it is, and
each element alone is a document for the editor's "Import from File". ``bundle_export`` makes
bundles from a tenant's n8n, ``bundle_import`` creates validated workflows from one.

``validate_bundle`` accepts the envelope, the bare array, a single workflow object, or JSON
text/bytes of any of these (and the lifecycle's deprovisioning export). Each workflow is
validated on its own and reported with its index, name and a field path.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from zixly.core.errors import NotFoundError

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
NOT_IMPORTABLE = ("description", "pinData", "staticData")
WORKFLOW_ID = re.compile(r"^[A-Za-z0-9_-]{1,36}$")
API_PATH = re.compile(r"request/body/?(\S*)\s*(.*)")
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


# --- validation -----------------------------------------------------------------------------


def validate_bundle(bundle: object) -> list[WorkflowProblem]:
    """Every problem of the bundle, per workflow; empty when all of it can be imported."""
    return read_bundle(bundle)[1]


def read_bundle(bundle: object) -> tuple[list[Any] | None, list[WorkflowProblem]]:
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
            yield field_path("nodes", i), "a node must be an object"
            continue
        for key in ("name", "type"):
            value = node.get(key)
            if not isinstance(value, str) or not value.strip():
                yield field_path("nodes", i, key), "missing" if key not in node else "must be text"
        version = node.get("typeVersion")
        if not _number(version) or version <= 0:
            yield field_path("nodes", i, "typeVersion"), "must be a positive number"
        position = node.get("position")
        if not (isinstance(position, list) and len(position) == 2 and all(map(_number, position))):
            yield field_path("nodes", i, "position"), "must be an array of two numbers [x, y]"
        for key in ("parameters", "credentials"):
            if key in node and not isinstance(node[key], dict):
                yield field_path("nodes", i, key), "must be an object"
        name = node.get("name")
        if isinstance(name, str) and name.strip():
            if name in first:
                yield (
                    field_path("nodes", i, "name"),
                    f"{name!r} is also the name of nodes[{first[name]}]",
                )
            first.setdefault(name, i)
            names.add(name)


def _connection_problems(connections: dict[str, Any], names: set[str]) -> Iterator[tuple[str, str]]:
    for source, kinds in connections.items():
        if source not in names:
            yield field_path("connections", source), f"no node named {source!r}"
            continue
        if not isinstance(kinds, dict):
            yield field_path("connections", source), "must be an object of connection types"
            continue
        for kind, outputs in kinds.items():
            if not isinstance(outputs, list):
                yield field_path("connections", source, kind), "must be an array of outputs"
                continue
            for o, targets in enumerate(outputs):
                if targets is None:
                    continue
                if not isinstance(targets, list):
                    yield field_path("connections", source, kind, o), "must be an array or null"
                    continue
                for t, target in enumerate(targets):
                    yield from _target_problems(target, names, ("connections", source, kind, o, t))


def _target_problems(
    target: object, names: set[str], at: tuple[PathPart, ...]
) -> Iterator[tuple[str, str]]:
    if not isinstance(target, dict):
        yield field_path(*at), "must be an object {node, type, index}"
        return
    node = target.get("node")
    if not isinstance(node, str):
        yield field_path(*at, "node"), "must be a node name"
    elif node not in names:
        yield field_path(*at, "node"), f"no node named {node!r}"
    if not isinstance(target.get("type"), str):
        yield field_path(*at, "type"), "must be text"
    index = target.get("index")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        yield field_path(*at, "index"), "must be a whole number >= 0"


def _tag_problems(tags: object) -> Iterator[tuple[str, str]]:
    if tags is None:
        return
    if not isinstance(tags, list):
        yield "tags", "must be an array"
        return
    for i, tag in enumerate(tags):
        name = tag.get("name") if isinstance(tag, dict) else None
        if not isinstance(name, str) or not name.strip():
            yield field_path("tags", i, "name"), "must be a non-empty string"
        elif _js_length(name) > TAG_NAME_LIMIT:
            yield field_path("tags", i, "name"), f"longer than {TAG_NAME_LIMIT} characters"


# --- helpers --------------------------------------------------------------------------------


def field_path(*parts: PathPart) -> str:
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
            return field_path(*at), f"nested deeper than {MAX_DEPTH} levels"
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    return field_path(*at), f"has a key that is not text: {key!r}"[:200]
                stack.append((child, (*at, key)))
        elif isinstance(item, (list, tuple)):
            stack.extend((child, (*at, i)) for i, child in enumerate(item))
        elif isinstance(item, float) and not math.isfinite(item):
            return field_path(*at), f"{item} is not a JSON number"
        elif item is not None and not isinstance(item, (str, int, float, bool)):
            return field_path(*at), f"a {type(item).__name__} is not a JSON value"
    return "", "cannot be written as JSON"


def _too_big(size: int) -> WorkflowProblem:
    limit = MAX_BUNDLE_BYTES // (1024 * 1024)
    return WorkflowProblem(None, None, "", f"the bundle is {size} bytes; at most {limit} MB")


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _short(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__)[:200]


__all__ = [
    "API_NODE_FIELDS",
    "API_SETTINGS_FIELDS",
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "ImportReport",
    "ImportedWorkflow",
    "UnknownWorkflowsError",
    "WorkflowProblem",
    "field_path",
    "read_bundle",
    "validate_bundle",
]
