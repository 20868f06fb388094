"""Workflow templates from ``n8n-workflows/``: the manifest, validation, rendering, deploying.

A template is a real n8n export with placeholder tokens ``__ZIXLY_NAME__`` (NAME: upper case,
digits, underscores) inside string values. Why not ``{{zixly:NAME}}``: n8n evaluates strings
that start with ``=`` as expressions and its ``{{ ... }}`` blocks are JavaScript, so a
brace-delimited token would be ambiguous inside an expression, and an n8n editor or a careless
edit could turn it into code. ``__ZIXLY_NAME__`` is an ordinary identifier-like run of
characters in every context: nothing n8n parses treats it specially.

Rendering works on the parsed JSON, never on its text: each string is scanned once and every
token is replaced by its value as a literal substring (``re.sub`` does not rescan what it
inserted), so a value holding quotes, braces or even another token cannot break or inject
JSON. Two rules keep values from becoming n8n code: a placeholder may not appear in an
expression string (one starting with ``=``, checked when the template is validated), and a
rendered string that starts with ``=`` where the template's did not is refused.

The manifest (``manifest.json``) lists each template: its file, workflow name, provider, the
integration it feeds, its schedule, its placeholders with where each value comes from, and
the n8n credentials it needs (created through the public API before the workflow, matched by
name so never twice; a workflow node refers to one by the ``credential:<key>`` placeholder,
which renders as the created credential's id).

Value sources: ``tenant.id``, ``tenant.slug``, ``tenant.name``, ``zixly.ingest_url``,
``credential:<key>``, ``secret:<name>`` (a random token generated when the credential using
it is created), ``ingest:token`` (a real ingest token issued for the tenant, stored hashed,
when the credential using it is created; see zixly/ingest/instance_tokens.py) and
``setting:<name>`` (a value the caller provides per tenant).

``integration:<provider>`` is the tenant's current access token for that provider (decrypted
from the integrations row), or the literal ``not-connected`` when it has none: credentials
carrying it are created at deploy with the value of the moment and kept current in place by
zixly.provisioning.credentials (on connect, on every refresh, on disconnect).

Instances refer to a manifest template as ``manifest:<id>`` in their ``templates`` list.

The manifest's ``plans`` name each plan's default templates: what a new instance gets when
its provision request names none (``--no-templates``, or an empty list, for none). Shopify's
is not a default: its API host is the shop's own, known only once the shop is connected.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession

from zixly.core.errors import ValidationError
from zixly.db.models import Integration, Tenant
from zixly.providers.registry import PROVIDERS
from zixly.providers.tokens import TokenStore
from zixly.provisioning.n8n.client import N8nClient
from zixly.security.crypto import Keyring, Secret

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "n8n-workflows"
MANIFEST = "manifest.json"
REF_PREFIX = "manifest:"
DEFAULT_PLAN = "standard"  # the tenants table's default plan
TOKEN = re.compile(r"__ZIXLY_([A-Z][A-Z0-9_]*?)__")
_NAME = r"[A-Z][A-Z0-9_]*"
_SOURCE = (
    r"tenant\.(id|slug|name)|zixly\.ingest_url|ingest:token"
    r"|(credential|secret|setting|provider|integration):[a-z][a-z0-9_]*"
)
_TENANTS = cast(Table, Tenant.__table__)
_INTEGRATIONS = cast(Table, Integration.__table__)
NOT_CONNECTED = "not-connected"  # integration:<provider> of an integration without a token
INGEST_TOKEN = "ingest:token"  # noqa: S105 - a placeholder source: a token issued at deploy


class TemplateError(ValidationError):
    """A template that cannot be rendered: unknown or missing placeholders, unsafe values."""

    code = "TEMPLATE_INVALID"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message, field="templates", **details)


# --- the manifest -------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Placeholder(_Model):
    name: str = Field(pattern=f"^{_NAME}$")
    description: str
    source: str = Field(pattern=f"^({_SOURCE})$")


class CredentialSpec(_Model):
    key: str = Field(pattern="^[a-z][a-z0-9_]*$")
    name: str = Field(min_length=1)  # the n8n credential's name (what it is matched by)
    type: str = Field(min_length=1)  # an n8n credential type, e.g. httpHeaderAuth
    data: dict[str, str]  # its fields; values may hold placeholders


class TemplateSpec(_Model):
    id: str = Field(pattern="^[a-z][a-z0-9-]*$")
    file: str = Field(pattern=r"^[A-Za-z0-9._-]+\.json$")
    name: str = Field(min_length=1)  # the workflow's name (workflows are matched by it)
    description: str | None = None  # what it reads and what it writes, for people
    provider: str | None
    integration: str
    schedule: str
    # The schedule trigger's period: the sync-health monitor calls an integration STALE when
    # no run succeeded within twice this (None: not monitored for staleness).
    interval_minutes: int | None = Field(default=None, gt=0)
    placeholders: list[Placeholder]
    credentials: list[CredentialSpec] = []

    @model_validator(mode="after")
    def _consistent(self) -> TemplateSpec:
        names = [p.name for p in self.placeholders]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.id}: placeholder names repeat")
        keys = [c.key for c in self.credentials]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{self.id}: credential keys repeat")
        for placeholder in self.placeholders:
            kind, _, key = placeholder.source.partition(":")
            if kind == "credential" and key not in keys:
                raise ValueError(f"{self.id}: {placeholder.name} names no credential {key!r}")
        if TOKEN.search(self.name):
            raise ValueError(f"{self.id}: the workflow name must be fixed")
        return self

    @property
    def ref(self) -> str:
        return f"{REF_PREFIX}{self.id}"

    def load(self, directory: Path = TEMPLATES_DIR) -> dict[str, Any]:
        try:
            workflow = json.loads((directory / self.file).read_text())
        except (OSError, ValueError) as exc:
            raise TemplateError(f"template {self.id}: {self.file} is not readable JSON") from exc
        if not isinstance(workflow, dict):
            raise TemplateError(f"template {self.id}: {self.file} is not a workflow object")
        return workflow


class Manifest(_Model):
    templates: list[TemplateSpec]
    # plan -> the template ids a new instance of a tenant on that plan gets unless told
    # otherwise; a plan not listed gets DEFAULT_PLAN's.
    plans: dict[str, list[str]] = {}

    @model_validator(mode="after")
    def _unique(self) -> Manifest:
        for attr in ("id", "file", "name"):
            values = [getattr(t, attr) for t in self.templates]
            if len(set(values)) != len(values):
                raise ValueError(f"template {attr}s must be unique")
        known = {t.id for t in self.templates}
        for plan, ids in self.plans.items():
            if set(ids) - known or len(set(ids)) != len(ids):
                raise ValueError(f"plan {plan!r}: unknown or repeated template ids")
        return self

    def plan_defaults(self, plan: str) -> list[str]:
        """``manifest:<id>`` of the templates a tenant on ``plan`` gets by default."""
        ids = self.plans.get(plan, self.plans.get(DEFAULT_PLAN, []))
        return [f"{REF_PREFIX}{i}" for i in ids]

    def get(self, template_id: str) -> TemplateSpec:
        for spec in self.templates:
            if spec.id == template_id:
                return spec
        raise TemplateError(f"no workflow template {template_id!r}", template=template_id)


def load_manifest(directory: Path = TEMPLATES_DIR) -> Manifest:
    return Manifest.model_validate_json((directory / MANIFEST).read_text())


@cache
def bundled_manifest() -> Manifest:
    return load_manifest()


async def plan_templates(session: AsyncSession, tenant_id: uuid.UUID) -> list[str]:
    """The default templates of the tenant's plan (``manifest.json`` ``plans``)."""
    query = select(_TENANTS.c.plan).where(_TENANTS.c.id == tenant_id)
    plan = (await session.execute(query)).scalar_one_or_none()
    return bundled_manifest().plan_defaults(plan or DEFAULT_PLAN)


def template_id(source: object) -> str | None:
    """The manifest id of a ``manifest:<id>`` source, else None (a path or a workflow)."""
    if isinstance(source, str) and source.startswith(REF_PREFIX):
        return source.removeprefix(REF_PREFIX)
    return None


# --- validating and rendering -------------------------------------------------------------------


def _strings(value: Any, where: str = "$") -> Iterator[tuple[str, str]]:
    """Every string in a JSON structure (object keys included), with its path."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield f"{where}.{key}", str(key)
            yield from _strings(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{where}[{index}]")


def placeholders_in(value: Any) -> set[str]:
    return {m for _, text in _strings(value) for m in TOKEN.findall(text)}


def render(template: Any, values: Mapping[str, str]) -> Any:
    """A copy of ``template`` (parsed JSON) with every ``__ZIXLY_NAME__`` replaced."""
    used = placeholders_in(template)
    missing = sorted(used - set(values))
    if missing:
        raise TemplateError(f"no value for placeholder(s): {', '.join(missing)}", missing=missing)

    def text(value: str) -> str:
        rendered = TOKEN.sub(lambda m: values[m.group(1)], value)
        if rendered.startswith("=") and not value.startswith("="):
            raise TemplateError("a placeholder value would turn into an n8n expression")
        return rendered

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return text(value)
        if isinstance(value, Mapping):
            return {text(str(k)): walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(item) for item in value]
        return value

    return walk(template)


def workflow_problems(workflow: Mapping[str, Any]) -> list[str]:
    """What would stop n8n importing the export (the shape its public API accepts)."""
    problems: list[str] = []
    nodes = workflow.get("nodes")
    if not isinstance(workflow.get("name"), str) or not workflow.get("name"):
        problems.append("no name")
    if not isinstance(nodes, list) or not nodes:
        return [*problems, "no nodes"]
    if not isinstance(workflow.get("connections"), dict):
        problems.append("connections is not an object")
    if not isinstance(workflow.get("settings", {}), dict):
        problems.append("settings is not an object")
    names: list[str] = []
    for index, node in enumerate(nodes):
        if not isinstance(node, dict):
            problems.append(f"node {index} is not an object")
            continue
        for key, kind in (("name", str), ("type", str), ("parameters", dict)):
            if not isinstance(node.get(key), kind):
                problems.append(f"node {index}: {key} missing or not {kind.__name__}")
        if not isinstance(node.get("typeVersion"), int | float):
            problems.append(f"node {index}: no typeVersion")
        position = node.get("position")
        if not (isinstance(position, list) and len(position) == 2):
            problems.append(f"node {index}: position is not [x, y]")
        names.append(str(node.get("name")))
    if len(set(names)) != len(names):
        problems.append("node names repeat")
    for source, outputs in dict(workflow.get("connections") or {}).items():
        if source not in names:
            problems.append(f"connection from unknown node {source!r}")
        for kind in dict(outputs).values():
            for branch in kind:
                for target in branch or []:
                    if target.get("node") not in names:
                        problems.append(f"connection to unknown node {target.get('node')!r}")
    return problems


def template_problems(spec: TemplateSpec, workflow: Mapping[str, Any]) -> list[str]:
    """The workflow against its manifest entry: shape, name, placeholders both ways."""
    problems = workflow_problems(workflow)
    if workflow.get("name") != spec.name:
        problems.append(f"workflow name {workflow.get('name')!r} is not {spec.name!r}")
    declared = {p.name for p in spec.placeholders}
    used = placeholders_in(workflow) | placeholders_in([c.data for c in spec.credentials])
    problems += [f"placeholder {n} is used but not declared" for n in sorted(used - declared)]
    problems += [f"placeholder {n} is declared but not used" for n in sorted(declared - used)]
    for where, value in _strings(workflow):
        if value.startswith("=") and TOKEN.search(value):
            problems.append(f"placeholder inside an n8n expression at {where}")
    by_source = {p.name: p.source for p in spec.placeholders}
    by_key = {c.key: c for c in spec.credentials}
    for node in workflow.get("nodes") or []:
        for kind, ref in dict(node.get("credentials") or {}).items():
            match = TOKEN.fullmatch(str(ref.get("id", "")))
            source = by_source.get(match.group(1), "") if match else ""
            wanted = by_key.get(source.removeprefix("credential:"))
            if wanted is not None and (kind, ref.get("name")) != (wanted.type, wanted.name):
                problems.append(f"node {node.get('name')!r}: credential is not {wanted.name!r}")
    for credential in spec.credentials:
        for name in placeholders_in(credential.data):
            if by_source.get(name, "").startswith("credential:"):
                problems.append(f"credential {credential.key} uses a credential id ({name})")
    problems += _credential_reference_problems(spec, workflow)
    problems += _trigger_problems(spec, workflow)
    return problems


def _credential_reference_problems(spec: TemplateSpec, workflow: Mapping[str, Any]) -> list[str]:
    """Every node credential names a declared credential through its ``credential:<key>``
    placeholder (never a fixed id: ids differ per instance), and every declared credential
    is used by some node."""
    problems: list[str] = []
    by_source = {p.name: p.source for p in spec.placeholders}
    keys = {c.key for c in spec.credentials}
    referenced: set[str] = set()
    for node in workflow.get("nodes") or []:
        for ref in dict(node.get("credentials") or {}).values():
            match = TOKEN.fullmatch(str(dict(ref).get("id", "")))
            kind, _, key = by_source.get(match.group(1), "").partition(":") if match else ("",) * 3
            if kind != "credential":
                problems.append(
                    f"node {node.get('name')!r}: credential id is not a credential:<key> placeholder"
                )
            elif key in keys:
                referenced.add(key)
    problems += [
        f"credential {key} is declared but no node uses it" for key in sorted(keys - referenced)
    ]
    return problems


SCHEDULE_TRIGGER = "n8n-nodes-base.scheduleTrigger"
WEBHOOK_TRIGGER = "n8n-nodes-base.webhook"
# A Schedule Trigger rule's period in minutes, from its field and that field's interval
# (defaults as n8n's node description has them); months and cron have no fixed period.
_PERIODS: dict[str, tuple[str, int, float]] = {
    "seconds": ("secondsInterval", 30, 1 / 60),
    "minutes": ("minutesInterval", 5, 1),
    "hours": ("hoursInterval", 1, 60),
    "days": ("daysInterval", 1, 1440),
    "weeks": ("weeksInterval", 1, 10080),
}


def webhook_path(spec: TemplateSpec) -> str:
    """The on-demand webhook's path (C4): ``zixly-<id>`` (an id already so prefixed is used
    as it is: ``zixly-heartbeat``)."""
    return spec.id if spec.id.startswith("zixly-") else f"zixly-{spec.id}"


def schedule_periods(workflow: Mapping[str, Any]) -> list[float | None]:
    """The period in minutes of every Schedule Trigger rule (None: not a fixed period)."""
    periods: list[float | None] = []
    for node in workflow.get("nodes") or []:
        if node.get("type") != SCHEDULE_TRIGGER:
            continue
        rule = dict(dict(node.get("parameters") or {}).get("rule") or {})
        for interval in rule.get("interval") or [{}]:
            found = _PERIODS.get(str(interval.get("field", "days")))
            if found is None:
                periods.append(None)
                continue
            name, default, minutes = found
            count = interval.get(name, default)
            periods.append(count * minutes if isinstance(count, int | float) else None)
    return periods


def _trigger_problems(spec: TemplateSpec, workflow: Mapping[str, Any]) -> list[str]:
    """The on-demand webhook (POST ``zixly-<id>``) and, when the manifest states
    ``interval_minutes``, exactly one schedule rule with that period."""
    problems: list[str] = []
    path = webhook_path(spec)
    webhooks = [
        dict(node.get("parameters") or {})
        for node in workflow.get("nodes") or []
        if node.get("type") == WEBHOOK_TRIGGER
    ]
    if not any(w.get("path") == path and w.get("httpMethod") == "POST" for w in webhooks):
        problems.append(f"no POST webhook trigger with path {path!r}")
    if spec.interval_minutes is not None:
        periods = schedule_periods(workflow)
        if periods != [spec.interval_minutes]:
            shown = ", ".join("not fixed" if p is None else f"{p:g}" for p in periods) or "none"
            problems.append(
                f"interval_minutes {spec.interval_minutes} does not match the schedule "
                f"trigger (minutes: {shown})"
            )
    return problems


# --- values -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TenantValues:
    """Where placeholder values come from for one tenant."""

    tenant_id: uuid.UUID
    slug: str
    name: str
    ingest_url: str | None = None
    settings: Mapping[str, str] = field(default_factory=dict)
    # Issues a real ingest token for the tenant (``ingest:token``), called only where a
    # credential using it is created (see deploy_templates); the lifecycle provides it.
    ingest_token: Callable[[], Awaitable[str]] | None = field(
        default=None, compare=False, repr=False
    )
    # provider -> current access token (``integration:<provider>``); see
    # with_integration_tokens.
    integration_tokens: Mapping[str, Secret] = field(
        default_factory=dict, compare=False, repr=False
    )
    # ``provider:<name>``: the settings' provider_base_urls (the sandbox) and per-provider
    # URL parameters (Shopify's ``shop``); see with_provider_urls.
    provider_base_urls: Mapping[str, str] = field(default_factory=dict)
    provider_params: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def source(self, source: str, credential_ids: Mapping[str, str]) -> str | None:
        """The value of one source; None if it has none (yet)."""
        kind, _, key = source.partition(":")
        fixed = {
            "tenant.id": str(self.tenant_id),
            "tenant.slug": self.slug,
            "tenant.name": self.name,
            "zixly.ingest_url": self.ingest_url.rstrip("/") if self.ingest_url else None,
        }
        if source in fixed:
            return fixed[source]
        if kind == "credential":
            return credential_ids.get(key)
        if kind == "setting":
            return self.settings.get(key)
        if kind == "integration":
            token = self.integration_tokens.get(key)
            return token.reveal() if token is not None else NOT_CONNECTED
        if kind == "provider":
            return self.provider_url(key)
        return None  # secret: only where a credential is created (see deploy_templates)

    def provider_url(self, name: str) -> str | None:
        """The provider's data API base URL (C2), or None while it cannot be known (an
        unknown provider, or a Shopify shop not connected yet)."""
        spec = PROVIDERS.get(name)
        if spec is None:
            return None
        try:
            return spec.api_base(self.provider_base_urls, **self.provider_params.get(name, {}))
        except (KeyError, IndexError):
            return None


async def tenant_values(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    *,
    ingest_url: str | None = None,
    ingest_token: Callable[[], Awaitable[str]] | None = None,
) -> TenantValues:
    query = select(_TENANTS.c.slug, _TENANTS.c.name).where(_TENANTS.c.id == tenant_id)
    row = (await session.execute(query)).one()
    return TenantValues(
        tenant_id, str(row.slug), str(row.name), ingest_url=ingest_url, ingest_token=ingest_token
    )


async def with_integration_tokens(
    session: AsyncSession, tenant: TenantValues, keyring: Keyring
) -> TenantValues:
    """``tenant`` with its integrations' access tokens (for ``integration:<provider>``);
    ``session`` may be staff or the tenant's own."""
    tokens = await TokenStore(keyring).access_tokens(session, tenant.tenant_id)
    return replace(tenant, integration_tokens=tokens)


async def with_provider_urls(
    session: AsyncSession, tenant: TenantValues, base_urls: Mapping[str, str]
) -> TenantValues:
    """``tenant`` with what ``provider:<name>`` needs: the configured base URL overrides and
    the URL parameters its integrations recorded (``metadata.shop`` for Shopify)."""
    c = _INTEGRATIONS.c
    query = select(c.provider, c["metadata"].label("meta")).where(c.tenant_id == tenant.tenant_id)
    params = {
        str(row.provider): {"shop": str(row.meta["shop"])}
        for row in (await session.execute(query)).all()
        if isinstance(row.meta, dict) and row.meta.get("shop")
    }
    return replace(tenant, provider_base_urls=dict(base_urls), provider_params=params)


def values_for(
    spec: TemplateSpec,
    tenant: TenantValues,
    credential_ids: Mapping[str, str],
    generated: Mapping[str, str] | None = None,
) -> dict[str, str]:
    values: dict[str, str] = {}
    for placeholder in spec.placeholders:
        kind, _, key = placeholder.source.partition(":")
        value = (
            (generated or {}).get(key)
            if kind == "secret"
            else (generated or {}).get(INGEST_TOKEN)
            if placeholder.source == INGEST_TOKEN
            else tenant.source(placeholder.source, credential_ids)
        )
        if value is not None:
            values[placeholder.name] = value
    return values


# --- deploying ----------------------------------------------------------------------------------


async def _schema_check(
    api: N8nClient, credential: CredentialSpec, data: Mapping[str, Any]
) -> None:
    """The credential's fields against the type's schema as the instance reports it."""
    schema = await api.get_credential_schema(credential.type)
    known = set(dict(schema.get("properties") or {}))
    required = set(schema.get("required") or [])
    unknown, absent = sorted(set(data) - known), sorted(required - set(data))
    if unknown or absent:
        raise TemplateError(
            f"credential {credential.name!r} does not fit n8n's {credential.type} schema",
            unknown=unknown,
            missing=absent,
        )


def _needs_ingest_token(spec: TemplateSpec, credential: CredentialSpec) -> bool:
    used = placeholders_in(credential.data)
    return any(p.source == INGEST_TOKEN and p.name in used for p in spec.placeholders)


async def deploy_templates(
    api: N8nClient,
    cookie: str,
    specs: Sequence[TemplateSpec],
    tenant: TenantValues,
    directory: Path = TEMPLATES_DIR,
) -> list[dict[str, Any]]:
    """Create the credentials ``specs`` need (those missing by name and type) and return the
    rendered workflows, ready for ``bootstrap_instance`` to create and activate."""
    existing = {
        (str(c.get("name")), str(c.get("type"))): str(c["id"])
        for c in await api.list_credentials(cookie)
    }
    rendered: list[dict[str, Any]] = []
    ingest_token: str | None = None  # issued once per deployment, only if a credential needs it
    for spec in specs:
        workflow = spec.load(directory)
        problems = template_problems(spec, workflow)
        if problems:
            raise TemplateError(f"template {spec.id} is invalid", problems=problems)
        ids: dict[str, str] = {}
        for credential in spec.credentials:
            found = existing.get((credential.name, credential.type))
            if found is None:
                generated = {
                    p.source.partition(":")[2]: secrets.token_urlsafe(32)
                    for p in spec.placeholders
                    if p.source.startswith("secret:")
                }
                if _needs_ingest_token(spec, credential):
                    if ingest_token is None:
                        if tenant.ingest_token is None:
                            raise TemplateError("no ingest token issuer for ingest:token")
                        ingest_token = await tenant.ingest_token()
                    generated[INGEST_TOKEN] = ingest_token
                data = render(credential.data, values_for(spec, tenant, {}, generated))
                await _schema_check(api, credential, data)
                created = await api.create_credential(credential.name, credential.type, data)
                found = existing[(credential.name, credential.type)] = str(created["id"])
            ids[credential.key] = found
        rendered.append(render(workflow, values_for(spec, tenant, ids)))
    return rendered
