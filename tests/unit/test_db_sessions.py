"""Database sessions (app.store.db) on the database the suite runs against: a write session
keeps nothing it did not commit; a read-only session on PostgreSQL runs in autocommit (no
BEGIN/ROLLBACK round trips; READ COMMITTED gives each statement its own snapshot either way)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from conftest import make_app


def _autocommit(conn: sa.Connection) -> bool:
    return bool(getattr(conn.connection.driver_connection, "autocommit", False))


def _count(db, rid: str) -> int:
    with db.session() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM resource WHERE rid = :r"), {"r": rid}).scalar_one())


def test_a_write_session_keeps_only_what_it_commits(tmp_path: Path) -> None:
    db = make_app(tmp_path, "sessions_write").extensions["fhirtwin"].db
    insert = sa.text("INSERT INTO resource (rtype, rid, version, lu, deleted) VALUES ('Patient', :r, 1, 0, false)")
    with db.session(write=True) as conn:
        assert not _autocommit(conn)
        conn.execute(insert, {"r": "left-open"})
    with db.session(write=True) as conn:
        conn.execute(insert, {"r": "committed"})
        conn.commit()
    assert _count(db, "left-open") == 0
    assert _count(db, "committed") == 1
    db.dispose()


def test_a_read_session_on_postgresql_runs_in_autocommit(tmp_path: Path) -> None:
    db = make_app(tmp_path, "sessions_read").extensions["fhirtwin"].db
    with db.session() as conn:
        conn.execute(sa.text("SELECT 1"))
        auto = _autocommit(conn)
        in_tx = conn.connection.driver_connection.info.transaction_status if not db.is_sqlite else None
    if db.is_sqlite:
        assert not auto
    else:
        import psycopg

        assert auto
        assert in_tx == psycopg.pq.TransactionStatus.IDLE  # no transaction was opened for the read
    # and the pooled connection goes back to transactions for the next writer
    with db.session(write=True) as conn:
        conn.execute(sa.text("SELECT 1"))
        assert not _autocommit(conn)
    db.dispose()
