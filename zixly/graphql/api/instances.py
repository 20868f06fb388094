"""Tenant n8n instances: staff operations and progress, and each tenant ADMIN's own n8n.

Staff mutations record the intent and enqueue the job after the commit (``control``). The
tenant side takes no tenant argument: everything acts on ``ctx.tenant(Role.ADMIN)``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any, cast

import strawberry
from strawberry.scalars import JSON

from zixly.core.errors import NotFoundError, ValidationError
from zixly.domain.ids import parse_id
from zixly.graphql.api.instance_types import (
    FinalExport,
    Instance,
    InstanceEvent,
    N8nInstance,
    Workflow,
    WorkflowImportReport,
)
from zixly.graphql.context import Context, Info
from zixly.http.editor_proxy import editor_path
from zixly.provisioning.control import (
    TenantN8n,
    request_and_enqueue,
    tenant_instance,
)
from zixly.provisioning.final_exports import final_export
from zixly.provisioning.instance_events import subscribe
from zixly.provisioning.instances import InstanceRepository
from zixly.provisioning.operations import Operation
from zixly.provisioning.templates import bundled_manifest, template_id
from zixly.security.principal import Role

MAX_EXPORT_IDS = 200


def _tenant_n8n(ctx: Context) -> TenantN8n:
    return ctx.services.tenant_n8n


async def _operate(
    info: Info,
    tenant_id: strawberry.ID,
    operation: Operation,
    *,
    version: str | None = None,
    templates: list[Any] | None = None,
) -> Instance:
    ctx = info.context
    ctx.principal.require_staff()
    tenant = parse_id(tenant_id, "tenantId")
    services = ctx.services
    row, _ = await request_and_enqueue(
        services.lifecycle,
        ctx.staff_session(),
        services.queue,
        tenant,
        operation,
        version=version,
        templates=templates,
        plan_defaults=True,
    )
    return Instance.from_row(row)


def _templates(templates: list[JSON] | None) -> list[Any] | None:
    """Workflow objects, or ``manifest:<id>`` of a template in n8n-workflows/. Any other
    string is refused: the lifecycle would read it as a file on the worker's machine."""
    if templates is None:
        return None
    known = {spec.id for spec in bundled_manifest().templates}
    for template in templates:
        if isinstance(template, dict):
            continue
        if template_id(template) not in known:
            raise ValidationError(
                "each template must be a workflow JSON object or manifest:<id> of a known template",
                field="templates",
            )
    return list(templates)


@strawberry.type
class InstanceQuery:
    @strawberry.field(description="A tenant's n8n instance (Zixly staff).")
    async def instance(self, info: Info, tenant_id: strawberry.ID) -> Instance:
        ctx = info.context
        ctx.principal.require_staff()
        tenant = parse_id(tenant_id, "tenantId")
        async with ctx.staff_session() as session:
            row = await InstanceRepository(session).get(tenant)
        if row is None:
            raise NotFoundError("this tenant has no n8n instance", tenant_id=str(tenant))
        return Instance.from_row(row)

    @strawberry.field(
        description="The workflows exported when a tenant's instance was deprovisioned, while "
        "kept; null when none is (Zixly staff)."
    )
    async def final_export(self, info: Info, tenant_id: strawberry.ID) -> FinalExport | None:
        ctx = info.context
        ctx.principal.require_staff()
        tenant = parse_id(tenant_id, "tenantId")
        days = ctx.settings.final_export_retention_days
        async with ctx.staff_session() as session:
            kept = await final_export(session, tenant, days)
        return FinalExport.from_export(kept) if kept is not None else None

    @strawberry.field(description="Your tenant's n8n instance, if it has one (ADMIN).")
    async def n8n_instance(self, info: Info) -> N8nInstance | None:
        ctx = info.context
        tenant = ctx.tenant(Role.ADMIN)
        async with ctx.session() as session:
            view = await tenant_instance(session, tenant)
        if view is None:
            return None
        slug = ctx.principal.tenant_slug
        # Customers reach their editor only through Zixly's authenticated proxy.
        editor = f"{ctx.settings.base_url}{editor_path(slug)}" if slug else None
        return N8nInstance.from_view(view, editor_url=editor)

    @strawberry.field(description="The workflows in your tenant's n8n, by name (ADMIN).")
    async def workflows(self, info: Info) -> list[Workflow]:
        ctx = info.context
        tenant = ctx.tenant(Role.ADMIN)
        return [Workflow.from_n8n(w) for w in await _tenant_n8n(ctx).workflows(tenant)]

    @strawberry.field(
        description="Workflows of your n8n as a bundle whose `workflows` array n8n imports "
        "(ADMIN). Without ids: every workflow."
    )
    async def export_workflows(self, info: Info, ids: list[strawberry.ID] | None = None) -> JSON:
        ctx = info.context
        tenant = ctx.tenant(Role.ADMIN)
        if ids is not None and len(ids) > MAX_EXPORT_IDS:
            raise ValidationError(f"at most {MAX_EXPORT_IDS} ids", field="ids")
        wanted = None if ids is None else [str(i) for i in ids]
        return cast(JSON, await _tenant_n8n(ctx).export(tenant, wanted))


@strawberry.type
class InstanceMutation:
    @strawberry.mutation(
        description="Provision a tenant's n8n instance (Zixly staff). Without templates a new "
        "instance gets its plan's default templates; an empty list deploys none."
    )
    async def provision_instance(
        self,
        info: Info,
        tenant_id: strawberry.ID,
        version: str | None = None,
        templates: list[JSON] | None = None,
    ) -> Instance:
        return await _operate(
            info, tenant_id, Operation.PROVISION, version=version, templates=_templates(templates)
        )

    @strawberry.mutation(description="Stop a tenant's instance, keeping its data (Zixly staff).")
    async def stop_instance(self, info: Info, tenant_id: strawberry.ID) -> Instance:
        return await _operate(info, tenant_id, Operation.STOP)

    @strawberry.mutation(description="Start a tenant's instance again (Zixly staff).")
    async def start_instance(self, info: Info, tenant_id: strawberry.ID) -> Instance:
        return await _operate(info, tenant_id, Operation.START)

    @strawberry.mutation(
        description="Move a tenant's instance to an n8n version; rolled back if it does not "
        "come up healthy (Zixly staff)."
    )
    async def upgrade_instance(
        self, info: Info, tenant_id: strawberry.ID, version: str
    ) -> Instance:
        return await _operate(info, tenant_id, Operation.UPGRADE, version=version)

    @strawberry.mutation(
        description="Add workflow templates (JSON objects) and deploy all of the instance's "
        "templates (Zixly staff)."
    )
    async def deploy_templates(
        self, info: Info, tenant_id: strawberry.ID, templates: list[JSON] | None = None
    ) -> Instance:
        return await _operate(
            info, tenant_id, Operation.DEPLOY_TEMPLATES, templates=_templates(templates) or []
        )

    @strawberry.mutation(
        description="Export every workflow, then remove the tenant's instance (Zixly staff)."
    )
    async def deprovision_instance(self, info: Info, tenant_id: strawberry.ID) -> Instance:
        return await _operate(info, tenant_id, Operation.DEPROVISION)

    @strawberry.mutation(
        description="Create the bundle's valid workflows in your n8n as new, inactive "
        "workflows; invalid ones are reported, not imported (ADMIN)."
    )
    async def import_workflows(self, info: Info, bundle: JSON) -> WorkflowImportReport:
        ctx = info.context
        tenant = ctx.tenant(Role.ADMIN)
        return WorkflowImportReport.from_report(await _tenant_n8n(ctx).import_(tenant, bundle))


@strawberry.type
class InstanceSubscription:
    @strawberry.subscription(description="Progress of a tenant's instance, live (Zixly staff).")
    async def instance_events(
        self, info: Info, tenant_id: strawberry.ID
    ) -> AsyncGenerator[InstanceEvent, None]:
        ctx = info.context
        ctx.principal.require_staff()
        tenant: uuid.UUID = parse_id(tenant_id, "tenantId")
        async with aclosing(subscribe(ctx.services.redis, tenant)) as events:
            async for event in events:
                yield InstanceEvent.from_message(event)
