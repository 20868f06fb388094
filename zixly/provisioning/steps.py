"""The steps of instance operations (see ``zixly.provisioning.lifecycle`` for the state
machine): provisioning (secrets, create, start, health, bootstrap, templates), running and
stopping, deploying templates, upgrading with rollback, deprovisioning with a final export.
Each runtime call goes through ``self.runtime``; each step records itself (``records``)."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from zixly.core.errors import ZixlyError
from zixly.core.logging import get_logger
from zixly.ingest.instance_tokens import instance_token_issuer, revoke_all
from zixly.provisioning.instances import (
    ActualState,
    EventKind,
    InstanceRepository,
    InstanceRow,
    Step,
    provision_progress,
)
from zixly.provisioning.n8n.bootstrap import BootstrapResult, bootstrap_instance
from zixly.provisioning.n8n.bundle_export import envelope, export_bundle
from zixly.provisioning.n8n.client import N8nClient
from zixly.provisioning.n8n.errors import N8nUnavailableError
from zixly.provisioning.n8n.fingerprints import records_from_json
from zixly.provisioning.operations import (
    ERROR_LIMIT,
    STAFF,
    HealthCheckError,
    describe,
    handle_of,
    load_templates,
)
from zixly.provisioning.preconditions import VersionUnavailableError, ensure_version_runs
from zixly.provisioning.records import ATTEMPTING, LifecycleBase, utc_now
from zixly.provisioning.runtimes.base import (
    VERSION_LABEL,
    InstanceHandle,
    InstanceSpec,
    RuntimeState,
    RuntimeStatus,
)
from zixly.provisioning.secrets import SecretField
from zixly.provisioning.templates import (
    bundled_manifest,
    deploy_templates,
    template_id,
    tenant_values,
    with_integration_tokens,
    with_provider_urls,
)

log = get_logger("zixly.provisioning.lifecycle")


class LifecycleSteps(LifecycleBase):
    # --- provisioning ------------------------------------------------------------------------
    async def _provision(self, row: InstanceRow) -> InstanceRow:
        if row.actual_state is not ActualState.PROVISIONING:
            row = await self._transition(row, ActualState.PROVISIONING, "provisioning")
        # Never twice: a new encryption key would make the instance's data unreadable.
        if row.encryption_key_ciphertext is None:
            ATTEMPTING.set(Step.SECRETS)
            sealed = self.secrets.generate(row.tenant_id, await self._slug(row.tenant_id))
            row = await self._step(row, Step.SECRETS, **sealed.columns())
        ATTEMPTING.set(Step.CREATED)
        row, handle = await self._create(row)
        row = await self._step(row, Step.CREATED)
        ATTEMPTING.set(Step.STARTED)
        row, status = await self._start(row, handle)
        row = await self._step(row, Step.STARTED)
        ATTEMPTING.set(Step.READY)
        row = await self._healthy(row, handle, status)
        row = await self._step(row, Step.READY)
        if not _done(row, Step.BOOTSTRAPPED):
            ATTEMPTING.set(Step.BOOTSTRAPPED)
            row, _ = await self._bootstrap(row, templates=False)
            row = await self._step(row, Step.BOOTSTRAPPED)
        if not _done(row, Step.TEMPLATES):
            ATTEMPTING.set(Step.TEMPLATES)
            row, result = await self._bootstrap(row, templates=True)
            row = await self._step(row, Step.TEMPLATES, details=_deployed(result))
        ATTEMPTING.set(Step.DONE)
        row = await self._transition(
            row,
            ActualState.RUNNING,
            "provisioned",
            event_step=Step.DONE,
            step=Step.DONE,
            last_error=None,
        )
        await self._hook(row, Step.DONE)
        return row

    async def _create(
        self, row: InstanceRow, *, version: str | None = None
    ) -> tuple[InstanceRow, InstanceHandle]:
        slug = await self._slug(row.tenant_id)
        version = version or row.version
        spec = InstanceSpec(
            tenant_id=str(row.tenant_id),
            tenant_slug=slug,
            version=version,
            # The encryption key, and the owner where n8n takes it from the environment
            # (2.17+). N8N_PATH: the editor is served behind Zixly's proxy at /editor/<slug>/
            # (zixly/http/editor_proxy.py); n8n rewrites its assets' base path to it.
            env={
                **self.secrets.for_bootstrap(row).instance_env(version),
                "N8N_PATH": f"/editor/{slug}/",
            },
            limits=self.limits,
        )
        handle = await self.runtime.create(spec)
        stored = asdict(handle) | {"labels": dict(handle.labels)}
        if stored != row.runtime_handle:
            row = await self._write(row, runtime_handle=stored)
        return row, handle

    async def _start(
        self, row: InstanceRow, handle: InstanceHandle
    ) -> tuple[InstanceRow, RuntimeStatus]:
        status = await self.runtime.start(handle)
        if status.url and status.url != row.url:
            row = await self._write(row, url=status.url, editor_url=f"{status.url}/")
        return row, status

    async def _healthy(
        self, row: InstanceRow, handle: InstanceHandle, status: RuntimeStatus
    ) -> InstanceRow:
        """Wait until the process lives and n8n answers; fail fast if the process exits."""
        deadline = time.monotonic() + self.ready_timeout
        url = status.url
        while True:
            current = await self.runtime.inspect(handle)
            if current.state is not RuntimeState.RUNNING:
                code = f" (exit code {current.exit_code})" if current.exit_code is not None else ""
                raise HealthCheckError(
                    f"n8n is {current.state.value.lower()} instead of starting up{code}"
                )
            url = current.url or url
            if url is None:
                raise HealthCheckError("the runtime reports no URL for the instance")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HealthCheckError(f"n8n did not become ready within {self.ready_timeout:.0f}s")
            try:
                client = N8nClient(url, self.http, version=handle.labels.get(VERSION_LABEL))
                await client.wait_ready(min(3.0, remaining))
            except N8nUnavailableError:
                continue
            health = {"ok": True, "state": current.state.value, "url": url}
            return await self._write(row, last_health=health, last_health_at=utc_now())

    async def _bootstrap(
        self, row: InstanceRow, *, templates: bool
    ) -> tuple[InstanceRow, BootstrapResult]:
        """Owner and API key (stored encrypted when new); with ``templates``, the row's
        workflow templates too (created once, matched by name, activated)."""
        if row.url is None:
            raise HealthCheckError("the instance has no URL yet")
        workflows = load_templates(row.templates) if templates else []
        chosen = [template_id(s) for s in row.templates] if templates else []
        specs = [bundled_manifest().get(i) for i in chosen if i is not None]
        prepare = None
        if specs:
            async with self.db.transaction(STAFF) as session:
                tenant = await tenant_values(
                    session,
                    row.tenant_id,
                    ingest_url=self.ingest_url,
                    ingest_token=instance_token_issuer(self.db, row.tenant_id),
                )
                # integration:<provider>: the access tokens of the moment (kept current later
                # by zixly.provisioning.credentials).
                tenant = await with_integration_tokens(session, tenant, self.secrets.keyring)
                tenant = await with_provider_urls(session, tenant, self.provider_base_urls)

            async def prepare(api: N8nClient, cookie: str) -> list[dict[str, Any]]:
                return await deploy_templates(api, cookie, specs, tenant)

        result = await bootstrap_instance(
            N8nClient(row.url, self.http, version=row.version),
            self.secrets.for_bootstrap(row),
            workflows,
            ready_timeout=self.ready_timeout,
            prepare=prepare,
            recorded=records_from_json(row.template_fingerprints) if templates else None,
        )
        stored = self.secrets.open(row, SecretField.API_KEY)
        if stored is None or stored.reveal() != result.api_key:
            sealed = self.secrets.seal(row.tenant_id, SecretField.API_KEY, result.api_key)
            row = await self._write(row, api_key_ciphertext=sealed)
        if templates:
            row = await self._record_templates(row, result)
        return row, result

    async def _record_templates(self, row: InstanceRow, result: BootstrapResult) -> InstanceRow:
        """Keep what was written (for the next deploy's upgrade check) and tell about the
        template workflows left alone because they differ from what Zixly wrote."""
        kept = dict(row.template_fingerprints or {})
        kept.update({name: r.as_json() for name, r in result.fingerprints.items()})
        if kept != row.template_fingerprints:
            row = await self._write(row, template_fingerprints=kept)
        for name, reason in result.skipped.items():
            why = (
                "has local changes"
                if reason == "edited"
                else "differs from its template and Zixly has no record of writing it"
            )
            await self._event(
                row,
                EventKind.STEP,
                f"template workflow {name!r} {why}; not updated",
                step=Step.TEMPLATES,
                details={
                    "template": name,
                    "workflow_id": result.workflow_ids.get(name),
                    "outcome": "skipped",
                    "reason": reason,
                },
            )
        return row

    # --- running, stopping -------------------------------------------------------------------
    async def _ensure_running(self, row: InstanceRow, *, restart: bool) -> InstanceRow:
        handle = handle_of(row)
        observed = await self.runtime.inspect(handle) if handle else None
        missing = observed is None or observed.state is RuntimeState.MISSING
        if restart and not missing and handle is not None:
            await self.runtime.stop(handle)
        row, handle = await self._create(row)  # a no-op unless the instance went missing
        row, status = await self._start(row, handle)
        row = await self._healthy(row, handle, status)
        if missing:  # its data may be gone with it: set the owner, key and templates up again
            await self._event(row, EventKind.REPAIR, "the runtime instance was missing; re-created")
            row, _ = await self._bootstrap(row, templates=True)
        if row.actual_state is not ActualState.RUNNING or row.last_error is not None:
            row = await self._transition(row, ActualState.RUNNING, "running", last_error=None)
        return row

    async def _halt(self, row: InstanceRow, target: ActualState) -> InstanceRow:
        handle = handle_of(row)
        if handle is not None:
            await self.runtime.stop(handle)
        if row.actual_state is not target or row.last_error is not None:
            row = await self._transition(row, target, target.value.lower(), last_error=None)
        return row

    async def _deploy(self, row: InstanceRow) -> InstanceRow:
        ATTEMPTING.set(Step.TEMPLATES)
        row, result = await self._bootstrap(row, templates=True)
        await self._event(
            row,
            EventKind.STEP,
            "templates deployed",
            step=Step.TEMPLATES,
            details=_deployed(result),
        )
        return row

    # --- upgrade -----------------------------------------------------------------------------
    async def _upgrade(self, row: InstanceRow) -> InstanceRow:
        old, new = row.version, str(row.target_version)
        handle = handle_of(row)
        if handle is None:
            raise ZixlyError("the instance has no runtime handle to upgrade")
        if row.actual_state is not ActualState.UPGRADING:
            try:  # checked again: the request may be older than what the runtime has now
                await ensure_version_runs(self.runtime, new)
            except VersionUnavailableError as exc:
                message = f"upgrade to {new} refused, still running {old}: {describe(exc)}"
                return await self._write(
                    row,
                    event=(EventKind.ERROR, message, None),
                    target_version=None,
                    last_error=message[:ERROR_LIMIT],
                )
        if row.actual_state is not ActualState.UPGRADING:
            row = await self._transition(
                row, ActualState.UPGRADING, f"upgrading {old} -> {new}", details={"to": new}
            )
        try:
            row = await self._switch_version(row, handle, new)
        except Exception as exc:
            reason = describe(exc)
            log.warning("instance.upgrade_failed", tenant_id=str(row.tenant_id), error=reason)
            row = await self.get(row.tenant_id)  # the failed attempt may have written to it
            await self._event(
                row, EventKind.ERROR, f"upgrade to {new} failed; rolling back to {old}: {reason}"
            )
            row = await self._switch_version(row, handle, old)
            return await self._transition(
                row,
                ActualState.RUNNING,
                f"rolled back to {old}",
                version=old,
                target_version=None,
                last_error=f"upgrade to {new} failed (rolled back to {old}): {reason}",
            )
        return await self._transition(
            row,
            ActualState.RUNNING,
            f"upgraded to {new}",
            version=new,
            target_version=None,
            last_error=None,
        )

    async def _switch_version(
        self, row: InstanceRow, handle: InstanceHandle, version: str
    ) -> InstanceRow:
        await self.runtime.stop(handle)
        row, handle = await self._create(row, version=version)
        row, status = await self._start(row, handle)
        return await self._healthy(row, handle, status)

    # --- deprovisioning ----------------------------------------------------------------------
    async def _deprovision(self, row: InstanceRow) -> InstanceRow:
        if row.actual_state is ActualState.DEPROVISIONED:
            return row
        if row.actual_state is not ActualState.DEPROVISIONING:
            row = await self._transition(row, ActualState.DEPROVISIONING, "deprovisioning")
        handle = handle_of(row)
        if row.step not in (Step.EXPORTED, Step.REMOVED):
            ATTEMPTING.set(Step.EXPORTED)
            row, bundle = await self._export(row, handle)
            async with self.db.transaction(STAFF) as session:
                repo = InstanceRepository(session)
                export_id = await repo.add_export(row.tenant_id, "DEPROVISION", bundle)
                row = await repo.update(row, step=Step.EXPORTED)
                record = await repo.add_event(
                    row.tenant_id,
                    EventKind.EXPORT,
                    f"exported {len(bundle['workflows'])} workflow(s)",
                    step=Step.EXPORTED,
                    details={"export_id": str(export_id), "workflows": len(bundle["workflows"])},
                )
            await self._publish(record)
            await self._hook(row, Step.EXPORTED)
        # Nothing may post for the tenant any more (every attempt: it is idempotent). The
        # instance's API key, owner login and the provider tokens pushed into its credentials
        # go with its data (runtime.remove) and the row's secrets below.
        revoked = await revoke_all(self.db, row.tenant_id, reason="deprovisioned")
        if row.step is not Step.REMOVED:
            ATTEMPTING.set(Step.REMOVED)
            if handle is not None:
                await self.runtime.remove(handle)
            row = await self._step(row, Step.REMOVED)
        return await self._transition(
            row,
            ActualState.DEPROVISIONED,
            "deprovisioned",
            details={"ingest_tokens_revoked": revoked},
            runtime_handle=None,
            url=None,
            editor_url=None,
            encryption_key_ciphertext=None,
            owner_password_ciphertext=None,
            api_key_ciphertext=None,
            last_error=None,
        )

    async def _export(
        self, row: InstanceRow, handle: InstanceHandle | None
    ) -> tuple[InstanceRow, dict[str, Any]]:
        """Every workflow, as the bundle n8n's own import takes (zixly.provisioning.n8n.bundle_export)."""
        api_key = self.secrets.open(row, SecretField.API_KEY)
        if handle is None or api_key is None:
            return row, envelope([], n8n_version=row.version)
        row, status = await self._start(row, handle)
        row = await self._healthy(row, handle, status)
        assert row.url is not None
        api = N8nClient(row.url, self.http, api_key=api_key.reveal(), version=row.version)
        return row, await export_bundle(api, n8n_version=row.version)


def _done(row: InstanceRow, step: Step) -> bool:
    return provision_progress(row.step) >= provision_progress(step)


def _deployed(result: BootstrapResult) -> dict[str, Any]:
    return {
        "workflows": result.workflow_ids,
        "created": result.created,
        "updated": result.updated,
        "unchanged": result.unchanged,
        "skipped": result.skipped,
    }
