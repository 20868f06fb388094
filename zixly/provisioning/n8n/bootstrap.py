"""Headless bootstrap of a fresh n8n instance: owner, API key, workflows, all idempotent.

Re-running it against an instance that is already (partly) set up converges on the same end
state: the owner logs in instead of being created, a still-valid API key is kept (else the
keys with our label are replaced by one new key), and workflows are matched by name, so none
is created twice; each is activated if it is not active.

Per n8n line (the client's ``version``, zixly.provisioning.n8n.versions): on 1.x the owner is
created with ``POST /rest/owner/setup``; on 2.17+ n8n creates it from the environment
(``InstanceSecrets.instance_env``) and bootstrap logs in. On 2.x activation publishes, and
bootstrap waits until each published workflow's triggers are live before it reports it.

Template upgrades: a workflow that exists already is replaced in place (same id, through the
public API) only when its template changed since Zixly last wrote it *and* the workflow is
still exactly what Zixly wrote (zixly.provisioning.n8n.fingerprints); one the customer edited is
left alone and reported as skipped. The caller keeps the records between runs
(``recorded`` in, ``BootstrapResult.fingerprints`` out).
"""

from __future__ import annotations

import string
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from secrets import choice, token_urlsafe
from typing import Any

from zixly.core.errors import ValidationError
from zixly.provisioning.n8n.client import N8nClient
from zixly.provisioning.n8n.errors import N8nUnauthorizedError
from zixly.provisioning.n8n.fingerprints import TemplateRecord, fingerprint
from zixly.provisioning.n8n.owner_env import owner_env

API_KEY_LABEL = "zixly-control-plane"
ENCRYPTION_KEY_ENV = "N8N_ENCRYPTION_KEY"
OWNER_NAME = ("Zixly", "Automation")
# More templates made with the instance's API (and session cookie), e.g. manifest templates
# whose credentials must exist before they are rendered (zixly.provisioning.templates).
Prepare = Callable[[N8nClient, str], Awaitable[Sequence[Mapping[str, Any]]]]
_PASSWORD_ALPHABET = string.ascii_letters + string.digits


def strong_password(length: int = 40) -> str:
    """Random, within n8n's rules (8-64 characters, a digit, an upper-case letter)."""
    while True:
        candidate = "".join(choice(_PASSWORD_ALPHABET) for _ in range(length))
        if (
            any(c.isdigit() for c in candidate)
            and any(c.isupper() for c in candidate)
            and any(c.islower() for c in candidate)
        ):
            return candidate


@dataclass(frozen=True)
class InstanceSecrets:
    """An instance's secrets; the caller keeps them (encrypted) between bootstrap runs."""

    owner_email: str
    owner_password: str = field(repr=False)
    encryption_key: str = field(repr=False)
    api_key: str | None = field(default=None, repr=False)

    def instance_env(self, version: str) -> dict[str, str]:
        """The secret part of an instance's environment for n8n ``version``: its encryption
        key and, where n8n takes it from there (2.17+), its owner."""
        owner = owner_env(version, self.owner_email, self.owner_password, OWNER_NAME)
        return {ENCRYPTION_KEY_ENV: self.encryption_key, **owner}

    @classmethod
    def generate(cls, tenant_slug: str) -> InstanceSecrets:
        return cls(
            owner_email=f"n8n-owner@{tenant_slug}.tenants.zixly.local",
            owner_password=strong_password(),
            encryption_key=token_urlsafe(32),
        )


@dataclass(frozen=True)
class BootstrapResult:
    api_key: str = field(repr=False)
    workflow_ids: dict[str, str]  # template name -> n8n workflow id
    created: list[str]  # names of the workflows created by this run
    updated: list[str] = field(default_factory=list)  # replaced in place: the template changed
    unchanged: list[str] = field(default_factory=list)  # existed, the template had not changed
    # existed and were left alone, with why: "edited" (differs from what Zixly wrote) or
    # "unrecorded" (no record of what Zixly wrote, and it differs from the template)
    skipped: dict[str, str] = field(default_factory=dict)
    # template name -> what Zixly has now written there (to keep for the next run)
    fingerprints: dict[str, TemplateRecord] = field(default_factory=dict)


async def bootstrap_instance(
    client: N8nClient,
    secrets: InstanceSecrets,
    templates: Sequence[Mapping[str, Any]] = (),
    *,
    ready_timeout: float = 90.0,
    api_key_label: str = API_KEY_LABEL,
    owner_name: tuple[str, str] = OWNER_NAME,
    prepare: Prepare | None = None,
    recorded: Mapping[str, TemplateRecord] | None = None,
) -> BootstrapResult:
    _check_names(templates)
    await client.wait_ready(ready_timeout)
    if client.owner_from_env:
        login_within = min(ready_timeout, 30.0)
        cookie = await client.login(
            secrets.owner_email, secrets.owner_password, within=login_within
        )
    else:
        cookie = await client.setup_owner(
            secrets.owner_email, owner_name[0], owner_name[1], secrets.owner_password
        )
    api_key = secrets.api_key
    if api_key is None or not await _key_works(client.with_api_key(api_key)):
        api_key = await _replace_api_key(client, cookie, api_key_label)
    api = client.with_api_key(api_key).with_session(cookie)  # activations wait to be live
    if prepare is not None:
        templates = [*templates, *await prepare(api, cookie)]
        _check_names(templates)

    existing = {str(w["name"]): w for w in await api.all_workflows()}
    result = BootstrapResult(api_key=api_key, workflow_ids={}, created=[])
    for template in templates:
        name = str(template["name"])
        wanted = fingerprint(template)
        workflow = existing.get(name)
        if workflow is None:
            workflow = await api.create_workflow(template)
            await api.activate_workflow(str(workflow["id"]))
            result.created.append(name)
            result.fingerprints[name] = await _written(api, str(workflow["id"]), wanted)
        else:
            record = (recorded or {}).get(name)
            await _converge(api, cookie, result, workflow, template, wanted, record)
        result.workflow_ids[name] = str(workflow["id"])
    return result


async def _written(api: N8nClient, workflow_id: str, template: str) -> TemplateRecord:
    """The record of what Zixly just wrote: the workflow read back from n8n."""
    stored = await api.get_workflow(workflow_id)
    return TemplateRecord(workflow_id, template, fingerprint(stored))


async def _converge(
    api: N8nClient,
    cookie: str,
    result: BootstrapResult,
    workflow: Mapping[str, Any],
    template: Mapping[str, Any],
    wanted: str,
    record: TemplateRecord | None,
) -> None:
    """An existing template workflow: leave it, upgrade it in place, or skip it (edited)."""
    name, workflow_id = str(template["name"]), str(workflow["id"])
    if record is not None and record.workflow_id != workflow_id:
        record = None  # a workflow of that name Zixly did not write (re-created meanwhile)
    if record is not None and record.template == wanted:
        result.unchanged.append(name)
        result.fingerprints[name] = record
    else:
        current = fingerprint(await api.get_workflow(workflow_id))
        if record is None and current == wanted:  # written before records were kept
            result.unchanged.append(name)
            result.fingerprints[name] = TemplateRecord(workflow_id, wanted, current)
        elif record is None or current != record.deployed:
            result.skipped[name] = "unrecorded" if record is None else "edited"
        else:
            updated = await api.update_workflow(workflow_id, template)
            live = updated.get("activeVersionId", updated.get("versionId"))
            if not updated.get("active") or live != updated.get("versionId"):
                # template workflows are kept active (as below); this publishes the new
                # version where n8n keeps drafts apart from the active version
                await api.activate_workflow(workflow_id)
            await api.wait_published(cookie, workflow_id, version_id=updated.get("versionId"))
            result.updated.append(name)
            result.fingerprints[name] = await _written(api, workflow_id, wanted)
            return
    if not workflow.get("active"):
        await api.activate_workflow(workflow_id)


def _check_names(templates: Sequence[Mapping[str, Any]]) -> None:
    names = [str(t.get("name", "")) for t in templates]
    if any(not n for n in names) or len(set(names)) != len(names):
        raise ValidationError("workflow templates need unique, non-empty names", field="templates")


async def _key_works(api: N8nClient) -> bool:
    try:
        await api.list_workflows(limit=1)
    except N8nUnauthorizedError:
        return False
    return True


async def _replace_api_key(client: N8nClient, cookie: str, label: str) -> str:
    """One key per label: the raw key is shown only once, so a lost one is replaced."""
    for key in await client.list_api_keys(cookie):
        if key.get("label") == label:
            await client.delete_api_key(cookie, str(key["id"]))
    return await client.create_api_key(cookie, label)
