"""The Kubernetes objects of one tenant's n8n, built from its ``InstanceSpec`` (no I/O).

Per tenant, in a namespace of its own (``<prefix><slug>``)::

    Namespace        Pod Security ``restricted`` (enforce, audit, warn)
    ResourceQuota    n8n     what the namespace may use at most (from the spec's limits)
    LimitRange       n8n     defaults and caps for any container in it
    Secret           n8n-env the instance's environment: N8N_ENCRYPTION_KEY and the
                             bootstrap values (never a ConfigMap, never an annotation)
    PersistentVolumeClaim n8n-data  n8n's user folder (SQLite, settings), kept on stop
    Deployment       n8n     one replica at most, strategy Recreate (two pods must never
                             share the SQLite file), non-root, read-only root filesystem,
                             no privilege escalation, all capabilities dropped, probes on
                             n8n's health endpoints
    Service          n8n     ClusterIP, port 5678
    NetworkPolicy    default-deny, zixly-ingress, egress

Every object carries ``zixly.managed=true``, the runtime's ``zixly.deployment`` and the
spec's tenant labels, so ``list_managed`` (and an operator) finds exactly Zixly's.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from lightkube.core.resource import NamespacedResource
from lightkube.models.apps_v1 import DeploymentSpec, DeploymentStrategy
from lightkube.models.core_v1 import (
    Capabilities,
    Container,
    ContainerPort,
    EmptyDirVolumeSource,
    EnvFromSource,
    EnvVar,
    HTTPGetAction,
    LimitRangeItem,
    LimitRangeSpec,
    PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource,
    PodSecurityContext,
    PodSpec,
    PodTemplateSpec,
    Probe,
    ResourceQuotaSpec,
    ResourceRequirements,
    SeccompProfile,
    SecretEnvSource,
    SecurityContext,
    ServicePort,
    ServiceSpec,
    Volume,
    VolumeMount,
    VolumeResourceRequirements,
)
from lightkube.models.meta_v1 import LabelSelector, ObjectMeta
from lightkube.models.networking_v1 import (
    IPBlock,
    NetworkPolicyEgressRule,
    NetworkPolicyIngressRule,
    NetworkPolicyPeer,
    NetworkPolicyPort,
    NetworkPolicySpec,
)
from lightkube.models.rbac_v1 import RoleRef, Subject
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import (
    LimitRange,
    Namespace,
    PersistentVolumeClaim,
    ResourceQuota,
    Secret,
    Service,
)
from lightkube.resources.networking_v1 import NetworkPolicy
from lightkube.resources.rbac_authorization_v1 import RoleBinding

from zixly.provisioning.runtimes.base import InstanceSpec
from zixly.provisioning.runtimes.errors import RuntimeFailure

MANAGED_LABEL = "zixly.managed"
DEPLOYMENT_LABEL = "zixly.deployment"
DIGEST_ANNOTATION = "zixly.config-digest"
APP_LABEL = "app.kubernetes.io/name"
APP = "n8n"
NAME = "n8n"
SECRET = "n8n-env"  # noqa: S105 (the Secret object's name)
CLAIM = "n8n-data"
PORT = 5678
USER_FOLDER = "/home/node"
DATA_MOUNT = "/home/node/.n8n"
NODE_UID = 1000  # the n8n image's "node" user
PRIVATE_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16")
_SLUG = re.compile(r"^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$")
TENANT_ROLE = "zixly-tenant-objects"
DEFAULT_MEMORY_MB = 1024
DEFAULT_CPUS = 1.0


@dataclass(frozen=True)
class ClusterLayout:
    """Where things are on the cluster (from settings)."""

    prefix: str = "zixly-t-"  # tenant namespaces: <prefix><slug>
    deployment: str = "default"  # which Zixly installation owns the objects
    zixly_namespace: str = "zixly"  # the API, editor proxy and worker run here
    image: str = "localhost/zixly/n8n:{version}"
    storage: str = "1Gi"
    storage_class: str | None = None
    ingest_port: int = 8000  # the Zixly API's port, for the ingest egress rule
    # The runtime's own ServiceAccount (in zixly_namespace), bound to TENANT_ROLE in each
    # tenant namespace (infra/k8s/runtime-rbac.yaml); None: the runtime runs with wider
    # credentials (an administrator's kubeconfig) and binds nothing.
    runtime_account: str | None = "zixly-runtime"

    def namespace(self, slug: str) -> str:
        if not _SLUG.match(slug):
            raise RuntimeFailure(f"tenant slug unusable as a namespace name: {slug!r}")
        name = f"{self.prefix}{slug}"
        if len(name) > 63:
            raise RuntimeFailure(f"namespace name too long for {slug!r}")
        return name

    def owned(self) -> dict[str, str]:
        return {MANAGED_LABEL: "true", DEPLOYMENT_LABEL: self.deployment}


def _labels(layout: ClusterLayout, spec: InstanceSpec) -> dict[str, str]:
    return {**layout.owned(), **spec.labels}


def _quantities(spec: InstanceSpec) -> tuple[str, str]:
    memory = spec.limits.memory_mb or DEFAULT_MEMORY_MB
    cpus = spec.limits.cpus or DEFAULT_CPUS
    return f"{memory}Mi", f"{int(cpus * 1000)}m"


def digest(spec: InstanceSpec, layout: ClusterLayout) -> str:
    """Changes when anything the pod runs with changes (the env's values included, hashed),
    so a changed spec rolls the pod even where the Secret's name stays the same."""
    material = json.dumps(
        {
            "version": spec.version,
            "env": sorted(spec.env.items()),
            "limits": [spec.limits.memory_mb, spec.limits.cpus],
            "image": layout.image,
        },
        sort_keys=True,
    )
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def namespace(layout: ClusterLayout, spec: InstanceSpec) -> Namespace:
    labels = _labels(layout, spec)
    for mode in ("enforce", "audit", "warn"):
        labels[f"pod-security.kubernetes.io/{mode}"] = "restricted"
        labels[f"pod-security.kubernetes.io/{mode}-version"] = "latest"
    return Namespace(metadata=ObjectMeta(name=layout.namespace(spec.tenant_slug), labels=labels))


def container(layout: ClusterLayout, spec: InstanceSpec) -> Container:
    memory, cpu = _quantities(spec)
    return Container(
        name=APP,
        image=layout.image.format(version=spec.version),
        imagePullPolicy="IfNotPresent",
        ports=[ContainerPort(name="http", containerPort=PORT)],
        envFrom=[EnvFromSource(secretRef=SecretEnvSource(name=SECRET))],
        env=[
            EnvVar(name="N8N_USER_FOLDER", value=USER_FOLDER),
            EnvVar(name="N8N_PORT", value=str(PORT)),
            EnvVar(name="N8N_LISTEN_ADDRESS", value="0.0.0.0"),  # noqa: S104 (the pod's own)
        ],
        readinessProbe=Probe(
            httpGet=HTTPGetAction(path="/healthz/readiness", port="http"),
            periodSeconds=5,
            failureThreshold=3,
        ),
        livenessProbe=Probe(
            httpGet=HTTPGetAction(path="/healthz", port="http"),
            initialDelaySeconds=30,
            periodSeconds=15,
            failureThreshold=4,
        ),
        resources=ResourceRequirements(
            requests={"memory": memory, "cpu": cpu}, limits={"memory": memory, "cpu": cpu}
        ),
        securityContext=SecurityContext(
            allowPrivilegeEscalation=False,
            readOnlyRootFilesystem=True,
            runAsNonRoot=True,
            runAsUser=NODE_UID,
            runAsGroup=NODE_UID,
            capabilities=Capabilities(drop=["ALL"]),
            seccompProfile=SeccompProfile(type="RuntimeDefault"),
        ),
        volumeMounts=[
            VolumeMount(name="data", mountPath=DATA_MOUNT),
            VolumeMount(name="tmp", mountPath="/tmp"),  # noqa: S108 (an emptyDir of its own)
        ],
    )


def deployment(layout: ClusterLayout, spec: InstanceSpec, replicas: int) -> Deployment:
    selector = {APP_LABEL: APP}
    pod_labels = {**selector, **_labels(layout, spec)}
    return Deployment(
        metadata=ObjectMeta(
            name=NAME, namespace=layout.namespace(spec.tenant_slug), labels=_labels(layout, spec)
        ),
        spec=DeploymentSpec(
            replicas=replicas,
            strategy=DeploymentStrategy(type="Recreate"),
            selector=LabelSelector(matchLabels=selector),
            template=PodTemplateSpec(
                metadata=ObjectMeta(
                    labels=pod_labels, annotations={DIGEST_ANNOTATION: digest(spec, layout)}
                ),
                spec=PodSpec(
                    automountServiceAccountToken=False,
                    enableServiceLinks=False,
                    securityContext=PodSecurityContext(
                        runAsNonRoot=True,
                        runAsUser=NODE_UID,
                        runAsGroup=NODE_UID,
                        fsGroup=NODE_UID,
                        seccompProfile=SeccompProfile(type="RuntimeDefault"),
                    ),
                    containers=[container(layout, spec)],
                    volumes=[
                        Volume(
                            name="data",
                            persistentVolumeClaim=PersistentVolumeClaimVolumeSource(
                                claimName=CLAIM
                            ),
                        ),
                        Volume(name="tmp", emptyDir=EmptyDirVolumeSource(sizeLimit="256Mi")),
                    ],
                ),
            ),
        ),
    )


def role_binding(layout: ClusterLayout, spec: InstanceSpec) -> RoleBinding | None:
    """The runtime's rights in this namespace (and only here), or None."""
    if layout.runtime_account is None:
        return None
    return RoleBinding(
        metadata=ObjectMeta(
            name="zixly-runtime",
            namespace=layout.namespace(spec.tenant_slug),
            labels=_labels(layout, spec),
        ),
        roleRef=RoleRef(apiGroup="rbac.authorization.k8s.io", kind="ClusterRole", name=TENANT_ROLE),
        subjects=[
            Subject(
                kind="ServiceAccount",
                name=layout.runtime_account,
                namespace=layout.zixly_namespace,
            )
        ],
    )


def tenant_objects(
    layout: ClusterLayout, spec: InstanceSpec, replicas: int
) -> list[NamespacedResource]:
    """Everything but the namespace, in the order to apply them."""
    ns = layout.namespace(spec.tenant_slug)
    labels = _labels(layout, spec)
    memory, cpu = _quantities(spec)

    def meta(name: str) -> ObjectMeta:
        return ObjectMeta(name=name, namespace=ns, labels=labels)

    zixly_peer = NetworkPolicyPeer(
        namespaceSelector=LabelSelector(
            matchLabels={"kubernetes.io/metadata.name": layout.zixly_namespace}
        )
    )
    dns_peer = NetworkPolicyPeer(
        namespaceSelector=LabelSelector(matchLabels={"kubernetes.io/metadata.name": "kube-system"})
    )
    claim_spec = PersistentVolumeClaimSpec(
        accessModes=["ReadWriteOnce"],
        resources=VolumeResourceRequirements(requests={"storage": layout.storage}),
    )
    if layout.storage_class:
        claim_spec.storageClassName = layout.storage_class
    return [
        ResourceQuota(
            metadata=meta("n8n"),
            spec=ResourceQuotaSpec(
                hard={
                    "pods": "2",  # Recreate: the old pod may still be terminating
                    "requests.memory": memory,
                    "limits.memory": memory,
                    "requests.cpu": cpu,
                    "limits.cpu": cpu,
                    "persistentvolumeclaims": "1",
                    "requests.storage": layout.storage,
                    "services": "1",
                    "services.loadbalancers": "0",
                    "services.nodeports": "0",
                }
            ),
        ),
        LimitRange(
            metadata=meta("n8n"),
            spec=LimitRangeSpec(
                limits=[
                    LimitRangeItem(
                        type="Container",
                        default={"memory": memory, "cpu": cpu},
                        defaultRequest={"memory": memory, "cpu": cpu},
                        max={"memory": memory, "cpu": cpu},
                    )
                ]
            ),
        ),
        Secret(metadata=meta(SECRET), type="Opaque", stringData=dict(spec.env)),
        PersistentVolumeClaim(metadata=meta(CLAIM), spec=claim_spec),
        deployment(layout, spec, replicas),
        Service(
            metadata=meta(NAME),
            spec=ServiceSpec(
                type="ClusterIP",
                selector={APP_LABEL: APP},
                ports=[ServicePort(name="http", port=PORT, targetPort="http")],
            ),
        ),
        NetworkPolicy(
            metadata=meta("default-deny"),
            spec=NetworkPolicySpec(podSelector=LabelSelector(), policyTypes=["Ingress", "Egress"]),
        ),
        NetworkPolicy(
            metadata=meta("zixly-ingress"),
            spec=NetworkPolicySpec(
                podSelector=LabelSelector(matchLabels={APP_LABEL: APP}),
                policyTypes=["Ingress"],
                ingress=[
                    NetworkPolicyIngressRule(
                        from_=[zixly_peer],
                        ports=[NetworkPolicyPort(protocol="TCP", port=PORT)],
                    )
                ],
            ),
        ),
        NetworkPolicy(
            metadata=meta("egress"),
            spec=NetworkPolicySpec(
                podSelector=LabelSelector(matchLabels={APP_LABEL: APP}),
                policyTypes=["Egress"],
                egress=[
                    NetworkPolicyEgressRule(
                        to=[dns_peer],
                        ports=[
                            NetworkPolicyPort(protocol="UDP", port=53),
                            NetworkPolicyPort(protocol="TCP", port=53),
                        ],
                    ),
                    NetworkPolicyEgressRule(
                        to=[zixly_peer],
                        ports=[NetworkPolicyPort(protocol="TCP", port=layout.ingest_port)],
                    ),
                    NetworkPolicyEgressRule(
                        to=[
                            NetworkPolicyPeer(
                                ipBlock=IPBlock(cidr="0.0.0.0/0", except_=list(PRIVATE_RANGES))
                            )
                        ],
                    ),
                ],
            ),
        ),
    ]
