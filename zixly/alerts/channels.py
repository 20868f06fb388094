"""Alert channels: email over SMTP and Slack-compatible webhooks.

Each channel is an adapter around one outside system: it takes an injected client (an SMTP
connection factory, an ``httpx.AsyncClient``) and turns every failure (refused, timed out,
rejected) into an ``AlertDeliveryError`` whose message names the kind of failure only.
A webhook URL carries its token in the path, so it travels as a ``Secret`` and never appears
in a message, an error or a log line: httpx logs each request's URL at INFO, and the filter
below hides it for requests this module sends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import smtplib
import ssl
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from typing import Any, Literal

import httpx

from zixly.alerts.destinations import WebhookTargets
from zixly.alerts.errors import AlertDeliveryError, AlertNotConfiguredError
from zixly.core.settings import Settings
from zixly.security.crypto import Secret

NoticeKind = Literal["NOTICE", "RECOVERY"]
SmtpConnect = Callable[[str, int, float], smtplib.SMTP]


@dataclass(frozen=True)
class Notice:
    """What one notice says; rendered the same way for every channel."""

    kind: NoticeKind
    tenant_id: uuid.UUID
    key: str
    severity: str
    title: str
    occurrences: int
    first_seen: datetime
    resolved_at: datetime | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def subject(self) -> str:
        label = "RESOLVED" if self.kind == "RECOVERY" else self.severity
        return f"[Zixly {label}] {self.title}"

    @property
    def text(self) -> str:
        lines = [self.subject, "", f"Alert: {self.key}", f"First seen: {self.first_seen}"]
        if self.kind == "RECOVERY":
            lines.append(f"Resolved: {self.resolved_at}")
        lines.append(f"Occurrences: {self.occurrences}")
        lines += [f"{name}: {value}" for name, value in sorted(self.details.items())]
        return "\n".join(lines)

    def payload(self) -> dict[str, Any]:
        """Slack's incoming-webhook shape (``text``) plus the structured alert."""
        return {
            "text": self.text,
            "zixly": {
                "kind": self.kind,
                "tenant_id": str(self.tenant_id),
                "key": self.key,
                "severity": self.severity,
                "title": self.title,
                "occurrences": self.occurrences,
                "first_seen": self.first_seen.isoformat(),
                "resolved_at": self.resolved_at.isoformat() if self.resolved_at else None,
                "details": json.loads(json.dumps(dict(self.details), default=str)),
            },
        }


def _default_connect(host: str, port: int, timeout: float) -> smtplib.SMTP:
    return smtplib.SMTP(host, port, timeout=timeout)


class SmtpChannel:
    """Email through the stdlib ``smtplib``, in a thread (one connection per notice)."""

    def __init__(
        self,
        *,
        host: str | None,
        port: int,
        sender: str,
        username: str | None = None,
        password: Secret | None = None,
        starttls: bool = True,
        timeout: float = 10.0,
        connect: SmtpConnect = _default_connect,
    ) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.username = username
        self._password = password
        self.starttls = starttls
        self.timeout = timeout
        self._connect = connect

    @classmethod
    def from_settings(
        cls, settings: Settings, connect: SmtpConnect = _default_connect
    ) -> SmtpChannel:
        password = settings.smtp_password
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.smtp_from,
            username=settings.smtp_username,
            password=Secret(password.get_secret_value()) if password else None,
            starttls=settings.smtp_starttls,
            timeout=settings.smtp_timeout_seconds,
            connect=connect,
        )

    async def send(self, recipients: Sequence[str], notice: Notice) -> None:
        await self.send_text(recipients, notice.subject, notice.text)

    async def send_text(self, recipients: Sequence[str], subject: str, body: str) -> None:
        """One plain-text email (alert notices, invitations)."""
        if not self.host:
            raise AlertNotConfiguredError("no SMTP server is configured", channel="email")
        if not recipients:
            raise AlertNotConfiguredError("no email recipients", channel="email")
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = ", ".join(recipients)
        message["Subject"] = subject
        message.set_content(body)
        try:
            await asyncio.to_thread(self._send, self.host, message, list(recipients))
        except smtplib.SMTPResponseException as exc:
            raise AlertDeliveryError(
                f"the SMTP server answered {exc.smtp_code}", channel="email"
            ) from exc
        except smtplib.SMTPException as exc:
            raise AlertDeliveryError(
                f"SMTP failed ({type(exc).__name__})", channel="email"
            ) from exc
        except TimeoutError as exc:
            raise AlertDeliveryError("the SMTP server timed out", channel="email") from exc
        except OSError as exc:
            raise AlertDeliveryError(
                f"the SMTP server is unreachable ({type(exc).__name__})", channel="email"
            ) from exc

    def _send(self, host: str, message: EmailMessage, recipients: list[str]) -> None:
        with self._connect(host, self.port, self.timeout) as smtp:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.username and self._password is not None:
                smtp.login(self.username, self._password.reveal())
            smtp.send_message(message, to_addrs=recipients)


_SENDING_WEBHOOK: ContextVar[bool] = ContextVar("zixly_alert_webhook", default=False)
REDACTED_URL = "[webhook url redacted]"


class _HideWebhookUrls(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _SENDING_WEBHOOK.get() and isinstance(record.args, tuple):
            record.args = tuple(
                REDACTED_URL if isinstance(arg, httpx.URL) else arg for arg in record.args
            )
        return True


def _install_log_filter() -> None:
    httpx_logger = logging.getLogger("httpx")
    if not any(isinstance(f, _HideWebhookUrls) for f in httpx_logger.filters):
        httpx_logger.addFilter(_HideWebhookUrls())


_install_log_filter()


class WebhookChannel:
    """A JSON POST to a Slack-compatible incoming webhook; any 2xx answer is delivery.

    Only to the addresses ``targets`` allows (zixly.alerts.destinations), connecting to the
    address it checked. No redirect is followed and the answer's body is never read (the
    tenant chooses the server: it could send gigabytes); ``timeout`` bounds the whole
    delivery, resolving included, since deliveries of all tenants go one after another."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        timeout: float = 10.0,
        targets: WebhookTargets | None = None,
    ) -> None:
        self.http = http
        self.timeout = timeout
        self.targets = targets or WebhookTargets()

    async def send(self, url: Secret, notice: Notice) -> None:
        marker = _SENDING_WEBHOOK.set(True)
        try:
            async with asyncio.timeout(self.timeout):
                target = await self.targets.pin(url.reveal())
                async with self.http.stream(
                    "POST",
                    target.url,
                    json=notice.payload(),
                    headers=target.headers,
                    extensions=target.extensions,
                    timeout=self.timeout,
                    follow_redirects=False,
                ) as response:
                    pass
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise AlertDeliveryError("the webhook timed out", channel="webhook") from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise AlertDeliveryError(
                f"the webhook is unreachable ({type(exc).__name__})", channel="webhook"
            ) from exc
        finally:
            _SENDING_WEBHOOK.reset(marker)
        if not response.is_success:
            raise AlertDeliveryError(
                f"the webhook answered {response.status_code}",
                channel="webhook",
                status=response.status_code,
            )
