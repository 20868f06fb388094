"""A real Kubernetes control plane on loopback for the tests: etcd, kube-apiserver (Node and
RBAC authorisation, the default admission plugins with PodSecurity, ResourceQuota and
LimitRanger), kube-controller-manager, kube-scheduler, and KWOK so that nodes and pods go
Ready without a kubelet. The binaries are built from the Go module proxy by
``scripts/ci-setup-kube.sh``; nothing here stands in for a component.

Certificates come from ``cryptography``: one CA, the API server's serving certificate,
client certificates for the administrator (``system:masters``), the controller manager and
the scheduler, and the service-account signing key.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[1]
VERSIONS = ROOT / "infra" / "k8s" / "testenv" / "versions.env"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
SERVICE_CIDR = "10.96.0.0/16"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_STAGES = ROOT / "infra" / "k8s" / "testenv" / "kwok-stages.yaml"


def versions() -> dict[str, str]:
    found = {}
    for line in VERSIONS.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            found[key] = value
    return found


def bin_dir() -> Path:
    cache = Path(os.environ.get("ZIXLY_KUBE_CACHE", Path.home() / ".cache" / "zixly" / "kube"))
    return cache / versions()["KUBE_VERSION"] / "bin"


async def add_kwok_node(client: Any, name: str) -> None:
    """A fake node KWOK keeps Ready. The API server taints a new node not-ready until a node
    lifecycle controller clears it; that controller is off here (no kubelet heartbeats), so
    the taint is cleared once KWOK has made the node Ready."""
    from lightkube.models.meta_v1 import ObjectMeta
    from lightkube.resources.core_v1 import Node

    await client.create(
        Node(
            metadata=ObjectMeta(
                name=name,
                annotations={KWOK_NODE_ANNOTATION: "fake"},
                labels={"type": "kwok", "kubernetes.io/hostname": name},
            )
        )
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        node = await client.get(Node, name)
        conditions = (node.status.conditions or []) if node.status else []
        if any(c.type == "Ready" and c.status == "True" for c in conditions):
            break
        await asyncio.sleep(0.2)
    else:
        raise TimeoutError(f"KWOK did not make node {name} Ready")
    await client.patch(Node, name, {"spec": {"taints": None}})


async def local_storage_class(client: Any, name: str) -> None:
    """A storage class without a provisioner whose claims the volume controller binds at
    once to statically created volumes (``static_volume``): no storage provisioner runs here."""
    from lightkube import ApiError
    from lightkube.models.meta_v1 import ObjectMeta
    from lightkube.resources.storage_v1 import StorageClass

    try:
        await client.create(
            StorageClass(
                metadata=ObjectMeta(name=name),
                provisioner="kubernetes.io/no-provisioner",
                volumeBindingMode="Immediate",
            )
        )
    except ApiError as exc:
        if exc.status.code != 409:
            raise


async def static_volume(
    client: Any,
    storage_class: str,
    name: str,
    claim: tuple[str, str],
    *,
    size: str = "1Gi",
    reclaim: str = "Retain",
) -> None:
    """One volume of ``storage_class`` reserved for one claim (namespace, name), so that no
    other pending claim of the class (a namespace still terminating) takes it; a host path
    nothing writes (KWOK)."""
    from lightkube.models.core_v1 import (
        HostPathVolumeSource,
        ObjectReference,
        PersistentVolumeSpec,
    )
    from lightkube.models.meta_v1 import ObjectMeta
    from lightkube.resources.core_v1 import PersistentVolume

    await client.create(
        PersistentVolume(
            metadata=ObjectMeta(name=name),
            spec=PersistentVolumeSpec(
                capacity={"storage": size},
                accessModes=["ReadWriteOnce"],
                storageClassName=storage_class,
                persistentVolumeReclaimPolicy=reclaim,
                claimRef=ObjectReference(namespace=claim[0], name=claim[1]),
                hostPath=HostPathVolumeSource(path=f"/tmp/zixly-pv-{name}"),
            ),
        )
    )


def token_config(server: str, ca: Path, token: str, namespace: str = "default") -> Any:
    """A lightkube KubeConfig for a bearer token (a ServiceAccount's)."""
    from lightkube import KubeConfig

    return KubeConfig.from_dict(
        {
            "clusters": [
                {"name": "test", "cluster": {"server": server, "certificate-authority": str(ca)}}
            ],
            "users": [{"name": "token", "user": {"token": token}}],
            "contexts": [
                {
                    "name": "test",
                    "context": {"cluster": "test", "user": "token", "namespace": namespace},
                }
            ],
            "current-context": "test",
        }
    )


def missing_binaries() -> list[str]:
    return [name for name in BINARIES if not (bin_dir() / name).is_file()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- certificates --------------------------------------------------------------------------


@dataclass
class Issued:
    cert: Path
    key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


class Authority:
    """A throw-away CA for one control plane."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.key = _key()
        now = datetime.datetime.now(datetime.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "zixly-test-ca")])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.path = folder / "ca.crt"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        name: str,
        common_name: str,
        *,
        organisations: tuple[str, ...] = (),
        server: bool = False,
    ) -> Issued:
        key = _key()
        now = datetime.datetime.now(datetime.UTC)
        attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organisations]
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.ExtendedKeyUsage(
                    [
                        x509.ExtendedKeyUsageOID.SERVER_AUTH
                        if server
                        else x509.ExtendedKeyUsageOID.CLIENT_AUTH
                    ]
                ),
                critical=False,
            )
        )
        if server:
            service_ip = next(ipaddress.ip_network(SERVICE_CIDR).hosts())
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.DNSName("kubernetes"),
                        x509.DNSName("kubernetes.default"),
                        x509.DNSName("kubernetes.default.svc"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.IPAddress(service_ip),
                    ]
                ),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        issued = Issued(self.folder / f"{name}.crt", self.folder / f"{name}.key")
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(issued.key, key)
        return issued


def kubeconfig(path: Path, server: str, ca: Path, client: Issued, user: str) -> Path:
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {{server: "{server}", certificate-authority: "{ca}"}}
users:
- name: {user}
  user: {{client-certificate: "{client.cert}", client-key: "{client.key}"}}
contexts:
- name: test
  context: {{cluster: test, user: {user}}}
current-context: test
"""
    )
    path.chmod(0o600)
    return path


# --- the control plane ---------------------------------------------------------------------


@dataclass
class KubeTestEnv:
    """Start with ``start()`` (or as a context manager); ``kubeconfig`` is the administrator's."""

    folder: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    server: str = ""
    kubeconfig: Path = Path()
    ca: Path = Path()
    timings: dict[str, float] = field(default_factory=dict)
    _logs: list[BinaryIO] = field(default_factory=list)

    def __enter__(self) -> KubeTestEnv:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _spawn(self, name: str, *args: str) -> None:
        log = (self.folder / f"{name}.log").open("wb")
        self._logs.append(log)
        self.processes[name] = subprocess.Popen(
            [str(bin_dir() / name), *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self, name: str, lines: int = 40) -> str:
        path = self.folder / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited ({process.returncode}):\n{self.log(name)}")

    def start(self, timeout: float = 120.0) -> None:
        started = time.monotonic()
        self.folder.mkdir(parents=True, exist_ok=True)
        pki = self.folder / "pki"
        pki.mkdir(exist_ok=True)
        ca = Authority(pki)
        self.ca = ca.path
        serving = ca.issue("apiserver", "kube-apiserver", server=True)
        admin = ca.issue("admin", "zixly-test-admin", organisations=("system:masters",))
        controllers = ca.issue("controller-manager", "system:kube-controller-manager")
        scheduler = ca.issue("scheduler", "system:kube-scheduler")
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_key(pki / "sa.key", sa_key)
        (pki / "sa.pub").write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        self._spawn(
            "etcd",
            "--name=default",
            f"--data-dir={self.folder / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync",
            "--log-level=warn",
        )
        self.server = f"https://127.0.0.1:{api_port}"
        self._spawn(
            "kube-apiserver",
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",  # a loopback address cannot be an endpoint
            f"--secure-port={api_port}",
            f"--cert-dir={pki}",
            f"--tls-cert-file={serving.cert}",
            f"--tls-private-key-file={serving.key}",
            f"--client-ca-file={ca.path}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            "--api-audiences=https://kubernetes.default.svc",
            "--authorization-mode=Node,RBAC",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=false",
            "--profiling=false",
            "--v=1",
        )
        self.kubeconfig = kubeconfig(
            self.folder / "admin.kubeconfig", self.server, ca.path, admin, "admin"
        )
        self._wait_ready(admin, started + timeout)
        self.timings["apiserver_ready_s"] = time.monotonic() - started

        cm_config = kubeconfig(
            self.folder / "controller-manager.kubeconfig",
            self.server,
            ca.path,
            controllers,
            "system:kube-controller-manager",
        )
        self._spawn(
            "kube-controller-manager",
            f"--kubeconfig={cm_config}",
            f"--authentication-kubeconfig={cm_config}",
            f"--authorization-kubeconfig={cm_config}",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={ca.path}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--controllers=*,-nodeipam,-nodelifecycle",
            "--v=1",
        )
        sched_config = kubeconfig(
            self.folder / "scheduler.kubeconfig",
            self.server,
            ca.path,
            scheduler,
            "system:kube-scheduler",
        )
        self._spawn(
            "kube-scheduler",
            f"--kubeconfig={sched_config}",
            f"--authentication-kubeconfig={sched_config}",
            f"--authorization-kubeconfig={sched_config}",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
            "--leader-elect=false",
            "--v=1",
        )
        self._spawn(
            "kwok",
            f"--kubeconfig={self.kubeconfig}",
            f"--config={KWOK_STAGES}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
            "--cidr=10.244.0.0/16",
            "--node-ip=127.0.0.1",
        )
        time.sleep(0.5)
        self._check_alive()
        self.timings["control_plane_started_s"] = time.monotonic() - started

    def _wait_ready(self, admin: Issued, deadline: float) -> None:
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(str(admin.cert), str(admin.key))
        last = ""
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                with urllib.request.urlopen(
                    f"{self.server}/readyz", context=context, timeout=2
                ) as response:
                    if response.status == 200:
                        return
            except OSError as exc:
                last = str(exc)
            time.sleep(0.2)
        raise TimeoutError(f"kube-apiserver not ready ({last}):\n{self.log('kube-apiserver')}")

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()


@contextlib.contextmanager
def running(folder: Path) -> Iterator[KubeTestEnv]:
    env = KubeTestEnv(folder)
    try:
        env.start()
        yield env
    finally:
        env.stop()
        shutil.rmtree(folder / "etcd", ignore_errors=True)
