"""How ``zixly dev`` ends: signals, the n8n instances started while it ran, and the last word.

* **Signals.** Ctrl-C (SIGINT) and SIGTERM are handled the same way for the whole run: the
  first one while starting stops the start-up (what already started is stopped in order),
  the first one while serving asks the API server to exit; any later one only says that
  everything is still being stopped, so a second Ctrl-C never leaves PostgreSQL running.
* **n8n instances.** Every instance of the configured runtime that started while ``zixly
  dev`` ran (the demo tenant's, or one started by ``zixly tenant provision|start`` from
  another terminal against the same stack) is stopped through the lifecycle, so its record
  says STOPPED and ``zixly tenant start <slug>`` brings it back; instances already running
  before ``zixly dev`` started are left alone and named.
* **The last word.** What was stopped, and what is left running with how to stop it.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from rich.console import Console

from zixly.core.errors import ZixlyError
from zixly.core.logging import get_logger
from zixly.provisioning.runtimes.base import (
    SLUG_LABEL,
    InstanceHandle,
    InstanceRuntime,
    RuntimeState,
)

if TYPE_CHECKING:
    from zixly.container import Services

log = get_logger("zixly.dev.shutdown")

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupts:
    """One handler for SIGINT and SIGTERM for the whole run; what the first signal does
    changes with the phase (``on_signal``), later ones are only acknowledged."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.received = False
        self._action: Callable[[], object] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self, action: Callable[[], object]) -> None:
        self._loop = asyncio.get_running_loop()
        self._action = action
        for sig in SIGNALS:
            self._loop.add_signal_handler(sig, self._handle, sig)

    def on_signal(self, action: Callable[[], object]) -> None:
        """What the first signal does from now on (unless one was received already)."""
        if not self.received:
            self._action = action

    def remove(self) -> None:
        if self._loop is not None:
            for sig in SIGNALS:
                self._loop.remove_signal_handler(sig)
            self._loop = None

    def _handle(self, sig: signal.Signals) -> None:
        if self.received:
            self.console.print(f"{sig.name}: still stopping everything, one moment")
            return
        self.received = True
        self.console.print(f"{sig.name}: stopping everything zixly dev started")
        if self._action is not None:
            self._action()


@dataclass
class Report:
    stopped: list[str] = field(default_factory=list)
    left_running: list[str] = field(default_factory=list)

    def print(self, console: Console) -> None:
        if self.stopped:
            console.print("stopped: " + ", ".join(self.stopped), highlight=False)
        if self.left_running:
            console.print("[bold]left running:[/]")
            for line in self.left_running:
                console.print(f"  {line}", highlight=False, soft_wrap=True)
        else:
            console.print("nothing that zixly dev started is left running")


async def stop_instances_started_since(services: Services, since: datetime, report: Report) -> None:
    """Stop every instance that started at or after ``since``; name the others still
    running."""
    try:
        runtime: InstanceRuntime = services.runtime
        handles = await runtime.list_managed()
    except Exception as exc:  # e.g. no container engine: say so rather than fail the exit
        log.warning("dev.instances_unknown", error=type(exc).__name__)
        report.left_running.append(
            f"n8n instances of the {services.settings.n8n_runtime} runtime: could not be "
            "listed; `zixly n8n status` shows local ones"
        )
        return
    for handle in handles:
        status = await runtime.inspect(handle)
        if status.state is not RuntimeState.RUNNING:
            continue
        slug = handle.labels.get(SLUG_LABEL, handle.tenant_id)
        if status.started_at is None or status.started_at < since:
            report.left_running.append(
                f"n8n of tenant {slug} (running since before zixly dev started): "
                f"`zixly tenant stop {slug}`"
            )
            continue
        try:
            await _stop(services, runtime, handle, slug)
        except Exception as exc:  # the way out goes on: the others and the stores still stop
            log.warning("dev.instance_stop_failed", tenant=slug, error=type(exc).__name__)
            report.left_running.append(
                f"n8n of tenant {slug} (could not be stopped: {type(exc).__name__}): "
                f"`zixly tenant stop {slug}`"
            )
        else:
            report.stopped.append(f"n8n of tenant {slug}")


async def _stop(
    services: Services, runtime: InstanceRuntime, handle: InstanceHandle, slug: str
) -> None:
    """Through the lifecycle, so the record says STOPPED; without a record (or with the
    record refusing), the process or container itself."""
    try:
        await services.lifecycle.stop(uuid.UUID(handle.tenant_id))
    except (ZixlyError, ValueError) as exc:
        log.warning("dev.instance_stop_unrecorded", tenant=slug, error=type(exc).__name__)
        await runtime.stop(handle)
