"""The runtime's ServiceAccount (infra/k8s/runtime-rbac.yaml) with its own token: it can run
tenants, and the API server refuses it everything else."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from lightkube import ApiError, AsyncClient, KubeConfig, codecs
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.models.rbac_v1 import RoleRef, Subject
from lightkube.resources.core_v1 import Namespace, Node, Secret, ServiceAccount
from lightkube.resources.rbac_authorization_v1 import ClusterRoleBinding, RoleBinding

import zixly.provisioning.runtimes.kube_objects as objects
from tests import kube
from tests.kubernetes.test_runtime import _spec
from zixly.provisioning.runtimes.base import RuntimeState
from zixly.provisioning.runtimes.errors import RuntimeFailure
from zixly.provisioning.runtimes.kubernetes import KubernetesRuntime

MANIFEST = Path(__file__).resolve().parents[2] / "infra" / "k8s" / "runtime-rbac.yaml"


@pytest.fixture(scope="module")
async def runtime_client(kube_env: kube.KubeTestEnv) -> AsyncIterator[AsyncClient]:
    admin = AsyncClient(config=KubeConfig.from_file(kube_env.kubeconfig), field_manager="tests")
    for item in codecs.load_all_yaml(MANIFEST.read_text()):
        await admin.apply(item, force=True)
    issued = await admin.create(
        ServiceAccount.Token(
            metadata=ObjectMeta(),
            spec=TokenRequestSpec(audiences=["https://kubernetes.default.svc"]),
        ),
        "zixly-runtime",
        namespace="zixly",
    )
    assert issued.status is not None
    config = kube.token_config(kube_env.server, kube_env.ca, issued.status.token)
    client = AsyncClient(config=config, field_manager="zixly")
    await _policy_in_force(client)
    yield client
    await client.close()
    await admin.close()


async def _policy_in_force(client: AsyncClient) -> None:
    """A new ValidatingAdmissionPolicy takes a moment to be enforced: until then the account
    could do what the policy forbids. Wait until a dry run of a forbidden request is refused
    by it (dry runs pass through admission and change nothing)."""
    probe = Namespace(metadata=ObjectMeta(name=f"probe-{uuid.uuid4().hex[:6]}"))
    for _ in range(150):
        try:
            await client.create(probe, dry_run=True)
        except ApiError as exc:
            if "zixly.managed" in (exc.status.message or ""):
                return
            raise
        await asyncio.sleep(0.2)
    pytest.fail("the runtime's admission policy was never enforced")


async def test_the_runtime_runs_tenants_with_its_own_account(
    runtime_client: AsyncClient, kube_client: AsyncClient
) -> None:
    layout = objects.ClusterLayout(prefix=f"zr{uuid.uuid4().hex[:4]}-")
    runtime = KubernetesRuntime(runtime_client, layout, stop_timeout=30)
    handle = await runtime.create(_spec("hotel"))
    assert (await runtime.inspect(handle)).state is RuntimeState.STOPPED
    assert [h.instance_id for h in await runtime.list_managed()] == [handle.instance_id]
    await runtime.start(handle)
    await runtime.stop(handle)
    assert await runtime.logs(handle) == []  # no pod while stopped
    await runtime.remove(handle)
    assert (await runtime.inspect(handle)).state is RuntimeState.MISSING


async def _refused(call: object) -> ApiError:
    with pytest.raises(ApiError) as refused:
        await call  # type: ignore[misc]
    assert refused.value.status.code in (403, 422), refused.value.status
    return refused.value


async def test_the_runtime_account_is_refused_anything_else(
    runtime_client: AsyncClient, kube_client: AsyncClient
) -> None:
    # No Secret outside a tenant namespace, no nodes, no cluster-wide bindings.
    with pytest.raises(ApiError) as refused:
        [s async for s in runtime_client.list(Secret, namespace="kube-system")]
    assert refused.value.status.code == 403
    with pytest.raises(ApiError) as refused:
        [n async for n in runtime_client.list(Node)]
    assert refused.value.status.code == 403
    await _refused(
        runtime_client.create(
            ClusterRoleBinding(
                metadata=ObjectMeta(name="escalate"),
                roleRef=RoleRef(
                    apiGroup="rbac.authorization.k8s.io", kind="ClusterRole", name="cluster-admin"
                ),
                subjects=[Subject(kind="ServiceAccount", name="zixly-runtime", namespace="zixly")],
            )
        )
    )
    # It cannot bind its tenant role outside a tenant namespace, nor label one to make it
    # look like a tenant's, nor create or delete an unlabelled namespace.
    binding = RoleBinding(
        metadata=ObjectMeta(name="sneak", namespace="kube-system"),
        roleRef=RoleRef(
            apiGroup="rbac.authorization.k8s.io", kind="ClusterRole", name=objects.TENANT_ROLE
        ),
        subjects=[Subject(kind="ServiceAccount", name="zixly-runtime", namespace="zixly")],
    )
    error = await _refused(runtime_client.create(binding))
    assert "tenant namespace" in (error.status.message or "") or error.status.code == 403
    await _refused(
        runtime_client.patch(
            Namespace, "kube-system", {"metadata": {"labels": {"zixly.managed": "true"}}}
        )
    )
    await _refused(
        runtime_client.create(Namespace(metadata=ObjectMeta(name=f"plain-{uuid.uuid4().hex[:6]}")))
    )
    plain = f"plain-{uuid.uuid4().hex[:6]}"
    await kube_client.create(Namespace(metadata=ObjectMeta(name=plain)))
    await _refused(runtime_client.delete(Namespace, plain))
    await kube_client.delete(Namespace, plain)

    # Through the runtime the refusal is a RuntimeFailure.
    runtime = KubernetesRuntime(runtime_client, objects.ClusterLayout(prefix="kube-"))
    with pytest.raises(RuntimeFailure):
        await runtime.create(_spec("system"))
