"""Logging: structlog for our events, the standard library's records rendered the same way.

JSON lines for machines (`CATBOT_LOG_FORMAT=json`), readable lines for people (`text`).
Third-party loggers that would print request bodies at DEBUG (tweepy logs the DM text,
aiosqlite the SQL parameters) are held at INFO or above, so no DM text reaches a log.

Our own events (and the webhook's access log, `AccessLog`) go through structlog alone: a
level filter that costs nothing for a dropped call, then the processors, then one write of
the whole line. Routing them through the standard library as well (a LogRecord, a handler,
a formatter that copies the record) costs three times as much per line, and at INFO the
webhook writes two lines per delivery (docs/performance.md, "Logging").
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import orjson
import structlog
from aiohttp import http_exceptions, web_protocol
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
        if request.message is web_protocol.ERROR:
            # A request aiohttp could not parse: counted and summarised by ServerErrorLog.
            return
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


# Bounded `kind` label of each HTTP parse error aiohttp reports, most specific class first.
_PARSE_ERROR_KINDS: tuple[tuple[type[Exception], str], ...] = (
    (http_exceptions.BadHttpMethod, "method"),
    (http_exceptions.InvalidURLError, "url"),
    (http_exceptions.BadStatusLine, "request_line"),
    (http_exceptions.LineTooLong, "too_long"),
    (http_exceptions.InvalidHeader, "header"),
    (http_exceptions.ContentLengthError, "content_length"),
    (http_exceptions.TransferEncodingError, "transfer_encoding"),
    (http_exceptions.ContentEncodingError, "content_encoding"),
    (http_exceptions.DecompressSizeError, "content_encoding"),
    (http_exceptions.HttpProcessingError, "malformed"),
    # The body's framing broke after the handler answered (aiohttp drains the rest).
    (web_protocol.RequestPayloadError, "body"),
)


def _parse_error_kind(exc: BaseException) -> str | None:
    """The metric label of an HTTP parse error, or None when `exc` is not one."""
    for cls, kind in _PARSE_ERROR_KINDS:
        if isinstance(exc, cls):
            return kind
    return None


class ServerErrorLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server logger for one listener (`AppRunner(..., logger=...)`).

    aiohttp logs every request it cannot parse at ERROR with a traceback whose message
    quotes the offending bytes (a CONNECT line carrying DM JSON puts that text in the log).
    Those come from strangers, cost them nothing and say nothing about our health, so here
    each one is counted (`on_parse_error(kind)`) and at most one DEBUG summary per
    `summary_seconds` is written, naming the kind and the count but never the bytes.
    Everything else (an exception escaping a handler: our bug) is logged as before.
    """

    def __init__(
        self,
        listener: str,
        on_parse_error: Callable[[str], None],
        summary_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(logging.getLogger("aiohttp.server"), {})
        self.listener = listener
        self.on_parse_error = on_parse_error
        self.summary_seconds = summary_seconds
        self.clock = clock
        self._unreported = 0
        self._last_summary: float | None = None
        self._summaries = get_logger("catbot.http")

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        kind = _parse_error_kind(_exception_of(kwargs.get("exc_info")))
        if kind is None:
            super().log(level, msg, *args, **kwargs)
            return
        self.on_parse_error(kind)
        self._unreported += 1
        now = self.clock()
        if self._last_summary is None or now - self._last_summary >= self.summary_seconds:
            self._summaries.debug("http_parse_errors", listener=self.listener, kind=kind,
                            count=self._unreported, every_seconds=self.summary_seconds)
            self._unreported = 0
            self._last_summary = now


def _exception_of(exc_info: object) -> BaseException:
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(exc_info, tuple) and len(exc_info) == 3:
        exc_info = exc_info[1]
    return exc_info if isinstance(exc_info, BaseException) else Exception()
