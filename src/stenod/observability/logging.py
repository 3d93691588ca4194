"""Structured logs with structlog: one JSON object per line, every line of a request carrying its
``request_id``. Standard-library loggers (uvicorn, faster-whisper, our modules) are routed through
the same processors, so a library's warning is JSON with the request id too.

Only entry points call :func:`configure_logging`; library code just uses ``logging.getLogger``.
"""

from __future__ import annotations

import logging
import logging.config
import re
from typing import Any

import structlog

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_SECRET_RE = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)


def valid_request_id(value: str | None) -> str | None:
    """Accept a caller's id only if it is short and safe to echo into logs and headers."""
    if value and _REQUEST_ID_RE.match(value):
        return value
    return None


def _redact(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    for key, value in event_dict.items():
        if isinstance(value, str) and "bearer" in value.lower():
            event_dict[key] = _SECRET_RE.sub(r"\1[redacted]", value)
    return event_dict


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "structured": {
                    "()": structlog.stdlib.ProcessorFormatter,
                    "processors": [
                        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                        structlog.processors.format_exc_info,
                        renderer,
                    ],
                    "foreign_pre_chain": shared,
                }
            },
            "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "structured"}},
            "root": {"handlers": ["default"], "level": level.upper()},
            "loggers": {
                # uvicorn's own access log duplicates ours (which has the request id): silence it.
                "uvicorn.access": {"level": "WARNING"},
                "uvicorn": {"handlers": [], "propagate": True},
                "uvicorn.error": {"handlers": [], "propagate": True},
                "faster_whisper": {"level": "WARNING"},
            },
        }
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
