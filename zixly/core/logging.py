"""Structured logging: JSON lines (or, on a terminal, readable lines) carrying request id and
tenant id, never secrets.

Where lines go (docs/operations.md, "Logs and the console"): a command with a console (the
``zixly`` CLI, ``zixly dev``) writes its log lines through that console (``ConsoleStream``),
the same single writer as its progress lines and spinners, so a log line never tears a
progress line and the spinner stays below both. The format is JSON when the output is not
a terminal and human-readable (structlog's ConsoleRenderer) when it is, unless
``ZIXLY_LOG_JSON`` says which.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from rich.console import Console
from rich.text import Text

_SECRET_KEY = re.compile(
    r"(pass(word)?|secret|token|authorization|api[_-]?key|cookie|credential|private)", re.I
)
_BEARER = re.compile(r"(?i)bearer\s+[A-Za-z0-9._~+/=-]+")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_URL_PASSWORD = re.compile(r"(?<=://)([^:/@\s]+):([^@/\s]+)@")
_INGEST_TOKEN = re.compile(r"zik_[A-Za-z0-9_-]{20,}")  # zixly.ingest.tokens
# Parameter values inside exception messages, which hide_parameters does not reach:
# asyncpg's "invalid input for query argument $1: 'value' (reason)", PostgreSQL's
# 'invalid input syntax for type uuid: "value"', graphql-core's "Variable '$x' got
# invalid value 'value'; reason" (the reason is kept, the value goes).
_QUERY_ARGUMENT = re.compile(r"(?m)(query argument \$\d+: ).*?( \([^()\n]*\))?$")
_PG_INPUT = re.compile(r'((?:for type|value for enum) [\w ."]+: )"[^"\n]*"')
_GRAPHQL_VALUE = re.compile(
    r"(?m)(got invalid value |cannot represent [\w -]*value: ).*?(?=; |$| at ')"
)
REDACTED = "[redacted]"


def redact_text(text: str) -> str:
    text = _BEARER.sub("Bearer " + REDACTED, text)
    text = _JWT.sub(REDACTED, text)
    text = _INGEST_TOKEN.sub(REDACTED, text)
    text = _QUERY_ARGUMENT.sub(lambda m: m[1] + REDACTED + (m[2] or ""), text)
    text = _PG_INPUT.sub(r"\1" + REDACTED, text)
    text = _GRAPHQL_VALUE.sub(r"\1" + REDACTED, text)
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


_BRIDGE = "zixly"  # the name of our handler on the standard library's root logger


class _CurrentStderr:
    """Standard error as it is when a line is written (not when logging was configured:
    test runners and daemons replace ``sys.stderr``)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


class ConsoleStream:
    """A text stream whose whole lines are printed by a rich ``Console``: log lines share
    the console's lock and its live display (spinners, progress bars) with everything else
    the command prints, instead of writing under it."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._pending = threading.local()

    def write(self, text: str) -> int:
        buffered: str = getattr(self._pending, "text", "") + text
        *lines, rest = buffered.split("\n")
        self._pending.text = rest
        for line in lines:
            self.console.print(Text.from_ansi(line), soft_wrap=True, highlight=False, crop=False)
        return len(text)

    def flush(self) -> None:
        self.console.file.flush()

    def isatty(self) -> bool:
        return self.console.is_terminal


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def configure_logging(
    level: str = "INFO",
    json: bool | None = None,
    stream: TextIO | None = None,
    *,
    console: Console | None = None,
) -> None:
    """Configure structlog; lines go to ``console`` (through ``ConsoleStream``), else to
    ``stream`` (default: standard error). ``json`` None: JSON unless that output is a
    terminal.

    The standard library's loggers (uvicorn, strawberry, SQLAlchemy, httpx) are routed
    through the same redaction and renderer, so nothing reaches the output unredacted.
    Tracebacks are rendered as plain text: never with local variables (which hold tokens,
    passwords and query parameters), whichever renderer is in use.
    """
    output: Any = ConsoleStream(console) if console is not None else stream or _CurrentStderr()
    terminal = _is_terminal(output)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if (not terminal if json is None else json)
        else structlog.dev.ConsoleRenderer(
            colors=terminal, exception_formatter=structlog.dev.plain_traceback
        )
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, redact_processor, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=output),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(output)
    handler.set_name(_BRIDGE)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact_processor,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _BRIDGE]:
        root.removeHandler(old)
    root.addHandler(handler)
    # uvicorn's own logging config (dictConfig, if a server was configured with it) gives
    # its loggers handlers of their own and stops them propagating: route them here too.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        server_logger = logging.getLogger(name)
        server_logger.handlers.clear()
        server_logger.propagate = True
    # GraphQL errors are the client's (answered with their code) or logged once, with the
    # request id, by MaskUnexpectedErrors; strawberry's own copy of each (with the
    # client's values and a traceback) is not wanted.
    logging.getLogger("strawberry.execution").setLevel(logging.CRITICAL)


def get_logger(name: str = "zixly") -> Any:
    """A logger whose lines carry ``"logger_name": name`` (configuration is applied lazily,
    so module-level loggers follow a later ``configure_logging``)."""
    return structlog.get_logger(logger_name=name)
