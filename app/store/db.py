"""Engine and sessions. SQLite runs in WAL mode; a writing request takes the write lock up front
(BEGIN IMMEDIATE) so that check-then-write sequences such as conditional create cannot race."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event

from .models import Base

_write_intent: contextvars.ContextVar[bool] = contextvars.ContextVar("fhirtwin_write", default=False)


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 60}
        else:
            kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True)
        self.engine: Engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            _sqlite_setup(self.engine)

    def create_all(self) -> None:
        Base.metadata.create_all(self.engine)

    @contextmanager
    def session(self, write: bool = False) -> Iterator[Connection]:
        """A connection whose transaction the caller commits; rolled back if it is left open.
        Core only: the store writes set-based statements and reads rows, so no ORM unit of work."""
        token = _write_intent.set(write)
        conn = self.engine.connect()
        if not write and not self.is_sqlite:
            # Under READ COMMITTED every statement takes its own snapshot anyway, so a read-only
            # request sees the same in autocommit, without the BEGIN and ROLLBACK round trips.
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        try:
            yield conn
        finally:
            conn.close()  # rolls back whatever was not committed
            _write_intent.reset(token)

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN IMMEDIATE can be issued ourselves.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.execute("PRAGMA cache_size=-65536")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Straight to the driver: this runs on every request.
        conn.connection.driver_connection.execute("BEGIN IMMEDIATE" if _write_intent.get() else "BEGIN")


class Prepared:
    """A fixed statement of the hot path (token lookup, read by id), compiled once per dialect
    and run on the driver's own cursor: SQLAlchemy's per-execute work (compiled-cache lookup,
    execution context, result metadata) cost more than the indexed lookup itself. Rows come
    back as the driver returns them (SQLite booleans are 0/1)."""

    __slots__ = ("_compiled", "_stmt")

    def __init__(self, stmt: Any) -> None:
        self._stmt = stmt
        self._compiled: dict[str, tuple[str, tuple[str, ...] | None]] = {}

    def _sql(self, conn: Connection) -> tuple[str, tuple[str, ...] | None]:
        name = conn.dialect.name
        got = self._compiled.get(name)
        if got is None:
            c = self._stmt.compile(dialect=conn.dialect)
            got = (str(c), tuple(c.positiontup) if c.positional else None)
            self._compiled[name] = got
        return got

    def first(self, conn: Connection, params: dict[str, Any]) -> tuple[Any, ...] | None:
        sql, order = self._sql(conn)
        raw = conn.connection.driver_connection
        assert raw is not None
        cur = raw.cursor()
        try:
            cur.execute(sql, tuple(params[n] for n in order) if order is not None else params)
            row = cur.fetchone()
        finally:
            cur.close()
        return tuple(row) if row is not None else None
