"""The batch manifest: one SQLite file (WAL) recording every item's state, durably.

One row per item in ``items``; one row per submission in ``submissions`` (an audit
trail: an item submitted twice shows twice). Every state change is its own
transaction, committed before the batch acts on it, with ``synchronous=FULL`` so a
commit survives a crash or power loss. The order that makes resuming safe:

1. ``pending`` → ``submitting`` (attempts + 1) is committed *before* ``router.submit``;
2. ``submitting`` → ``submitted`` (provider, provider request id, the whole
   :class:`~genrouter.types.JobHandle` as JSON) is committed *before* waiting;
3. ``submitted`` → ``succeeded`` (outputs written first) or ``failed``.

A row left ``submitted`` by a crash is re-attached by its handle; one left
``submitting`` was cut off mid-submit (the provider may or may not have the job).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any

from genrouter.errors import ConfigError
from genrouter.types import JobHandle

__all__ = ["SCHEMA_VERSION", "ItemRow", "ItemState", "Manifest"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    line INTEGER NOT NULL,
    request TEXT NOT NULL,
    state TEXT NOT NULL,
    provider TEXT,
    provider_request_id TEXT,
    handle TEXT,
    outputs TEXT NOT NULL DEFAULT '[]',
    cost_usd TEXT,
    latency_s REAL,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    submitted_at REAL,
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS submissions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    provider TEXT NOT NULL,
    provider_request_id TEXT NOT NULL,
    submitted_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS submissions_item ON submissions (item_id);
"""


class ItemState(StrEnum):
    """Where an item is; see the module docstring for the order of transitions."""

    PENDING = "pending"
    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ItemRow:
    """One item as the manifest holds it."""

    id: str
    line: int
    request: str
    state: ItemState
    provider: str | None
    provider_request_id: str | None
    handle: str | None
    outputs: list[str]
    cost_usd: Decimal | None
    latency_s: float | None
    error: str | None
    attempts: int
    submitted_at: float | None
    finished_at: float | None

    def job_handle(self) -> JobHandle | None:
        """The stored handle, to re-attach to the job without resubmitting."""
        return None if self.handle is None else JobHandle.model_validate_json(self.handle)


_SELECT = (
    "SELECT id, line, request, state, provider, provider_request_id, handle, outputs, cost_usd, latency_s, "
    "error, attempts, submitted_at, finished_at FROM items"
)


def _row(values: tuple[Any, ...]) -> ItemRow:
    (rid, line, request, state, provider, prid, handle, outputs, cost, latency, error, attempts, sub, fin) = (
        values
    )
    return ItemRow(
        id=rid,
        line=line,
        request=request,
        state=ItemState(state),
        provider=provider,
        provider_request_id=prid,
        handle=handle,
        outputs=list(json.loads(outputs or "[]")),
        cost_usd=None if cost is None else Decimal(cost),
        latency_s=latency,
        error=error,
        attempts=attempts,
        submitted_at=sub,
        finished_at=fin,
    )


class Manifest:
    """The SQLite manifest at ``path`` (created if missing). Use from one thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(path, isolation_level=None, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            with self._transaction():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"cannot open the batch manifest {path}: {exc}") from exc
        version = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if version is None or int(version[0]) != SCHEMA_VERSION:
            raise ConfigError(
                f"{path} was written by another genrouter version (schema {version and version[0]}); "
                "use a new --out directory"
            )

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def close(self) -> None:
        """Close the database (committed data is already on disk)."""
        self._db.close()

    # -- reads ---------------------------------------------------------------------------------

    def get(self, item_id: str) -> ItemRow | None:
        """The item's row, or None."""
        found = self._db.execute(_SELECT + " WHERE id = ?", (item_id,)).fetchone()
        return None if found is None else _row(found)

    def rows(self) -> list[ItemRow]:
        """Every item, in input line order."""
        return [_row(r) for r in self._db.execute(_SELECT + " ORDER BY line, id")]

    def spend(self) -> Decimal:
        """What succeeded items cost in all runs (unknown costs count as nothing)."""
        total = Decimal(0)
        for (cost,) in self._db.execute("SELECT cost_usd FROM items WHERE cost_usd IS NOT NULL"):
            total += Decimal(cost)
        return total

    def submissions(self, item_id: str | None = None) -> list[tuple[str, int, str, str]]:
        """``(item_id, attempt, provider, provider_request_id)`` of every submission, oldest first."""
        query = "SELECT item_id, attempt, provider, provider_request_id FROM submissions"
        if item_id is None:
            return list(self._db.execute(query + " ORDER BY seq"))
        return list(self._db.execute(query + " WHERE item_id = ? ORDER BY seq", (item_id,)))

    # -- transitions -------------------------------------------------------------------------------

    def add(self, item_id: str, line: int, request: str) -> None:
        """A new pending item."""
        now = time.time()
        with self._transaction():
            self._db.execute(
                "INSERT INTO items (id, line, request, state, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (item_id, line, request, ItemState.PENDING, now, now),
            )

    def reset(self, item_id: str, line: int, request: str) -> None:
        """Make a failed, interrupted or changed (never submitted) item pending with ``request``."""
        with self._transaction():
            self._db.execute(
                "UPDATE items SET line = ?, request = ?, state = ?, updated_at = ? WHERE id = ?",
                (line, request, ItemState.PENDING, time.time(), item_id),
            )

    def mark_submitting(self, item_id: str) -> int:
        """Committed before submitting; returns the item's attempt number."""
        with self._transaction():
            self._db.execute(
                "UPDATE items SET state = ?, attempts = attempts + 1, error = NULL, updated_at = ? "
                "WHERE id = ?",
                (ItemState.SUBMITTING, time.time(), item_id),
            )
            (attempts,) = self._db.execute("SELECT attempts FROM items WHERE id = ?", (item_id,)).fetchone()
        return int(attempts)

    def mark_submitted(self, item_id: str, attempt: int, handle: JobHandle) -> None:
        """Committed after the provider accepted the job and before waiting on it."""
        now = time.time()
        with self._transaction():
            self._db.execute(
                "UPDATE items SET state = ?, provider = ?, provider_request_id = ?, handle = ?, "
                "outputs = '[]', cost_usd = NULL, latency_s = NULL, submitted_at = ?, updated_at = ? "
                "WHERE id = ?",
                (
                    ItemState.SUBMITTED,
                    handle.provider,
                    handle.provider_request_id,
                    handle.model_dump_json(),
                    now,
                    now,
                    item_id,
                ),
            )
            for job in handle.jobs:
                self._db.execute(
                    "INSERT INTO submissions (item_id, attempt, provider, provider_request_id, submitted_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (item_id, attempt, job.provider, job.provider_request_id, now),
                )

    def mark_succeeded(
        self, item_id: str, outputs: list[str], cost_usd: Decimal | None, latency_s: float | None
    ) -> None:
        """Committed once every output file is written."""
        now = time.time()
        with self._transaction():
            self._db.execute(
                "UPDATE items SET state = ?, outputs = ?, cost_usd = ?, latency_s = ?, error = NULL, "
                "finished_at = ?, updated_at = ? WHERE id = ?",
                (
                    ItemState.SUCCEEDED,
                    json.dumps(outputs),
                    None if cost_usd is None else str(cost_usd),
                    latency_s,
                    now,
                    now,
                    item_id,
                ),
            )

    def mark_failed(self, item_id: str, error: str, latency_s: float | None = None) -> None:
        """The job (or its submission) failed; the next run retries it."""
        now = time.time()
        with self._transaction():
            self._db.execute(
                "UPDATE items SET state = ?, error = ?, latency_s = ?, finished_at = ?, updated_at = ? "
                "WHERE id = ?",
                (ItemState.FAILED, error, latency_s, now, now, item_id),
            )

    def note(self, item_id: str, error: str) -> None:
        """Record why an item is still unfinished without changing its state."""
        with self._transaction():
            self._db.execute(
                "UPDATE items SET error = ?, updated_at = ? WHERE id = ?", (error, time.time(), item_id)
            )


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
