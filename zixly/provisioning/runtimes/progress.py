"""Live progress of an npm install for a terminal (rich) or a CI log (plain lines).

npm gives no percentage, so the display shows what can be measured: the step, the elapsed
time, how much ``node_modules`` has grown, and the last line npm printed.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from types import TracebackType

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from zixly.provisioning.runtimes.distributions import directory_size, ensure_n8n, find_n8n

_SCRIPT = re.compile(r"^npm (?:info|http) run (\S+?)@\S+ (\w+)")
_FETCH = re.compile(r"^npm http (?:fetch|cache) ")


def describe_npm_line(line: str) -> str | None:
    """The npm activity a line shows: downloading, or running some package's script."""
    if _FETCH.match(line):
        return "downloading packages"
    match = _SCRIPT.match(line)
    if match:
        return f"running {match.group(2)} script of {match.group(1)}"
    return None


def format_bytes(count: int) -> str:
    return f"{count / 1_000_000:,.0f} MB" if count >= 1_000_000 else f"{count / 1000:,.0f} kB"


def format_elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:d}:{secs:02d}"


class RichInstallProgress:
    """Implements ``InstallProgress``; use as a context manager around ``ensure_n8n``."""

    def __init__(self, console: Console, *, size_every: float = 2.0, log_every: float = 30.0):
        self._console = console
        self._size_every = size_every
        self._log_every = log_every
        self._started = time.monotonic()
        self._phase = "starting"
        self._activity = ""
        self._last_line = ""
        self._watch: Path | None = None
        self._size = 0
        self._fetched = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._spinner = Spinner("dots")
        self._live: Live | None = None
        self._sizer = threading.Thread(target=self._measure, name="npm-size", daemon=True)
        self._last_log = 0.0

    # InstallProgress -----------------------------------------------------------------------
    def phase(self, text: str, *, watch: Path | None = None) -> None:
        with self._lock:
            self._phase, self._watch, self._activity = text, watch, ""
            self._size = self._fetched = 0
        if self._live is None:
            self._console.print(f"[bold]{text}[/bold]")

    def output(self, line: str) -> None:
        activity = describe_npm_line(line)
        with self._lock:
            self._last_line = line
            if _FETCH.match(line):
                self._fetched += 1
            if activity is not None:
                self._activity = activity
        if self._live is None:
            self._log_periodically()

    # rendering -----------------------------------------------------------------------------
    def __rich__(self) -> RenderableType:
        with self._lock:
            last = self._last_line
        self._spinner.text = Text(self.summary())
        width = max(20, self._console.width - 4)
        tail = Text("  " + (last if len(last) <= width else last[: width - 1] + "…"), style="dim")
        return Group(self._spinner, tail)

    def __enter__(self) -> RichInstallProgress:
        self._started = time.monotonic()
        if self._console.is_terminal:
            self._live = Live(self, console=self._console, refresh_per_second=8, transient=True)
            self._live.__enter__()
        self._sizer.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._sizer.join(timeout=5)
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)
            self._live = None

    def _measure(self) -> None:
        while not self._stop.wait(self._size_every):
            with self._lock:
                watch = self._watch
            if watch is not None:
                size = directory_size(watch)
                with self._lock:
                    if self._watch == watch:
                        self._size = size
            if self._live is None:  # npm is silent while it compiles: keep CI logs alive
                self._log_periodically()

    def _log_periodically(self) -> None:
        """Without a terminal (CI), a status line every ``log_every`` seconds."""
        now = time.monotonic()
        with self._lock:
            if now - self._last_log < self._log_every:
                return
            self._last_log = now
        self._console.print("  " + self.summary(), highlight=False, soft_wrap=True)

    def summary(self) -> str:
        """One line: step · elapsed · node_modules size · npm requests · npm activity."""
        with self._lock:
            parts = [self._phase, format_elapsed(time.monotonic() - self._started)]
            if self._watch is not None:
                parts.append(f"node_modules {format_bytes(self._size)}")
            if self._fetched:
                parts.append(f"{self._fetched:,} npm requests")
            if self._activity:
                parts.append(self._activity)
        return " · ".join(parts)


def install_n8n(version: str, console: Console, *, quiet_when_present: bool = True) -> None:
    """Install n8n ``version`` under the cache, with a progress bar, unless it already is."""
    found = find_n8n(version)
    if found is not None:
        if not quiet_when_present:
            console.print(f"n8n {version} is already installed in {found.root}", soft_wrap=True)
        return
    started = time.monotonic()
    with RichInstallProgress(console) as progress:
        dist = ensure_n8n(version, progress=progress)
    console.print(
        f"[green]n8n {version} installed[/green] in {dist.root} "
        f"({format_elapsed(time.monotonic() - started)}; node {dist.node_bin})",
        soft_wrap=True,
    )
