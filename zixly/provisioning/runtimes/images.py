"""Building the local n8n image (``localhost/zixly/n8n:<version>``) where no registry is reachable.

Production pulls the official n8n image (``infra/n8n/Dockerfile``); tests and offline dev
build a stand-in from what the machine can get: Debian packages (debootstrap) and the npm
registry (``ensure_n8n``). Two steps, both through the configured engine's API:

1. import: one tar stream, made by GNU tar straight from the directories, of a prepared
   Debian rootfs + the Node the install used (22 or 24; ``/usr/local/bin/node``) + the n8n tree (``/opt/n8n``), imported
   as ``localhost/zixly/n8n-rootfs:<version>``. No build context and no COPY, so the 1.8 GB
   tree moves once (a COPY build sends it as a context and then copies it into a layer).
2. build: ``infra/n8n/Containerfile.local`` ``FROM`` that image; it adds Zixly's community
   nodes (``zixly/n8n_nodes/package``, a few files) and sets the user, environment, port,
   healthcheck and command, so its context is that file plus the nodes package (kilobytes).

The image carries the label ``zixly.image-inputs``, a hash of everything it was made from
(n8n and Node versions, the rootfs recipe, the Containerfile, the nodes package's files);
with the tag present and the label matching, ``ensure_n8n_image`` does nothing. The prepared
rootfs is cached in ``<n8n cache>/images/`` so a new n8n version does not run debootstrap
again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import docker
import docker.errors

from zixly.core.logging import redact_text
from zixly.n8n_nodes.export import PACKAGE_DIR as NODES_PACKAGE_DIR
from zixly.provisioning.runtimes.distributions import (
    DEFAULT_N8N_VERSION,
    MARKER,
    InstallProgress,
    N8nDistribution,
    SilentProgress,
    default_cache_dir,
    ensure_n8n,
)
from zixly.provisioning.runtimes.docker import engine_errors
from zixly.provisioning.runtimes.errors import InstallError
from zixly.provisioning.runtimes.locks import file_lock

IMAGE_REPOSITORY = "localhost/zixly/n8n"
ROOTFS_REPOSITORY = "localhost/zixly/n8n-rootfs"
INPUTS_LABEL = "zixly.image-inputs"
VERSION_LABEL = "zixly.n8n-version"
CONTAINERFILE = Path(__file__).resolve().parents[3] / "infra" / "n8n" / "Containerfile.local"
NODES_CONTEXT_DIR = "n8n-nodes-zixly"  # where the Containerfile COPYs the nodes package from
SUITE = "bookworm"
PACKAGES = ("tini", "ca-certificates")
NODE_UID = 1000
# Bump when the rootfs preparation below changes: it is part of the image's input hash.
ROOTFS_RECIPE = (
    f"debootstrap --variant=minbase --include={','.join(PACKAGES)} {SUITE}; node:1000; v1"
)
_MARKER = ".zixly-rootfs.json"
_N8N_MEMBERS = {"node_modules", "package.json", "package-lock.json"}
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ImageResult:
    tag: str
    image_id: str
    built: bool  # False: the cached image was up to date
    seconds: float
    steps: dict[str, float] = field(default_factory=dict)  # step -> seconds, when built


def image_tag(version: str) -> str:
    return f"{IMAGE_REPOSITORY}:{version}"


def input_hash(dist: N8nDistribution, node_version: str) -> str:
    digest = hashlib.sha256()
    for part in (dist.version, node_version, ROOTFS_RECIPE, CONTAINERFILE.read_text()):
        digest.update(part.encode())
        digest.update(b"\0")
    for relative, path in nodes_package_files():  # a node or rule-table change rebuilds
        digest.update(relative.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def nodes_package_files() -> list[tuple[str, Path]]:
    """The community-node package's files as (path relative to it, path), sorted."""
    files = [
        path
        for path in NODES_PACKAGE_DIR.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and "node_modules" not in path.parts
    ]
    return sorted((path.relative_to(NODES_PACKAGE_DIR).as_posix(), path) for path in files)


def _build_context(stream: IO[bytes]) -> None:
    """The build context as a tar: the Containerfile and the nodes package (root-owned,
    world-readable, fixed times, so the same inputs give the same layer)."""

    def normalised(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        info.mode = 0o755 if info.isdir() else 0o644
        return info

    with tarfile.open(fileobj=stream, mode="w") as tar:
        tar.add(CONTAINERFILE, arcname="Containerfile", filter=normalised)
        for relative, path in nodes_package_files():
            tar.add(path, arcname=f"{NODES_CONTEXT_DIR}/{relative}", filter=normalised)


def ensure_n8n_image(
    client: docker.DockerClient,
    version: str = DEFAULT_N8N_VERSION,
    *,
    progress: InstallProgress | None = None,
    cache_dir: Path | None = None,
    force: bool = False,
) -> ImageResult:
    """Build ``localhost/zixly/n8n:<version>`` unless an image with the same inputs exists."""
    started = time.monotonic()
    report = progress or SilentProgress()
    cache = cache_dir or default_cache_dir()
    dist = ensure_n8n(version, cache_dir=cache, progress=report)
    node_version = node_version_of(dist)
    inputs = input_hash(dist, node_version)
    tag = image_tag(version)
    with file_lock(cache / ".locks" / f"image-{version}.lock"):
        current = _existing(client, tag)
        if not force and current is not None and current.labels.get(INPUTS_LABEL) == inputs:
            return ImageResult(tag, str(current.id), False, time.monotonic() - started)
        rootfs_tag = f"{ROOTFS_REPOSITORY}:{version}"
        previous = [i.id for i in (current, _existing(client, rootfs_tag)) if i is not None]
        steps: dict[str, float] = {}
        with _timed(steps, "rootfs"):
            rootfs = ensure_rootfs(cache, progress=report)
        report.phase(f"importing Debian + Node {node_version} + n8n {version} as {rootfs_tag}")
        with (
            _timed(steps, "import"),
            _engine_errors("importing the rootfs"),
            _tar_stream(rootfs, dist) as stream,
        ):
            # The tag goes in ``repository``: Podman's compat API ignores the ``tag`` parameter.
            client.api.import_image_from_stream(_chunks(stream, report), repository=rootfs_tag)
        imported = _existing(client, rootfs_tag, required=True)
        report.phase(f"building {tag} from {CONTAINERFILE.name}")
        with _timed(steps, "build"):
            image_id = _build(client, tag, rootfs_tag, inputs, version, report)
        _remove_replaced(client, [i for i in previous if i not in (image_id, imported.id)])
    return ImageResult(tag, image_id, True, time.monotonic() - started, steps)


@contextlib.contextmanager
def _timed(steps: dict[str, float], name: str) -> Iterator[None]:
    started = time.monotonic()
    yield
    steps[name] = round(time.monotonic() - started, 1)


def ensure_rootfs(cache: Path, *, progress: InstallProgress | None = None) -> Path:
    """The prepared Debian rootfs, made once with debootstrap (about 30 s)."""
    report = progress or SilentProgress()
    final = cache / "images" / f"debian-{SUITE}-minbase"
    partial = final.with_name(final.name + ".partial")
    with file_lock(cache / ".locks" / "rootfs.lock"):
        if _rootfs_ok(final):
            return final
        debootstrap = shutil.which("debootstrap")
        if debootstrap is None:
            raise InstallError("debootstrap is not installed (run scripts/ci-setup-podman.sh)")
        for stale in (final, partial):  # debootstrap cannot resume: start clean
            if stale.exists():
                shutil.rmtree(stale)
        partial.parent.mkdir(parents=True, exist_ok=True)
        report.phase(f"debootstrap {SUITE} (minbase) from Debian's packages")
        _run(
            [
                debootstrap,
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                SUITE,
                str(partial),
            ],
            report,
            "debootstrap",
        )
        report.phase("preparing the rootfs (user node, cleanup)")
        _prepare_rootfs(partial)
        (partial / _MARKER).write_text(json.dumps({"recipe": ROOTFS_RECIPE}))
        partial.rename(final)
        return final


def _rootfs_ok(path: Path) -> bool:
    try:
        return bool(json.loads((path / _MARKER).read_text()).get("recipe") == ROOTFS_RECIPE)
    except (OSError, ValueError, AttributeError):
        return False


def _prepare_rootfs(root: Path) -> None:
    """Add user node (1000:1000) with its data folder; drop apt caches; make /opt/n8n."""
    for directory in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in (root / directory).glob("*"):
            if entry.is_file():
                entry.unlink()
    _append_line(root / "etc/passwd", f"node:x:{NODE_UID}:{NODE_UID}:n8n:/home/node:/bin/sh")
    _append_line(root / "etc/group", f"node:x:{NODE_UID}:")
    _append_line(root / "etc/shadow", "node:!:19000:0:99999:7:::")
    data = root / "home/node/.n8n"
    data.mkdir(parents=True, exist_ok=True)
    for path in (data.parent, data):
        os.chown(path, NODE_UID, NODE_UID)
        path.chmod(0o700 if path == data else 0o755)
    (root / "opt/n8n").mkdir(parents=True, exist_ok=True)
    (root / "usr/local/bin").mkdir(parents=True, exist_ok=True)


def _append_line(path: Path, line: str) -> None:
    text = path.read_text() if path.exists() else ""
    if line.split(":", 1)[0] + ":" not in {row.split(":", 1)[0] + ":" for row in text.splitlines()}:
        path.write_text(text + ("" if text.endswith("\n") or not text else "\n") + line + "\n")


@contextlib.contextmanager
def _tar_stream(rootfs: Path, dist: N8nDistribution) -> Iterator[IO[bytes]]:
    """GNU tar of rootfs + node + n8n, renamed on the fly into their places in the image."""
    tar = shutil.which("tar")
    if tar is None:
        raise InstallError("GNU tar is needed to build the image")
    node = dist.node_bin.resolve()
    if not node.name.replace("-", "").isalnum():
        raise InstallError(f"unexpected node binary name: {node}")
    n8n_members = sorted(p.name for p in dist.root.iterdir() if p.name in _N8N_MEMBERS)
    argv = [
        tar,
        "--create",
        "--file=-",
        "--numeric-owner",
        # 'S': symlink targets inside node_modules are relative and stay as they are.
        f"--transform=s,^{node.name}$,./usr/local/bin/node,S",
        r"--transform=s,^\(node_modules\|package\.json\|package-lock\.json\),./opt/n8n/\1,S",
        "-C",
        str(rootfs),
        "--exclude=./" + _MARKER,
        ".",
        "-C",
        str(node.parent),
        node.name,
        "-C",
        str(dist.root),
        *n8n_members,
    ]
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors
        )
        assert process.stdout is not None
        try:
            yield process.stdout
        finally:
            process.stdout.close()
            code = process.wait()
        if code != 0:
            errors.seek(0)
            tail = errors.read().decode(errors="replace")[-2000:]
            raise InstallError(f"tar of the image filesystem failed ({code})", output_tail=tail)


def _chunks(stream: IO[bytes], report: InstallProgress) -> Iterator[bytes]:
    """The stream in 1 MB chunks (requests sends it chunked), reporting every 100 MB."""
    sent = 0
    while chunk := stream.read(_CHUNK):
        sent += len(chunk)
        if sent // 100_000_000 != (sent - len(chunk)) // 100_000_000:
            report.output(f"sent {sent / 1e6:,.0f} MB to the engine")
        yield chunk


def _build(
    client: docker.DockerClient,
    tag: str,
    rootfs_tag: str,
    inputs: str,
    version: str,
    report: InstallProgress,
) -> str:
    with _engine_errors("building the image"), tempfile.TemporaryFile() as context:
        _build_context(context)
        context.seek(0)
        events = client.api.build(
            fileobj=context,
            custom_context=True,
            dockerfile="Containerfile",
            tag=tag,
            buildargs={"ROOTFS": rootfs_tag},
            labels={INPUTS_LABEL: inputs, VERSION_LABEL: version},
            pull=False,
            rm=True,
            forcerm=True,
            decode=True,
        )
        tail: list[str] = []
        for event in events:
            if "error" in event or "errorDetail" in event:
                message = str(event.get("error") or event.get("errorDetail"))
                raise InstallError(
                    f"building {tag} failed: {redact_text(message)}",
                    output_tail="\n".join(tail[-40:]),
                )
            for line in str(event.get("stream", "")).splitlines():
                if line.strip():
                    tail.append(redact_text(line.rstrip()))
                    report.output(tail[-1])
        image = client.images.get(tag)
    if image.labels.get(INPUTS_LABEL) != inputs:
        raise InstallError(f"the engine built {tag} without the {INPUTS_LABEL} label")
    return str(image.id)


def _remove_replaced(client: docker.DockerClient, image_ids: list[str]) -> None:
    """Free the space of the images a rebuild replaced (1.7 GB each); best effort."""
    for image_id in image_ids:
        with contextlib.suppress(docker.errors.APIError):  # gone, or still used by a container
            client.images.remove(image_id, noprune=False)


def _existing(client: docker.DockerClient, tag: str, *, required: bool = False) -> Any:
    with _engine_errors("looking up the image"):
        try:
            return client.images.get(tag)
        except docker.errors.ImageNotFound:
            if required:
                raise InstallError(f"the engine has no image {tag} after importing it") from None
            return None


def _engine_errors(action: str) -> contextlib.AbstractContextManager[None]:
    return engine_errors(action, failure=InstallError)


def _run(argv: list[str], report: InstallProgress, what: str) -> None:
    tail: list[str] = []
    with subprocess.Popen(  # noqa: S603 - fixed argv, no shell
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    ) as process:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.rstrip()
            if line:
                tail = [*tail[-39:], line]
                report.output(line)
        code = process.wait()
    if code != 0:
        raise InstallError(f"{what} failed with exit code {code}", output_tail="\n".join(tail))


def node_version_of(dist: N8nDistribution) -> str:
    """The Node the install used, as its marker recorded it (what goes into the image)."""
    try:
        return str(json.loads((dist.root / MARKER).read_text())["node_version"])
    except (OSError, ValueError, KeyError) as exc:
        raise InstallError(f"n8n {dist.version} has no install marker in {dist.root}") from exc


__all__ = [
    "CONTAINERFILE",
    "IMAGE_REPOSITORY",
    "INPUTS_LABEL",
    "ImageResult",
    "ensure_n8n_image",
    "ensure_rootfs",
    "image_tag",
    "input_hash",
    "node_version_of",
    "nodes_package_files",
]
