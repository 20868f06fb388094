"""Errors of the provisioning adapters (npm installs, the n8n HTTP API, instance runtimes).

Messages are safe to show: they never carry request bodies, headers, API keys or passwords.
"""

from __future__ import annotations

from typing import Any

from zixly.core.errors import ZixlyError


class InstallError(ZixlyError):
    """Installing Node or n8n failed; ``output_tail`` holds the last lines npm printed."""

    code = "N8N_INSTALL_FAILED"
    http_status = 500

    def __init__(self, message: str, *, output_tail: str = "", **details: Any) -> None:
        super().__init__(message, **details)
        self.output_tail = output_tail

    def __str__(self) -> str:
        if not self.output_tail:
            return self.message
        return f"{self.message}\n--- last output ---\n{self.output_tail}"


class NotInstalledError(InstallError):
    """The requested n8n version is not installed and installing was not allowed."""

    code = "N8N_NOT_INSTALLED"


class InstallBusyError(InstallError):
    """Another process holds the install lock for too long."""

    code = "N8N_INSTALL_BUSY"


class N8nError(ZixlyError):
    """An n8n instance answered with an error; ``status`` is its HTTP status (None: no answer)."""

    code = "N8N_ERROR"
    http_status = 502

    def __init__(self, message: str, *, status: int | None = None, **details: Any) -> None:
        super().__init__(message, status=status, **details)
        self.status = status


class N8nUnavailableError(N8nError):
    """The instance could not be reached (connection refused, timeout, route not up yet)."""

    code = "UNAVAILABLE"
    http_status = 503


class N8nUnauthorizedError(N8nError):
    """n8n rejected the API key or session (401/403)."""

    code = "N8N_UNAUTHORIZED"


class N8nNotFoundError(N8nError):
    code = "NOT_FOUND"
    http_status = 404


class N8nRejectedError(N8nError):
    """n8n refused the request as invalid (400/409/405/422)."""

    code = "N8N_REJECTED"


class RuntimeFailure(ZixlyError):
    """An instance runtime could not carry out an operation (start, stop, remove)."""

    code = "RUNTIME_ERROR"
    http_status = 500


class InstanceNotFoundError(RuntimeFailure):
    code = "NOT_FOUND"
    http_status = 404
