"""Logging: structlog for our events, the standard library's records rendered the same way.

JSON lines for machines (`CATBOT_LOG_FORMAT=json`), readable lines for people (`text`).
Third-party loggers that would print request bodies at DEBUG (tweepy logs the DM text,
aiosqlite the SQL parameters) are held at INFO or above, so no DM text reaches a log.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

# Loggers that log request bodies, auth headers or SQL parameters at DEBUG.
_QUIET_LOGGERS = (
    "tweepy", "oauthlib", "requests_oauthlib", "aiohttp.client", "urllib3", "aiosqlite",
)


def configure_logging(fmt: str = "json", level: str = "INFO") -> None:
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLevelName(level)))
    # One line per webhook request is the access log's job at INFO; keep it.
    logging.getLogger("aiohttp.access").setLevel(level)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
