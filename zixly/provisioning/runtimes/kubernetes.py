"""Tenant n8n instances on a Kubernetes cluster, through ``lightkube`` (asyncio, typed models,
server-side apply). The objects are in ``kube_objects``; this module applies and reads them.

- ``create`` applies everything under Zixly's field manager (server-side apply, forced: Zixly
  owns these fields). The Deployment keeps the replica count it has (0 for a new one), so
  creating again never starts or stops an instance; a changed spec changes the pod
  template's digest annotation and the Deployment rolls (Recreate) when it runs.
- ``start`` scales to 1, ``stop`` to 0 and waits for the pod to be gone: the volume stays.
- ``remove`` deletes the tenant's namespace (everything in it, volume included), or with
  ``keep_data`` the Deployment and Service only, keeping namespace, Secret and volume.
- ``inspect``: no namespace or Deployment is MISSING, 0 replicas STOPPED, a pod whose
  container keeps terminating with an error EXITED (with its exit code), else RUNNING.
- ``list_managed``: the namespaces labelled ``zixly.managed=true`` and this runtime's
  ``zixly.deployment``; an unlabelled namespace is never listed, so never removed.
- The instance URL is the Service's cluster DNS name (``url_template``): Zixly's API and
  worker run in the cluster (see infra/k8s) and reach it through the zixly-ingress policy.

Errors of the API server are translated here: 404 is ``InstanceNotFoundError``, any other
refusal or an unreachable server ``RuntimeFailure`` with the server's message (secrets are
never in those: the env lives in the Secret's data only).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import TypeVar

import httpx2
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Namespace, Pod, Service

import zixly.provisioning.runtimes.kube_objects as objects
from zixly.core.logging import redact_text
from zixly.core.settings import Settings
from zixly.provisioning.runtimes.base import (
    SLUG_LABEL,
    TENANT_LABEL,
    InstanceHandle,
    InstanceSpec,
    RuntimeState,
    RuntimeStatus,
)
from zixly.provisioning.runtimes.errors import InstanceNotFoundError, RuntimeFailure
from zixly.provisioning.runtimes.process import ENCRYPTION_KEY

FIELD_MANAGER = "zixly"
RBAC_PROPAGATION_SECONDS = 10.0
T = TypeVar("T")
URL_TEMPLATE = "http://n8n.{namespace}.svc.cluster.local:5678"
_CRASHING = ("CrashLoopBackOff", "Error", "OOMKilled")


@contextlib.asynccontextmanager
async def api_errors(action: str) -> AsyncIterator[None]:
    """API server refusals and transport failures -> Zixly's errors."""
    try:
        yield
    except ApiError as exc:
        message = redact_text(exc.status.message or exc.status.reason or "no details")[:300]
        if exc.status.code == 404:
            raise InstanceNotFoundError(f"{action}: not found ({message})") from exc
        raise RuntimeFailure(
            f"{action}: the API server refused ({exc.status.code}): {message}"
        ) from exc
    except (httpx2.HTTPError, OSError) as exc:
        raise RuntimeFailure(f"{action}: the Kubernetes API server does not answer") from exc


def from_settings(settings: Settings) -> KubernetesRuntime:
    """The runtime with the cluster and layout the settings name."""
    if settings.kube_config is not None:
        config = KubeConfig.from_file(settings.kube_config)
    else:
        config = KubeConfig.from_env()  # in-cluster service account, else ~/.kube/config
    layout = objects.ClusterLayout(
        prefix=settings.kube_namespace_prefix,
        deployment=settings.kube_deployment,
        zixly_namespace=settings.kube_zixly_namespace,
        image=settings.kube_image,
        storage=settings.kube_storage,
        storage_class=settings.kube_storage_class,
        ingest_port=settings.port,
    )
    return KubernetesRuntime(AsyncClient(config=config, field_manager=FIELD_MANAGER), layout)


class KubernetesRuntime:
    name = "kubernetes"

    def __init__(
        self,
        client: AsyncClient,
        layout: objects.ClusterLayout | None = None,
        *,
        url_template: str = URL_TEMPLATE,
        stop_timeout: float = 60.0,
    ) -> None:
        self.client = client
        self.layout = layout or objects.ClusterLayout()
        self.url_template = url_template
        self.stop_timeout = stop_timeout

    # --- handles ----------------------------------------------------------------------------
    def _namespace(self, handle: InstanceHandle) -> str:
        slug = handle.instance_id.removeprefix(self.layout.prefix)
        if handle.runtime != self.name or slug == handle.instance_id:
            raise InstanceNotFoundError(
                f"not a kubernetes-runtime instance: {handle.instance_id!r}"
            )
        return self.layout.namespace(slug)

    def _handle(self, namespace: Namespace) -> InstanceHandle:
        meta = namespace.metadata
        labels = (meta.labels if meta else None) or {}
        owned = {k: v for k, v in labels.items() if k.startswith("zixly.")}
        return InstanceHandle(
            runtime=self.name,
            instance_id=str(meta.name if meta else ""),
            tenant_id=owned.get(TENANT_LABEL, ""),
            labels=owned,
        )

    # --- InstanceRuntime ----------------------------------------------------------------------
    async def create(self, spec: InstanceSpec) -> InstanceHandle:
        if not spec.env.get(ENCRYPTION_KEY):
            raise RuntimeFailure(f"the instance spec must set {ENCRYPTION_KEY} (one per tenant)")
        if spec.data_path is not None:
            raise RuntimeFailure("the kubernetes runtime keeps n8n's data in a volume claim")
        ns = self.layout.namespace(spec.tenant_slug)
        async with api_errors(f"creating {ns}"):
            applied = await self.client.apply(
                objects.namespace(self.layout, spec), field_manager=FIELD_MANAGER, force=True
            )
            binding = objects.role_binding(self.layout, spec)
            if binding is not None:
                await self.client.apply(binding, field_manager=FIELD_MANAGER, force=True)
            replicas = await self._authorised(lambda: self._replicas(ns))
            for item in objects.tenant_objects(self.layout, spec, replicas or 0):
                await self.client.apply(item, field_manager=FIELD_MANAGER, force=True)
        return self._handle(applied)

    async def _authorised(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call``, retried while a RoleBinding just applied is not yet in the API
        server's authorisation cache (a 403 for a moment after it was created)."""
        deadline = time.monotonic() + RBAC_PROPAGATION_SECONDS
        while True:
            try:
                return await call()
            except ApiError as exc:
                if exc.status.code != 403 or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def start(self, handle: InstanceHandle) -> RuntimeStatus:
        return await self._scale(handle, 1)

    async def stop(self, handle: InstanceHandle, *, grace: float = 10.0) -> RuntimeStatus:
        status = await self._scale(handle, 0)
        ns = self._namespace(handle)
        deadline = time.monotonic() + max(grace, 0) + self.stop_timeout
        async with api_errors(f"stopping {ns}"):
            while await self._pods(ns) and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
        return status

    async def remove(self, handle: InstanceHandle, *, keep_data: bool = False) -> None:
        ns = self._namespace(handle)
        async with api_errors(f"removing {ns}"):
            if keep_data:
                for kind in (Deployment, Service):
                    with contextlib.suppress(ApiError):
                        await self.client.delete(kind, objects.NAME, namespace=ns)
                return
            try:
                await self.client.delete(Namespace, ns)
            except ApiError as exc:
                if exc.status.code != 404:  # already gone: removing is idempotent
                    raise

    async def inspect(self, handle: InstanceHandle) -> RuntimeStatus:
        ns = self._namespace(handle)
        async with api_errors(f"inspecting {ns}"):
            try:
                namespace = await self.client.get(Namespace, ns)
                deployment = await self.client.get(Deployment, objects.NAME, namespace=ns)
            except ApiError as exc:
                if exc.status.code == 404:
                    return RuntimeStatus(RuntimeState.MISSING)
                raise
            if namespace.status is not None and namespace.status.phase == "Terminating":
                return RuntimeStatus(RuntimeState.MISSING)
            url = self.url_template.format(namespace=ns)
            if not deployment.spec or not deployment.spec.replicas:
                return RuntimeStatus(RuntimeState.STOPPED, url=url)
            pods = await self._pods(ns)
        started: datetime | None = None
        for pod in pods:
            if pod.status is None:
                continue
            started = pod.status.startTime or started
            for container in pod.status.containerStatuses or []:
                waiting = container.state.waiting if container.state else None
                last = container.lastState.terminated if container.lastState else None
                if waiting is not None and waiting.reason in _CRASHING:
                    return RuntimeStatus(
                        RuntimeState.EXITED,
                        url=url,
                        container_id=container.containerID,
                        exit_code=last.exitCode if last else None,
                    )
        return RuntimeStatus(RuntimeState.RUNNING, url=url, started_at=started)

    async def logs(self, handle: InstanceHandle, tail: int = 100) -> list[str]:
        ns = self._namespace(handle)
        async with api_errors(f"reading the logs of {ns}"):
            pods = await self._pods(ns)
            if not pods or not pods[0].metadata or not pods[0].metadata.name:
                return []
            lines = [
                redact_text(line)
                async for line in self.client.log(
                    pods[0].metadata.name, namespace=ns, tail_lines=tail, newlines=False
                )
            ]
        return lines[-tail:]

    async def list_managed(self) -> list[InstanceHandle]:
        async with api_errors("listing tenant namespaces"):
            found = [
                self._handle(ns)
                async for ns in self.client.list(Namespace, labels=dict(self.layout.owned()))
            ]
        return [h for h in found if h.labels.get(SLUG_LABEL)]

    # --- helpers ------------------------------------------------------------------------------
    async def _replicas(self, ns: str) -> int | None:
        try:
            current = await self.client.get(Deployment, objects.NAME, namespace=ns)
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise
        return current.spec.replicas if current.spec else None

    async def _pods(self, ns: str) -> list[Pod]:
        return [
            pod
            async for pod in self.client.list(
                Pod, namespace=ns, labels={objects.APP_LABEL: objects.APP}
            )
        ]

    async def _scale(self, handle: InstanceHandle, replicas: int) -> RuntimeStatus:
        ns = self._namespace(handle)
        async with api_errors(f"scaling {ns} to {replicas}"):
            await self.client.patch(
                Deployment,
                objects.NAME,
                {"spec": {"replicas": replicas}},
                namespace=ns,
                field_manager=FIELD_MANAGER,
            )
        return await self.inspect(handle)
