"""The embedded store: one SQLite file in WAL mode, owned by one process.

The owning process holds an exclusive lock on `<db>.lock` for its lifetime, so claims left by
a previous (crashed) run can be handed back at start-up instead of waiting out their lease.
All writes go through one connection, serialised by an asyncio lock so that the statements
of one transaction never interleave with another coroutine's.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import secrets
import sqlite3
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any, TypeVar, cast

import aiosqlite
import orjson

from catbot.logs import get_logger
from catbot.models import DeadLetter, InboundDM, Job, PendingJob, UserState
from catbot.store.base import StoreError
from catbot.store.group_commit import Call, GroupCommit

log = get_logger("catbot.store")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events_seen (
    event_id TEXT PRIMARY KEY,
    seen_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_seen_at ON events_seen (seen_at);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    enqueued_at REAL NOT NULL,
    available_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    claim_token TEXT,
    lease_until REAL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS jobs_user ON jobs (user_id, id);
CREATE TABLE IF NOT EXISTS users (
    user_id TEXT PRIMARY KEY,
    opted_out INTEGER NOT NULL DEFAULT 0,
    last_fact_at REAL,
    day TEXT NOT NULL DEFAULT '',
    replies_today INTEGER NOT NULL DEFAULT 0,
    seen_facts TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- X Chat conversation keys, one sealed blob per conversation (secrets: never read but to
-- load them into the daemon's keyring).
CREATE TABLE IF NOT EXISTS xchat_keys (
    conversation_id TEXT PRIMARY KEY,
    sealed BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    payload TEXT NOT NULL,
    failed_at REAL NOT NULL
);
"""

# The enqueue transaction's scratch table: private to the connection, in memory, empty
# between transactions (a rolled-back batch leaves nothing in it either).
_SCRATCH = """
PRAGMA temp_store = MEMORY;
CREATE TEMP TABLE IF NOT EXISTS incoming (
    k INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    at REAL NOT NULL
);
"""

# Group commit: at most this many events per enqueue transaction.
_GROUP_COMMIT_MAX_EVENTS = 2000

_T = TypeVar("_T")

# Only the oldest job of each user is claimable, and only while none of that user's jobs is
# leased: one user's messages are answered in order, one at a time.
_CLAIM = """
UPDATE jobs SET claim_token = :token, lease_until = :lease_until, attempts = attempts + 1
WHERE id = (
    SELECT j.id FROM jobs AS j
    WHERE j.available_at <= :now
      AND (j.lease_until IS NULL OR j.lease_until < :now)
      AND j.id = (SELECT MIN(k.id) FROM jobs AS k WHERE k.user_id = j.user_id)
    ORDER BY j.id
    LIMIT 1
)
RETURNING id, payload, attempts, enqueued_at
"""


# The database and its WAL hold DM texts: owner-only, whatever the umask. SQLite gives the
# -wal and -shm files it creates the mode of the database file, so the database is made
# first, with this mode, before SQLite opens it.
_FILE_MODE = 0o600
_DIR_MODE = 0o700


def _make_private_dirs(directory: Path) -> None:
    """Create the missing directories up to `directory`, each owner-only (an existing one is
    the operator's choice and left as it is)."""
    missing: list[Path] = []
    for candidate in (directory, *directory.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    for new in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            new.mkdir(mode=_DIR_MODE)
        # mkdir's mode goes through the umask, which may be stricter or odd: say it exactly.
        os.chmod(new, _DIR_MODE)


def _make_private_file(path: Path) -> None:
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE))
    except FileExistsError:
        _tighten(path)
        return
    os.chmod(path, _FILE_MODE)


def _tighten(path: Path) -> None:
    """An existing store file readable by others (made by an older catbot, or by hand under
    a usual umask) becomes owner-only when we own it; otherwise a warning says so."""
    try:
        status = path.stat()
    except FileNotFoundError:
        return
    wider = stat.S_IMODE(status.st_mode) & ~_FILE_MODE
    if not wider:
        return
    mode = oct(stat.S_IMODE(status.st_mode))
    if status.st_uid != os.geteuid():
        log.warning("store_file_readable_by_others", path=str(path), mode=mode,
                    hint="make it owner-only: chmod 600")
        return
    os.chmod(path, stat.S_IMODE(status.st_mode) & _FILE_MODE)
    log.warning("store_file_mode_tightened", path=str(path), mode_was=mode, mode="0o600")


class SQLiteStore:
    # One daemon owns the file (see `_take_ownership`): its start-up hands back old claims.
    single_owner = True

    def __init__(self, path: str | os.PathLike[str], owner: bool = True) -> None:
        """`owner=False` opens the file beside its daemon (for operator commands): no lock,
        and the caller must not claim jobs."""
        self.path = Path(path)
        self.owner = owner
        self._db: aiosqlite.Connection | None = None
        self._lock_file: IO[bytes] | None = None
        self._write = asyncio.Lock()
        self.group_commit = GroupCommit(self._enqueue_batch, _GROUP_COMMIT_MAX_EVENTS)

    # Lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            _make_private_dirs(self.path.parent)
            _make_private_file(self.path)
            for sidecar in ("-wal", "-shm"):
                _tighten(self.path.with_name(self.path.name + sidecar))
        except OSError as exc:
            raise StoreError(f"cannot use SQLite store {self.path}: {exc}") from None
        if self.owner:
            self._take_ownership()
        try:
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
            await self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: an event acknowledged to X survives a power cut, not only a crash.
            await self._db.execute("PRAGMA synchronous=FULL")
            await self._db.execute("PRAGMA busy_timeout=5000")
            await self._db.executescript(_SCHEMA)
            await self._db.executescript(_SCRATCH)
        except Exception as exc:
            await self.close()
            raise StoreError(f"cannot open SQLite store {self.path}: {exc}") from exc

    def _take_ownership(self) -> None:
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            # Held open for the process lifetime; owner-only like the database beside it.
            handle = os.fdopen(os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                                       _FILE_MODE), "ab")
        except OSError as exc:
            raise StoreError(f"cannot use SQLite store {self.path}: {exc}") from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise StoreError(
                f"another catbot process owns {self.path} (lock {lock_path}); "
                "SQLite supports one daemon at a time, use a Redis store for several"
            ) from None
        self._lock_file = handle

    async def close(self) -> None:
        await self.group_commit.drain()
        if self._db is not None:
            await self._db.close()
            self._db = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("store is not open")
        return self._db

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._write:
            db = self.db
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                await db.execute("COMMIT")
            except BaseException:
                # Also after a failed COMMIT (a full disk): SQLite leaves that transaction
                # open, and every later BEGIN would fail until it is rolled back.
                if db.in_transaction:
                    # A cancelled COMMIT may still finish on the connection's thread before
                    # this ROLLBACK runs there: then there is nothing to roll back, and the
                    # cancellation (or the first error) is what must propagate.
                    with contextlib.suppress(sqlite3.OperationalError):
                        await db.execute("ROLLBACK")
                raise

    async def ping(self) -> None:
        async with self.db.execute("SELECT 1") as cursor:
            await cursor.fetchone()

    async def check_writable(self) -> None:
        # A real committed write: a full disk or a read-only file fails here, not silently.
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO meta (key, value) VALUES ('heartbeat', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(time.time()),),
            )

    # Queue --------------------------------------------------------------------------------

    async def enqueue(
        self, events: Sequence[InboundDM], now: float, time_limit: float | None = None
    ) -> list[bool]:
        """Group commit: concurrent enqueues share one transaction (one fsync).

        A call returns only after the transaction holding its events committed (WAL,
        synchronous=FULL), exactly as if it had its own; calls arriving while a commit is in
        flight wait for the next one, which takes all of them together.
        """
        return await self.group_commit.submit(events, now, time_limit)

    async def _on_connection_thread(
        self, fn: Callable[[sqlite3.Connection, str], _T], arg: str
    ) -> _T:
        """Run `fn(connection, arg)` on aiosqlite's connection thread, in its queue order.

        The one place the store uses aiosqlite's private API: a whole enqueue transaction
        must be one trip to that thread (see `_enqueue_batch`), and aiosqlite (0.22.1,
        pinned in constraints.txt) has no public call that runs a function there; its
        public methods are each one statement, one trip. `_execute(fn, *args)` queues
        `fn(*args)` behind every earlier call and `_conn` is the `sqlite3.Connection`;
        tests/test_aiosqlite_private.py fails first if a new aiosqlite changes either.
        """
        db = self.db
        run = cast(Callable[..., Awaitable[_T]], db._execute)
        return await run(fn, db._conn, arg)

    async def _enqueue_batch(self, batch: Sequence[Call]) -> list[list[bool]]:
        rows = [(event.event_id, event.sender_id, event.to_json(), now)
                for events, now in batch for event in events]
        async with self._write:
            # The whole transaction is one trip to the connection's thread, with the rows as
            # one JSON array that SQLite unpacks (json_each): a trip per statement, or a
            # statement per row, waits behind the busy event loop (and its GIL) every time.
            seen = await self._on_connection_thread(_enqueue_transaction,
                                                     orjson.dumps(rows).decode())
        flags: list[list[bool]] = []
        for events, _ in batch:
            flags.append([])
            for event in events:
                # A repeated id, seen before or earlier in this batch: only the first is new.
                is_new = event.event_id not in seen
                if is_new:
                    seen.add(event.event_id)
                flags[-1].append(is_new)
        return flags

    async def claim(self, now: float, lease_seconds: float) -> Job | None:
        token = secrets.token_hex(8)
        async with self._transaction() as db:
            params = {"token": token, "lease_until": now + lease_seconds, "now": now}
            async with db.execute(_CLAIM, params) as cursor:
                row = await cursor.fetchone()
        if row is None:
            return None
        job_id, payload, attempts, enqueued_at = row
        event = InboundDM.from_json(payload)
        return Job(int(job_id), event, int(attempts), token, float(enqueued_at))

    async def extend(self, job: Job, now: float, lease_seconds: float) -> bool:
        return await self._update_claimed(
            job, "UPDATE jobs SET lease_until = ? WHERE id = ? AND claim_token = ?",
            (now + lease_seconds,),
        )

    async def complete(self, job: Job, state: UserState | None) -> bool:
        async with self._transaction() as db:
            cursor = await db.execute(
                "DELETE FROM jobs WHERE id = ? AND claim_token = ?", (job.job_id, job.claim_token)
            )
            owned = cursor.rowcount == 1
            if owned and state is not None:
                await _save_user(db, state)
        return owned

    async def save_reply(self, job: Job, event: InboundDM) -> bool:
        return await self._update_claimed(
            job, "UPDATE jobs SET payload = ? WHERE id = ? AND claim_token = ?",
            (event.to_json(),),
        )

    async def release(self, job: Job, not_before: float, error: str) -> bool:
        return await self._update_claimed(
            job,
            "UPDATE jobs SET claim_token = NULL, lease_until = NULL, available_at = ?,"
            " last_error = ? WHERE id = ? AND claim_token = ?",
            (not_before, error[:500]),
        )

    async def dead_letter(
        self, job: Job, reason: str, now: float, state: UserState | None
    ) -> bool:
        async with self._transaction() as db:
            cursor = await db.execute(
                "DELETE FROM jobs WHERE id = ? AND claim_token = ?", (job.job_id, job.claim_token)
            )
            owned = cursor.rowcount == 1
            if owned:
                await db.execute(
                    "INSERT INTO dead_letters (event_id, user_id, reason, payload, failed_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (job.event.event_id, job.event.sender_id, reason[:500],
                     job.event.to_json(), now),
                )
                if state is not None:
                    await _save_user(db, state)
        return owned

    async def _update_claimed(self, job: Job, sql: str, values: tuple[Any, ...]) -> bool:
        async with self._transaction() as db:
            cursor = await db.execute(sql, (*values, job.job_id, job.claim_token))
            return cursor.rowcount == 1

    async def release_all_claims(self) -> int:
        async with self._transaction() as db:
            cursor = await db.execute(
                "UPDATE jobs SET claim_token = NULL, lease_until = NULL"
                " WHERE claim_token IS NOT NULL"
            )
            return cursor.rowcount

    def shared_send_budget(self, family: str) -> None:
        # One daemon owns the file, so it is the account's only sender: its own memory
        # counts every send, with no store round trip per reply.
        return None

    async def depth(self) -> int:
        async with self.db.execute("SELECT COUNT(*) FROM jobs") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        async with self.db.execute(
            "SELECT event_id, user_id, reason, failed_at FROM dead_letters"
            " ORDER BY id DESC LIMIT ?",
            (limit,),
        ) as cursor:
            rows = await cursor.fetchall()
        return [DeadLetter(str(r[0]), str(r[1]), str(r[2]), float(r[3])) for r in rows]

    async def pending(self, limit: int = 100) -> list[PendingJob]:
        async with self.db.execute(
            "SELECT event_id, user_id, attempts, enqueued_at, available_at,"
            " claim_token IS NOT NULL, last_error FROM jobs ORDER BY id LIMIT ?",
            (limit,),
        ) as cursor:
            rows = await cursor.fetchall()
        return [
            PendingJob(str(r[0]), str(r[1]), int(r[2]), float(r[3]), float(r[4]), bool(r[5]),
                       None if r[6] is None else str(r[6]))
            for r in rows
        ]

    async def retry_dead_letters(self, event_ids: Sequence[str] | None, now: float) -> int:
        where = ""
        params: tuple[str, ...] = ()
        if event_ids is not None:
            where = f" WHERE event_id IN ({', '.join('?' * len(event_ids))})"
            params = tuple(event_ids)
            if not event_ids:
                return 0
        async with self._transaction() as db:
            async with db.execute(
                f"SELECT id, event_id, user_id, payload FROM dead_letters{where}", params
            ) as cursor:
                rows = list(await cursor.fetchall())
            for dead_id, event_id, user_id, payload in rows:
                await db.execute(
                    "INSERT OR IGNORE INTO jobs (event_id, user_id, payload, enqueued_at,"
                    " available_at) VALUES (?, ?, ?, ?, ?)",
                    (event_id, user_id, payload, now, now),
                )
                await db.execute("DELETE FROM dead_letters WHERE id = ?", (dead_id,))
        return len(rows)

    async def prune(self, seen_before: float) -> int:
        async with self._transaction() as db:
            # An id whose job is still queued stays: forgetting it would let a redelivery in.
            cursor = await db.execute(
                "DELETE FROM events_seen WHERE seen_at < ?"
                " AND event_id NOT IN (SELECT event_id FROM jobs)",
                (seen_before,),
            )
            return cursor.rowcount

    # X Chat keys ---------------------------------------------------------------------------

    async def save_conversation_keys(self, sealed: Mapping[str, bytes]) -> None:
        if not sealed:
            return
        async with self._transaction() as db:
            await db.executemany(
                "INSERT INTO xchat_keys (conversation_id, sealed) VALUES (?, ?)"
                " ON CONFLICT (conversation_id) DO UPDATE SET sealed = excluded.sealed",
                [(cid, bytes(blob)) for cid, blob in sealed.items()],
            )

    async def load_conversation_keys(
        self, conversation_ids: Sequence[str] | None = None
    ) -> dict[str, bytes]:
        params: tuple[str, ...] = ()
        if conversation_ids is None:
            sql = "SELECT conversation_id, sealed FROM xchat_keys"
        elif not conversation_ids:
            return {}
        else:
            sql = ("SELECT conversation_id, sealed FROM xchat_keys WHERE conversation_id IN"
                   f" ({', '.join('?' * len(conversation_ids))})")
            params = tuple(conversation_ids)
        async with self.db.execute(sql, params) as cursor:
            rows = await cursor.fetchall()
        return {str(cid): bytes(blob) for cid, blob in rows}

    # Users --------------------------------------------------------------------------------

    async def get_user(self, user_id: str) -> UserState:
        async with self.db.execute(
            "SELECT opted_out, last_fact_at, day, replies_today, seen_facts FROM users"
            " WHERE user_id = ?",
            (user_id,),
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return UserState(user_id)
        opted_out, last_fact_at, day, replies_today, seen = row
        return UserState(
            user_id=user_id,
            opted_out=bool(opted_out),
            last_fact_at=None if last_fact_at is None else float(last_fact_at),
            day=str(day),
            replies_today=int(replies_today),
            seen_facts=frozenset(json.loads(seen)),
        )


def _enqueue_transaction(conn: sqlite3.Connection, rows_json: str) -> set[str]:
    """Dedupe and queue a batch in one transaction; returns the ids that were seen before.

    Runs on the connection's thread. A job is queued for the first occurrence of each id
    not seen before; job ids follow the batch order (ORDER BY k), which is each user's
    reply order.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Each row's JSON is read once, into a scratch table the statements below share.
        conn.execute(
            "INSERT INTO temp.incoming (k, event_id, user_id, payload, at)"
            " SELECT key, json_extract(value, '$[0]'), json_extract(value, '$[1]'),"
            " json_extract(value, '$[2]'), json_extract(value, '$[3]') FROM json_each(?)",
            (rows_json,),
        )
        (seen,) = conn.execute(
            "SELECT json_group_array(event_id) FROM temp.incoming"
            " JOIN events_seen USING (event_id)"
        ).fetchone()
        conn.execute(
            "INSERT OR IGNORE INTO jobs (event_id, user_id, payload, enqueued_at, available_at)"
            " SELECT event_id, user_id, payload, at, at FROM temp.incoming AS i"
            " WHERE NOT EXISTS (SELECT 1 FROM events_seen AS s WHERE s.event_id = i.event_id)"
            " ORDER BY k"
        )
        conn.execute(
            "INSERT OR IGNORE INTO events_seen (event_id, seen_at)"
            " SELECT event_id, at FROM temp.incoming ORDER BY k"
        )
        conn.execute("DELETE FROM temp.incoming")
        conn.execute("COMMIT")
    except BaseException:
        # Also after a failed COMMIT (a full disk): see `_transaction`.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return set(json.loads(seen))


async def _save_user(db: aiosqlite.Connection, state: UserState) -> None:
    await db.execute(
        "INSERT INTO users (user_id, opted_out, last_fact_at, day, replies_today, seen_facts)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET"
        " opted_out = excluded.opted_out, last_fact_at = excluded.last_fact_at,"
        " day = excluded.day, replies_today = excluded.replies_today,"
        " seen_facts = excluded.seen_facts",
        (state.user_id, int(state.opted_out), state.last_fact_at, state.day,
         state.replies_today, json.dumps(sorted(state.seen_facts))),
    )
