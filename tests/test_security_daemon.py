"""Attacks on the daemon that once got through (issue 15), each against a real process.

- a blank rotation secret made the empty string a signing key anyone has;
- signed garbage declared gzip/deflate/br/zstd answered 500 (X reads 5xx as our outage);
- malformed HTTP wrote a traceback per request at ERROR, quoting the request's bytes;
- a stranger's CRC-shaped GET kept the alert on "X checked us recently" quiet;
- credentials in CATBOT_X_API_BASE were printed; a port in use died with a traceback.

Expected values are computed here, independently of catbot: signatures with `hmac`, the
masked URL from its parts, encodings with `gzip`/`zlib`.
"""

from __future__ import annotations

import base64
import errno
import gzip
import hashlib
import hmac
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
import yaml

from testkit.processes import (
    BOT_ID,
    CREDENTIALS,
    WEBHOOK_PATH,
    Daemon,
    Emulator,
    clean_env,
    free_port,
    http,
    wait_for,
)

ROOT = Path(__file__).resolve().parent.parent
SECRET = CREDENTIALS["CATBOT_X_CONSUMER_SECRET"]
SIGNATURE = "x-twitter-webhooks-signature"


def sign(body: bytes, secret: str = SECRET) -> str:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return "sha256=" + base64.b64encode(digest).decode()


def dm_body(sender: str, text: str = "hi") -> bytes:
    event = {
        "type": "message_create",
        "id": str(time.time_ns() // 1000 * 1000 + secrets.randbelow(1000)),  # X's are numeric
        "created_timestamp": str(int(time.time() * 1000)),
        "message_create": {"target": {"recipient_id": BOT_ID}, "sender_id": sender,
                           "message_data": {"text": text}},
    }
    return json.dumps({"for_user_id": BOT_ID, "direct_message_events": [event]}).encode()


def metric(values: dict[str, float], name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when none)."""
    total = 0.0
    for key, value in values.items():
        series, _, rest = key.partition("{")
        found = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        if series == name and all(found.get(k) == v for k, v in labels.items()):
            total += value
    return total


def exchange(port: int, request: bytes, pause_after: int | None = None,
             timeout: float = 5.0) -> bytes:
    """Send raw bytes (optionally in two writes with a pause) and read until the server
    closes the connection or the timeout passes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        if pause_after is None:
            sock.sendall(request)
        else:
            sock.sendall(request[:pause_after])
            time.sleep(0.3)
            sock.sendall(request[pause_after:])
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return answer


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/"), answer[:100]
    return int(answer.split(b" ", 2)[1])


def headers_of(answer: bytes) -> dict[str, str]:
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head)}


def post_raw(port: int, body: bytes, headers: dict[str, str],
             pause_after: int | None = None) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = (f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}"
               f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
    return exchange(port, request, pause_after)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Starts daemons (no emulator: nothing here needs X to answer) and stops them."""
    started: list[Daemon] = []

    def start(**env: str) -> Daemon:
        d = Daemon(tmp_path, free_port(), free_port(), free_port(), env)
        started.append(d)
        d.start()
        return d

    yield start
    for d in started:
        d.stop()
        print(d.output()[-4000:])


BODY_TIMEOUT = 2.0
# aiohttp's C parser, or its pure-Python one (AIOHTTP_NO_EXTENSIONS=1: platforms without
# its wheels); they report broken bodies differently.
PARSERS = {"c_parser": {}, "python_parser": {"AIOHTTP_NO_EXTENSIONS": "1"}}


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("target")
    d = Daemon(tmp, free_port(), free_port(), free_port(),
               {"CATBOT_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT)})
    d.start()
    yield d
    d.stop()
    print(d.output()[-4000:])


# --- 1. a blank rotation secret ---------------------------------------------------------


@pytest.mark.parametrize("blank", ["", "   "])
def test_a_blank_previous_secret_lets_nobody_sign(
    daemon: Callable[..., Daemon], blank: str
) -> None:
    d = daemon(CATBOT_X_CONSUMER_SECRET_PREVIOUS=blank)
    body = dm_body("5550101", "signed by nobody")
    for key in {"", blank}:
        status, _, _ = http("POST", d.webhook, raw=body, headers={SIGNATURE: sign(body, key)})
        assert status == 401, f"a delivery signed with {key!r} was accepted"
    # The same body, signed by X: refused above, so never stored, so new now.
    status, _, _ = http("POST", d.webhook, raw=body, headers={SIGNATURE: sign(body)})
    assert status == 200
    values = d.metrics()
    assert metric(values, "catbot_events_total", fate="enqueued") == 1
    assert metric(values, "catbot_signature_failures_total", reason="mismatch") == len({"", blank})


# --- 5. Content-Encoding ----------------------------------------------------------------

ENCODINGS = ["gzip", "deflate", "br", "zstd", "compress", "x-made-up",
             "identity, gzip", "GZIP"]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_signed_garbage_with_a_content_encoding_gets_415(target: Daemon, encoding: str) -> None:
    garbage = os.urandom(600)
    answer = post_raw(target.port, garbage,
                      {SIGNATURE: sign(garbage), "Content-Encoding": encoding})
    assert status_of(answer) == 415, answer[:300]
    assert headers_of(answer)["accept-encoding"] == "identity"


@pytest.mark.parametrize("compress", [gzip.compress, zlib.compress], ids=["gzip", "deflate"])
@pytest.mark.parametrize("signed", ["wire_bytes", "json"])
def test_a_compressed_delivery_is_refused_and_not_stored(
    target: Daemon, compress: Callable[[bytes], bytes], signed: str
) -> None:
    """X sends the JSON as is and signs those bytes: a compressed body is not one of X's,
    whichever bytes its signature covers. Refused before it is inflated, nothing stored."""
    plain = dm_body("5550102")
    wire = compress(plain)
    assert zlib.decompress(wire, 47) == plain  # a well-formed encoding of the event
    encoding = "gzip" if wire[:2] == b"\x1f\x8b" else "deflate"
    before = target.metrics()
    answer = post_raw(target.port, wire, {
        SIGNATURE: sign(wire if signed == "wire_bytes" else plain),
        "Content-Encoding": encoding, "Content-Type": "application/json"})
    assert status_of(answer) == 415
    after = target.metrics()
    assert metric(after, "catbot_events_total") == metric(before, "catbot_events_total")
    assert metric(after, "catbot_webhook_requests_total", outcome="unsupported_encoding") == (
        metric(before, "catbot_webhook_requests_total", outcome="unsupported_encoding") + 1)


def test_identity_is_the_body_as_sent(target: Daemon) -> None:
    body = dm_body("5550103")
    answer = post_raw(target.port, body, {SIGNATURE: sign(body), "Content-Encoding": "identity"})
    assert status_of(answer) == 200


@pytest.mark.parametrize("parser", sorted(PARSERS))
@pytest.mark.parametrize("tail", [b"not-a-chunk-size\r\n\r\n", b"3\r\nabcXX\r\n0\r\n\r\n"])
def test_a_body_whose_chunks_break_midway_is_a_4xx(
    daemon: Callable[..., Daemon], parser: str, tail: bytes
) -> None:
    """The headers arrive first and the handler starts reading; then the chunked framing
    breaks. The C parser stops feeding the body (the body timeout answers 408); the Python
    parser hands the handler its error (400). Either way the client's fault, never a 5xx,
    and no traceback in the log."""
    d = daemon(CATBOT_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT), **PARSERS[parser])
    head = (f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            f"{SIGNATURE}: {sign(b'abc')}\r\nConnection: close\r\n\r\n3\r\nabc\r\n").encode()
    answer = exchange(d.port, head + tail, pause_after=len(head), timeout=BODY_TIMEOUT + 5)
    assert status_of(answer) in (400, 408), answer[:300]
    d.stop()
    assert "Traceback" not in d.output()


# --- 6. malformed HTTP: counted, not logged -------------------------------------------------

MARKER = f"meow-private-dm-{secrets.token_hex(4)}"
_M = MARKER.encode()
MALFORMED = {
    "negative_length": (b"POST /webhook/twitter HTTP/1.1\r\nHost: x\r\nContent-Length: -1"
                        b"\r\n\r\n" + _M),
    "connect_with_dm_json": (b"CONNECT " + json.dumps({"text": MARKER}).encode()
                             + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
    "tls_hello": b"\x16\x03\x01\x00\xa5\x01\x00" + _M + b"\r\n\r\n",
    "control_in_header": b"GET / HTTP/1.1\r\nHost: x\r\nX-Note\x01: " + _M + b"\r\n\r\n",
    "long_request_line": b"GET /?q=" + _M + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "smuggling": (b"POST /webhook/twitter HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + _M),
    "bad_chunk": (b"POST /webhook/twitter HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
                  b"\r\n\r\n" + _M + b"\r\n\r\n"),
    "bad_version": b"GET / HTTP/9." + _M + b"\r\n\r\n",
}


@pytest.mark.parametrize("parser", sorted(PARSERS))
def test_malformed_http_is_counted_not_logged(
    daemon: Callable[..., Daemon], parser: str
) -> None:
    d = daemon(CATBOT_LOG_LEVEL="DEBUG", **PARSERS[parser])  # even at DEBUG
    rounds = {"public": (d.port, 40), "internal": (d.metrics_port, 10)}
    for port, repeat in rounds.values():
        for _ in range(repeat):
            for request in MALFORMED.values():
                assert status_of(exchange(port, request)) == 400
    assert http("GET", d.webhook + "?crc_token=still-here")[0] == 200
    values = d.metrics()
    for listener, (_, repeat) in rounds.items():
        counted = metric(values, "catbot_http_parse_errors_total", listener=listener)
        assert counted == repeat * len(MALFORMED), (listener, counted)
    d.stop()
    log = d.output()
    assert MARKER not in log
    assert "Traceback" not in log
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert not [r for r in records if r["level"] in ("error", "critical")]
    summaries = [r for r in records if r["event"] == "http_parse_errors"]
    # At most one summary per listener in a minute; DEBUG is on, so exactly one.
    assert sorted(r["listener"] for r in summaries) == ["internal", "public"]
    assert all(r["level"] == "debug" for r in summaries)
    requests = [r for r in records if r["event"] == "request"]
    assert [r["status"] for r in requests] == [200], "only the CRC is an access-log line"


# --- 7. what a stranger can move, no alert may trust ------------------------------------------

# Counters of refused requests: a stranger can only make their alerts fire, never silence them.
REFUSALS = {"catbot_signature_failures"}


def _alerted_metrics() -> set[str]:
    rule = yaml.safe_load((ROOT / "deploy/k8s/monitoring/prometheusrule.yaml").read_text())
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    return {re.sub(r"_(total|bucket|sum|count)$", "", name)
            for expr in exprs for name in re.findall(r"\bcatbot_[a-z0-9_]+", expr)}


def _families(values: dict[str, float]) -> dict[str, dict[str, float]]:
    families: dict[str, dict[str, float]] = {}
    for key, value in values.items():
        name = re.sub(r"_(total|created|bucket|sum|count)$", "", key.partition("{")[0])
        families.setdefault(name, {})[key] = value
    return families


def _moved(before: dict[str, float], after: dict[str, float]) -> set[str]:
    a, b = _families(before), _families(after)
    return {name for name in a.keys() | b.keys() if a.get(name) != b.get(name)}


def test_no_alert_trusts_what_a_stranger_can_move(target: Daemon) -> None:
    first = target.metrics()
    time.sleep(2.5)  # the daemon's own housekeeping moves these, strangers or not
    second = target.metrics()
    background = _moved(first, second)
    body = dm_body("5550104")
    for token in ("x" * 40, secrets.token_urlsafe(32), base64.b64encode(os.urandom(32)).decode()):
        assert http("GET", f"{target.webhook}?{urlencode({'crc_token': token})}")[0] == 200
    guessed = {SIGNATURE: sign(body, "guess")}
    assert http("POST", target.webhook, raw=body, headers=guessed)[0] == 401
    assert http("POST", target.webhook, raw=body)[0] == 401
    assert status_of(exchange(target.port, MALFORMED["negative_length"])) == 400
    assert status_of(exchange(target.metrics_port, MALFORMED["connect_with_dm_json"])) == 400
    moved = _moved(second, target.metrics()) - background
    assert "catbot_last_crc_timestamp_seconds" in moved  # a stranger moves it: untrusted
    trusted = _alerted_metrics()
    assert not (moved - REFUSALS) & trusted, f"alerts rely on {(moved - REFUSALS) & trusted}"
    # What the alerts do watch: X's own answer, and how old that answer is.
    assert {"catbot_webhook_valid", "catbot_webhook_checked_timestamp_seconds"} <= trusted


def test_the_daemon_asks_x_and_counts_when_it_cannot(tmp_path: Path) -> None:
    port, metrics_port, x_port = free_port(), free_port(), free_port()
    url = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
    d = Daemon(tmp_path, x_port, port, metrics_port,
               {"CATBOT_PUBLIC_URL": url, "CATBOT_WEBHOOK_CHECK_SECONDS": "0.3"})
    x = Emulator(tmp_path, x_port, url)
    started = time.time()
    try:
        d.start()
        x.start()
        x.wait_webhook_valid()
        values = wait_for(lambda: (v := d.metrics())["catbot_webhook_valid"] == 1 and v,
                          what="the daemon to hear from X that its webhook is valid")
        assert metric(values, "catbot_webhook_checks_total", outcome="valid") >= 1
        checked = values["catbot_webhook_checked_timestamp_seconds"]
        assert started <= checked <= time.time()
        x.stop()  # X unreachable: the last answer stands, and it ages
        errors = metric(d.metrics(), "catbot_webhook_checks_total", outcome="error")
        values = wait_for(
            lambda: metric(v := d.metrics(), "catbot_webhook_checks_total",
                           outcome="error") >= errors + 3 and v,
            what="failed checks to be counted")
        last = values["catbot_webhook_checked_timestamp_seconds"]
        assert last >= checked
        time.sleep(1.0)
        values = d.metrics()
        assert values["catbot_webhook_checked_timestamp_seconds"] == last
        assert values["catbot_webhook_valid"] == 1
    finally:
        d.stop()
        x.stop()
    log = d.output()
    assert "webhook_check_failed" in log
    assert "Traceback" not in log


# --- 9. credentials in the API base, a port in use ------------------------------------------

USER, PASSWORD = "catbot-user", f"pw-{secrets.token_hex(6)}"


def catbot(*args: str, env: dict[str, str], timeout: float = 30.0
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "catbot", *args], env=clean_env(env),
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_doctor_masks_credentials_in_the_api_base(tmp_path: Path) -> None:
    x_port = free_port()  # nothing listens: the credentials check reports the address
    env = {**CREDENTIALS, "CATBOT_X_API_BASE": f"http://{USER}:{PASSWORD}@127.0.0.1:{x_port}"}
    result = catbot("doctor", "--env-file", str(tmp_path / "none.env"), env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert f"http://***@127.0.0.1:{x_port}" in output
    assert PASSWORD not in output and USER not in output


def test_webhooks_list_masks_credentials_in_the_api_base(tmp_path: Path) -> None:
    x_port = free_port()  # nothing listens: the command says which X it could not reach
    env = {**CREDENTIALS, "CATBOT_X_API_BASE": f"http://{USER}:{PASSWORD}@127.0.0.1:{x_port}"}
    result = catbot("webhooks", "list", "--env-file", str(tmp_path / "none.env"), env=env)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert f"http://***@127.0.0.1:{x_port}" in output
    assert PASSWORD not in output and USER not in output


def test_the_started_line_masks_credentials_in_the_api_base(
    daemon: Callable[..., Daemon],
) -> None:
    x_port = free_port()
    d = daemon(CATBOT_X_API_BASE=f"http://{USER}:{PASSWORD}@127.0.0.1:{x_port}",
               CATBOT_LOG_LEVEL="debug")  # users type levels in any case
    wait_for(lambda: '"started"' in d.output(), what="the started line")
    d.stop()
    log = d.output()
    started = next(json.loads(line) for line in log.splitlines() if '"started"' in line)
    assert started["api_base"] == f"http://***@127.0.0.1:{x_port}"
    assert PASSWORD not in log and USER not in log


@pytest.mark.parametrize("taken", ["CATBOT_PORT", "CATBOT_METRICS_PORT"])
def test_a_port_in_use_is_named_and_exits_cleanly(tmp_path: Path, taken: str) -> None:
    ports = {"CATBOT_PORT": free_port(), "CATBOT_METRICS_PORT": free_port()}
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports[taken]))
        squatter.listen()
        env = {**CREDENTIALS, "CATBOT_HOST": "127.0.0.1", "CATBOT_METRICS_HOST": "127.0.0.1",
               "CATBOT_X_API_BASE": f"http://127.0.0.1:{free_port()}",
               "CATBOT_STORE_URL": f"sqlite:///{tmp_path / 'catbot.db'}",
               **{k: str(v) for k, v in ports.items()}}
        result = catbot("run", "--env-file", str(tmp_path / "none.env"), env=env)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert f"127.0.0.1:{ports[taken]}" in message and taken in message, message
    assert os.strerror(errno.EADDRINUSE) in message, message

