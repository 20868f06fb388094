"""Installing real n8n (and the Node it needs) from the npm registry into a local cache.

Layout under the cache directory (``ZIXLY_N8N_CACHE_DIR``, default ``~/.cache/zixly/n8n``)::

    node-22/, node-24/    Node from the npm ``node`` package (1.123 runs on 22, 2.x on 24;
                          only when the system's Node is not that major)
    <version>/            a finished n8n install: node_modules/ + the marker file
    <version>.partial/    an install in progress or interrupted; re-running npm continues it
    .locks/               one flock per install, so concurrent installs wait for each other

An install is finished only when the marker (written last, after ``n8n --version`` answered
the expected version) is in place and ``<version>.partial`` has been renamed to ``<version>``.
So a crash at any point leaves at most a ``.partial`` directory that the next run resumes.

Why Node from npm: n8n 1.123 declares Node >= 20.19, but its dependency ``isolated-vm``
6.x does not compile against Node 20's V8; n8n 2.x needs Node >= 24. The npm ``node``
package ships a real binary and its headers; ``npm_config_nodedir`` points node-gyp at those
headers (it would otherwise try to download them from outside the registries).

n8n 2.x installs with ``--ignore-scripts`` (an optional Kafka dependency's install script
downloads from outside the registries), then ``npm rebuild`` of the native modules n8n
needs to start (``NATIVE_MODULES``). The per-version differences are in
zixly.provisioning.n8n.versions.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from zixly.core.logging import redact_text
from zixly.core.settings import Settings
from zixly.provisioning.n8n.versions import CURRENT_N8N_VERSION, line
from zixly.provisioning.runtimes.errors import InstallBusyError, InstallError, NotInstalledError
from zixly.provisioning.runtimes.locks import LockTimeout, file_lock

DEFAULT_N8N_VERSION = CURRENT_N8N_VERSION  # what `zixly n8n install` installs by default
XLSX_OVERRIDE = "0.18.5"  # n8n pins xlsx to a tarball URL outside the registries
MARKER = ".zixly-installed.json"
_VERSION = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?$")
_TAIL_LINES = 40
NATIVE_MODULES = ("sqlite3", "isolated-vm")  # compiled or prebuilt per Node ABI
_verified: set[tuple[str, int]] = set()  # (root, marker mtime) that answered --version
_NPM_FLAGS = ("--no-audit", "--no-fund", "--no-update-notifier", "--loglevel=info")


class InstallProgress(Protocol):
    """What an install reports while it runs (the CLI draws it with rich)."""

    def phase(self, text: str, *, watch: Path | None = None) -> None:
        """A new step began; ``watch`` is a directory whose growth shows progress."""

    def output(self, line: str) -> None:
        """One line npm printed (already redacted)."""


class SilentProgress:
    def phase(self, text: str, *, watch: Path | None = None) -> None:
        return None

    def output(self, line: str) -> None:
        return None


@dataclass(frozen=True)
class NodeRuntime:
    node_bin: Path
    version: str
    headers_dir: Path | None  # for npm_config_nodedir; None: node-gyp's default

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) with this Node first on PATH."""
        env = dict(os.environ if base is None else base)
        env["PATH"] = os.pathsep.join([str(self.node_bin.parent), env.get("PATH", os.defpath)])
        if self.headers_dir is not None:
            env["npm_config_nodedir"] = str(self.headers_dir)
        return env


@dataclass(frozen=True)
class N8nDistribution:
    node_bin: Path
    n8n_bin: Path
    version: str
    root: Path

    def command(self, *args: str) -> list[str]:
        return [str(self.node_bin), str(self.n8n_bin), *args]


def default_cache_dir() -> Path:
    configured = Settings().n8n_cache_dir  # read afresh: tests and CLI set it per process
    if configured is not None:
        return configured.expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser().resolve() / "zixly" / "n8n"


def check_version(version: str) -> str:
    if not _VERSION.match(version):
        raise InstallError(f"not an n8n version: {version!r}", version=version)
    return version


def ensure_n8n(
    version: str = DEFAULT_N8N_VERSION,
    *,
    install: bool = True,
    cache_dir: Path | None = None,
    progress: InstallProgress | None = None,
    lock_timeout: float | None = None,
) -> N8nDistribution:
    """Return the installed n8n ``version``, installing it first when allowed and missing."""
    check_version(version)
    cache = cache_dir or default_cache_dir()
    found = find_n8n(version, cache)
    if found is not None:
        return found
    if not install:
        raise NotInstalledError(
            f"n8n {version} is not installed in {cache} "
            f"(run `zixly n8n install --version {version}`)",
            version=version,
        )
    report = progress or SilentProgress()
    with _locked(cache, f"n8n-{version}", report, lock_timeout):
        found = find_n8n(version, cache)  # another process may have finished meanwhile
        if found is not None:
            return found
        node = ensure_node(
            cache, major=line(version).node_major, progress=report, lock_timeout=lock_timeout
        )
        return _install_n8n(version, cache, node, report)


def find_n8n(version: str, cache_dir: Path | None = None) -> N8nDistribution | None:
    """The finished install of ``version``, checked with ``n8n --version``; else None."""
    root = (cache_dir or default_cache_dir()) / check_version(version)
    try:
        marker = json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None
    dist = N8nDistribution(
        node_bin=Path(marker.get("node_bin", "")),
        n8n_bin=root / "node_modules" / "n8n" / "bin" / "n8n",
        version=version,
        root=root,
    )
    if not (dist.node_bin.is_file() and dist.n8n_bin.is_file()):
        return None
    key = (str(root), (root / MARKER).stat().st_mtime_ns)
    if key not in _verified:
        if _n8n_version(dist) != version:
            return None
        _verified.add(key)
    return dist


def installed_versions(cache_dir: Path | None = None) -> list[str]:
    """Versions with a marker, unchecked (for status displays)."""
    cache = cache_dir or default_cache_dir()
    if not cache.is_dir():
        return []
    return sorted(
        p.name for p in cache.iterdir() if _VERSION.match(p.name) and (p / MARKER).is_file()
    )


def partial_versions(cache_dir: Path | None = None) -> list[str]:
    cache = cache_dir or default_cache_dir()
    if not cache.is_dir():
        return []
    return sorted(p.name.removesuffix(".partial") for p in cache.glob("*.partial") if p.is_dir())


def ensure_node(
    cache_dir: Path | None = None,
    *,
    major: int | None = None,
    progress: InstallProgress | None = None,
    lock_timeout: float | None = None,
) -> NodeRuntime:
    """Node ``major`` (default: the default n8n's) with headers: the system's if it is that
    major, else the npm ``node`` package."""
    major = major or line(DEFAULT_N8N_VERSION).node_major
    cache = cache_dir or default_cache_dir()
    found = find_node(cache, major=major)
    if found is not None:
        return found
    report = progress or SilentProgress()
    with _locked(cache, f"node-{major}", report, lock_timeout):
        found = _cached_node(cache, major)
        if found is not None:
            return found
        final, partial = _dirs(cache, f"node-{major}")
        _reclaim(final, partial)
        manifest = {"name": "zixly-node", "private": True, "dependencies": {"node": str(major)}}
        _write_json(partial / "package.json", manifest)
        report.phase(f"installing Node {major} from npm", watch=partial / "node_modules")
        # The system's npm runs on the system's Node here: the new one does not exist yet.
        run_npm(["install", *_NPM_FLAGS], cwd=partial, env=dict(os.environ), progress=report)
        node = _node_in(partial)
        if node is None or _major(node.version) != major:
            raise InstallError(f"the npm package node@{major} did not produce a usable node")
        _write_json(partial / MARKER, {"node": node.version, "installed_at": _now()})
        partial.rename(final)
        found = _cached_node(cache, major)
        assert found is not None
        return found


def find_node(cache_dir: Path | None = None, *, major: int | None = None) -> NodeRuntime | None:
    """The Node that installs of n8n need ``major`` of, without installing one."""
    major = major or line(DEFAULT_N8N_VERSION).node_major
    system = system_node()
    if system is not None and _major(system.version) == major and system.headers_dir:
        return system
    return _cached_node(cache_dir or default_cache_dir(), major)


def system_node() -> NodeRuntime | None:
    path = shutil.which("node")
    if path is None:
        return None
    node_bin = Path(path).resolve()
    version = _node_version(node_bin)
    if version is None:
        return None
    prefix = node_bin.parent.parent
    headers = prefix if (prefix / "include" / "node" / "node_version.h").is_file() else None
    return NodeRuntime(node_bin=node_bin, version=version, headers_dir=headers)


def run_npm(
    args: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    progress: InstallProgress,
) -> None:
    """Run npm, streaming its output to ``progress``; failure -> InstallError with the tail."""
    npm = shutil.which("npm", path=env.get("PATH"))
    if npm is None:
        raise InstallError("npm was not found on PATH (Debian: apt-get install npm)")
    tail: deque[str] = deque(maxlen=_TAIL_LINES)
    with subprocess.Popen(  # noqa: S603 - fixed argv, no shell
        [npm, *args],
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    ) as process:
        assert process.stdout is not None
        try:
            for raw in process.stdout:
                line = redact_text(raw.rstrip())
                if line:
                    tail.append(line)
                    progress.output(line)
            code = process.wait()
        except BaseException:  # Ctrl-C or a failing progress display: do not orphan npm
            process.kill()
            raise
    if code != 0:
        hint = " (is the npm registry reachable?)" if _looks_offline(tail) else ""
        raise InstallError(
            f"`npm {args[0]}` failed with exit code {code}{hint}",
            output_tail="\n".join(tail),
            exit_code=code,
        )


def directory_size(path: Path) -> int:
    """Bytes allocated under ``path``; tolerant of files vanishing while npm works."""
    total = 0
    stack = [path]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                else:
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
            except OSError:
                continue
    return total


# --- internals ------------------------------------------------------------------------------


def _install_n8n(
    version: str, cache: Path, node: NodeRuntime, progress: InstallProgress
) -> N8nDistribution:
    final, partial = _dirs(cache, version)
    _reclaim(final, partial)
    manifest = {
        "name": f"zixly-n8n-{version}",
        "private": True,
        "dependencies": {"n8n": version},
        "overrides": {"xlsx": XLSX_OVERRIDE},
    }
    _write_json(partial / "package.json", manifest)
    resumed = (partial / "node_modules").is_dir()
    no_scripts = line(version).ignore_install_scripts
    progress.phase(f"installing n8n {version} from npm", watch=partial / "node_modules")
    flags = [*_NPM_FLAGS, *(["--ignore-scripts"] if no_scripts else [])]
    run_npm(["install", *flags], cwd=partial, env=node.env(), progress=progress)
    if resumed or no_scripts:
        # npm does not re-run install scripts of packages already unpacked, so a run
        # interrupted while compiling (sqlite3...) would leave them unbuilt; and without
        # install scripts only the native modules n8n needs are built.
        progress.phase("building native modules" + (" (resumed install)" if resumed else ""))
        modules = list(NATIVE_MODULES) if no_scripts else []
        run_npm(["rebuild", *modules, *_NPM_FLAGS], cwd=partial, env=node.env(), progress=progress)
    progress.phase(f"checking n8n {version}")
    staged = N8nDistribution(
        node_bin=node.node_bin,
        n8n_bin=partial / "node_modules" / "n8n" / "bin" / "n8n",
        version=version,
        root=partial,
    )
    answered = _n8n_version(staged)
    if answered != version:
        raise InstallError(f"installed n8n answered version {answered!r}, expected {version}")
    _check_native_modules(staged)
    _write_json(
        partial / MARKER,
        {
            "version": version,
            "node_bin": str(node.node_bin),
            "node_version": node.version,
            "installed_at": _now(),
        },
    )
    partial.rename(final)
    found = find_n8n(version, cache)
    if found is None:
        raise InstallError(f"n8n {version} did not verify after install")
    return found


def _dirs(cache: Path, name: str) -> tuple[Path, Path]:
    return cache / name, cache / f"{name}.partial"


def _reclaim(final: Path, partial: Path) -> None:
    """A final dir that failed verification goes back to being a partial install."""
    partial.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        if partial.exists():
            shutil.rmtree(final)
        else:
            final.rename(partial)
    partial.mkdir(exist_ok=True)
    (partial / MARKER).unlink(missing_ok=True)


@contextmanager
def _locked(
    cache: Path, name: str, progress: InstallProgress, timeout: float | None
) -> Iterator[None]:
    path = cache / ".locks" / f"{name}.lock"
    try:
        with file_lock(
            path,
            timeout=timeout,
            on_wait=lambda: progress.phase(f"waiting for another install of {name}"),
        ):
            yield
    except LockTimeout as exc:
        raise InstallBusyError(f"another install of {name} holds {exc.path}") from exc


def _cached_node(cache: Path, major: int) -> NodeRuntime | None:
    root = cache / f"node-{major}"
    if not (root / MARKER).is_file():
        return None
    return _node_in(root)


def _node_in(root: Path) -> NodeRuntime | None:
    package = root / "node_modules" / "node"
    node_bin = package / "bin" / "node"
    version = _node_version(node_bin) if node_bin.is_file() else None
    if version is None:
        return None
    headers = next(
        (
            p
            for p in sorted((package / "node_modules").glob("node-*"))
            if (p / "include" / "node" / "node_version.h").is_file()
        ),
        None,
    )
    return NodeRuntime(node_bin=node_bin, version=version, headers_dir=headers)


def _node_version(node_bin: Path) -> str | None:
    try:
        done = subprocess.run(  # noqa: S603
            [str(node_bin), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = done.stdout.strip()
    return text.removeprefix("v") if done.returncode == 0 and text.startswith("v") else None


def _n8n_version(dist: N8nDistribution) -> str | None:
    try:
        done = subprocess.run(  # noqa: S603
            dist.command("--version"),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=dist.root,
            env={**os.environ, "N8N_DIAGNOSTICS_ENABLED": "false"},
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = done.stdout.strip().splitlines()
    return lines[-1].strip() if done.returncode == 0 and lines else None


def _check_native_modules(dist: N8nDistribution) -> None:
    """Load the native modules n8n needs to start (``n8n --version`` loads none of them)."""
    script = "for (const m of process.argv.slice(1)) require(m)"
    try:
        done = subprocess.run(  # noqa: S603
            [str(dist.node_bin), "-e", script, *NATIVE_MODULES],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=dist.root,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InstallError(f"could not check n8n's native modules: {exc}") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-_TAIL_LINES:])
        raise InstallError(
            "n8n's native modules do not load (re-run the install)", output_tail=redact_text(tail)
        )


def _major(version: str) -> int:
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else 0


def _looks_offline(tail: Sequence[str]) -> bool:
    markers = ("ECONNREFUSED", "ENOTFOUND", "ETIMEDOUT", "EAI_AGAIN", "ECONNRESET", "network")
    return any(m in line for line in tail for m in markers)


def _write_json(path: Path, value: object) -> None:
    text = json.dumps(value, indent=2) + "\n"
    if not path.is_file() or path.read_text() != text:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


__all__ = [
    "DEFAULT_N8N_VERSION",
    "InstallProgress",
    "N8nDistribution",
    "NodeRuntime",
    "SilentProgress",
    "default_cache_dir",
    "directory_size",
    "ensure_n8n",
    "ensure_node",
    "find_n8n",
    "find_node",
    "installed_versions",
    "partial_versions",
]
