"""The `catbot` command as a user runs it: start-up errors, help, and the offline demo."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from catbot.commands.demo import (
    _FRIEND_ID,
    _SCRIPT,
    _XCHAT_MARK,
    _Conversation,
    _demo_world,
    _run_script,
)
from catbot.facts import load_corpus
from testkit.processes import CREDENTIALS, clean_env


def catbot(*args: str, env: dict[str, str] | None = None, timeout: float = 60.0,
           cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "catbot", *args], env=clean_env(env or {}), cwd=cwd,
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )


def test_missing_credentials_stop_start_up_naming_each_variable(tmp_path: Path) -> None:
    result = catbot("run", cwd=tmp_path, env={"CATBOT_X_CONSUMER_KEY": "k"})
    assert result.returncode == 2
    for name in ("CATBOT_X_CONSUMER_SECRET", "CATBOT_X_ACCESS_TOKEN",
                 "CATBOT_X_ACCESS_TOKEN_SECRET"):
        assert name in result.stderr
    assert "CATBOT_X_CONSUMER_KEY:" not in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_values_are_named_without_a_traceback(tmp_path: Path) -> None:
    env = {**CREDENTIALS, "CATBOT_PORT": "eighty", "CATBOT_TRIGGER": "(unclosed"}
    result = catbot("run", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert "CATBOT_PORT" in result.stderr and "CATBOT_TRIGGER" in result.stderr
    assert "Traceback" not in result.stderr
    assert CREDENTIALS["CATBOT_X_CONSUMER_SECRET"] not in result.stderr


def test_settings_come_from_a_dotenv_file_with_the_seed_names(tmp_path: Path) -> None:
    # The original bot's lower-case names, in .env; an invalid port proves the file is read.
    (tmp_path / ".env").write_text(
        "consumer_key=a\nconsumer_secret=b\naccess_token=1-c\naccess_token_secret=d\n"
        "CATBOT_METRICS_PORT=not-a-port\n"
    )
    result = catbot("run", cwd=tmp_path)
    assert result.returncode == 2
    assert "CATBOT_METRICS_PORT" in result.stderr
    assert "CATBOT_X_CONSUMER_KEY" not in result.stderr


def test_a_second_daemon_on_the_same_sqlite_file_is_refused(tmp_path: Path) -> None:
    import asyncio

    from catbot.store.sqlite import SQLiteStore

    async def hold_and_try() -> subprocess.CompletedProcess[str]:
        store = SQLiteStore(tmp_path / "catbot.db")
        await store.open()
        try:
            env = {**CREDENTIALS, "CATBOT_STORE_URL": f"sqlite:///{tmp_path / 'catbot.db'}",
                   "CATBOT_PORT": "0", "CATBOT_METRICS_PORT": "0"}
            return await asyncio.to_thread(catbot, "run", env=env, cwd=tmp_path)
        finally:
            await store.close()

    result = asyncio.run(hold_and_try())
    assert result.returncode == 1
    assert "another catbot process owns" in result.stderr


@pytest.mark.parametrize("command", ["run", "demo", "emulator"])
def test_every_command_has_help(command: str) -> None:
    result = catbot(command, "--help")
    assert result.returncode == 0
    assert "usage: catbot " + command in result.stdout


def test_demo_once_plays_the_conversation_and_exits_zero(tmp_path: Path) -> None:
    result = catbot("demo", "--once", cwd=tmp_path, timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo OK" in result.stdout
    facts = {fact.text for fact in load_corpus()}
    replies = [line.split("│", 1)[1].strip() for line in result.stdout.splitlines()
               if line.strip().startswith("catbot │")]
    dms = [r for r in replies if not r.startswith(_XCHAT_MARK)]
    assert sum(reply.removesuffix(" Nya~") in facts for reply in dms) == 2
    assert "(no reply)" in dms
    # The X Chat turn: one encrypted reply, a cat fact as the friend's app decrypted it.
    encrypted = [r.removeprefix(_XCHAT_MARK) for r in replies if r.startswith(_XCHAT_MARK)]
    assert len(encrypted) == 1 and encrypted[0].removesuffix(" Nya~") in facts, replies


async def test_demo_fails_without_the_x_chat_reply(tmp_path: Path) -> None:
    """The demo's world, set up as `catbot demo` sets it up, with X refusing every X Chat
    send to the friend for good (a permanent 403 the daemon dead-letters): the script names
    the missing encrypted reply, and only that one, so `--once` exits 1."""
    async with _demo_world(tmp_path) as ports, aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{ports.emulator}/_emulator"
        async with session.post(
            f"{base}/faults", json={"xchat_forbidden_recipients": [_FRIEND_ID]}
        ) as response:
            assert response.status == 200
        conversation = _Conversation(session, ports.emulator)
        failures = await _run_script(conversation, reply_seconds=4)
        xchat_step = next(step for step in _SCRIPT if step.channel == "xchat")
        assert failures == [f"{xchat_step.text!r}: expected {xchat_step.describe}, got no reply"]
        async with session.get(f"{base}/stats") as response:
            stats = await response.json()
        assert stats["xchat_forbidden"] >= 1 and stats["xchat_sent"] == 0

        # A DM answer is no answer on X Chat: the wait is for the step's own channel.
        await conversation.new_messages()
        await conversation.send("and by DM?")
        assert await conversation.reply_within(3, "xchat") is None
