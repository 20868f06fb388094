"""The tests' control plane is the real thing: a kube-apiserver that enforces RBAC, Pod
Security and quotas, controllers that turn a Deployment into pods, a scheduler that binds
them, and KWOK nodes on which they go Ready."""

from __future__ import annotations

import asyncio
import ssl
import uuid

import httpx
import pytest
from lightkube import ApiError, AsyncClient
from lightkube.models.apps_v1 import DeploymentSpec
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.core_v1 import (
    Container,
    PodSpec,
    PodTemplateSpec,
    ResourceQuotaSpec,
    ResourceRequirements,
)
from lightkube.models.meta_v1 import LabelSelector, ObjectMeta
from lightkube.models.rbac_v1 import PolicyRule, RoleRef, Subject
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import (
    ConfigMap,
    Namespace,
    Pod,
    ResourceQuota,
    Secret,
    ServiceAccount,
)
from lightkube.resources.rbac_authorization_v1 import Role, RoleBinding

from tests import kube


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _namespace(client: AsyncClient, labels: dict[str, str] | None = None) -> str:
    name = _name("ns")
    await client.create(Namespace(metadata=ObjectMeta(name=name, labels=labels or {})))
    return name


async def _kwok_node(client: AsyncClient) -> str:
    name = _name("kwok-node")
    await kube.add_kwok_node(client, name)
    return name


def _pod_spec(image: str = "registry.invalid/zixly/n8n:test") -> PodSpec:
    return PodSpec(containers=[Container(name="main", image=image)])


async def test_the_api_server_is_the_built_version(kube_env: kube.KubeTestEnv) -> None:
    context = ssl.create_default_context(cafile=str(kube_env.ca))
    pki = kube_env.folder / "pki"
    context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    async with httpx.AsyncClient(verify=context) as http:
        version = (await http.get(f"{kube_env.server}/version")).json()
    async with httpx.AsyncClient(
        verify=ssl.create_default_context(cafile=str(kube_env.ca))
    ) as anon:
        anonymous = await anon.get(f"{kube_env.server}/api/v1/namespaces")
    assert version["gitVersion"] == kube.versions()["KUBE_VERSION"]
    assert anonymous.status_code in (401, 403)  # no anonymous access to the API
    print(f"control plane started in {kube_env.timings}")


async def test_a_deployment_becomes_ready_on_a_kwok_node(kube_client: AsyncClient) -> None:
    await _kwok_node(kube_client)
    namespace = await _namespace(kube_client)
    labels = {"app": "probe"}
    await kube_client.create(
        Deployment(
            metadata=ObjectMeta(name="probe", namespace=namespace),
            spec=DeploymentSpec(
                replicas=1,
                selector=LabelSelector(matchLabels=labels),
                template=PodTemplateSpec(metadata=ObjectMeta(labels=labels), spec=_pod_spec()),
            ),
        )
    )
    ready = await asyncio.wait_for(
        kube_client.wait(Deployment, "probe", namespace=namespace, for_conditions=["Available"]),
        60,
    )
    assert ready.status is not None and ready.status.readyReplicas == 1
    pods = [p async for p in kube_client.list(Pod, namespace=namespace)]
    assert len(pods) == 1 and pods[0].spec is not None and pods[0].spec.nodeName
    assert pods[0].status is not None and pods[0].status.phase == "Running"


async def test_pod_security_restricted_refuses_a_pod_that_is_not(kube_client: AsyncClient) -> None:
    namespace = await _namespace(kube_client, {"pod-security.kubernetes.io/enforce": "restricted"})
    with pytest.raises(ApiError) as refused:
        await kube_client.create(
            Pod(metadata=ObjectMeta(name="loose", namespace=namespace), spec=_pod_spec())
        )
    assert refused.value.status.code == 403
    assert "violates PodSecurity" in (refused.value.status.message or "")


async def test_a_resource_quota_is_enforced(kube_client: AsyncClient) -> None:
    namespace = await _namespace(kube_client)
    await kube_client.create(
        ResourceQuota(
            metadata=ObjectMeta(name="quota", namespace=namespace),
            spec=ResourceQuotaSpec(hard={"requests.memory": "64Mi", "limits.memory": "64Mi"}),
        )
    )

    def pod(name: str, memory: str) -> Pod:
        resources = ResourceRequirements(requests={"memory": memory}, limits={"memory": memory})
        spec = PodSpec(containers=[Container(name="main", image="x", resources=resources)])
        return Pod(metadata=ObjectMeta(name=name, namespace=namespace), spec=spec)

    for _ in range(100):  # until the quota controller has set its status
        quota = await kube_client.get(ResourceQuota, "quota", namespace=namespace)
        if quota.status and quota.status.hard:
            break
        await asyncio.sleep(0.1)
    with pytest.raises(ApiError) as refused:
        await kube_client.create(pod("too-big", "128Mi"))
    assert refused.value.status.code == 403
    assert "exceeded quota" in (refused.value.status.message or "")
    await kube_client.create(pod("fits", "32Mi"))
    # A pod without memory limits is refused too: the quota requires them.
    with pytest.raises(ApiError) as refused:
        await kube_client.create(
            Pod(metadata=ObjectMeta(name="unlimited", namespace=namespace), spec=_pod_spec())
        )
    assert refused.value.status.code == 403


async def test_rbac_holds_a_service_account_to_its_role(
    kube_env: kube.KubeTestEnv, kube_client: AsyncClient
) -> None:
    namespace = await _namespace(kube_client)
    other = await _namespace(kube_client)
    await kube_client.create(
        ServiceAccount(metadata=ObjectMeta(name="reader", namespace=namespace))
    )
    await kube_client.create(
        Role(
            metadata=ObjectMeta(name="configmaps", namespace=namespace),
            rules=[PolicyRule(apiGroups=[""], resources=["configmaps"], verbs=["get", "list"])],
        )
    )
    await kube_client.create(
        RoleBinding(
            metadata=ObjectMeta(name="reader", namespace=namespace),
            roleRef=RoleRef(apiGroup="rbac.authorization.k8s.io", kind="Role", name="configmaps"),
            subjects=[Subject(kind="ServiceAccount", name="reader", namespace=namespace)],
        )
    )
    issued = await kube_client.create(
        ServiceAccount.Token(
            metadata=ObjectMeta(),
            spec=TokenRequestSpec(audiences=["https://kubernetes.default.svc"]),
        ),
        "reader",
        namespace=namespace,
    )
    assert issued.status is not None
    config = kube.token_config(kube_env.server, kube_env.ca, issued.status.token, namespace)
    reader = AsyncClient(config=config)
    try:
        names = [c.metadata.name async for c in reader.list(ConfigMap, namespace=namespace)]
        assert "kube-root-ca.crt" in names
        for attempt in (
            reader.list(Secret, namespace=namespace),
            reader.list(ConfigMap, namespace=other),
        ):
            with pytest.raises(ApiError) as refused:
                [item async for item in attempt]
            assert refused.value.status.code == 403
        with pytest.raises(ApiError) as refused:
            await reader.create(ConfigMap(metadata=ObjectMeta(name="x", namespace=namespace)))
        assert refused.value.status.code == 403
    finally:
        await reader.close()
