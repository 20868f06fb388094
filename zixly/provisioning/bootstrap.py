"""Headless bootstrap of a fresh n8n instance: owner, API key, workflows, all idempotent.

Re-running it against an instance that is already (partly) set up converges on the same end
state: the owner logs in instead of being created, a still-valid API key is kept (else the
keys with our label are replaced by one new key), and workflows are matched by name, so none
is created twice; each is activated if it is not active.
"""

from __future__ import annotations

import string
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from secrets import choice, token_urlsafe
from typing import Any

from zixly.errors import ValidationError
from zixly.provisioning.errors import N8nUnauthorizedError
from zixly.provisioning.n8n_client import N8nClient

API_KEY_LABEL = "zixly-control-plane"
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


async def bootstrap_instance(
    client: N8nClient,
    secrets: InstanceSecrets,
    templates: Sequence[Mapping[str, Any]] = (),
    *,
    ready_timeout: float = 90.0,
    api_key_label: str = API_KEY_LABEL,
    owner_name: tuple[str, str] = ("Zixly", "Automation"),
    prepare: Prepare | None = None,
) -> BootstrapResult:
    _check_names(templates)
    await client.wait_ready(ready_timeout)
    cookie = await client.setup_owner(
        secrets.owner_email, owner_name[0], owner_name[1], secrets.owner_password
    )
    api_key = secrets.api_key
    if api_key is None or not await _key_works(client.with_api_key(api_key)):
        api_key = await _replace_api_key(client, cookie, api_key_label)
    api = client.with_api_key(api_key)
    if prepare is not None:
        templates = [*templates, *await prepare(api, cookie)]
        _check_names(templates)

    existing = {str(w["name"]): w for w in await api.all_workflows()}
    ids: dict[str, str] = {}
    created: list[str] = []
    for template in templates:
        name = str(template["name"])
        workflow = existing.get(name)
        if workflow is None:
            workflow = await api.create_workflow(template)
            created.append(name)
        if not workflow.get("active"):
            await api.activate_workflow(str(workflow["id"]))
        ids[name] = str(workflow["id"])
    return BootstrapResult(api_key=api_key, workflow_ids=ids, created=created)


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
