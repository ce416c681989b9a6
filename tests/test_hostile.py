"""Hostile input at the LIVE daemon's public port: a real process, a plain HTTP client.

Two daemons (each with an emulator playing X) take the abuse:
- `quiet` only ever gets requests that carry no valid signature (or that must be refused
  before any signature matters). Whatever it gets, nothing may be stored or answered: its
  `catbot_events_total` stays empty and the emulator never sees a DM.
- `busy` gets correctly signed but semantically hostile bodies: 2xx or 4xx, never 5xx.
Both must stay alive with bounded memory (VmRSS from /proc), and keep answering others
while slow clients trickle bytes at them.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.client
import json
import re
import secrets
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from testkit.processes import (
    BOT_ID,
    CREDENTIALS,
    WEBHOOK_PATH,
    Daemon,
    Emulator,
    free_port,
)

SECRET = CREDENTIALS["CATBOT_X_CONSUMER_SECRET"]
SIGNATURE = "x-twitter-webhooks-signature"
MAX_BODY = 1024 * 1024
RSS_HEADROOM_KB = 60 * 1024
BODY_TIMEOUT = 2.0  # CATBOT_BODY_TIMEOUT_SECONDS of both daemons
IDLE_TIMEOUT = 3.0  # CATBOT_IDLE_TIMEOUT_SECONDS of both daemons
# What X's CRC tokens look like (URL-safe or standard base64 of random bytes).
X_LIKE_TOKEN = re.compile(r"[A-Za-z0-9_+/=-]{1,200}")
FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def sign(body: bytes, secret: str = SECRET) -> str:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return "sha256=" + base64.b64encode(digest).decode()


class Target:
    """One daemon (with its emulator) under attack."""

    def __init__(self, tmp: Path) -> None:
        port, metrics_port, emulator_port = free_port(), free_port(), free_port()
        env = {"CATBOT_LOG_LEVEL": "WARNING", "CATBOT_DM_BUDGET_15MIN": "100000",
               "CATBOT_DM_BUDGET_24H": "100000",
               "CATBOT_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
               "CATBOT_IDLE_TIMEOUT_SECONDS": str(IDLE_TIMEOUT)}
        self.daemon = Daemon(tmp, emulator_port, port, metrics_port, env)
        self.emulator = Emulator(tmp, emulator_port, self.daemon.webhook,
                                 extra_args=["--dm-rate-limit", "100000"])
        self.port = port
        self.rss_baseline_kb = 0

    def start(self) -> Target:
        self.daemon.start()
        self.emulator.start()
        self.emulator.wait_webhook_valid()
        self.rss_baseline_kb = self.rss_kb()
        return self

    def stop(self) -> None:
        self.daemon.stop()
        self.emulator.stop()

    def rss_kb(self) -> int:
        assert self.daemon.proc is not None
        status = Path(f"/proc/{self.daemon.proc.pid}/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
        return int(line.split()[1])

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Sequence[tuple[str, str | bytes]] = (),
        timeout: float = 10.0,
    ) -> tuple[int, bytes]:
        """One request on a fresh connection, headers exactly as given (repeats allowed)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            for name, value in headers:
                conn.putheader(name, value)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def post(self, body: bytes, signatures: list[str | bytes]) -> int:
        headers: list[tuple[str, str | bytes]] = [("Content-Type", "application/json")]
        headers += [(SIGNATURE, s) for s in signatures]
        status, answer = self.request("POST", WEBHOOK_PATH, body, headers)
        assert status < 500, (status, answer)
        return status

    def assert_healthy(self) -> None:
        assert self.daemon.alive, self.daemon.output()[-3000:]
        growth = self.rss_kb() - self.rss_baseline_kb
        assert growth < RSS_HEADROOM_KB, f"VmRSS grew by {growth} kB"


def _target(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Target]:
    target = Target(tmp_path_factory.mktemp(name)).start()
    yield target
    target.stop()
    print(target.daemon.output()[-3000:])


@pytest.fixture(scope="module")
def quiet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    yield from _target(tmp_path_factory, "quiet")


@pytest.fixture(scope="module")
def busy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    yield from _target(tmp_path_factory, "busy")


# --- payloads ----------------------------------------------------------------------------

_ids = iter(range(10**9))


def dm_event(event_id: str, sender: str, text: str = "hi", created_ms: int | None = None
             ) -> dict[str, Any]:
    return {
        "type": "message_create",
        "id": event_id,
        "created_timestamp": str(created_ms or int(time.time() * 1000)),
        "message_create": {
            "target": {"recipient_id": BOT_ID},
            "sender_id": sender,
            "source_app_id": "42",
            "message_data": {"text": text, "entities": {"hashtags": [], "urls": []}},
        },
    }


def account_activity(event: dict[str, Any]) -> dict[str, Any]:
    sender = event["message_create"]["sender_id"]
    return {
        "for_user_id": BOT_ID,
        "direct_message_events": [event],
        "users": {sender: {"id": sender, "name": "x", "screen_name": "x"}},
        "apps": {"42": {"id": "42", "name": "app"}},
    }


def activity(event: dict[str, Any]) -> dict[str, Any]:
    return {"data": {
        "event_uuid": "-123", "filter": {"user_id": BOT_ID}, "event_type": "dm.received",
        "tag": "catbot",
        "payload": {"direct_message_events": [event], "users": {}},
    }}


def fresh_payload(flavour: str) -> dict[str, Any]:
    n = next(_ids)
    # X's event ids are decimal strings of at most 19 digits.
    event = dm_event(f"{time.time_ns() // 1000}{n % 1000:03d}", str(60_000_000 + n))
    return account_activity(event) if flavour == "account_activity" else activity(event)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, (*prefix, index))


PATHS = {f: list(paths(fresh_payload(f)))[1:] for f in ("account_activity", "activity")}

json_leaves = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["", "0", "-1", "1000", BOT_ID, "9" * 30, "1e999", "\u0000", "\ud800"]),
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=12,
)


@st.composite
def mutated_payloads(draw: st.DrawFn) -> bytes:
    """A real DM envelope with one to three places replaced by the wrong type, or removed."""
    flavour = draw(st.sampled_from(sorted(PATHS)))
    payload = fresh_payload(flavour)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS[flavour]))
        parent: Any = payload
        try:
            for key in path[:-1]:
                parent = parent[key]
            if isinstance(parent, dict) and draw(st.booleans()) and draw(st.booleans()):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = draw(json_values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this place
    return json.dumps(payload).encode()  # lone surrogates and NaN survive as JSON escapes


hostile_bodies = st.one_of(
    st.binary(max_size=2048),
    st.text(max_size=500).map(lambda t: t.encode("utf-8", "surrogatepass")),
    mutated_payloads(),
    json_values.map(lambda v: json.dumps(v).encode()),
)

NASTY_BODIES = {
    "deep-array-open": b"[" * 100_000,
    "deep-array-closed": b"[" * 100_000 + b"]" * 100_000,
    "deep-object": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "deep-in-text": json.dumps(
        {"for_user_id": BOT_ID, "direct_message_events": [{"x": 1}]}
    ).encode().replace(b'{"x": 1}', b"[" * 900 + b"]" * 900),
    "huge-exponent": b'{"for_user_id": 1e999999, "direct_message_events": [1e999999]}',
    "many-digits": b'{"for_user_id": ' + b"9" * 5000 + b"}",
    "nan-infinity": b'{"for_user_id": NaN, "direct_message_events": [Infinity, -Infinity]}',
    "not-utf8": b'{"for_user_id": "\xff\xfe\xfd"}',
    "utf8-bom": b'\xef\xbb\xbf{"for_user_id": "1000"}',
    "utf16": '{"for_user_id": "1000"}'.encode("utf-16"),
    "empty": b"",
    "null": b"null",
    "number": b"12345",
    "string": b'"direct_message_events"',
    "duplicate-keys": b'{"for_user_id": "1", "for_user_id": "1000", "direct_message_events": []}',
    "many-keys": json.dumps({f"k{i}": i for i in range(60_000)}).encode(),
    "many-events": json.dumps({
        "for_user_id": BOT_ID,
        "direct_message_events": [{"type": "message_create", "id": str(i)} for i in range(20_000)],
    }).encode(),
    "nearly-max-size": b'{"for_user_id": "1000", "pad": "' + b"x" * (MAX_BODY - 64) + b'"}',
}


# --- no valid signature: refused, nothing stored ------------------------------------------


@st.composite
def bad_signatures(draw: st.DrawFn, body: bytes) -> list[str | bytes]:
    real = sign(body)
    digest_sha1 = hmac.new(SECRET.encode(), body, hashlib.sha1).digest()
    flipped = real[:-3] + ("A" if real[-3] != "A" else "B") + real[-2:]
    header_text = st.text(
        alphabet=st.characters(blacklist_categories=["Cs", "Cc"]), max_size=80
    ).map(lambda t: t.encode("utf-8"))
    one = draw(st.one_of(
        st.just(b""),
        st.integers(1, len(real) - 1).map(lambda n: real[:n]),
        st.just("sha1=" + base64.b64encode(digest_sha1).decode()),
        st.just(real[7:]),
        st.binary(max_size=64).filter(lambda b: len(b) != 32).map(
            lambda b: "sha256=" + base64.b64encode(b).decode()),
        st.binary(min_size=32, max_size=32).map(
            lambda b: "sha256=" + base64.b64encode(b).decode()),
        st.just(sign(body, "some-other-secret")),
        st.just(sign(body, CREDENTIALS["CATBOT_X_CONSUMER_KEY"])),
        st.just(sign(body + b" ")),
        st.just(flipped),
        st.just("sha256=" + real[7:].rstrip("=") + "!"),
        header_text.map(lambda b: b"sha256=" + b),
        header_text,
    ))
    count = draw(st.integers(0, 2))  # 0: no header at all; 2: the header twice
    return [one] * min(count, 1) + ([draw(st.sampled_from([one, b"sha256=AAAA"]))]
                                    if count == 2 else [])


@FUZZ
@given(data=st.data(), body=st.one_of(hostile_bodies, mutated_payloads(),
                                      st.builds(lambda: json.dumps(
                                          fresh_payload("account_activity")).encode())))
def test_requests_without_a_valid_signature_are_refused(
    quiet: Target, data: st.DataObject, body: bytes
) -> None:
    signatures = data.draw(bad_signatures(body))
    status = quiet.post(body, signatures)
    assert status in (400, 401), status


@FUZZ
@given(junk=st.binary(max_size=600))
@example(junk=b"Content-Length: 5\r\nTransfer-Encoding: chunked")
@example(junk=b"Content-Length: -1")
@example(junk=b"Content-Length: 99999999999999999999")
@example(junk=b"Transfer-Encoding: gzip, chunked")
@example(junk=b"x-twitter-webhooks-signature: sha256=\x00\x01")
def test_raw_header_bytes_never_crash_the_server(quiet: Target, junk: bytes) -> None:
    """Arbitrary bytes where the headers go; the client then half-closes. Any answer is 4xx."""
    request = b"POST " + WEBHOOK_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\n" + junk
    with socket.create_connection(("127.0.0.1", quiet.port), timeout=5) as sock:
        sock.sendall(request + b"\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
    if answer:
        status = int(answer.split(b" ", 2)[1])
        assert 400 <= status < 500, answer[:200]


@FUZZ
@given(tokens=st.lists(
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=300), max_size=3))
@example(tokens=["crc-token-123"])
@example(tokens=[secrets.token_urlsafe(24)])
@example(tokens=[base64.b64encode(secrets.token_bytes(32)).decode()])
@example(tokens=["a", "b"])
@example(tokens=["", "b"])
@example(tokens=["🐈" * 100])
def test_crc_query_strings(quiet: Target, tokens: list[str]) -> None:
    """Answered for X-shaped tokens, with the first token's HMAC; refused when empty.

    Other tokens may be answered or refused (400): a daemon may well refuse tokens that do
    not look like X's, see `test_a_crc_answer_cannot_sign_an_event`.
    """
    query = urllib.parse.urlencode([("crc_token", t) for t in tokens])
    status, answer = quiet.request("GET", f"{WEBHOOK_PATH}?{query}")
    assert status in (200, 400), answer
    if status == 200:
        expected = base64.b64encode(
            hmac.new(SECRET.encode(), tokens[0].encode(), hashlib.sha256).digest()
        ).decode()
        assert json.loads(answer) == {"response_token": "sha256=" + expected}
    if not tokens or not tokens[0]:
        assert status == 400
    elif X_LIKE_TOKEN.fullmatch(tokens[0]):
        assert status == 200, answer


@pytest.mark.parametrize("query", [
    b"crc_token=" + b"a" * 7000,
    b"crc_token=" + b"a" * 20000,
    "crc_token=é🐈".encode(),
    b"crc_token=%ff%fe%zz",
    b"crc_token=%00",
    b"crc_token",
    b"crc_token=a;crc_token=b",
    b"&&&==&",
])
def test_raw_crc_queries(quiet: Target, query: bytes) -> None:
    with socket.create_connection(("127.0.0.1", quiet.port), timeout=5) as sock:
        sock.sendall(b"GET " + WEBHOOK_PATH.encode() + b"?" + query
                     + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    assert status in (200, 400, 414), answer[:200]


@FUZZ
@given(method=st.one_of(
    st.sampled_from(["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "PROPFIND"]),
    st.from_regex(r"[A-Z]{1,12}", fullmatch=True),
))
def test_other_methods(quiet: Target, method: str) -> None:
    assume(method != "POST")  # a signed POST would be stored: not on the quiet daemon
    body = json.dumps(fresh_payload("account_activity")).encode()
    headers: list[tuple[str, str | bytes]] = [(SIGNATURE, sign(body))]
    status, _ = quiet.request(method, WEBHOOK_PATH, body, headers)
    if method in ("GET", "HEAD"):
        assert status == 400  # a CRC without a token
    elif method != "POST":
        assert 400 <= status < 500, status


def _chunked(body: bytes, signature: str) -> bytes:
    chunks = b"".join(
        f"{len(body[i:i + 65536]):x}\r\n".encode() + body[i:i + 65536] + b"\r\n"
        for i in range(0, len(body), 65536)
    )
    return (b"POST " + WEBHOOK_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n"
            + f"{SIGNATURE}: {signature}\r\n\r\n".encode() + chunks + b"0\r\n\r\n")


def _raw_status(port: int, request: bytes, timeout: float = 10.0) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            sock.sendall(request)
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while b"\r\n" not in answer and (chunk := sock.recv(65536)):
                answer += chunk
    return int(answer.split(b" ", 2)[1])


def test_oversized_bodies_get_413_and_memory_stays_bounded(quiet: Target) -> None:
    big = b'{"for_user_id": "1000", "pad": "' + b"x" * (2 * MAX_BODY) + b'"}'
    signature = sign(big)
    assert quiet.post(big, [signature]) == 413
    assert _raw_status(quiet.port, _chunked(big, signature)) == 413
    lying = (b"POST " + WEBHOOK_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\n"
             b"Content-Length: 99999999999\r\nConnection: close\r\n\r\nabc")
    assert _raw_status(quiet.port, lying) == 413
    just_over = b"x" * (MAX_BODY + 1)
    assert _raw_status(quiet.port, _chunked(just_over, sign(just_over))) == 413
    for _ in range(20):  # no memory kept per refused body
        assert _raw_status(quiet.port, _chunked(big, signature)) == 413
    quiet.assert_healthy()


# --- slow clients --------------------------------------------------------------------------


class Trickler(threading.Thread):
    """Sends `head` at once, then `trickle` one byte per interval; notes when the server
    ends the connection (an answer such as 408, or EOF)."""

    def __init__(
        self, port: int, head: bytes, trickle: bytes, interval: float, duration: float
    ) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.settimeout(interval)
        self.head, self.trickle = head, trickle
        self.interval, self.duration = interval, duration
        self.closed_after: float | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        sent = 0
        with self.sock:
            try:
                self.sock.sendall(self.head)
            except OSError:
                self.closed_after = 0.0
                return
            while not self.stop.is_set() and time.monotonic() - started < self.duration:
                try:
                    if sent < len(self.trickle):
                        self.sock.sendall(self.trickle[sent:sent + 1])
                        sent += 1
                    self.sock.recv(1024)
                    self.closed_after = time.monotonic() - started
                    return
                except TimeoutError:
                    continue
                except OSError:
                    self.closed_after = time.monotonic() - started
                    return


def slow_requests() -> list[tuple[bytes, bytes]]:
    """(head, trickle): headers trickled, a body trickled, a silent connection."""
    body = json.dumps(fresh_payload("account_activity")).encode()
    start = b"POST " + WEBHOOK_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\n"
    slow_headers = (start, b"Content-Length: 10\r\nX-Padding: " + b"a" * 10_000)
    # Signed with another secret: if it ever completed, the quiet daemon must refuse it.
    headers = (start + f"Content-Length: {len(body)}\r\n{SIGNATURE}: {sign(body, 'x')}\r\n"
               "Content-Type: application/json\r\n\r\n".encode())
    slow_body = (headers, body)
    return [slow_headers, slow_body, (b"", b"")]


def test_slow_clients_do_not_stop_others_being_answered(quiet: Target) -> None:
    tricklers = [Trickler(quiet.port, head, trickle, 0.2, 4.0)
                 for head, trickle in slow_requests() for _ in range(15)]
    for trickler in tricklers:
        trickler.start()
    latencies = []
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        started = time.perf_counter()
        status, _ = quiet.request("GET", WEBHOOK_PATH + "?crc_token=x", timeout=2)
        latencies.append(time.perf_counter() - started)
        assert status == 200
        time.sleep(0.05)
    for trickler in tricklers:
        trickler.stop.set()
    for trickler in tricklers:
        trickler.join(2)
    print(f"while 45 slow clients trickle: {len(latencies)} CRCs, "
          f"max {max(latencies) * 1000:.1f} ms")
    assert max(latencies) < 0.5
    quiet.assert_healthy()


def test_a_trickled_body_is_timed_out(quiet: Target) -> None:
    _, slow_body, _ = slow_requests()
    trickler = Trickler(quiet.port, *slow_body, interval=0.5, duration=BODY_TIMEOUT + 5)
    trickler.start()
    trickler.join(BODY_TIMEOUT + 10)
    assert trickler.closed_after is not None and trickler.closed_after <= BODY_TIMEOUT + 3


def test_trickled_headers_and_silent_connections_are_timed_out(quiet: Target) -> None:
    """Headers still incomplete, or a connection silent, past the idle timeout: closed."""
    slow_headers, _, silent = slow_requests()
    tricklers = [Trickler(quiet.port, *request, interval=0.5, duration=IDLE_TIMEOUT + 10)
                 for request in (slow_headers, silent)]
    for trickler in tricklers:
        trickler.start()
    for trickler in tricklers:
        trickler.join(IDLE_TIMEOUT + 12)
    closed = [t.closed_after for t in tricklers]
    assert all(c is not None and c <= IDLE_TIMEOUT + 3 for c in closed), closed
    quiet.assert_healthy()


def test_a_crc_answer_cannot_sign_an_event(busy: Target) -> None:
    event = dm_event(str(time.time_ns()), "5550003", "forged by a stranger")
    body = json.dumps(account_activity(event), separators=(",", ":")).encode()
    status, answer = busy.request(
        "GET", WEBHOOK_PATH + "?" + urllib.parse.urlencode({"crc_token": body.decode()})
    )
    if status == 200:
        forged = json.loads(answer)["response_token"]
        assert busy.post(body, [forged]) == 401, "a CRC answer signed a forged event"
    time.sleep(1.0)
    assert replies(busy, "5550003") == []


def replies(target: Target, user: str) -> list[str]:
    return [m["text"] for m in target.emulator.messages(user) if m["sender_id"] == BOT_ID]


def test_the_busy_daemon_survived(busy: Target) -> None:
    busy.assert_healthy()
    status, _ = busy.request("GET", WEBHOOK_PATH + "?crc_token=ok")
    assert status == 200
