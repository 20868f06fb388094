"""``zixly n8n install|status|image`` and ``zixly podman start|stop|status``."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from rich.console import Console
from rich.table import Table

from zixly.provisioning.n8n.versions import line
from zixly.provisioning.runtimes.distributions import (
    DEFAULT_N8N_VERSION,
    default_cache_dir,
    find_n8n,
    find_node,
    installed_versions,
    partial_versions,
    system_node,
)
from zixly.provisioning.runtimes.progress import RichInstallProgress, format_elapsed, install_n8n


def add_n8n_commands(sub: Any, console: Console) -> None:
    """Register the ``n8n`` group on the top-level subparsers ``sub``."""
    n8n = sub.add_parser("n8n", help="install and inspect the local n8n (from the npm registry)")
    n8n_sub = n8n.add_subparsers(dest="n8n_command", required=True)

    install = n8n_sub.add_parser(
        "install",
        help="install n8n and the Node it needs (22 for 1.x, 24 for 2.x) into the cache "
        "(ZIXLY_N8N_CACHE_DIR)",
    )
    install.add_argument("--version", default=DEFAULT_N8N_VERSION, help="n8n version")
    install.set_defaults(func=lambda args: _install(args, console))

    status = n8n_sub.add_parser(
        "status", help="show installed n8n versions and local instances (exit 1: not installed)"
    )
    status.add_argument("--version", default=DEFAULT_N8N_VERSION, help="n8n version to check")
    status.set_defaults(func=lambda args: _status(args, console))

    image = n8n_sub.add_parser(
        "image",
        help="build the local n8n image localhost/zixly/n8n:<version> (no registry needed) "
        "for the container engine: DOCKER_HOST, else a Podman service",
    )
    image.add_argument("--version", default=DEFAULT_N8N_VERSION, help="n8n version")
    image.add_argument("--force", action="store_true", help="rebuild even if up to date")
    image.set_defaults(func=lambda args: _image(args, console))

    add_podman_commands(sub, console)


def add_podman_commands(sub: Any, console: Console) -> None:
    """``zixly podman start|stop|status``: the Podman API service for dev and tests."""
    podman = sub.add_parser(
        "podman", help="the local Podman API service the docker runtime uses without DOCKER_HOST"
    )
    podman_sub = podman.add_subparsers(dest="podman_command", required=True)
    for name, text in (
        ("start", "start the service in the background (prints DOCKER_HOST)"),
        ("stop", "stop the service started by `zixly podman start`"),
        ("status", "is the service answering? (exit 1: no)"),
    ):
        command = podman_sub.add_parser(name, help=text)
        command.set_defaults(func=lambda args, name=name: _podman(name, console))


def _install(args: argparse.Namespace, console: Console) -> int:
    install_n8n(args.version, console, quiet_when_present=False)
    return 0


def _image(args: argparse.Namespace, console: Console) -> int:
    from zixly.provisioning.runtimes.images import ensure_n8n_image
    from zixly.provisioning.runtimes.podman import engine

    with engine() as client, RichInstallProgress(console) as progress:
        result = ensure_n8n_image(client, args.version, progress=progress, force=args.force)
    done = "built" if result.built else "is up to date"
    steps = "".join(f", {name} {seconds:.0f} s" for name, seconds in result.steps.items())
    console.print(
        f"[green]{result.tag} {done}[/green] ({result.image_id[:19]}; "
        f"{format_elapsed(result.seconds)}{steps})",
        soft_wrap=True,
    )
    return 0


def _podman(action: str, console: Console) -> int:
    from zixly.provisioning.runtimes.podman import PodmanService

    service = PodmanService()
    if action == "start":
        url = service.start()
        console.print(f"podman API service: export DOCKER_HOST={url}", soft_wrap=True)
    elif action == "stop":
        stopped = service.stop()
        console.print("podman API service " + ("stopped" if stopped else "was not ours/running"))
    else:
        running = service.running()
        state = f"answering at {service.base_url}" if running else "not running"
        console.print(f"podman API service: {state}", soft_wrap=True)
        return 0 if running else 1
    return 0


def _status(args: argparse.Namespace, console: Console) -> int:
    cache = default_cache_dir()
    console.print(f"cache: {cache}", soft_wrap=True)
    system = system_node()
    console.print(
        "system node: " + (f"v{system.version} ({system.node_bin})" if system else "not found"),
        soft_wrap=True,
    )
    node = find_node(cache, major=line(args.version).node_major)
    console.print(
        "node for n8n: " + (f"v{node.version} ({node.node_bin})" if node else "not installed"),
        soft_wrap=True,
    )
    for version in installed_versions(cache):
        ok = find_n8n(version, cache) is not None
        state = "[green]installed[/green]" if ok else "[red]broken[/red]"
        console.print(f"n8n {version}: {state}", soft_wrap=True)
    for version in partial_versions(cache):
        console.print(f"n8n {version}: [yellow]partial install[/yellow] (re-run install)")
    _print_instances(console)
    return 0 if find_n8n(args.version, cache) is not None else 1


def _print_instances(console: Console) -> None:
    from zixly.core.settings import get_settings
    from zixly.provisioning.runtimes.process import ProcessRuntime

    runtime = ProcessRuntime(get_settings().data_dir)

    async def collect() -> list[tuple[str, str, str, str]]:
        rows = []
        for handle in await runtime.list_managed():
            status = await runtime.inspect(handle)
            rows.append(
                (
                    handle.labels.get("zixly.tenant-slug", handle.tenant_id),
                    handle.labels.get("zixly.n8n-version", "?"),
                    status.state.value,
                    status.url or "",
                )
            )
        return rows

    rows = asyncio.run(collect())
    if not rows:
        console.print(f"local instances ({runtime.root}): none", soft_wrap=True)
        return
    table = Table("tenant", "n8n", "state", "url", title=f"local instances ({runtime.root})")
    for row in rows:
        table.add_row(*row)
    console.print(table)
