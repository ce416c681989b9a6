"""The SQLite store's files hold DM texts: owner-only under any umask (issue 15, item 4).

Found world-readable: `catbot.db`, `-wal` and `-shm` were `rw-r--r--` under the usual umask
022. These tests write real events through the store under umask 022 and read the modes
back from the file system.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from catbot.models import InboundDM
from catbot.store.sqlite import SQLiteStore

USUAL_UMASK = 0o022
GROUP_OR_OTHER = stat.S_IRWXG | stat.S_IRWXO


@pytest.fixture
def usual_umask() -> Iterator[None]:
    previous = os.umask(USUAL_UMASK)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def event(n: int) -> InboundDM:
    return InboundDM(event_id=f"ev-{n}", sender_id="42", recipient_id="1000",
                     for_user_id="1000", text=f"a private message {n}", created_at=time.time())


async def write_through(store: SQLiteStore) -> None:
    """Real writes that leave the WAL and its index on disk while the store is open."""
    assert await store.enqueue([event(1), event(2)], now=time.time()) == [True, True]
    await store.check_writable()


def store_files(db: Path) -> list[Path]:
    return [db, *(db.with_name(db.name + s) for s in ("-wal", "-shm", ".lock"))]


async def test_new_store_files_and_directories_are_owner_only(
    tmp_path: Path, usual_umask: None
) -> None:
    db = tmp_path / "state" / "catbot" / "catbot.db"
    os.chmod(tmp_path, 0o755)
    store = SQLiteStore(db)
    await store.open()
    try:
        await write_through(store)
        files = store_files(db)
        assert all(f.exists() for f in files), [f.name for f in files if not f.exists()]
        assert db.with_name(db.name + "-wal").stat().st_size > 0, "nothing was written"
        modes = {f.name: oct(mode(f)) for f in files}
        assert all(mode(f) & GROUP_OR_OTHER == 0 for f in files), modes
        for directory in (db.parent, db.parent.parent):
            assert mode(directory) == 0o700, (directory, oct(mode(directory)))
    finally:
        await store.close()
    # A directory the daemon did not create is the operator's: left as it was.
    assert mode(tmp_path) == 0o755


async def test_an_existing_readable_store_is_tightened_and_said_so(
    tmp_path: Path, usual_umask: None
) -> None:
    # A store made the old way: plain sqlite3 under umask 022, WAL left behind as after a
    # crash (no checkpoint on close, so -wal and -shm stay on disk).
    db = tmp_path / "catbot.db"
    old = sqlite3.connect(db)
    old.execute("PRAGMA journal_mode=WAL")
    old.execute("CREATE TABLE t (x TEXT)")
    old.execute("INSERT INTO t VALUES ('an old private message')")
    old.commit()
    sidecars = [db.with_name(db.name + s) for s in ("-wal", "-shm")]
    assert all(mode(f) & stat.S_IROTH for f in [db, *sidecars]), "the set-up must be readable"
    # Keep the old connection open so its -wal and -shm stay while the store opens.
    store = SQLiteStore(db)
    try:
        with capture_logs() as logs:
            await store.open()
        await write_through(store)
        assert all(mode(f) & GROUP_OR_OTHER == 0 for f in store_files(db)), {
            f.name: oct(mode(f)) for f in store_files(db)
        }
        tightened = {e["path"] for e in logs if e["event"] == "store_file_mode_tightened"}
        assert str(db) in tightened, logs
    finally:
        await store.close()
        old.close()
