"""GraphiQL's browser files: which ones, where they are installed, and installing them.

The npm packages (``graphiql`` 3, and ``react`` and ``react-dom`` 18, whose UMD builds
GraphiQL 3 runs on) are the dependencies of ``zixly/graphql/graphiql/package.json``, pinned
with their sha512 by its ``package-lock.json`` (npm's own, written with
``--omit-lockfile-registry-resolved``). ``zixly graphiql install`` (run by the Makefile's
install step, so by ``make dev`` and ``make test``) fetches the three tarballs with
``npm pack`` from the configured registry, refuses any whose sha512 is not the lock file's,
and keeps only the files the page loads (GraphiQL's UMD bundle carries its own dependencies,
so the rest of the lock file's tree is never needed in a browser)::

    <cache>/<graphiql version>-<lock digest>/   the served files and .zixly-installed.json
    <cache>/<...>.partial/                       an install in progress (the tarballs)

``<cache>`` is ``ZIXLY_GRAPHIQL_CACHE_DIR``, default ``$XDG_CACHE_HOME/zixly/graphiql`` or
``~/.cache/zixly/graphiql``. At run time nothing is fetched: the app serves these files itself
(``zixly.graphql.ide``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from zixly.core.settings import Settings
from zixly.provisioning.runtimes.distributions import InstallProgress, run_npm
from zixly.provisioning.runtimes.errors import InstallBusyError, InstallError
from zixly.provisioning.runtimes.locks import LockTimeout, file_lock

SOURCE = Path(__file__).with_name("graphiql")
LOCKFILE = SOURCE / "package-lock.json"
MARKER = ".zixly-installed.json"
# What the page loads, by the name it has in the URL: package name / path in its tarball.
NPM_FILES: dict[str, str] = {
    "react.production.min.js": "react/umd/react.production.min.js",
    "react-dom.production.min.js": "react-dom/umd/react-dom.production.min.js",
    "graphiql.min.js": "graphiql/graphiql.min.js",
    "graphiql.min.css": "graphiql/graphiql.min.css",
}
# Zixly's own files, shipped in the Python package next to the lock file.
OWN_FILES: dict[str, Path] = {"zixly-graphiql.js": SOURCE / "zixly-graphiql.js"}
# --prefer-offline: a tarball already in npm's cache is not downloaded again (it is checked
# against the lock file's sha512 all the same).
_NPM_FLAGS = ("--prefer-offline", "--no-audit", "--no-fund", "--no-update-notifier")


class GraphiQLInstallError(InstallError):
    code = "GRAPHIQL_INSTALL_FAILED"


@dataclass(frozen=True)
class Bundle:
    """The pinned GraphiQL files: where they are (or would be) installed, and their URL key."""

    graphiql_version: str
    root: Path  # the installed directory (may not exist yet)
    key: str  # changes with the lock file and Zixly's own files: URLs can be cached forever

    @property
    def installed(self) -> bool:
        return (self.root / MARKER).is_file() and all(
            (self.root / name).is_file() for name in NPM_FILES
        )

    def path(self, name: str) -> Path | None:
        """The file served as ``name``, or None for a name the page does not load."""
        if name in OWN_FILES:
            return OWN_FILES[name]
        if name in NPM_FILES:
            return self.root / name
        return None

    @property
    def names(self) -> tuple[str, ...]:
        return (*NPM_FILES, *OWN_FILES)


def cache_dir(settings: Settings) -> Path:
    if settings.graphiql_cache_dir is not None:
        return settings.graphiql_cache_dir.expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser().resolve() / "zixly" / "graphiql"


def pinned_version(name: str) -> str:
    """The version of an npm package that the committed lock file pins."""
    lock = json.loads(LOCKFILE.read_text())
    return str(lock["packages"][f"node_modules/{name}"]["version"])


def bundle(settings: Settings) -> Bundle:
    lock = LOCKFILE.read_bytes()
    lock_digest = hashlib.sha256(lock).hexdigest()[:12]
    version = pinned_version("graphiql")
    served = hashlib.sha256(lock)
    for own in OWN_FILES.values():
        served.update(own.read_bytes())
    return Bundle(
        graphiql_version=version,
        root=cache_dir(settings) / f"{version}-{lock_digest}",
        key=served.hexdigest()[:16],
    )


def install(
    settings: Settings, progress: InstallProgress, *, lock_timeout: float | None = 600
) -> Bundle:
    """Install the pinned files if they are not yet (idempotent; safe to run concurrently)."""
    target = bundle(settings)
    if target.installed:
        return target
    cache = target.root.parent
    try:
        with file_lock(
            cache / ".locks" / f"{target.root.name}.lock",
            timeout=lock_timeout,
            on_wait=lambda: progress.phase("waiting for another GraphiQL install"),
        ):
            if not target.installed:  # another process may have finished meanwhile
                _install(target, progress)
    except LockTimeout as exc:
        raise InstallBusyError(f"another GraphiQL install holds {exc.path}") from exc
    if not target.installed:
        raise GraphiQLInstallError(f"GraphiQL {target.graphiql_version} did not verify")
    return target


def _install(target: Bundle, progress: InstallProgress) -> None:
    partial = target.root.with_name(target.root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    lock = json.loads(LOCKFILE.read_text())["packages"]
    wanted = json.loads((SOURCE / "package.json").read_text())["dependencies"]
    pinned = {name: lock[f"node_modules/{name}"] for name in wanted}
    progress.phase(f"downloading GraphiQL {target.graphiql_version} and React from npm")
    specs = [f"{name}@{entry['version']}" for name, entry in pinned.items()]
    run_npm(
        ["pack", *specs, "--pack-destination", str(partial), *_NPM_FLAGS],
        cwd=partial,
        env=dict(os.environ),
        progress=progress,
    )
    tarballs: dict[str, tarfile.TarFile] = {}
    try:
        for name, entry in pinned.items():
            tarball = partial / f"{name}-{entry['version']}.tgz"
            if not tarball.is_file():
                raise GraphiQLInstallError(f"npm pack did not produce {tarball.name}")
            _check_integrity(tarball, entry["integrity"])
            tarballs[name] = tarfile.open(tarball, "r:gz")
        staged = partial / "files"
        staged.mkdir()
        sha256: dict[str, str] = {}
        for served, inside in NPM_FILES.items():
            package, _, member = inside.partition("/")
            content = _read_member(tarballs[package], package, f"package/{member}")
            (staged / served).write_bytes(content)
            sha256[served] = hashlib.sha256(content).hexdigest()
    finally:
        for opened in tarballs.values():
            opened.close()
    versions = {name: entry["version"] for name, entry in pinned.items()}
    marker = {"versions": versions, "sha256": sha256, "installed_at": datetime.now(UTC).isoformat()}
    (staged / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    shutil.rmtree(target.root, ignore_errors=True)
    staged.rename(target.root)
    shutil.rmtree(partial, ignore_errors=True)


def _check_integrity(tarball: Path, integrity: str) -> None:
    """The tarball is the one the lock file pins (its Subresource Integrity sha512)."""
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512":
        raise GraphiQLInstallError(f"the lock file pins {tarball.name} by {algorithm}, not sha512")
    actual = base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
    if actual != expected:
        raise GraphiQLInstallError(
            f"{tarball.name} does not match the lock file's sha512 (got sha512-{actual})"
        )


def _read_member(tarball: tarfile.TarFile, package: str, member: str) -> bytes:
    try:
        extracted = tarball.extractfile(member)
    except KeyError:
        extracted = None
    if extracted is None:
        raise GraphiQLInstallError(f"{member} is not a file in the {package} tarball")
    with extracted:
        return extracted.read()
