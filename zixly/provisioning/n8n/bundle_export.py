"""Exporting a tenant's workflows as a bundle (``bundle_format``): what a customer downloads.

Each workflow carries what the editor's own download carries: ``id``, ``name``, ``active``,
``nodes``, ``connections``, ``settings``, ``pinData``, ``meta``, ``tags`` (by name only, which
is how both the CLI and the editor match tags), plus ``description``. Left out:

- ``staticData``: runtime state of the source instance (poll cursors, webhook registrations
  with third parties, some of which hold the registration's secret). The editor leaves it out
  too; a re-imported trigger registers itself afresh when it is activated.
- ``meta.instanceId``: a hash derived from the source instance's encryption key.
- ``shared``, ``activeVersion``, timestamps, counters: the public API's view of ownership
  (project names carry the owner's email) and history, meaningless elsewhere.

Nodes reference credentials by ``{"id", "name"}`` only; n8n never stores credential data in a
workflow, and ``_exported_node`` keeps nothing else under ``credentials``. The API key only
ever travels in a request header, never in a body this module reads.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from zixly.provisioning.n8n.bundle_format import (
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    WORKFLOW_ID,
    UnknownWorkflowsError,
)
from zixly.provisioning.n8n.client import N8nClient
from zixly.provisioning.n8n.errors import N8nNotFoundError

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
        if not WORKFLOW_ID.match(workflow_id):  # also keeps odd ids out of the URL path
            missing.append(workflow_id)
            continue
        try:
            found.append(await client.get_workflow(workflow_id))
        except N8nNotFoundError:
            missing.append(workflow_id)
    if missing:
        raise UnknownWorkflowsError(missing)
    return found
