"""Logging: structlog for our events, the standard library's records rendered the same way.

JSON lines for machines (`CATBOT_LOG_FORMAT=json`), readable lines for people (`text`).
Third-party loggers that would print request bodies at DEBUG (tweepy logs the DM text,
aiosqlite the SQL parameters) are held at INFO or above, so no DM text reaches a log.

Our own events (and the webhook's access log, `AccessLog`) go through structlog alone: a
level filter that costs nothing for a dropped call, then the processors, then one write of
the whole line. Routing them through the standard library as well (a LogRecord, a handler,
a formatter that copies the record) cost three times as much per line, and at INFO the
webhook writes two lines per delivery (docs/performance.md, "Logging").
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import orjson
import structlog
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse
from structlog.typing import FilteringBoundLogger

# Loggers that log request bodies, auth headers or SQL parameters at DEBUG.
_QUIET_LOGGERS = (
    "tweepy", "oauthlib", "requests_oauthlib", "aiohttp.client", "urllib3", "aiosqlite",
)


def _json(obj: Any, **kwargs: Any) -> str:
    # `default` is structlog's fallback (repr) for values JSON has no form for.
    return orjson.dumps(obj, default=kwargs.get("default"),
                        option=orjson.OPT_NON_STR_KEYS).decode()


class _LineWriter(structlog.WriteLogger):
    """Writes each rendered event as one whole line; named, for `add_logger_name`."""

    def __init__(self, name: str, file: TextIO) -> None:
        super().__init__(file)
        self.name = name


def _line_writer(*args: Any) -> _LineWriter:
    # `get_logger(name)` hands its name here; stderr is looked up now, not at import.
    return _LineWriter(str(args[0]) if args else "catbot", sys.stderr)


def configure_logging(fmt: str = "json", level: str = "INFO") -> None:
    level_number = logging.getLevelName(level)
    if not isinstance(level_number, int):
        raise ValueError(f"unknown log level {level!r}")
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_json)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level_number),
        logger_factory=_line_writer,
        cache_logger_on_first_use=True,
    )
    # Everything else (aiohttp's server errors, tweepy, pyngrok) arrives as stdlib records.
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
    root.setLevel(level_number)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.INFO, level_number))


def get_logger(name: str) -> FilteringBoundLogger:
    logger: FilteringBoundLogger = structlog.get_logger(name)
    return logger


class AccessLog(AbstractAccessLogger):
    """aiohttp's access log as a structured event: one `request` line per answered request,
    at INFO, with the method, the path (without the query), status, response size, duration,
    client address and user agent."""

    _log = get_logger("catbot.access")

    @property
    def enabled(self) -> bool:
        return self._log.is_enabled_for(logging.INFO)

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self._log.info(
            "request",
            method=request.method,
            path=request.path,
            status=response.status,
            bytes=response.body_length,
            duration_ms=round(time * 1000, 2),
            remote=request.remote,
            user_agent=request.headers.get("User-Agent"),
        )
