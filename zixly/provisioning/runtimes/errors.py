"""Errors of installs (npm, images) and instance runtimes. Messages are safe to show: they
never carry secrets; an install's ``output_tail`` holds npm's last lines."""

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


class RuntimeFailure(ZixlyError):
    """An instance runtime could not carry out an operation (start, stop, remove)."""

    code = "RUNTIME_ERROR"
    http_status = 500


class InstanceNotFoundError(RuntimeFailure):
    code = "NOT_FOUND"
    http_status = 404
