"""The ha overlay's Redis asks for a password (issue 15, item 8).

It had none (`--protected-mode no`, a plain `redis://` URL): anything that reached it could
queue DMs. Here the Redis container's own start-up script from `overlays/ha/redis.yaml`
runs under a local shell with the real `redis-server` (a shim on PATH adds only a loopback
port and a temporary data directory), then:
- a client without the password, or with a wrong one, is refused;
- the daemon's store with the password in `CATBOT_STORE_URL` works, and without it fails
  to open with a message that never shows the password;
- the real daemon (`catbot run`) becomes ready with the URL, refuses to start without it,
  and never prints the password;
- the container's probes pass only when they authenticate.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from redis.backoff import NoBackoff
from redis.retry import Retry

from catbot.models import InboundDM
from catbot.store.base import StoreError
from catbot.store.redis import RedisStore
from testkit.processes import Daemon, free_port, http, wait_for
from testkit.redis_server import redis_server_binary

HA = Path(__file__).resolve().parents[1] / "deploy" / "k8s" / "overlays" / "ha"


def redis_container() -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all((HA / "redis.yaml").read_text()) if d]
    [sts] = [d for d in docs if d["kind"] == "StatefulSet"]
    container: dict[str, Any] = sts["spec"]["template"]["spec"]["containers"][0]
    return container


def daemon_store_url_template() -> str:
    """CATBOT_STORE_URL as the ha overlay gives it to the daemons, `$(VAR)` unexpanded."""
    [patch] = [d for d in yaml.safe_load_all((HA / "deployment.yaml").read_text()) if d]
    [container] = patch["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    url: str = env["CATBOT_STORE_URL"]["value"]
    return url


def expand(template: str, values: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion of an env value."""
    for name, value in values.items():
        template = template.replace(f"$({name})", value)
    assert "$(" not in template, template
    return template


def client(port: int, password: str | None = None) -> redis.Redis:
    # No retries: redis-py counts a refused password as a connection error and retries it.
    return redis.Redis(port=port, password=password, socket_timeout=2,
                       retry=Retry(NoBackoff(), 0))


def shim(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@dataclass
class OverlayRedis:
    port: int
    password: str
    bin_dir: Path
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def host_port(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, password: str | None) -> str:
        """The daemon's URL from the manifest, here, with `password` (None: no password)."""
        template = daemon_store_url_template()
        # The manifest names the in-cluster Service; this Redis is on loopback.
        local = template.replace("@catbot-redis:6379", f"@{self.host_port}")
        assert local != template, template
        if password is None:
            return re.sub(r"//:\$\(\w+\)@", "//", local)
        return expand(local, {self.password_variable(): password})

    def password_variable(self) -> str:
        template = daemon_store_url_template()
        return template.split("$(", 1)[1].split(")", 1)[0]

    def probe(self, kind: str, auth: str | None) -> int:
        """Run the container's probe command here; its exit status."""
        command = redis_container()[kind]["exec"]["command"]
        env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
        env["PATH"] = f"{self.bin_dir}:{env['PATH']}"
        if auth is not None:
            env["REDISCLI_AUTH"] = auth
        return subprocess.run(command, env=env, timeout=10, check=False,
                              capture_output=True).returncode


@pytest.fixture
def overlay_redis(tmp_path: Path) -> Iterator[OverlayRedis]:
    real_server = redis_server_binary()
    real_cli = shutil.which("redis-cli")
    assert real_cli, "redis-cli comes with redis-server (package redis-tools)"
    port = free_port()
    data = tmp_path / "data"
    data.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # Only where it listens and writes changes: the manifest's `--dir /data` becomes a
    # temporary directory (Redis enters it while parsing, so it cannot be overridden later)
    # and a loopback port is added at the end, where later options win.
    shim(bin_dir, "redis-server",
         'prev=""\n'
         'for arg do\n'
         '  shift\n'
         f'  if [ "$prev" = "--dir" ]; then set -- "$@" "{data}"; else set -- "$@" "$arg"; fi\n'
         '  prev=$arg\n'
         'done\n'
         f'exec {real_server} "$@" --port {port} --bind 127.0.0.1 --logfile ""\n')
    shim(bin_dir, "redis-cli", f'exec {real_cli} -p {port} "$@"\n')
    container = redis_container()
    password = secrets.token_hex(32)  # as secret-redis.example.yaml says to make it
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    for item in container["env"]:
        ref = item["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == ("catbot-redis", "password"), item
        env[item["name"]] = password
    log = tmp_path / "redis.log"
    with log.open("wb") as out:
        # `sh` here is dash, as in the official Debian-based redis image.
        proc = subprocess.Popen(container["args"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    server = OverlayRedis(port, password, bin_dir, proc, log)
    try:
        def answering() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                client(port).ping()
            except redis.AuthenticationError:
                return True  # it answers, and wants a password
            except redis.ConnectionError:
                return False
            return True

        wait_for(answering, timeout=15, what="the overlay's redis-server")
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_the_overlay_redis_refuses_clients_without_the_password(
    overlay_redis: OverlayRedis,
) -> None:
    anonymous = client(overlay_redis.port)
    with pytest.raises(redis.AuthenticationError):
        anonymous.set("catbot:turns", "a forged job")
    wrong = client(overlay_redis.port, "not-" + overlay_redis.password)
    with pytest.raises(redis.AuthenticationError):
        wrong.ping()
    right = client(overlay_redis.port, overlay_redis.password)
    assert right.ping()
    for each in (anonymous, wrong, right):
        each.close()


async def test_the_daemons_store_needs_the_password_and_never_shows_it(
    overlay_redis: OverlayRedis,
) -> None:
    with_password = overlay_redis.url(overlay_redis.password)
    assert overlay_redis.password in with_password
    store = RedisStore(with_password)
    await store.open()
    try:
        event = InboundDM(event_id="ev-1", sender_id="42", recipient_id="1000",
                          for_user_id="1000", text="hi", created_at=time.time())
        assert await store.enqueue([event], now=time.time()) == [True]
        assert await store.depth() == 1
    finally:
        await store.close()

    for url in (overlay_redis.url(None), overlay_redis.url("0" * 64)):
        refused = RedisStore(url)
        with pytest.raises(StoreError) as excinfo:
            await refused.open()
        message = str(excinfo.value)
        assert "password in the store URL is missing or wrong" in message, message
        assert overlay_redis.password not in message and "0" * 64 not in message


def test_the_daemon_runs_with_the_password_url_and_not_without(
    overlay_redis: OverlayRedis, tmp_path: Path
) -> None:
    url = overlay_redis.url(overlay_redis.password)
    daemon = Daemon(tmp_path, free_port(), free_port(), free_port(),
                    extra_env={"CATBOT_STORE_URL": url})
    try:
        daemon.start()
        assert http("GET", daemon.internal + "/readyz")[0] == 200
    finally:
        daemon.stop()
    assert overlay_redis.password not in daemon.output(), "the password was printed"

    without = Daemon(tmp_path, free_port(), free_port(), free_port(),
                     extra_env={"CATBOT_STORE_URL": overlay_redis.url(None)})
    without.start_process_only()
    try:
        assert without.wait(30) != 0
    finally:
        without.stop()
    output = without.output()
    assert "Traceback" not in output, output[-3000:]
    assert "password in the store URL is missing or wrong" in output, output[-3000:]


def test_the_probes_pass_only_with_the_password(overlay_redis: OverlayRedis) -> None:
    for kind in ("readinessProbe", "livenessProbe"):
        assert overlay_redis.probe(kind, overlay_redis.password) == 0, kind
        assert overlay_redis.probe(kind, None) != 0, kind
