"""ServerErrorLog: what aiohttp's server logger does with strangers' malformed requests.

The end-to-end behaviour (a real daemon flooded over raw sockets) is in
tests/test_security_daemon.py; here the counting and the once-a-while summary are checked
with a fake clock, and everything that is not a parse error must still reach the log.
"""

from __future__ import annotations

import logging

import pytest
import structlog
from aiohttp import http_exceptions, web_protocol

from catbot.logs import ServerErrorLog, _parse_error_kind

SECRET_BYTES = "b'CONNECT {\"text\": \"a private DM\"} HTTP/1.1'"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _parse_error() -> http_exceptions.BadHttpMessage:
    # aiohttp's messages quote the offending bytes, as this one does.
    return http_exceptions.InvalidURLError(f"Unexpected char in url:\n\n    {SECRET_BYTES}")


@pytest.mark.parametrize(("exc", "kind"), [
    (http_exceptions.BadHttpMethod("\x16\x03"), "method"),
    (http_exceptions.InvalidURLError("x"), "url"),
    (http_exceptions.BadStatusLine("x"), "request_line"),
    (http_exceptions.LineTooLong(b"x", 10), "too_long"),
    (http_exceptions.InvalidHeader(b"x"), "header"),
    (http_exceptions.ContentLengthError("x"), "content_length"),
    (http_exceptions.TransferEncodingError("x"), "transfer_encoding"),
    (http_exceptions.ContentEncodingError("x"), "content_encoding"),
    (http_exceptions.BadHttpMessage("Invalid character in Content-Length"), "malformed"),
    (web_protocol.RequestPayloadError("x"), "body"),
    (ValueError("ours"), None),
    (RuntimeError("ours"), None),
])
def test_parse_error_kinds(exc: BaseException, kind: str | None) -> None:
    assert _parse_error_kind(exc) == kind


def test_parse_errors_are_counted_and_summarised_once_a_while() -> None:
    counted: list[str] = []
    clock = Clock()
    with structlog.testing.capture_logs() as logs:
        server_log = ServerErrorLog("public", counted.append, summary_seconds=60, clock=clock)
        for _ in range(5):  # as aiohttp's handle_error calls it
            server_log.exception("Error handling request from %s", "10.0.0.9",
                                 exc_info=_parse_error())
            clock.now += 10
        clock.now = 1000.0 + 60
        server_log.debug("Error handling request from %s", "10.0.0.9",
                         exc_info=http_exceptions.BadHttpMethod("\x16\x03\x01"))
    assert counted == ["url"] * 5 + ["method"]
    summaries = [entry for entry in logs if entry["event"] == "http_parse_errors"]
    # The first error, then the five since (four unreported plus the one at 60 s).
    assert [(s["count"], s["kind"], s["log_level"]) for s in summaries] == [
        (1, "url", "debug"), (5, "method", "debug")]
    assert "private DM" not in repr(logs)


def test_other_errors_still_reach_the_log_with_their_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counted: list[str] = []
    server_log = ServerErrorLog("public", counted.append)
    bug = RuntimeError("a bug in a handler")
    with caplog.at_level(logging.DEBUG, logger="aiohttp.server"):
        server_log.exception("Error handling request from %s", "10.0.0.9", exc_info=bug)
    assert counted == []
    [record] = caplog.records
    assert record.name == "aiohttp.server" and record.levelno == logging.ERROR
    assert record.exc_info is not None and record.exc_info[1] is bug
