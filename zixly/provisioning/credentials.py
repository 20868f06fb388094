"""Keeping a tenant's n8n credentials current: values that change after deploy, pushed in place.

Some manifest credentials carry values that rotate: a provider's access token
(``integration:<provider>``, new on connect and on every refresh, ``not-connected`` after a
disconnect) and the ingest token (``ingest:token``, on rotation). ``push_credentials`` takes
the new values by source, re-renders every credential of the templates deployed on the
tenant's instance that uses one of them, and updates it in n8n *in place*
(``PATCH /rest/credentials/<id>``, as the instance owner), so its id, and every workflow
node that refers to it, stays. Credentials are matched by name and type, as deploy creates
them (zixly.provisioning.templates).

The other placeholders of a re-rendered credential take their usual values; one that has
none outside deploy (a ``secret:`` generated there, or an ``ingest:token`` not given) makes
the credential un-renderable: it is left as it is and logged, never overwritten with a hole.

A tenant without a running instance is skipped quietly (logged; the values reach n8n at its
next deploy, which renders the current ones). n8n failures leave as ``N8nError`` for the
caller to log or retry: the stored token is never affected by a failed push.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx

from zixly.core.logging import get_logger
from zixly.db.session import Database
from zixly.ingest.instance_tokens import InstanceTokenRotation
from zixly.provisioning.instances import ActualState, InstanceRepository
from zixly.provisioning.lifecycle import InstanceLifecycle
from zixly.provisioning.n8n.client import N8nClient
from zixly.provisioning.operations import STAFF
from zixly.provisioning.secrets import InstanceSecretBox
from zixly.provisioning.templates import (
    TEMPLATES_DIR,
    CredentialSpec,
    Manifest,
    TemplateSpec,
    bundled_manifest,
    placeholders_in,
    render,
    template_id,
    tenant_values,
    with_integration_tokens,
)
from zixly.security.crypto import Keyring

log = get_logger("zixly.provisioning.credentials")
# Where the owner can log in and n8n answers (an upgrade keeps the old version serving).
PUSHABLE = frozenset({ActualState.RUNNING, ActualState.UPGRADING})


def integration_source(provider: str) -> str:
    return f"integration:{provider}"


@dataclass(frozen=True)
class CredentialDeps:
    """What a push needs: the database (the instance row, the tenant's values), the keyring
    (the owner password and integration tokens) and an HTTP client for n8n."""

    db: Database
    keyring: Keyring
    http: httpx.AsyncClient
    ingest_url: str | None = None
    retry_for: float = 10.0  # how long an n8n call waits for a connection to succeed
    manifest: Manifest | None = None  # None: the bundled n8n-workflows/manifest.json
    templates_dir: Path = TEMPLATES_DIR  # where the manifest's workflow files are

    def templates(self) -> Manifest:
        return self.manifest or bundled_manifest()

    @classmethod
    def of(cls, lifecycle: InstanceLifecycle) -> CredentialDeps:
        return cls(lifecycle.db, lifecycle.secrets.keyring, lifecycle.http, lifecycle.ingest_url)


@dataclass(frozen=True)
class _Target:
    spec: TemplateSpec
    credential: CredentialSpec


async def push_credentials(
    deps: CredentialDeps | InstanceLifecycle,
    tenant_id: uuid.UUID,
    sources: Mapping[str, str],
    *,
    manifest: Manifest | None = None,
) -> int:
    """Update, in place, every credential of the tenant's deployed templates that uses one of
    ``sources`` (source -> new value, e.g. ``{"integration:xero": token}`` or
    ``{"ingest:token": token}``). Returns how many were updated (0: no running instance, or
    nothing uses them). Raises ``N8nError`` when n8n fails."""
    if isinstance(deps, InstanceLifecycle):
        deps = CredentialDeps.of(deps)
    async with deps.db.transaction(STAFF) as session:
        row = await InstanceRepository(session).get(tenant_id)
        if row is None or row.actual_state not in PUSHABLE or row.url is None:
            state = row.actual_state.value if row is not None else None
            log.info(
                "credentials.push.skipped",
                tenant_id=str(tenant_id),
                reason="no running instance",
                state=state,
            )
            return 0
        targets = _targets(manifest or deps.templates(), row.templates, set(sources))
        if not targets:
            return 0
        tenant = await tenant_values(session, tenant_id, ingest_url=deps.ingest_url)
        tenant = await with_integration_tokens(session, tenant, deps.keyring)
    owner = InstanceSecretBox(deps.keyring).for_bootstrap(row)
    client = N8nClient(row.url, deps.http, retry_for=deps.retry_for, version=row.version)
    cookie = await client.login(owner.owner_email, owner.owner_password)
    existing = {
        (str(c.get("name")), str(c.get("type"))): str(c["id"])
        for c in await client.list_credentials(cookie)
    }
    updated = 0
    for target in targets:
        spec, credential = target.spec, target.credential
        where = {"tenant_id": str(tenant_id), "credential": credential.name}
        credential_id = existing.get((credential.name, credential.type))
        if credential_id is None:
            log.warning("credentials.push.missing", **where, action="deploy the templates again")
            continue
        values: dict[str, str] = {}
        for placeholder in spec.placeholders:
            value = sources.get(placeholder.source)
            if value is None:
                value = tenant.source(placeholder.source, {})
            if value is not None:
                values[placeholder.name] = value
        missing = sorted(placeholders_in(credential.data) - set(values))
        if missing:
            log.warning("credentials.push.unrenderable", **where, missing=missing)
            continue
        data = render(credential.data, values)
        await client.update_credential(
            cookie, credential_id, credential.name, credential.type, data
        )
        updated += 1
    log.info(
        "credentials.pushed",
        tenant_id=str(tenant_id),
        sources=sorted(sources),
        updated=updated,
    )
    return updated


def _targets(manifest: Manifest, templates: list[object], sources: set[str]) -> list[_Target]:
    """The deployed templates' credentials that use one of ``sources``, once per name and
    type (several templates may share one credential)."""
    known = {spec.id: spec for spec in manifest.templates}
    found: dict[tuple[str, str], _Target] = {}
    for source in templates:
        spec = known.get(template_id(source) or "")
        if spec is None:
            continue
        by_name = {p.name: p.source for p in spec.placeholders}
        for credential in spec.credentials:
            used = {by_name.get(name) for name in placeholders_in(credential.data)}
            if used & sources:
                found.setdefault((credential.name, credential.type), _Target(spec, credential))
    return list(found.values())


def token_rotation(deps: CredentialDeps) -> InstanceTokenRotation:
    """The instance ingest token's rotation, pushing the new token into the tenant's n8n
    (what the staff ``rotateIngestToken`` mutation and ``zixly tenant ingest-token rotate``
    run)."""
    return InstanceTokenRotation(deps.db, partial(push_credentials, deps))
