"""Zixly's own deployment (infra/k8s/, infra/compose.yaml) checked by the real API server.

Every manifest is server-side applied, first as a dry run (the API server validates every
field, admission included), then for real except the migration Job: the namespace's Pod
Security level ``restricted`` must admit the API's and the worker's pods, which KWOK makes
Running, and the worker's pods run as the runtime's ServiceAccount.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import ApiError, AsyncClient
from lightkube.codecs import load_all_yaml
from lightkube.models.core_v1 import Container, PodSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Pod

from tests import kube

INFRA = Path(__file__).resolve().parents[2] / "infra"
K8S = INFRA / "k8s"


def _manifests() -> list[Any]:
    """The kustomization's resources, its image substitution applied (no kustomize here)."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    images = {i["name"]: f"{i['newName']}:{i['newTag']}" for i in kustomization["images"]}
    objects: list[Any] = []
    for resource in kustomization["resources"]:
        objects.extend(load_all_yaml((K8S / resource).read_text()))
    for obj in objects:
        spec = getattr(obj, "spec", None)
        template = getattr(spec, "template", None)
        if template is not None and template.spec is not None:
            for container in template.spec.containers:
                container.image = images.get(container.image, container.image)
    return objects


def _pod_templates(objects: list[Any]) -> dict[str, PodSpec]:
    return {
        f"{o.kind}/{o.metadata.name}": o.spec.template.spec
        for o in objects
        if o.kind in ("Deployment", "Job")
    }


def test_manifests_name_secrets_never_hold_them() -> None:
    objects = _manifests()
    assert not [o for o in objects if o.kind == "Secret"]
    templates = _pod_templates(objects)
    assert set(templates) == {
        "Deployment/zixly-api",
        "Deployment/zixly-worker",
        "Job/zixly-migrate",
    }
    for name, spec in templates.items():
        (container,) = spec.containers
        assert [e.secretRef.name for e in container.envFrom if e.secretRef] == ["zixly-secrets"], (
            name
        )
        assert not [e for e in container.env or [] if e.value and "SECRET" in e.name], name
        assert container.resources.requests and container.resources.limits, name
        assert container.securityContext.readOnlyRootFilesystem is True, name
    assert templates["Deployment/zixly-worker"].serviceAccountName == "zixly-runtime"
    api = templates["Deployment/zixly-api"].containers[0]
    assert api.livenessProbe.httpGet.path == "/healthz"
    assert api.readinessProbe.httpGet.path == "/readyz"
    kinds = {o.kind for o in objects}
    assert {"HorizontalPodAutoscaler", "Service", "Job", "ServiceAccount"} <= kinds


async def _running(client: AsyncClient, component: str, count: int) -> list[Pod]:
    deadline = time.monotonic() + 60
    pods: list[Pod] = []
    while time.monotonic() < deadline:
        pods = [
            p
            async for p in client.list(
                Pod,
                namespace="zixly",
                labels={"app.kubernetes.io/component": component},
            )
        ]
        if len(pods) == count and all(p.status and p.status.phase == "Running" for p in pods):
            return pods
        await asyncio.sleep(0.3)
    raise AssertionError(f"{component}: {[(p.metadata.name, p.status) for p in pods]}")


async def test_the_api_server_accepts_every_manifest_and_admits_the_pods(
    kube_env: kube.KubeTestEnv, kube_client: AsyncClient
) -> None:
    await kube.add_kwok_node(kube_client, f"kwok-manifests-{uuid.uuid4().hex[:6]}")
    objects = _manifests()
    # The namespace first (a namespaced dry run needs it), then every object as a dry run:
    # the API server validates every field and runs admission, Pod Security included.
    namespace = next(o for o in objects if o.kind == "Namespace")
    await kube_client.apply(namespace, field_manager="zixly-manifests", force=True)
    for obj in objects:
        await kube_client.apply(obj, field_manager="zixly-manifests", force=True, dry_run=True)
    for obj in objects:
        if obj.kind != "Job":  # its pod would need the image (and a database) to finish
            await kube_client.apply(obj, field_manager="zixly-manifests", force=True)

    api = await kube_client.get(Deployment, "zixly-api", namespace="zixly")
    worker = await kube_client.get(Deployment, "zixly-worker", namespace="zixly")
    assert api.spec is not None and worker.spec is not None
    api_pods = await _running(kube_client, "api", api.spec.replicas or 0)
    worker_pods = await _running(kube_client, "worker", worker.spec.replicas or 0)
    assert len(worker_pods) >= 2  # several workers side by side
    assert {p.spec.serviceAccountName for p in worker_pods if p.spec} == {"zixly-runtime"}
    assert {p.spec.serviceAccountName for p in api_pods if p.spec} == {"zixly-api"}

    # The namespace really enforces `restricted`: a pod without its fields is refused.
    with pytest.raises(ApiError) as refused:
        await kube_client.create(
            Pod(
                metadata=ObjectMeta(name="unrestricted", namespace="zixly"),
                spec=PodSpec(containers=[Container(name="c", image="busybox")]),
            )
        )
    assert refused.value.status.code == 403
    assert "restricted" in (refused.value.status.message or "")


COMPOSE_SERVICES = {"postgres", "redis", "migrate", "api", "worker"}


def test_compose_file_for_one_host() -> None:
    compose = yaml.safe_load((INFRA / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == COMPOSE_SERVICES
    assert set(compose["volumes"]) == {"postgres-data", "redis-data"}
    assert "pgvector" in services["postgres"]["image"]
    for name in ("postgres", "redis", "api"):
        assert services[name]["healthcheck"]["test"], name
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
        assert services[name]["env_file"] == ["compose/zixly.env"]
        assert services[name]["cap_drop"] == ["ALL"] and services[name]["read_only"] is True
    assert services["api"]["command"] == ["serve"]
    assert services["worker"]["command"] == ["worker"]
    assert services["worker"]["environment"]["ZIXLY_N8N_RUNTIME"] == "docker"
    assert any(v.endswith(":/run/docker.sock") for v in services["worker"]["volumes"])
    # Secrets by reference: no value in the file, every variable the env file needs listed
    # in its example (with no value filled in).
    example = (INFRA / "compose" / "zixly.env.example").read_text()
    keys = dict(
        line.split("=", 1) for line in example.splitlines() if line and not line.startswith("#")
    )
    for secret in ("POSTGRES_PASSWORD", "ZIXLY_JWT_SECRET", "ZIXLY_ENCRYPTION_KEYS"):
        assert keys[secret] == "", secret
    for service in services.values():
        assert not set(service.get("environment", {})) & set(keys)
