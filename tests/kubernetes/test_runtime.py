"""The ``kubernetes`` runtime against the real API server: every object, label, quota,
security field and policy read back from it; the lifecycle (create, start, stop, upgrade,
remove) carried out by the real controllers, scheduler and KWOK nodes.

No CNI runs here, so NetworkPolicies are checked as objects: nothing enforces them."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator

import pytest
from lightkube import ApiError, AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import (
    ConfigMap,
    LimitRange,
    Namespace,
    PersistentVolumeClaim,
    Pod,
    ResourceQuota,
    Secret,
    Service,
)
from lightkube.resources.networking_v1 import NetworkPolicy

import zixly.provisioning.runtimes.kube_objects as objects
from tests import kube
from zixly.provisioning.runtimes.base import (
    InstanceHandle,
    InstanceSpec,
    ResourceLimits,
    RuntimeState,
)
from zixly.provisioning.runtimes.errors import InstanceNotFoundError, RuntimeFailure
from zixly.provisioning.runtimes.kubernetes import KubernetesRuntime

STORAGE_CLASS = "zixly-test-local"


@pytest.fixture(scope="module")
async def kwok_node(kube_env: kube.KubeTestEnv) -> AsyncIterator[str]:
    from lightkube import KubeConfig

    client = AsyncClient(config=KubeConfig.from_file(kube_env.kubeconfig))
    name = f"kwok-{uuid.uuid4().hex[:6]}"
    await kube.add_kwok_node(client, name)
    yield name
    await client.close()


@pytest.fixture
async def runtime(kube_client: AsyncClient, kwok_node: str) -> KubernetesRuntime:
    layout = objects.ClusterLayout(
        prefix=f"zt{uuid.uuid4().hex[:4]}-",
        deployment=f"test-{uuid.uuid4().hex[:6]}",
        storage_class=STORAGE_CLASS,
    )
    return KubernetesRuntime(kube_client, layout, stop_timeout=30)


async def _volume(client: AsyncClient, namespace: str) -> None:
    """A statically provisioned volume for the claim in ``namespace`` (no storage
    provisioner runs here)."""
    await kube.local_storage_class(client, STORAGE_CLASS)
    await kube.static_volume(
        client, STORAGE_CLASS, f"pv-{uuid.uuid4().hex[:8]}", (namespace, objects.CLAIM)
    )


def _spec(slug: str, version: str = "1.123.81", **env: str) -> InstanceSpec:
    return InstanceSpec(
        tenant_id=str(uuid.uuid4()),
        tenant_slug=slug,
        version=version,
        env={"N8N_ENCRYPTION_KEY": secrets.token_hex(16), **env},
        limits=ResourceLimits(memory_mb=768, cpus=0.5),
    )


async def _until(predicate: object, limit: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + limit
    while True:
        if await predicate():  # type: ignore[operator]
            return
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {predicate}")
        await asyncio.sleep(0.3)


async def test_two_tenants_get_isolated_restricted_namespaces(
    runtime: KubernetesRuntime, kube_client: AsyncClient
) -> None:
    a, b = _spec("alpha"), _spec("bravo")
    handles = [await runtime.create(a), await runtime.create(b)]
    assert [h.instance_id for h in handles] == [
        runtime.layout.namespace("alpha"),
        runtime.layout.namespace("bravo"),
    ]
    for spec, handle in zip((a, b), handles, strict=True):
        ns = handle.instance_id
        namespace = await kube_client.get(Namespace, ns)
        labels = namespace.metadata.labels or {}
        assert labels["zixly.managed"] == "true"
        assert labels["zixly.deployment"] == runtime.layout.deployment
        assert labels["zixly.tenant"] == spec.tenant_id
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"

        quota = await kube_client.get(ResourceQuota, "n8n", namespace=ns)
        assert quota.spec.hard["limits.memory"] == "768Mi"
        assert quota.spec.hard["limits.cpu"] == "500m"
        assert quota.spec.hard["services.nodeports"] == "0"
        limits = await kube_client.get(LimitRange, "n8n", namespace=ns)
        assert limits.spec.limits[0].max == {"memory": "768Mi", "cpu": "500m"}

        # The encryption key is in the Secret's data and nowhere else.
        secret = await kube_client.get(Secret, objects.SECRET, namespace=ns)
        assert secret.data is not None and "N8N_ENCRYPTION_KEY" in secret.data
        key = spec.env["N8N_ENCRYPTION_KEY"]
        for kind in (Deployment, Service, PersistentVolumeClaim, ConfigMap, NetworkPolicy):
            async for item in kube_client.list(kind, namespace=ns):
                assert key not in str(item.to_dict())
        assert key not in str(namespace.to_dict())

        deployment = await kube_client.get(Deployment, "n8n", namespace=ns)
        assert deployment.spec.replicas == 0 and deployment.spec.strategy.type == "Recreate"
        pod = deployment.spec.template.spec
        assert pod.automountServiceAccountToken is False
        assert pod.securityContext.runAsNonRoot is True
        container = pod.containers[0]
        assert container.image == "localhost/zixly/n8n:1.123.81"
        context = container.securityContext
        assert context.allowPrivilegeEscalation is False
        assert context.readOnlyRootFilesystem is True
        assert context.capabilities.drop == ["ALL"]
        assert context.seccompProfile.type == "RuntimeDefault"
        assert container.readinessProbe.httpGet.path == "/healthz/readiness"
        assert container.livenessProbe.httpGet.path == "/healthz"
        assert container.resources.limits == {"memory": "768Mi", "cpu": "500m"}
        assert container.envFrom[0].secretRef.name == objects.SECRET

        service = await kube_client.get(Service, "n8n", namespace=ns)
        assert service.spec.type == "ClusterIP" and service.spec.ports[0].port == 5678
        policies = {p.metadata.name: p async for p in kube_client.list(NetworkPolicy, namespace=ns)}
        assert set(policies) == {"default-deny", "zixly-ingress", "egress"}
        assert policies["default-deny"].spec.policyTypes == ["Ingress", "Egress"]
        sources = policies["zixly-ingress"].spec.ingress[0].from_
        assert sources[0].namespaceSelector.matchLabels == {
            "kubernetes.io/metadata.name": runtime.layout.zixly_namespace
        }
        # Egress: DNS, Zixly's namespace, and the internet without private ranges (so no
        # other tenant's pod): checked as objects, no CNI enforces them here.
        internet = policies["egress"].spec.egress[2].to[0].ipBlock
        assert internet.cidr == "0.0.0.0/0" and "10.0.0.0/8" in internet.except_

        assert (await runtime.inspect(handle)).state is RuntimeState.STOPPED

    # Creating again is a no-op that keeps everything (and the replica count).
    again = await runtime.create(a)
    assert again == handles[0]
    assert {h.instance_id for h in await runtime.list_managed()} == {h.instance_id for h in handles}
    for handle in handles:
        await runtime.remove(handle)


async def test_start_stop_upgrade_remove(
    runtime: KubernetesRuntime, kube_client: AsyncClient
) -> None:
    await _volume(kube_client, runtime.layout.namespace("charlie"))
    spec = _spec("charlie")
    handle = await runtime.create(spec)
    ns = handle.instance_id

    status = await runtime.start(handle)
    assert status.url == f"http://n8n.{ns}.svc.cluster.local:5678"

    async def running_pod() -> bool:
        pods = [p async for p in kube_client.list(Pod, namespace=ns)]
        return len(pods) == 1 and pods[0].status is not None and pods[0].status.phase == "Running"

    await _until(running_pod)
    assert (await runtime.inspect(handle)).state is RuntimeState.RUNNING
    claim = await kube_client.get(PersistentVolumeClaim, objects.CLAIM, namespace=ns)
    assert claim.status.phase == "Bound"

    # A pod deleted under the runtime comes back (the Deployment's controller).
    (first,) = [p async for p in kube_client.list(Pod, namespace=ns)]
    await kube_client.delete(Pod, first.metadata.name, namespace=ns, grace_period=0)

    async def replaced() -> bool:
        pods = [p async for p in kube_client.list(Pod, namespace=ns)]
        return any(
            p.metadata.uid != first.metadata.uid and p.status.phase == "Running" for p in pods
        )

    await _until(replaced)

    # Upgrade: a new version rolls the pod (Recreate), the replica count stays.
    await runtime.create(_spec_like(spec, version="2.41.1"))
    deployment = await kube_client.get(Deployment, "n8n", namespace=ns)
    assert deployment.spec.replicas == 1
    assert deployment.spec.template.spec.containers[0].image == "localhost/zixly/n8n:2.41.1"

    async def rolled() -> bool:
        pods = [p async for p in kube_client.list(Pod, namespace=ns)]
        return (
            len(pods) == 1
            and pods[0].spec.containers[0].image.endswith(":2.41.1")
            and (pods[0].status.phase == "Running")
        )

    await _until(rolled)

    stopped = await runtime.stop(handle)
    assert stopped.state is RuntimeState.STOPPED
    assert [p async for p in kube_client.list(Pod, namespace=ns)] == []
    # The volume is kept on stop.
    assert (
        await kube_client.get(PersistentVolumeClaim, objects.CLAIM, namespace=ns)
    ).status.phase == "Bound"

    await runtime.remove(handle, keep_data=True)
    assert (await runtime.inspect(handle)).state is RuntimeState.MISSING
    await kube_client.get(PersistentVolumeClaim, objects.CLAIM, namespace=ns)  # still there
    await kube_client.get(Secret, objects.SECRET, namespace=ns)

    await runtime.remove(handle)
    assert (await runtime.inspect(handle)).state is RuntimeState.MISSING
    await runtime.remove(handle)  # idempotent

    async def gone() -> bool:
        try:
            await kube_client.get(Namespace, ns)
        except ApiError as exc:
            return exc.status.code == 404
        return False

    await _until(gone, limit=90)


def _spec_like(spec: InstanceSpec, *, version: str) -> InstanceSpec:
    return InstanceSpec(
        tenant_id=spec.tenant_id,
        tenant_slug=spec.tenant_slug,
        version=version,
        env=spec.env,
        limits=spec.limits,
    )


async def test_list_managed_sees_only_its_labelled_namespaces(
    runtime: KubernetesRuntime, kube_client: AsyncClient
) -> None:
    handle = await runtime.create(_spec("delta"))
    # Same prefix, no labels: never listed, so the reconciler never removes it.
    stray = runtime.layout.prefix + "stray"
    await kube_client.create(Namespace(metadata=ObjectMeta(name=stray)))
    other = KubernetesRuntime(
        kube_client, objects.ClusterLayout(prefix=runtime.layout.prefix, deployment="another")
    )
    assert [h.instance_id for h in await runtime.list_managed()] == [handle.instance_id]
    assert await other.list_managed() == []
    await runtime.remove(handle)
    await kube_client.delete(Namespace, stray)


async def test_errors_are_translated_at_the_adapter(runtime: KubernetesRuntime) -> None:
    with pytest.raises(InstanceNotFoundError):
        await runtime.inspect(InstanceHandle("docker", "zixly-n8n-x", ""))
    with pytest.raises(RuntimeFailure, match="unusable as a namespace"):
        await runtime.create(_spec("Not_A_Slug"))
    with pytest.raises(RuntimeFailure, match="N8N_ENCRYPTION_KEY"):
        await runtime.create(
            InstanceSpec(tenant_id="t", tenant_slug="echo", version="1.123.81", env={})
        )
    # A refusal of the API server (an env name a Secret cannot hold) is a RuntimeFailure
    # naming the refusal, without the values.
    with pytest.raises(RuntimeFailure, match="refused \\(422\\)") as refused:
        await runtime.create(_spec("foxtrot", **{"BAD NAME": "s3cr3t-value"}))
    assert "s3cr3t-value" not in refused.value.message
    assert (
        await runtime.inspect(InstanceHandle("kubernetes", runtime.layout.prefix + "golf", ""))
    ).state is RuntimeState.MISSING
    await runtime.remove(InstanceHandle("kubernetes", runtime.layout.namespace("foxtrot"), ""))
