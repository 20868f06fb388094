"""An instance's finished n8n executions since the monitor's cursor, read through its public API.

n8n lists executions newest first (``GET /api/v1/executions``, paged), and its ids are
increasing integers, so the monitor keeps one number per instance, the cursor: every
execution at or below it has been read. A pass pages back until it reaches the cursor.

Unfinished runs need care. The listing leaves out the executions n8n is running right now
(they are in its in-memory active set), and lists waiting ones with status ``waiting``. A run
still going has a lower id than runs started after it that may already be finished, so the
cursor may not pass it: it stops just below the lowest unfinished id, and the finished runs
above it are read again next pass (the fold skips what an integration has seen, by its
``last_execution_id``). Running ids are asked for before and after the listing, so a run that
starts or finishes meanwhile is still seen as unfinished by one of the two. An id missing
from the listing just below a fresh run is held the same way for ``GAP_GRACE`` (it may be one
that finished between the calls); after that it is taken for deleted. An unfinished run
holds the cursor for ``HOLD_LIMIT`` at most: a run waiting for days (a Wait node) must not
make every pass re-read all that came after it.

Failure messages come from the run's data (``resultData.error``: the node and its message),
fetched only for the newest failure of each integration, cut short and scrubbed of anything
that looks like a credential before it is stored or shown.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from zixly.core.logging import redact_text
from zixly.provisioning.n8n.client import N8nClient
from zixly.provisioning.n8n.errors import N8nNotFoundError

SUCCEEDED = frozenset({"success"})
FAILED = frozenset({"error", "crashed"})
UNFINISHED = frozenset({"new", "running", "waiting"})
PAGE_SIZE = 100
MAX_EXECUTIONS = 2000  # per pass and instance; the rest is skipped (logged by the caller)
HOLD_LIMIT = timedelta(hours=24)
GAP_GRACE = timedelta(minutes=2)
MESSAGE_LIMIT = 300
REDACTED = "[redacted]"
# Credential-shaped text beyond what zixly.core.logging already scrubs (bearer tokens, JWTs, URL
# passwords): Zixly's ingest tokens, the value of anything named like a secret, credentials
# in an Authorization header, and long opaque runs of letters and digits (API keys, access
# tokens) that no human-readable message contains. A secret's name may be camelCase or carry
# a prefix (accessToken, hapikey, x-api-key); its value may be quoted, single-quoted or
# escaped (JSON inside a JSON string), and the templates' Code nodes turn colons into spaces
# (n8n's task runner shows only the text after the last one): {"access_token" "..."}.
_INGEST_TOKEN = re.compile(r"zik_[A-Za-z0-9_-]+")
_SENSITIVE_NAME = r"[A-Za-z0-9_-]*?(?:token|secret|password|passwd|api[_-]?key|credential)[\w-]*"
# Each keeps group 1 (the name and separator) and loses the value after it.
_KEY_VALUE = re.compile(
    rf"(?i)(\b{_SENSITIVE_NAME}\\?[\"']?\s*[:=]\s*\\?[\"']?)[^\s\"'\\,;&)}}\]]+"
)
_QUOTED_KEY_VALUE = re.compile(rf"(?i)((\\?[\"']){_SENSITIVE_NAME}\2\s+\2)[^\"'\\]+(?=\2)")
_AUTHORIZATION = re.compile(
    r"(?i)(\bauthorization[\"'\\]*\s*[:=]?\s*[\"'\\]*(?:basic|bearer|token|digest)\s+)"
    r"[^\s\"'\\,;]+"
)
_OPAQUE = re.compile(
    r"(?<![A-Za-z0-9_./+=-])(?=[A-Za-z0-9_./+=-]*\d)(?=[A-Za-z0-9_./+=-]*[A-Za-z])"
    r"[A-Za-z0-9_./+=-]{32,}"
)


def safe_message(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` without credential-shaped parts, on one line, at most ``limit`` characters."""
    cleaned = redact_text(" ".join(text.split()))
    cleaned = _INGEST_TOKEN.sub(REDACTED, cleaned)
    for pattern in (_AUTHORIZATION, _KEY_VALUE, _QUOTED_KEY_VALUE):
        cleaned = pattern.sub(r"\1" + REDACTED, cleaned)
    cleaned = _OPAQUE.sub(REDACTED, cleaned)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class Execution:
    id: int
    workflow_id: str
    status: str
    mode: str
    started_at: datetime | None
    stopped_at: datetime | None

    @classmethod
    def parse(cls, item: Mapping[str, Any]) -> Execution | None:
        try:
            execution_id = int(str(item.get("id")))
        except ValueError:
            return None
        return cls(
            id=execution_id,
            workflow_id=str(item.get("workflowId") or ""),
            status=str(item.get("status") or "unknown"),
            mode=str(item.get("mode") or ""),
            started_at=_time(item.get("startedAt")),
            stopped_at=_time(item.get("stoppedAt")),
        )

    @property
    def finished(self) -> bool:
        return self.status not in UNFINISHED

    @property
    def succeeded(self) -> bool:
        return self.status in SUCCEEDED

    @property
    def failed(self) -> bool:
        return self.status in FAILED


@dataclass(frozen=True)
class Batch:
    """What one pass read from one instance."""

    executions: list[Execution]  # finished, above the old cursor, by id
    cursor: int | None  # the new cursor
    truncated: bool  # more than MAX_EXECUTIONS were new: the oldest of them were not read


def next_cursor(
    cursor: int | None,
    listed: Sequence[Execution],
    running: Mapping[int, datetime | None],
    now: datetime,
) -> int | None:
    """The highest id at or below which every execution is finished (or given up on).

    ``listed``: what the listing returned above ``cursor``; ``running``: the ids n8n reported
    running (with their start) that the listing did not show finished.
    """
    floor = cursor or 0
    by_id = {e.id: e for e in listed if e.id > floor}
    seen = set(by_id) | {i for i in running if i > floor}
    if not seen:
        return cursor

    def holds(started: datetime | None) -> bool:
        return started is None or now - started < HOLD_LIMIT

    blocked = {i for i, started in running.items() if i > floor and holds(started)}
    blocked |= {e.id for e in by_id.values() if not e.finished and holds(e.started_at)}
    top = max(seen)
    # Gaps only count once there is a cursor (the first pass reads a history with deletions).
    if cursor is not None and top - floor <= 2 * MAX_EXECUTIONS:
        above: Execution | None = None  # the nearest listed run above the id looked at
        for execution_id in range(top, floor, -1):
            if execution_id in by_id:
                above = by_id[execution_id]
            elif execution_id not in running and _fresh(above, now):
                blocked.add(execution_id)
    return max(floor, min(blocked) - 1) if blocked else top


def _fresh(execution: Execution | None, now: datetime) -> bool:
    started = execution.started_at if execution is not None else None
    return started is not None and now - started < GAP_GRACE


async def running_executions(api: N8nClient) -> dict[int, datetime | None]:
    found: dict[int, datetime | None] = {}
    page_cursor: str | None = None
    for _ in range(MAX_EXECUTIONS // PAGE_SIZE):
        page = await api.list_executions(status="running", limit=PAGE_SIZE, cursor=page_cursor)
        for item in page.items:
            execution = Execution.parse(item)
            if execution is not None:
                found[execution.id] = execution.started_at
        if not page.next_cursor:
            break
        page_cursor = page.next_cursor
    return found


async def listed_since(api: N8nClient, cursor: int | None) -> tuple[list[Execution], bool]:
    """Executions above ``cursor`` (any status n8n lists), newest first; and whether the
    listing stopped at MAX_EXECUTIONS before reaching the cursor."""
    floor = cursor or 0
    found: list[Execution] = []
    page_cursor: str | None = None
    while True:
        page = await api.list_executions(limit=PAGE_SIZE, cursor=page_cursor)
        parsed = [e for e in map(Execution.parse, page.items) if e is not None]
        found += [e for e in parsed if e.id > floor]
        if any(e.id <= floor for e in parsed) or not page.next_cursor:
            return found, False
        if len(found) >= MAX_EXECUTIONS:
            return found, True
        page_cursor = page.next_cursor


async def read_since(api: N8nClient, cursor: int | None, now: datetime) -> Batch:
    before = await running_executions(api)
    listed, truncated = await listed_since(api, cursor)
    after = await running_executions(api)
    finished = sorted((e for e in listed if e.finished), key=lambda e: e.id)
    done = {e.id for e in finished}  # running at the first call, finished by the listing
    running = {i: started for i, started in {**before, **after}.items() if i not in done}
    return Batch(finished, next_cursor(cursor, listed, running, now), truncated)


def failure_message(execution: Mapping[str, Any]) -> str:
    """ "<node>: <message>" of a failed run (from ``get_execution(include_data=True)``)."""
    data = execution.get("data")
    result = data.get("resultData") if isinstance(data, Mapping) else None
    error = result.get("error") if isinstance(result, Mapping) else None
    node_name: str | None = None
    message: str | None = None
    if isinstance(error, Mapping):
        node = error.get("node")
        if isinstance(node, Mapping) and isinstance(node.get("name"), str):
            node_name = node["name"]
        if isinstance(error.get("message"), str):
            message = error["message"]
    if node_name is None and isinstance(result, Mapping):
        last = result.get("lastNodeExecuted")
        node_name = last if isinstance(last, str) else None
    status = str(execution.get("status") or "error")
    text = message or ("the run crashed" if status == "crashed" else "the run failed")
    return safe_message(f"{node_name}: {text}" if node_name else text)


async def failure_messages(api: N8nClient, ids: Iterable[int]) -> dict[int, str]:
    """The failure message of each execution in ``ids`` (a placeholder when n8n has no
    details any more)."""
    messages: dict[int, str] = {}
    for execution_id in ids:
        try:
            execution = await api.get_execution(str(execution_id), include_data=True)
        except N8nNotFoundError:  # deleted since the listing
            messages[execution_id] = "the run failed (its details are no longer available)"
            continue
        messages[execution_id] = failure_message(execution)
    return messages
