"""Alert errors. Messages never contain a recipient's secret (webhook URL, SMTP password)."""

from __future__ import annotations

from zixly.core.errors import ZixlyError


class AlertDeliveryError(ZixlyError):
    """A channel could not deliver a notice (refused, timed out, rejected by the server)."""

    code = "ALERT_DELIVERY_FAILED"
    http_status = 502


class AlertNotConfiguredError(AlertDeliveryError):
    """The channel lacks what it needs (no SMTP host, no recipients, no webhook URL)."""

    code = "ALERT_NOT_CONFIGURED"
