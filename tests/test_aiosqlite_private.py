"""What the SQLite store relies on in aiosqlite's private API, checked against aiosqlite
0.22.1 (pinned in constraints.txt).

`SQLiteStore._on_connection_thread` runs a whole enqueue transaction in one trip to the
connection's thread through `Connection._execute(fn, *args)` and `Connection._conn`, for
which aiosqlite has no public equivalent. A new aiosqlite that renames, reorders or drops
either fails here, naming what broke, before the store's own tests fail in a less obvious way.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest

import catbot.store.sqlite as sqlite_module
from catbot.store.sqlite import SQLiteStore

REVIEWED = "aiosqlite 0.22.1"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    opened = SQLiteStore(tmp_path / "private.db")
    await opened.open()
    yield opened
    await opened.close()


def test_the_private_names_exist() -> None:
    assert inspect.iscoroutinefunction(getattr(aiosqlite.Connection, "_execute", None)), (
        f"aiosqlite {aiosqlite.__version__}: Connection._execute is gone or no longer a "
        f"coroutine function (reviewed: {REVIEWED})"
    )
    assert isinstance(getattr(aiosqlite.Connection, "_conn", None), property), (
        f"aiosqlite {aiosqlite.__version__}: Connection._conn is no longer a property "
        f"(reviewed: {REVIEWED})"
    )
    parameters = list(inspect.signature(aiosqlite.Connection._execute).parameters.values())
    assert [p.kind for p in parameters[1:]] == [
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.VAR_POSITIONAL,
        inspect.Parameter.VAR_KEYWORD,
    ], f"aiosqlite {aiosqlite.__version__}: _execute is no longer (fn, *args, **kwargs)"


async def test_a_function_runs_on_the_connection_thread_with_the_connection(
    store: SQLiteStore,
) -> None:
    # A SQL function registered through the public API runs on the connection's thread:
    # the function run through the private call must see that same thread and connection.
    sql_thread: list[int] = []

    def record_thread() -> int:
        sql_thread.append(threading.get_ident())
        return 1

    await store.db.create_function("record_thread", 0, record_thread)
    async with store.db.execute("SELECT record_thread()") as cursor:
        await cursor.fetchone()

    def probe(conn: sqlite3.Connection, arg: str) -> tuple[int, str, bool]:
        (echo,) = conn.execute("SELECT ?", (arg,)).fetchone()
        return threading.get_ident(), echo, isinstance(conn, sqlite3.Connection)

    thread, echo, is_sqlite3 = await store._on_connection_thread(probe, "meow")
    assert is_sqlite3 and echo == "meow"
    assert thread == sql_thread[0] != threading.get_ident()


async def test_calls_run_in_the_order_they_were_queued(store: SQLiteStore) -> None:
    # The enqueue transaction relies on it: it runs after every statement queued before it.
    await store.db.execute("CREATE TEMP TABLE probe (n INTEGER)")
    inserts = [asyncio.ensure_future(store.db.execute("INSERT INTO probe VALUES (?)", (n,)))
               for n in range(20)]

    def count(conn: sqlite3.Connection, _: str) -> int:
        return int(conn.execute("SELECT COUNT(*) FROM probe").fetchone()[0])

    counted = asyncio.ensure_future(store._on_connection_thread(count, ""))
    await asyncio.gather(*inserts)
    assert await counted == 20


async def test_an_exception_in_the_function_reaches_the_caller(store: SQLiteStore) -> None:
    def fail(conn: sqlite3.Connection, arg: str) -> None:
        raise sqlite3.IntegrityError(arg)

    with pytest.raises(sqlite3.IntegrityError, match="refused"):
        await store._on_connection_thread(fail, "refused")
    # And the connection still serves the next call.
    assert await store._on_connection_thread(lambda conn, arg: arg, "next") == "next"


def test_the_private_api_is_used_in_one_function_only() -> None:
    source = Path(inspect.getfile(sqlite_module)).read_text(encoding="utf-8")
    users: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Attribute) and inner.attr in ("_execute", "_conn"):
                    users.add(node.name)
    assert users == {"_on_connection_thread"}
