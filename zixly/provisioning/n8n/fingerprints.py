"""Fingerprints of workflows, so a redeploy can upgrade a template without overwriting edits.

A template workflow is matched in an instance by its fixed name. To know whether a later
deploy may replace it, two fingerprints are kept per template workflow (in
``n8n_instances.template_fingerprints``, see migration 0005): the rendered template's, and
the workflow's as n8n stored it right after Zixly wrote it (read back from n8n). A redeploy
compares the newly rendered template with the first (equal: nothing to do) and the workflow
now in n8n with the second (equal: nobody touched it, so it may be replaced in place;
different: the customer edited it, so it is left alone).

A fingerprint is the SHA-256 of a canonical JSON of what the workflow *does*: its nodes
(name, type, typeVersion, parameters, credential ids, disabled), its connections and its
settings. Left out: node ids and positions, notes, tags, ``staticData`` (the schedule
trigger writes its runtime state there on activation), ``meta``, ``pinData``, version ids
and timestamps. n8n 1.123 stores nodes and connections exactly as given through the public
API (checked on a real instance), but it adds two settings on save, ``callerPolicy:
workflowsFromSameOwner`` and ``availableInMCP: false``; a setting holding one of those
default values counts as absent, so the rendered template and what n8n stored fingerprint
the same. Node order and key order do not count (nodes are sorted by name, keys by JSON).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Settings n8n 1.123 adds on save, with the values it adds (what their absence means).
N8N_SETTING_DEFAULTS: Mapping[str, Any] = {
    "callerPolicy": "workflowsFromSameOwner",
    "availableInMCP": False,
}


def canonical(workflow: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of ``workflow`` that decide what it does, normalised."""
    nodes = []
    for node in workflow.get("nodes") or []:
        if not isinstance(node, Mapping):
            continue
        credentials = {
            str(kind): str(dict(ref).get("id")) if isinstance(ref, Mapping) else str(ref)
            for kind, ref in dict(node.get("credentials") or {}).items()
        }
        entry: dict[str, Any] = {
            "name": node.get("name"),
            "type": node.get("type"),
            "typeVersion": node.get("typeVersion"),
            "parameters": node.get("parameters") or {},
            "credentials": credentials,
        }
        if node.get("disabled"):
            entry["disabled"] = True
        nodes.append(entry)
    nodes.sort(key=lambda n: str(n["name"]))
    settings = {
        str(key): value
        for key, value in dict(workflow.get("settings") or {}).items()
        if not (key in N8N_SETTING_DEFAULTS and N8N_SETTING_DEFAULTS[key] == value)
    }
    return {"nodes": nodes, "connections": workflow.get("connections") or {}, "settings": settings}


def fingerprint(workflow: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``workflow``."""
    text = json.dumps(canonical(workflow), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class TemplateRecord:
    """What Zixly last deployed for one template workflow (by name) in an instance."""

    workflow_id: str
    template: str  # fingerprint of the rendered template written
    deployed: str  # fingerprint of the workflow as n8n stored it, read back after writing

    def as_json(self) -> dict[str, str]:
        return {
            "workflow_id": self.workflow_id,
            "template": self.template,
            "deployed": self.deployed,
        }

    @classmethod
    def from_json(cls, value: object) -> TemplateRecord | None:
        if not isinstance(value, Mapping):
            return None
        parts = [value.get(k) for k in ("workflow_id", "template", "deployed")]
        if not all(isinstance(p, str) and p for p in parts):
            return None
        return cls(str(parts[0]), str(parts[1]), str(parts[2]))


def records_from_json(value: object) -> dict[str, TemplateRecord]:
    """The stored column (name -> record); malformed entries are ignored (treated as
    unrecorded, which never overwrites anything)."""
    if not isinstance(value, Mapping):
        return {}
    found = {str(name): TemplateRecord.from_json(item) for name, item in value.items()}
    return {name: record for name, record in found.items() if record is not None}
