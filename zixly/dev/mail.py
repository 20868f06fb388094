"""The development stack's mail sink: an SMTP server on loopback (aiosmtpd) that keeps every
message it receives as an ``.eml`` file under ``<data_dir>/mail`` and logs one line for it.

``zixly dev`` starts it when no SMTP server is configured and points ``smtp_*`` at it, so
invitation links and alert emails can be read without a real mail server.
"""

from __future__ import annotations

import contextlib
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from zixly.core.logging import get_logger

log = get_logger("zixly.dev.mail")
HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


class _Store:
    """aiosmtpd handler: each message's raw bytes into one file, named in arrival order."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        content: bytes = envelope.content
        path = self.directory / f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.eml"
        path.write_bytes(content)
        subject = message_from_bytes(content).get("Subject", "")
        log.info("devmail.received", to=list(envelope.rcpt_tos), subject=subject, file=path.name)
        return "250 OK"


@dataclass(frozen=True)
class MailSink:
    host: str
    port: int
    directory: Path

    def messages(self) -> list[Message]:
        """Every message received so far, oldest first."""
        return [message_from_bytes(p.read_bytes()) for p in sorted(self.directory.glob("*.eml"))]


@contextlib.contextmanager
def mail_sink(data_dir: Path, port: int = 0) -> Iterator[MailSink]:
    """Run the sink while the block runs (``port`` 0: a free loopback port)."""
    directory = (Path(data_dir) / "mail").resolve()
    directory.mkdir(parents=True, exist_ok=True)
    chosen = port or _free_port()
    controller = Controller(_Store(directory), hostname=HOST, port=chosen)
    controller.start()
    try:
        yield MailSink(HOST, chosen, directory)
    finally:
        controller.stop()
