"""PostgreSQL as a plant's server: URLs, the line PC's role, and a server that goes away.

The database operations themselves run on both backends in test_db.py; this file is
about what only a server has: a driver to install, roles with rights, connections
that are refused or lost, and a server that comes back.
"""

from __future__ import annotations

import builtins
import hashlib
import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError

from inspectd.db import DatabaseError, DatabaseUnavailableError, open_database
from inspectd.db.engine import postgres_connect_args, with_default_driver
from servers import OWNER_ROLE, PostgresDatabase, PostgresServer, free_port

DIGEST = hashlib.sha256(b"x").hexdigest()


def test_plain_postgresql_urls_use_psycopg_3(postgres_database: PostgresDatabase) -> None:
    plain = postgres_database.owner_url.replace("postgresql+psycopg://", "postgresql://")
    assert with_default_driver(plain).drivername == "postgresql+psycopg"
    assert with_default_driver(plain.replace("postgresql://", "postgres://")).drivername == "postgresql+psycopg"
    with open_database(plain) as db:
        item_id, created = db.add_item("/d/a.png", 1, 1, DIGEST, "part", "cam1")
        assert created and db.get_item(item_id).station == "cam1"
        with db.engine.connect() as connection:
            name = connection.execute(text("SELECT application_name FROM pg_stat_activity "
                                           "WHERE pid = pg_backend_pid()")).scalar_one()
    assert name.startswith("inspectd@")


def test_settings_in_the_url_win_over_the_defaults() -> None:
    args = postgres_connect_args(with_default_driver("postgresql://u@db/x?connect_timeout=20&sslmode=verify-full"))
    assert "connect_timeout" not in args and args["tcp_user_timeout"] > 0 and args["keepalives"] == 1


def test_a_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_psycopg(name: str, *args, **kwargs):
        if name == "psycopg":
            raise ImportError("No module named 'psycopg'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_psycopg)
    with pytest.raises(DatabaseError, match=r"inspectd\[postgresql\]"):
        open_database("postgresql://inspectd@127.0.0.1/inspectd")


def test_a_refused_connection_is_unavailable_and_fails_fast() -> None:
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError, match="refused"):
        open_database(f"postgresql://inspectd@127.0.0.1:{free_port()}/inspectd")
    assert time.monotonic() - started < 5


def test_the_line_role_reads_and_writes_rows_but_cannot_change_the_schema(
        postgres_database: PostgresDatabase) -> None:
    open_database(postgres_database.owner_url).close()  # the owner creates the schema
    with open_database(postgres_database.line_url, create=False) as line:
        item_id, _ = line.add_item("/d/a.png", 1, 1, DIGEST, "part", "cam1")
        (claimed,) = line.claim_pending(None, 5)
        line.record_result(claimed.id, raw_score=1.0, normalized_score=0.5, verdict="OK", model_version="v0001",
                           threshold=2.0, timings=None, heatmap_path=None, anomaly_map_path=None)
        line.add_review(item_id, "skip", "alice", verdict="OK", model_version="v0001", threshold=2.0)
        assert [r["item_id"] for r in line.query_results()] == [item_id]
        for statement in ("DROP TABLE reviews", "DELETE FROM results", "CREATE TABLE extra (id int)"):
            with pytest.raises(ProgrammingError, match="permission denied|must be owner"):
                with line.engine.begin() as connection:
                    connection.execute(text(statement))


def test_the_line_role_cannot_create_the_schema_and_says_who_can(postgres_database: PostgresDatabase) -> None:
    with pytest.raises(DatabaseError, match="permission denied.*owner.*inspectd db upgrade"):
        open_database(postgres_database.line_url)


def test_a_lost_server_is_unavailable_and_the_same_database_works_again_when_it_is_back() -> None:
    server = PostgresServer().start()
    try:
        name = server.create_database()
        with open_database(server.url(name, OWNER_ROLE)) as db:
            db.add_item("/d/a.png", 1, 1, DIGEST, "part", "cam1")
            server.halt()
            started = time.monotonic()
            with pytest.raises(DatabaseUnavailableError, match="unreachable"):
                db.add_item("/d/b.png", 1, 1, DIGEST, "part", "cam1")
            assert time.monotonic() - started < 10
            server.resume()
            item_id, created = db.add_item("/d/b.png", 1, 1, DIGEST, "part", "cam1")
            assert created and db.status_summary().counts == {"part": {"pending": 2}}
    finally:
        server.stop()
