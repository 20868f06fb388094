"""Asana's data API in the sandbox: workspaces, projects and tasks (``/api/1.0``).

Shapes follow Asana's REST API (docs/au-rules-and-provider-apis.md): every answer is
``{data: [...], next_page: {offset, path, uri} | null}``; records are compact (``gid``,
``name``, ``resource_type``) unless ``opt_fields`` asks for more; ``limit`` is 1 to 100.
``GET /tasks`` needs exactly one of ``project``, ``section``, ``tag`` or ``assignee`` +
``workspace`` (a bare workspace is refused, as Asana refuses it), and ``completed_since``
keeps incomplete tasks plus those completed since then.

Limits: 150 requests a minute per token (the free plan); over it Asana answers 429 with
``Retry-After`` (seconds) and ``{"errors": [{"message": ...}]}``.

The workspace has three projects of generated tasks; a few tasks belong to two projects
(multi-homing), so a client counting completions must de-duplicate by ``gid``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from zixly.dev.sandbox.common import (
    ApiFault,
    ProviderApi,
    SlidingWindow,
    decode_cursor,
    encode_cursor,
    query_hash,
    rng,
)

HELP = (
    "For more information on API status codes and how to handle them, read the docs on "
    "errors: https://developers.asana.com/docs/errors"
)
PROJECTS = (("Website relaunch", 260), ("Client onboarding", 130), ("Quarterly BAS prep", 70))
VERBS = ("Draft", "Review", "Ship", "Fix", "Plan", "Call", "Update", "Reconcile", "Design")
THINGS = ("landing page", "invoice run", "supplier list", "BAS worksheet", "menu", "roster")
MAX_LIMIT = 100
UNPAGED_MAX = 1000
TASK_FIELDS = {
    "name",
    "completed",
    "completed_at",
    "created_at",
    "modified_at",
    "due_on",
    "assignee",
    "projects",
    "resource_subtype",
}


@dataclass(frozen=True)
class Task:
    gid: str
    name: str
    completed_at: datetime | None
    created_at: datetime
    due_on: date | None
    assignee: str | None
    projects: tuple[str, ...]  # project gids

    @property
    def completed(self) -> bool:
        return self.completed_at is not None


@dataclass(frozen=True)
class Workspace:
    gid: str
    name: str
    projects: tuple[tuple[str, str], ...]  # (gid, name)
    users: tuple[str, ...]


def stamp(moment: datetime) -> str:
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def _gid(r: Any) -> str:
    return str(1_200_000_000_000_000 + r.randrange(10**14))


@cache
def workspace(seed: int) -> Workspace:
    r = rng(seed, "asana-workspace")
    return Workspace(
        gid=_gid(r),
        name=f"{r.choice(('Wattle', 'Redgum', 'Jacaranda', 'Kookaburra'))} Group",
        projects=tuple((_gid(r), name) for name, _ in PROJECTS),
        users=tuple(_gid(r) for _ in range(6)),
    )


@cache
def tasks(seed: int, today: date, history_days: int) -> tuple[Task, ...]:
    """Every task of the workspace, in creation order (gids rise with it)."""
    space = workspace(seed)
    r = rng(seed, "asana-tasks", today.isoformat())
    now = datetime.combine(today, time(8, 0), tzinfo=UTC)
    made: list[Task] = []
    serial = int(space.projects[-1][0])
    for (project, _), (_, count) in zip(space.projects, PROJECTS, strict=True):
        for index in range(count):
            serial += r.randint(2, 900)
            created = now - timedelta(seconds=r.randrange(history_days * 86400))
            created = created.replace(microsecond=r.randrange(1000) * 1000)
            completed_at = None
            if r.random() < 0.62:
                completed_at = created + (now - created) * r.random()
                completed_at = completed_at.replace(
                    microsecond=(completed_at.microsecond // 1000) * 1000
                )
            homes: tuple[str, ...] = (project,)
            if project == space.projects[0][0] and index % 25 == 0:
                homes = (project, space.projects[1][0])  # also in "Client onboarding"
            made.append(
                Task(
                    gid=str(serial),
                    name=f"{r.choice(VERBS)} {r.choice(THINGS)}",
                    completed_at=completed_at,
                    created_at=created,
                    due_on=(created + timedelta(days=r.randint(1, 30))).date()
                    if r.random() < 0.7
                    else None,
                    assignee=r.choice(space.users) if r.random() < 0.8 else None,
                    projects=homes,
                )
            )
    made.sort(key=lambda t: int(t.gid))
    return tuple(made)


class AsanaApi(ProviderApi):
    name = "asana"

    def __init__(self, sandbox: Any) -> None:
        super().__init__(sandbox)
        self.window = SlidingWindow(self.config.asana_per_minute, 60.0)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/1.0/workspaces", self.endpoint(self.workspaces), methods=["GET"]),
            Route("/api/1.0/projects", self.endpoint(self.projects), methods=["GET"]),
            Route("/api/1.0/tasks", self.endpoint(self.tasks), methods=["GET"]),
        ]

    # --- refusals, in Asana's words ----------------------------------------------------------
    @staticmethod
    def _errors(status: int, message: str, **headers: str) -> Response:
        return JSONResponse(
            {"errors": [{"message": message, "help": HELP}]}, status, headers=headers
        )

    def unauthorized(self, state: str) -> Response:
        return self._errors(401, "Not Authorized")

    def refused(self, fault: ApiFault) -> Response:
        if fault.status != 429:
            return self._errors(fault.status, "an injected failure")
        return self._too_many(fault.retry_after or 1.0)

    def _too_many(self, retry_after: float) -> Response:
        return self._errors(
            429,
            "You have made too many requests recently. Please, be chill.",
            **{"Retry-After": str(max(1, math.ceil(retry_after)))},
        )

    async def limit(self, request: Request) -> Response | None:
        wait = self.window.take(self.token_of(request))
        return None if wait is None else self._too_many(wait)

    # --- paging -------------------------------------------------------------------------------
    def _page(self, request: Request, records: list[dict[str, Any]]) -> Response:
        query = dict(request.query_params)
        raw_limit = query.get("limit")
        if raw_limit is None:
            if len(records) > UNPAGED_MAX:
                return self._errors(400, "The result is too large. You should use pagination.")
            return JSONResponse({"data": records, "next_page": None})
        try:
            limit = int(raw_limit)
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_LIMIT:
            return self._errors(400, f"limit: Number must be between 1 and {MAX_LIMIT}")
        start = 0
        filters = query_hash(query, "offset", "limit", "opt_fields")
        if query.get("offset"):
            cursor = decode_cursor(query["offset"])
            if cursor is None or cursor.get("q") != filters or not isinstance(cursor.get("i"), int):
                return self._errors(400, "offset: Your pagination token is invalid.")
            start = cursor["i"]
        page = records[start : start + limit]
        next_page = None
        if start + limit < len(records):
            token = encode_cursor(i=start + limit, q=filters)
            params = urlencode({**query, "offset": token})
            endpoint = request.url.path.rsplit("/api/1.0", 1)[-1]
            next_page = {
                "offset": token,
                "path": f"{endpoint}?{params}",
                "uri": str(request.url.replace(query=params)),
            }
        return JSONResponse({"data": page, "next_page": next_page})

    # --- endpoints ------------------------------------------------------------------------------
    async def workspaces(self, request: Request) -> Response:
        space = workspace(self.config.seed)
        fields = _fields(request)
        record: dict[str, Any] = {
            "gid": space.gid,
            "name": space.name,
            "resource_type": "workspace",
        }
        if "is_organization" in fields:
            record["is_organization"] = True
        return self._page(request, [record])

    async def projects(self, request: Request) -> Response:
        space = workspace(self.config.seed)
        if request.query_params.get("workspace") not in (space.gid, None):
            return self._errors(
                404, "workspace: Unknown object: " + request.query_params["workspace"]
            )
        return self._page(
            request,
            [
                {"gid": gid, "name": name, "resource_type": "project"}
                for gid, name in space.projects
            ],
        )

    async def tasks(self, request: Request) -> Response:
        query = request.query_params
        space = workspace(self.config.seed)
        chosen = [k for k in ("project", "section", "tag") if query.get(k)]
        by_assignee = bool(query.get("assignee")) and bool(query.get("workspace"))
        if len(chosen) + by_assignee != 1:
            return self._errors(
                400,
                "You must specify exactly one of project, tag, section, user task list, "
                "or assignee + workspace",
            )
        if chosen and chosen[0] != "project":
            return self._errors(404, f"{chosen[0]}: Unknown object: {query[chosen[0]]}")
        cfg = self.config
        every = tasks(cfg.seed, cfg.today, cfg.history_days)
        if chosen:
            project = query["project"]
            if project not in {gid for gid, _ in space.projects}:
                return self._errors(404, f"project: Unknown object: {project}")
            found = [t for t in every if project in t.projects]
        else:
            if query["workspace"] != space.gid:
                return self._errors(404, f"workspace: Unknown object: {query['workspace']}")
            found = [t for t in every if t.assignee == query["assignee"]]
        since_raw = query.get("completed_since")
        if since_raw:
            if since_raw == "now":
                found = [t for t in found if not t.completed]
            else:
                try:
                    since = datetime.fromisoformat(since_raw.replace("Z", "+00:00"))
                except ValueError:
                    return self._errors(400, "completed_since: Not a valid date-time")
                if since.tzinfo is None:
                    since = since.replace(tzinfo=UTC)
                found = [t for t in found if t.completed_at is None or t.completed_at >= since]
        fields = _fields(request)
        names = {p: n for p, n in space.projects}
        return self._page(request, [_task(t, fields, names) for t in found])


def _fields(request: Request) -> set[str]:
    return {f.strip() for f in request.query_params.get("opt_fields", "").split(",") if f.strip()}


def _task(task: Task, fields: set[str], project_names: dict[str, str]) -> dict[str, Any]:
    record: dict[str, Any] = {
        "gid": task.gid,
        "name": task.name,
        "resource_type": "task",
        "resource_subtype": "default_task",
    }
    if not fields:
        return record
    values: dict[str, Any] = {
        "completed": task.completed,
        "completed_at": stamp(task.completed_at) if task.completed_at else None,
        "created_at": stamp(task.created_at),
        "modified_at": stamp(task.completed_at or task.created_at),
        "due_on": task.due_on.isoformat() if task.due_on else None,
        "assignee": {"gid": task.assignee, "resource_type": "user"} if task.assignee else None,
        "projects": [
            {"gid": p, "resource_type": "project", "name": project_names[p]} for p in task.projects
        ],
    }
    kept: dict[str, Any] = {"gid": task.gid, "resource_type": "task"}
    kept.update({k: values.get(k, record.get(k)) for k in fields & TASK_FIELDS})
    return kept
