"""A real `redis-server` for tests: its own process on a free loopback port, AOF in a temp dir.

Never a silent skip: when `redis-server` is missing, it is installed with apt-get if this
runs in CI (`CI` set) or as root, and otherwise the test fails with a message saying how to
install it. `make test` and `.ci/run` install it beforehand anyway.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from testkit.processes import free_port

_install_attempted = False


def redis_server_binary() -> str:
    """The path of `redis-server`, installing it when allowed; fails the test otherwise."""
    global _install_attempted
    found = shutil.which("redis-server")
    if found:
        return found
    may_install = bool(os.environ.get("CI")) or os.geteuid() == 0
    if may_install and not _install_attempted:
        _install_attempted = True
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "update", "-qq"],
                        ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                         "redis-server"]):
            result = subprocess.run(command, env=env, capture_output=True, text=True,
                                    timeout=300, check=False)
            if result.returncode != 0:
                pytest.fail(f"could not install redis-server ({' '.join(command)} exited "
                            f"{result.returncode}): {result.stderr[-2000:]}", pytrace=False)
        found = shutil.which("redis-server")
        if found:
            return found
    pytest.fail(
        "redis-server is not installed, and the Redis store tests need a real one: "
        "run `sudo apt-get install redis-server` (or `make test`, which does it as root)",
        pytrace=False,
    )


@dataclass
class RedisServer:
    """One redis-server process; `stop`/`kill` and `start` again keep the port and the data
    directory, so a restart finds its AOF."""

    directory: Path
    port: int = 0
    appendfsync: str = "everysec"
    proc: subprocess.Popen[bytes] | None = None
    extra_args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def url_with_prefix(self, prefix: str | None = None) -> str:
        """A URL whose keys do not meet any other test's."""
        return f"{self.url}?prefix=t-{prefix or uuid.uuid4().hex[:12]}"

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    def start(self, timeout: float = 10.0) -> RedisServer:
        binary = redis_server_binary()
        self.directory.mkdir(parents=True, exist_ok=True)
        fixed_port = self.port != 0
        for _ in range(1 if fixed_port else 5):
            if not fixed_port:
                self.port = free_port()
            if self._spawn(binary, timeout):
                return self
        raise AssertionError(
            f"redis-server did not start on 127.0.0.1:{self.port}:\n{self.output()[-3000:]}"
        )

    def _spawn(self, binary: str, timeout: float) -> bool:
        args = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--daemonize", "no",
            "--save", "", "--appendonly", "yes", "--appendfsync", self.appendfsync,
            "--dir", str(self.directory), "--maxmemory-policy", "noeviction",
            "--logfile", "", *self.extra_args,
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False  # e.g. the port was taken meanwhile
            if self.ping():
                return True
            time.sleep(0.02)
        self.kill()
        return False

    def ping(self) -> bool:
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.5,
                             socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            return False
        finally:
            client.close()

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True,
                           socket_timeout=5)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """A clean shutdown (SIGTERM: Redis flushes the AOF and exits)."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """`kill -9`: what a crash or an OOM kill looks like."""
        self._end(signal.SIGKILL)

    def _end(self, sig: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
