"""Structured logging: JSON lines carrying request id and tenant id, never secrets."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

_SECRET_KEY = re.compile(
    r"(pass(word)?|secret|token|authorization|api[_-]?key|cookie|credential|private)", re.I
)
_BEARER = re.compile(r"(?i)bearer\s+[A-Za-z0-9._~+/=-]+")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_URL_PASSWORD = re.compile(r"(?<=://)([^:/@\s]+):([^@/\s]+)@")
_INGEST_TOKEN = re.compile(r"zik_[A-Za-z0-9_-]{20,}")  # zixly.ingest.tokens
REDACTED = "[redacted]"


def redact_text(text: str) -> str:
    text = _BEARER.sub("Bearer " + REDACTED, text)
    text = _JWT.sub(REDACTED, text)
    text = _INGEST_TOKEN.sub(REDACTED, text)
    return _URL_PASSWORD.sub(r"\1:" + REDACTED + "@", text)


def _redact(value: Any, key: str = "") -> Any:
    if key and _SECRET_KEY.search(key) and not key.endswith(("_id", "_count")):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    return value


def redact_processor(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Last line of defence: drop values whose key names a secret, scrub tokens in text."""
    for key in list(event_dict):
        if key == "exception":
            event_dict[key] = redact_text(str(event_dict[key]))
        else:
            event_dict[key] = _redact(event_dict[key], key)
    return event_dict


def configure_logging(level: str = "INFO", json: bool = True, stream: TextIO | None = None) -> None:
    """Configure structlog; lines go to ``stream`` (default: standard error)."""
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str = "zixly") -> Any:
    """A logger whose lines carry ``"logger_name": name`` (configuration is applied lazily,
    so module-level loggers follow a later ``configure_logging``)."""
    return structlog.get_logger(logger_name=name)
