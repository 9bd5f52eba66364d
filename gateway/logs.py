"""Structured logging: JSON in production, readable on a terminal, never a secret.

Every line emitted while a request is handled carries its request id (bound in a
contextvar by the proxy). A last processor scrubs values of keys that name secrets, so a
careless `log.info("x", password=...)` still cannot leak one.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

_SECRET_KEY = re.compile(r"pass(word)?|secret|token|cookie|code|otp|authorization|session_id|key", re.I)
_ALLOWED = frozenset({"status_code", "key_id", "error_code", "code_count"})


def scrub_secrets(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    for key in list(event):
        if key not in _ALLOWED and _SECRET_KEY.search(key):
            event[key] = "[redacted]"
    return event


def configure_logging(format: str = "auto", level: str = "info") -> None:
    renderer: Any
    if format == "console" or (format == "auto" and sys.stderr.isatty()):
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    numeric = getattr(logging, level.upper(), logging.INFO)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            scrub_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries log through stdlib logging; route their warnings to stderr too.
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(name)
