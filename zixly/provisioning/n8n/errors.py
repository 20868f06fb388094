"""Errors of the n8n HTTP API client. Messages are safe to show: they never carry request
bodies, headers, API keys or passwords."""

from __future__ import annotations

from typing import Any

from zixly.core.errors import ZixlyError


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
