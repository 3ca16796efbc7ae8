"""Logging: stdlib loggers everywhere, rendered by structlog as JSON or for humans.

Modules log with `logging.getLogger(__name__)` and pass context through `extra=`;
uvicorn's own loggers are routed through the same handler. Context that holds for a
stretch of work (the request id, the connection and inbox items an action is about)
is bound with `structlog.contextvars` and lands on every line logged meanwhile.

No code here logs a secret on purpose; `Redactor` is the last line of defence
against one slipping through (an exception's text, a library's debug line).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import Any, Literal

import structlog

REDACTED = "[redacted]"
# A configured secret shorter than this is not searched for: it would blank out
# ordinary words, and a secret that short is no secret anyway.
MIN_SECRET_LENGTH = 6

# Field names whose values are secrets wherever they appear: as a log field, or as
# `name=value` / `"name": "value"` inside a message (forms, JSON, Python reprs).
_SECRET_NAMES = (
    "password",
    "client_secret",
    "clientsecret",
    "client_state",
    "clientstate",
    "access_token",
    "refresh_token",
    "id_token",
    "validationtoken",
    "validation_token",
    "admin_token",
    "authorization",
)
_SECRET_KEYS = frozenset(_SECRET_NAMES)
_PATTERNS = (
    # Authorization headers, wherever they are quoted.
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9\-._~+/]{8,}=*"), rf"\1{REDACTED}"),
    (
        re.compile(
            r"""(?ix)
            (["']?\b(?:"""
            + "|".join(_SECRET_NAMES)
            + r""")["']?\s*[:=]\s*["']?)   # the name, its separator, an opening quote
            [^"'&\s,;}\]]+                  # the value, up to its end
            """
        ),
        rf"\1{REDACTED}",
    ),
)


class Redactor:
    """A structlog processor that blanks secrets out of every field of an event.

    It knows the configured secrets by value (replaced wherever they occur) and the
    ones made at run time (tokens, clientState values, validation tokens) by the
    field names and header forms they travel in.
    """

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._secrets: list[str] = []
        self.add(*secrets)

    def add(self, *secrets: str | None) -> None:
        """Replace these values too, wherever they occur."""
        kept = {*self._secrets, *(s for s in secrets if s)}
        self._secrets = sorted(
            (s for s in kept if len(s) >= MIN_SECRET_LENGTH),
            key=len,
            reverse=True,  # a secret that contains another is replaced whole
        )

    def __call__(
        self, _logger: object, _name: str, event: structlog.types.EventDict
    ) -> structlog.types.EventDict:
        for key, value in event.items():
            if key.lower() in _SECRET_KEYS and value is not None:
                event[key] = REDACTED
            else:
                event[key] = self._clean(value)
        return event

    def text(self, value: str) -> str:
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        for pattern, replacement in _PATTERNS:
            value = pattern.sub(replacement, value)
        return value

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {
                k: REDACTED if str(k).lower() in _SECRET_KEYS else self._clean(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self._clean(v) for v in value]
        if isinstance(value, int | float | bool) or value is None:
            return value
        # Anything else is rendered as its text: clean that text.
        return self.text(str(value))


# One per process, as the logging configuration is.
_REDACTOR = Redactor()


def keep_secret(*values: str | None) -> None:
    """Values no log line may contain (the configured credentials), from now on."""
    _REDACTOR.add(*values)


def bind(**values: object) -> None:
    """Label every line logged from here on in this task (or thread) with `values`.

    A task starts with a copy of its creator's context, so what one task binds
    never shows on another's lines.
    """
    structlog.contextvars.bind_contextvars(**values)


def _drop_color_message(
    _logger: object, _name: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    # uvicorn adds an ANSI-coloured copy of its message as an extra.
    event.pop("color_message", None)
    return event


def configure(level: str, fmt: Literal["json", "console"]) -> None:
    """Route every stdlib logger through one handler on stderr; the values given
    to `keep_secret` are replaced wherever they occur."""
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.stdlib.ExtraAdder(),
            _drop_color_message,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            # After the traceback is text, so that it is cleaned too.
            _REDACTOR,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Alembic narrates every step at info; `bridge migrate` says what changed itself.
    logging.getLogger("alembic").setLevel(max(root.level, logging.WARNING))
    # httpx logs every request at info with its URL (`bridge doctor`'s handshake
    # URL holds a validation token); the upstream metrics count the calls instead.
    httpx_level = logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING
    logging.getLogger("httpx").setLevel(httpx_level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
