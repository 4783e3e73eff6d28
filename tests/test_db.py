"""Database layer tests on real SQLite files (and PostgreSQL when
INSPECTD_TEST_POSTGRES_URL names a scratch database: its public schema is wiped)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.schema import CreateIndex, CreateTable

import inspectd
from inspectd.db import (
    DECISION_CONFIRM_DEFECT,
    DECISION_OVERRULE,
    DECISION_SKIP,
    DECISION_UNDO,
    MIGRATIONS,
    RESULT_EXPORT_FIELDS,
    SCHEMA_VERSION,
    STATE_DONE,
    STATE_ERROR,
    STATE_PENDING,
    STATE_SCORING,
    VERDICT_ERROR,
    VERDICT_NG,
    VERDICT_OK,
    Database,
    DatabaseBusyError,
    DatabaseError,
    DuplicateResultError,
    InvalidReviewError,
    InvalidValueError,
    Migration,
    RetryPolicy,
    SchemaVersionError,
    UnknownItemError,
    create_db_engine,
    ensure_schema,
    open_database,
    retry_on_busy,
)
from inspectd.db.migrations import plan_upgrade, read_schema_version
from inspectd.db.schema import Base, Result, Review

T0 = datetime(2024, 5, 1, 8, 0, tzinfo=timezone.utc)
POSTGRES_URL = os.environ.get("INSPECTD_TEST_POSTGRES_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if POSTGRES_URL else [])
REPO_ROOT = Path(inspectd.__file__).resolve().parents[1]


# --- fixtures and helpers ---------------------------------------------------------


@pytest.fixture()
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'inspectd.db'}"


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    if request.param == "sqlite":
        return sqlite_url
    assert POSTGRES_URL is not None
    engine = create_engine(POSTGRES_URL)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return POSTGRES_URL


@pytest.fixture()
def db(db_url: str) -> Iterator[Database]:
    with open_database(db_url) as database:
        yield database


def add(
    db: Database,
    name: str,
    *,
    content: str | None = None,
    product: str = "bearing",
    station: str = "st1",
    size: int = 100,
    mtime_ns: int = 1,
    at: datetime | None = None,
) -> int:
    """Add /lines/<product>/<name>; returns the item id."""
    digest = hashlib.sha256((content or name).encode()).hexdigest()
    item_id, _ = db.add_item(f"/lines/{product}/{name}", size, mtime_ns, digest, product, station, discovered_at=at)
    return item_id


def score(db: Database, item_id: int, verdict: str = VERDICT_OK, *, normalized: float = 0.5,
          at: datetime | None = None) -> None:
    db.record_result(
        item_id, raw_score=normalized * 2.0, normalized_score=normalized, verdict=verdict,
        model_version="v0001", threshold=2.0, timings={"total_ms": 12.5},
        heatmap_path=f"/heat/{item_id}.png", anomaly_map_path=None, scored_at=at,
    )


def review(db: Database, item_id: int, decision: str, undoes: int | None = None, **extra: object) -> int:
    return db.add_review(
        item_id, decision, "alice", verdict=VERDICT_NG, model_version="v0001", threshold=2.0,
        undoes_review_id=undoes, **extra,
    )


def run_threads(count: int, target: Callable[[int], None]) -> None:
    """Run target(0..count-1) in threads started together; re-raise the first failure."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def body(index: int) -> None:
        try:
            barrier.wait()
            target(index)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors


def sqlite_path(url: str) -> str:
    return url.removeprefix("sqlite:///")


# --- schema, engine, pragmas --------------------------------------------------------


def test_fresh_database_gets_every_table_and_the_current_version(db: Database):
    with db.engine.connect() as connection:
        tables = set(inspect(connection).get_table_names())
        assert read_schema_version(connection) == SCHEMA_VERSION
    assert {"products", "model_versions", "items", "results", "reviews", "schema_info"} <= tables


def test_sqlite_pragmas_are_set_on_every_connection(tmp_path: Path):
    with open_database(f"sqlite:///{tmp_path / 'p.db'}", busy_timeout_ms=1234) as db:
        with db.engine.connect() as first, db.engine.connect() as second:
            for connection in (first, second):
                pragma = lambda name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()  # noqa: E731
                assert pragma("journal_mode") == "wal"
                assert pragma("foreign_keys") == 1
                assert pragma("busy_timeout") == 1234
                assert pragma("synchronous") == 1  # NORMAL


def test_default_busy_timeout_is_5000_ms(sqlite_url: str):
    with open_database(sqlite_url) as db, db.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000


def test_foreign_keys_are_enforced(db: Database):
    with pytest.raises(IntegrityError), Session(db.engine) as session, session.begin():
        session.add(Result(item_id=12345, verdict=VERDICT_OK, scored_at=T0))


def test_timestamps_are_stored_as_utc_and_read_back_aware(db: Database):
    cest = timezone(timedelta(hours=2))
    item_id = add(db, "a.png", at=datetime(2024, 5, 1, 10, 0, tzinfo=cest))
    discovered = db.get_item(item_id).discovered_at
    assert discovered == T0 and discovered.utcoffset() == timedelta(0)
    with pytest.raises(InvalidValueError, match="naive"):
        add(db, "b.png", at=datetime(2024, 5, 1, 10, 0))


def test_schema_compiles_for_postgresql():
    dialect = postgresql.dialect()
    ddl = "\n".join(
        [str(CreateTable(table).compile(dialect=dialect)) for table in Base.metadata.sorted_tables]
        + [str(CreateIndex(index).compile(dialect=dialect)) for table in Base.metadata.sorted_tables
           for index in table.indexes]
    )
    assert "TIMESTAMP WITH TIME ZONE" in ddl
    assert "UNIQUE (path, size, mtime_ns, ctime_ns, sha256)" in ddl
    assert "UNIQUE (item_id)" in ddl
    assert "AUTOINCREMENT" not in ddl.upper()


def test_indexes_cover_daemon_and_review_queue_filters(db: Database):
    with db.engine.connect() as connection:
        inspector = inspect(connection)
        leading = {table: {tuple(ix["column_names"]) for ix in inspector.get_indexes(table)}
                   for table in ("items", "results")}
    assert ("state", "product", "discovered_at", "id") in leading["items"]
    assert ("product", "station") in leading["items"]
    assert {("scored_at",), ("verdict", "scored_at"), ("normalized_score",)} <= leading["results"]


# --- add_item / known_identities -------------------------------------------------------


def test_add_item_is_idempotent_for_the_same_file(db: Database):
    digest = hashlib.sha256(b"image").hexdigest()
    first = db.add_item("/lines/a/img.png", 10, 111, digest, "bearing", "st1")
    again = db.add_item("/lines/a/img.png", 10, 111, digest, "bearing", "st1")
    assert first == (first[0], True)
    assert again == (first[0], False)
    assert db.status_summary().counts == {"bearing": {STATE_PENDING: 1}}


def test_same_name_with_other_content_or_mtime_is_a_new_item(db: Database):
    original = add(db, "img.png", content="v1", mtime_ns=1)
    rewritten = add(db, "img.png", content="v2", mtime_ns=2)
    touched = add(db, "img.png", content="v1", mtime_ns=3)
    assert len({original, rewritten, touched}) == 3
    item = db.get_item(rewritten)
    assert (item.file_name, item.state, item.attempts) == ("img.png", STATE_PENDING, 0)


def test_concurrent_add_of_the_same_file_creates_one_item(db_url: str):
    digest = hashlib.sha256(b"same").hexdigest()
    outcomes: list[tuple[int, bool]] = []
    databases = [open_database(db_url) for _ in range(6)]
    try:
        run_threads(6, lambda i: outcomes.append(databases[i].add_item("/x/a.png", 1, 1, digest, "p", "s")))
    finally:
        for database in databases:
            database.close()
    assert len({item_id for item_id, _ in outcomes}) == 1
    assert sum(created for _, created in outcomes) == 1


def test_known_identities_lists_recorded_path_size_mtime(db: Database):
    add(db, "a.png", size=10, mtime_ns=5)
    add(db, "a.png", content="new", size=11, mtime_ns=6)
    add(db, "b.png", size=12, mtime_ns=7)
    known = db.known_identities(["/lines/bearing/a.png", "/lines/bearing/unseen.png"])
    assert known == {("/lines/bearing/a.png", 10, 5, None, None), ("/lines/bearing/a.png", 11, 6, None, None)}
    assert db.known_identities([]) == set()


def test_add_item_rejects_a_malformed_hash(db: Database):
    with pytest.raises(InvalidValueError, match="sha256"):
        db.add_item("/x/a.png", 1, 1, "not-a-hash", "p", "s")


# --- claiming --------------------------------------------------------------------------


def test_claim_takes_oldest_pending_first_and_marks_scoring(db: Database):
    ids = [add(db, f"{n}.png", at=T0 + timedelta(seconds=10 - n)) for n in range(4)]  # ids[3] is oldest
    add(db, "other.png", product="gear", at=T0 - timedelta(days=1))
    claimed = db.claim_pending("bearing", 2)
    assert [item.id for item in claimed] == [ids[3], ids[2]]
    assert all(item.state == STATE_SCORING and item.attempts == 1 and item.claimed_at for item in claimed)
    assert db.get_item(ids[0]).state == STATE_PENDING
    assert [item.product for item in db.claim_pending(None, 10)] == ["gear", "bearing", "bearing"]
    assert db.claim_pending(None, 10) == []


def test_concurrent_workers_never_claim_the_same_item(db_url: str, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING, logger="inspectd.db.retry")
    with open_database(db_url) as setup:
        all_ids = {add(setup, f"{n}.png", at=T0 + timedelta(milliseconds=n)) for n in range(120)}
    claims: list[list[int]] = [[] for _ in range(4)]
    workers = [open_database(db_url) for _ in range(4)]

    def work(index: int) -> None:
        while batch := workers[index].claim_pending(None, 5):
            claims[index].extend(item.id for item in batch)

    try:
        run_threads(4, work)
        flat = [item_id for batch in claims for item_id in batch]
        assert len(flat) == len(set(flat)), "an item was claimed twice"
        assert set(flat) == all_ids
        assert workers[0].status_summary().counts == {"bearing": {STATE_SCORING: 120}}
        assert {workers[0].get_item(item_id).attempts for item_id in all_ids} == {1}
        # Writers queue on the lock (BEGIN IMMEDIATE + busy_timeout) instead of failing and retrying.
        assert not [r for r in caplog.records if "database locked" in r.getMessage()]
    finally:
        for worker in workers:
            worker.close()


# --- crash recovery and shutdown ---------------------------------------------------


def test_items_left_scoring_by_a_crash_are_requeued(db_url: str):
    with open_database(db_url) as before_crash:
        ids = [add(before_crash, f"{n}.png") for n in range(3)]
        before_crash.claim_pending(None, 10)  # then the process dies
    with open_database(db_url) as after_restart:
        assert after_restart.requeue_interrupted(max_attempts=3) == (3, 0)
        items = [after_restart.get_item(item_id) for item_id in ids]
        assert {(item.state, item.attempts, item.claimed_at) for item in items} == {(STATE_PENDING, 1, None)}
        assert [item.attempts for item in after_restart.claim_pending(None, 10)] == [2, 2, 2]


def test_poison_item_goes_to_error_after_max_attempts(db: Database):
    poison = add(db, "poison.png")
    for attempt in (1, 2):
        assert [item.id for item in db.claim_pending(None, 1)] == [poison]
        assert db.requeue_interrupted(max_attempts=3) == (1, 0), f"attempt {attempt}"
    db.claim_pending(None, 1)
    assert db.requeue_interrupted(max_attempts=3) == (0, 1)
    item = db.get_item(poison)
    assert item.state == STATE_ERROR and "3 attempt" in item.last_error
    [row] = db.query_results()
    assert row["verdict"] == VERDICT_ERROR and row["item_id"] == poison
    assert db.claim_pending(None, 10) == []
    assert db.requeue_interrupted(max_attempts=3) == (0, 0)


def test_return_to_pending_gives_back_the_claim(db: Database):
    ids = [add(db, f"{n}.png") for n in range(3)]
    db.claim_pending(None, 2)
    assert db.return_to_pending(ids) == 2  # ids[2] was never claimed
    assert {(db.get_item(i).state, db.get_item(i).attempts) for i in ids} == {(STATE_PENDING, 0)}
    assert db.return_to_pending([]) == 0


# --- results ------------------------------------------------------------------------


def test_record_result_marks_done_and_a_second_result_is_refused(db: Database):
    item_id = add(db, "a.png")
    db.claim_pending(None, 1)
    score(db, item_id, VERDICT_NG, normalized=1.7)
    assert db.get_item(item_id).state == STATE_DONE
    with pytest.raises(DuplicateResultError, match=f"item {item_id} .*already has a result"):
        score(db, item_id, VERDICT_OK, normalized=0.1)
    with pytest.raises(DuplicateResultError):
        db.record_error(item_id, "late failure")
    [row] = db.query_results()
    assert (row["verdict"], row["normalized_score"], row["error"]) == (VERDICT_NG, 1.7, None)
    assert db.get_item(item_id).state == STATE_DONE


def test_concurrent_results_for_one_item_store_exactly_one(db_url: str):
    with open_database(db_url) as setup:
        item_id = add(setup, "a.png")
    writers = [open_database(db_url) for _ in range(4)]
    outcomes: list[str] = []

    def write(index: int) -> None:
        try:
            score(writers[index], item_id, normalized=index / 10)
            outcomes.append("stored")
        except DuplicateResultError:
            outcomes.append("refused")

    try:
        run_threads(4, write)
        assert sorted(outcomes) == ["refused", "refused", "refused", "stored"]
        assert len(writers[0].query_results()) == 1
    finally:
        for writer in writers:
            writer.close()


def test_results_table_itself_refuses_a_second_row(db: Database):
    item_id = add(db, "a.png")
    score(db, item_id)
    with pytest.raises(IntegrityError), Session(db.engine) as session, session.begin():
        session.add(Result(item_id=item_id, verdict=VERDICT_OK, scored_at=T0))


def test_record_error_marks_error_with_message(db: Database):
    item_id = add(db, "broken.png")
    db.record_error(item_id, "cannot decode PNG")
    item = db.get_item(item_id)
    assert (item.state, item.last_error) == (STATE_ERROR, "cannot decode PNG")
    [row] = db.query_results(verdict=VERDICT_ERROR)
    assert row["error"] == "cannot decode PNG" and row["normalized_score"] is None


def test_record_result_validates_item_and_verdict(db: Database):
    with pytest.raises(UnknownItemError, match="999"):
        score(db, 999)
    item_id = add(db, "a.png")
    with pytest.raises(InvalidValueError, match="verdict"):
        score(db, item_id, "MAYBE")
    with pytest.raises(InvalidValueError):
        score(db, item_id, VERDICT_ERROR)  # errors go through record_error
    assert db.get_item(item_id).state == STATE_PENDING
    assert db.query_results() == []


# --- model versions -----------------------------------------------------------------


def test_register_model_version_upserts_product_and_version(db: Database):
    first = db.register_model_version("bearing", "v0001", path="/m/1", threshold=2.0, bank_size=100,
                                      backbone="wide_resnet50_2", metadata={"alpha": 0.01})
    again = db.register_model_version("bearing", "v0001", path="/m/1b", threshold=2.5, bank_size=120,
                                      backbone="wide_resnet50_2")
    db.register_model_version("bearing", "v0002", path="/m/2", threshold=3.0, bank_size=90, backbone="wrn")
    assert first == again
    versions = db.list_model_versions("bearing")
    assert [(v.version, v.path, v.threshold, v.bank_size) for v in versions] == [
        ("v0001", "/m/1b", 2.5, 120), ("v0002", "/m/2", 3.0, 90)]
    assert db.list_model_versions("gear") == []


# --- reviews --------------------------------------------------------------------------


def test_reviews_are_append_only_and_undo_cancels_one_decision(db: Database):
    item_id = add(db, "a.png")
    score(db, item_id, VERDICT_NG)
    confirm = review(db, item_id, DECISION_CONFIRM_DEFECT, tag="scratch", comment="clear defect")
    first_snapshot = db.review_history(item_id)
    overrule = review(db, item_id, DECISION_OVERRULE)
    assert db.effective_review(item_id).id == overrule

    review(db, item_id, DECISION_UNDO, undoes=overrule)
    effective = db.effective_review(item_id)
    assert (effective.id, effective.decision, effective.tag) == (confirm, DECISION_CONFIRM_DEFECT, "scratch")

    review(db, item_id, DECISION_UNDO, undoes=confirm)
    assert db.effective_review(item_id) is None

    history = db.review_history(item_id)
    assert [r.decision for r in history] == [DECISION_CONFIRM_DEFECT, DECISION_OVERRULE, DECISION_UNDO, DECISION_UNDO]
    assert history[0] == first_snapshot[0], "an earlier review row was modified"


def test_invalid_reviews_are_refused(db: Database):
    item_id, other_id = add(db, "a.png"), add(db, "b.png")
    target = review(db, item_id, DECISION_CONFIRM_DEFECT)
    foreign = review(db, other_id, DECISION_SKIP)
    with pytest.raises(InvalidReviewError):
        review(db, item_id, DECISION_UNDO)  # undo without a target
    with pytest.raises(InvalidReviewError):
        review(db, item_id, DECISION_OVERRULE, undoes=target)  # target on a non-undo
    with pytest.raises(InvalidReviewError, match="does not exist for item"):
        review(db, item_id, DECISION_UNDO, undoes=foreign)
    undo = review(db, item_id, DECISION_UNDO, undoes=target)
    with pytest.raises(InvalidReviewError, match="already undone"):
        review(db, item_id, DECISION_UNDO, undoes=target)
    with pytest.raises(InvalidReviewError, match="itself an undo"):
        review(db, item_id, DECISION_UNDO, undoes=undo)
    with pytest.raises(InvalidValueError):
        review(db, item_id, "approve")
    with pytest.raises(UnknownItemError):
        review(db, 999, DECISION_SKIP)
    assert len(db.review_history(item_id)) == 2


def test_effective_reviews_in_one_batch(db: Database):
    a, b, c = (add(db, name) for name in ("a.png", "b.png", "c.png"))
    review(db, a, DECISION_CONFIRM_DEFECT)
    latest_a = review(db, a, DECISION_SKIP)
    undone_b = review(db, b, DECISION_OVERRULE)
    review(db, b, DECISION_UNDO, undoes=undone_b)
    only_c = review(db, c, DECISION_OVERRULE)
    effective = db.effective_reviews([a, b, c, 4242])
    assert {item: record.id for item, record in effective.items()} == {a: latest_a, c: only_c}
    assert db.effective_reviews([]) == {}


# --- reports --------------------------------------------------------------------------


def test_status_summary_counts_queue_recent_results_and_last_error(db: Database):
    now = datetime.now(timezone.utc)
    pending = add(db, "p.png")
    claimed = add(db, "c.png", at=T0)
    old, recent, broken = add(db, "o.png"), add(db, "r.png"), add(db, "x.png", product="gear")
    db.claim_pending("bearing", 1)
    score(db, old, at=now - timedelta(hours=3))
    score(db, recent, VERDICT_NG, at=now - timedelta(minutes=5))
    db.record_error(broken, "truncated JPEG")

    summary = db.status_summary()
    assert summary.counts == {"bearing": {STATE_PENDING: 1, STATE_SCORING: 1, STATE_DONE: 2},
                              "gear": {STATE_ERROR: 1}}
    assert summary.queue_depth == 2
    assert summary.results_since == 2  # recent + broken; old is 3 h ago
    assert summary.last_error.message == "truncated JPEG"
    assert summary.last_error.path == "/lines/gear/x.png"
    assert db.status_summary(since=now - timedelta(days=1)).results_since == 3
    assert {pending, claimed}.isdisjoint({row["item_id"] for row in db.query_results()})


def test_status_summary_of_an_empty_database(db: Database):
    summary = db.status_summary()
    assert (summary.counts, summary.queue_depth, summary.results_since, summary.last_error) == ({}, 0, 0, None)


def test_query_results_filters_orders_and_exports(db: Database):
    rows = [("bearing", "st1", VERDICT_OK), ("bearing", "st2", VERDICT_NG), ("gear", "st1", VERDICT_NG),
            ("bearing", "st1", VERDICT_NG), ("gear", "st2", VERDICT_OK)]
    ids = []
    for n, (product, station, verdict) in enumerate(rows):
        ids.append(add(db, f"{n}.png", product=product, station=station))
        score(db, ids[-1], verdict, at=T0 + timedelta(minutes=10 * (len(rows) - n)))  # scored in reverse order

    everything = db.query_results()
    assert [row["item_id"] for row in everything] == list(reversed(ids))
    assert tuple(everything[0]) == RESULT_EXPORT_FIELDS
    json.dumps(everything)  # plain, JSON-friendly values
    assert everything[0]["scored_at"] == (T0 + timedelta(minutes=10)).isoformat()

    def ids_of(**filters: object) -> set[int]:
        return {row["item_id"] for row in db.query_results(**filters)}

    assert ids_of(product="bearing") == {ids[0], ids[1], ids[3]}
    assert ids_of(verdict=VERDICT_NG) == {ids[1], ids[2], ids[3]}
    assert ids_of(product="bearing", station="st1", verdict=VERDICT_NG) == {ids[3]}
    assert ids_of(since=T0 + timedelta(minutes=20), until=T0 + timedelta(minutes=40)) == {ids[2], ids[3]}
    page = db.query_results(limit=2, offset=1)
    assert [row["item_id"] for row in page] == [ids[3], ids[2]]
    with pytest.raises(InvalidValueError):
        db.query_results(verdict="FINE")


# --- schema versions and migrations --------------------------------------------------


def _set_version(url: str, version: int) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE schema_info SET version = :v"), {"v": version})
    engine.dispose()


def test_a_newer_schema_is_refused_with_both_versions_named(db_url: str):
    open_database(db_url).close()
    _set_version(db_url, SCHEMA_VERSION + 1)
    with pytest.raises(SchemaVersionError) as caught:
        open_database(db_url)
    message = str(caught.value)
    assert f"schema version {SCHEMA_VERSION + 1}" in message
    assert f"version {SCHEMA_VERSION} supported" in message
    assert isinstance(caught.value, DatabaseError)


def _recording_step(version: int, calls: list[int]) -> Migration:
    def upgrade(connection) -> None:
        calls.append(version)
        connection.execute(text(f"CREATE TABLE migrated_{version} (id INTEGER PRIMARY KEY)"))

    return Migration(version, f"step {version}", upgrade)


def test_migration_runner_applies_steps_in_order(db_url: str):
    open_database(db_url).close()
    calls: list[int] = []
    first = SCHEMA_VERSION
    steps = [_recording_step(v, calls) for v in (first + 2, first, first + 1)]  # registry order does not matter
    engine = create_db_engine(db_url)
    try:
        assert ensure_schema(engine, target=first + 3, migrations=steps) == first + 3
        assert calls == [first, first + 1, first + 2]
        assert ensure_schema(engine, target=first + 3, migrations=steps) == first + 3
        assert calls == [first, first + 1, first + 2], "steps must not run twice"
        with engine.connect() as connection:
            assert read_schema_version(connection) == first + 3
            assert {f"migrated_{v}" for v in calls} <= set(inspect(connection).get_table_names())
    finally:
        engine.dispose()


def test_a_failing_step_leaves_the_previous_version(sqlite_url: str):
    open_database(sqlite_url).close()
    calls: list[int] = []

    def broken(connection) -> None:
        connection.execute(text("CREATE TABLE half_done (id INTEGER)"))
        raise RuntimeError("step 2 failed")

    first = SCHEMA_VERSION
    steps = [_recording_step(first, calls), Migration(first + 1, "broken", broken)]
    with open_database(sqlite_url) as db:
        with pytest.raises(RuntimeError, match="step 2 failed"):
            ensure_schema(db.engine, target=first + 2, migrations=steps)
        with db.engine.connect() as connection:
            assert read_schema_version(connection) == first + 1
            assert "half_done" not in inspect(connection).get_table_names()  # DDL rolled back


def test_upgrade_from_a_v0_database(sqlite_url: str):
    """A fake 'v0' schema lacking the reviews table is upgraded by a 0 -> 1 step."""
    open_database(sqlite_url).close()
    connection = sqlite3.connect(sqlite_path(sqlite_url))
    connection.executescript("DROP TABLE reviews; UPDATE schema_info SET version = 0;")
    connection.close()
    add_reviews = Migration(0, "add reviews", lambda conn: Review.__table__.create(conn))
    engine = create_db_engine(sqlite_url)
    try:
        assert ensure_schema(engine, target=1, migrations=[add_reviews]) == 1
    finally:
        engine.dispose()
    with open_database(sqlite_url) as db:
        item_id = add(db, "a.png")
        assert db.effective_review(item_id) is None
        review(db, item_id, DECISION_SKIP)


_V1_SQLITE_ITEMS = """CREATE TABLE items (
    id INTEGER NOT NULL, path VARCHAR NOT NULL, file_name VARCHAR NOT NULL, size BIGINT NOT NULL,
    mtime_ns BIGINT NOT NULL, sha256 VARCHAR(64) NOT NULL, product VARCHAR(128) NOT NULL,
    station VARCHAR(128) NOT NULL, discovered_at DATETIME NOT NULL, state VARCHAR(16) NOT NULL,
    attempts INTEGER NOT NULL, last_error TEXT, updated_at DATETIME NOT NULL, claimed_at DATETIME,
    CONSTRAINT pk_items PRIMARY KEY (id), CONSTRAINT uq_items_identity UNIQUE (path, size, mtime_ns, sha256),
    CONSTRAINT ck_items_state CHECK (state IN ('pending', 'scoring', 'done', 'error')),
    CONSTRAINT ck_items_attempts_non_negative CHECK (attempts >= 0),
    CONSTRAINT fk_items_product_products FOREIGN KEY(product) REFERENCES products (name))"""


def _make_version_1(url: str) -> None:
    """Turn a fresh database into what release 1 (schema version 1) left behind."""
    engine = create_engine(url)
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            connection.connection.driver_connection.execute("PRAGMA foreign_keys = OFF")
            statements = ["DROP TABLE items", _V1_SQLITE_ITEMS]
        else:
            statements = ["ALTER TABLE items DROP CONSTRAINT uq_items_landing",
                          "ALTER TABLE items DROP COLUMN ctime_ns, DROP COLUMN inode",
                          "ALTER TABLE items ALTER COLUMN sha256 SET NOT NULL",
                          "ALTER TABLE items ADD CONSTRAINT uq_items_identity UNIQUE (path, size, mtime_ns, sha256)"]
        with connection.begin():
            for statement in statements:
                connection.execute(text(statement))
            connection.execute(text("UPDATE schema_info SET version = 1"))
    engine.dispose()


def test_a_release_1_database_upgrades_keeping_items_results_and_reviews(db_url: str):
    open_database(db_url).close()
    _make_version_1(db_url)
    url = db_url
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO products (name, created_at) VALUES ('bearing', :t)"), {"t": T0})
        connection.execute(text(
            "INSERT INTO items (id, path, file_name, size, mtime_ns, sha256, product, station, discovered_at, state,"
            " attempts, updated_at) VALUES (7, '/d/a.png', 'a.png', 10, 5, :sha, 'bearing', 'st1', :t, 'done', 1, :t)"),
            {"sha": "ab" * 32, "t": T0})
        connection.execute(text("INSERT INTO results (item_id, verdict, raw_score, scored_at, image_path) "
                                "VALUES (7, 'NG', 2.5, :t, '/d/a.png')"), {"t": T0})
    engine.dispose()
    with open_database(url) as db:
        with db.engine.connect() as connection:
            assert read_schema_version(connection) == SCHEMA_VERSION
        rows = db.query_results()
        assert [(r["path"], r["verdict"], r["raw_score"]) for r in rows] == [("/d/a.png", "NG", 2.5)]
        assert db.known_identities(["/d/a.png"]) == {("/d/a.png", 10, 5, None, None)}
        # The same bytes still in place, now seen with their inode and ctime: the known item, updated.
        assert db.add_item("/d/a.png", 10, 5, "ab" * 32, "bearing", "st1", ctime_ns=9, inode=3) == (7, False)
        assert db.known_identities(["/d/a.png"]) == {("/d/a.png", 10, 5, 9, 3)}
        unread, created = db.add_item("/d/fifo.png", 0, 5, None, "bearing", "st1", ctime_ns=1, inode=4)
        assert created and db.get_item(unread).sha256 is None
        review(db, 7, DECISION_CONFIRM_DEFECT)
    with create_engine(url).begin() as connection:  # foreign keys still cascade after the rebuild
        if connection.dialect.name == "sqlite":
            connection.execute(text("PRAGMA foreign_keys = ON"))  # before the first write: outside pysqlite's BEGIN
        connection.execute(text("DELETE FROM reviews"))
        connection.execute(text("DELETE FROM items WHERE id = 7"))
        assert connection.execute(text("SELECT count(*) FROM results")).scalar() == 0


def test_the_same_bytes_landing_again_after_they_were_moved_away_are_a_new_item(db: Database):
    first, _ = db.add_item("/d/a.png", 10, 5, "cd" * 32, "bearing", "st1", ctime_ns=1, inode=1)
    assert db.add_item("/d/a.png", 10, 5, "cd" * 32, "bearing", "st1", ctime_ns=2, inode=1) == (first, False)
    db.claim_pending("bearing", 1)
    db.record_result(first, raw_score=1.0, normalized_score=0.5, verdict=VERDICT_OK, model_version="v0001",
                     threshold=2.0, timings=None, heatmap_path=None, anomaly_map_path=None, image_path="/arch/a.png")
    again, created = db.add_item("/d/a.png", 10, 5, "cd" * 32, "bearing", "st1", ctime_ns=3, inode=2)
    assert created and again != first


def test_upgrade_plan_rejects_gaps_and_duplicates():
    noop = lambda connection: None  # noqa: E731
    assert [s.from_version for s in plan_upgrade(1, 3, [Migration(2, "b", noop), Migration(1, "a", noop)])] == [1, 2]
    with pytest.raises(SchemaVersionError, match="no migration from version 2"):
        plan_upgrade(1, 4, [Migration(1, "a", noop), Migration(3, "c", noop)])
    with pytest.raises(SchemaVersionError, match="two migrations"):
        plan_upgrade(1, 2, [Migration(1, "a", noop), Migration(1, "again", noop)])
    assert plan_upgrade(1, SCHEMA_VERSION, MIGRATIONS) == list(MIGRATIONS)  # the real registry is complete


def test_create_false_refuses_missing_empty_and_foreign_databases(tmp_path: Path):
    with pytest.raises(DatabaseError, match="does not exist"):
        open_database(f"sqlite:///{tmp_path / 'missing.db'}", create=False)
    sqlite3.connect(tmp_path / "empty.db").close()
    with pytest.raises(SchemaVersionError, match="no inspectd schema"):
        open_database(f"sqlite:///{tmp_path / 'empty.db'}", create=False)
    foreign = sqlite3.connect(tmp_path / "foreign.db")
    foreign.execute("CREATE TABLE invoices (id INTEGER)")
    foreign.close()
    with pytest.raises(SchemaVersionError, match="not an inspectd database"):
        open_database(f"sqlite:///{tmp_path / 'foreign.db'}")


@pytest.mark.parametrize(
    "make_url",
    [
        lambda tmp: f"sqlite:///{tmp}",  # a directory, not a file
        lambda tmp: f"sqlite:///{tmp / 'file.txt' / 'inspectd.db'}",  # parent is a file
        lambda tmp: "postgresql+nosuchdriver://user@localhost/inspectd",
        lambda tmp: "not a url",
    ],
)
def test_unusable_databases_raise_database_error(tmp_path: Path, make_url: Callable[[Path], str]):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DatabaseError):
        open_database(make_url(tmp_path))


def test_open_database_creates_missing_directories(tmp_path: Path):
    with open_database(f"sqlite:///{tmp_path / 'var' / 'lib' / 'inspectd.db'}") as db:
        add(db, "a.png")
    assert (tmp_path / "var" / "lib" / "inspectd.db").is_file()


# --- busy retries -------------------------------------------------------------------


def _locked() -> OperationalError:
    return OperationalError("INSERT ...", {}, sqlite3.OperationalError("database is locked"))


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_retry_backs_off_exponentially_then_succeeds(caplog: pytest.LogCaptureFixture):
    clock, attempts = FakeClock(), []

    def operation() -> str:
        attempts.append(1)
        if len(attempts) < 4:
            raise _locked()
        return "ok"

    with caplog.at_level(logging.WARNING, logger="inspectd.db.retry"):
        result = retry_on_busy(operation, policy=RetryPolicy(total_s=10, initial_delay_s=0.1, max_delay_s=0.3),
                               what="unit test", sleep=clock.sleep, clock=lambda: clock.now)
    assert result == "ok"
    assert clock.sleeps == pytest.approx([0.1, 0.2, 0.3])
    assert len([r for r in caplog.records if "unit test: database locked" in r.getMessage()]) == 3


def test_retry_gives_up_after_the_time_budget():
    clock = FakeClock()

    def always_locked() -> None:
        raise _locked()

    with pytest.raises(DatabaseBusyError, match="still locked after 1.0 s") as caught:
        retry_on_busy(always_locked, policy=RetryPolicy(total_s=1.0, initial_delay_s=0.25),
                      sleep=clock.sleep, clock=lambda: clock.now)
    assert sum(clock.sleeps) == pytest.approx(1.0)
    assert isinstance(caught.value, DatabaseError)


def test_retry_does_not_retry_other_errors():
    calls = []

    def broken() -> None:
        calls.append(1)
        raise OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: items"))

    with pytest.raises(OperationalError):
        retry_on_busy(broken, sleep=lambda s: pytest.fail("must not sleep"))
    assert calls == [1]


@pytest.fixture()
def locker(sqlite_url: str) -> Iterator[sqlite3.Connection]:
    """Another connection holding the write lock (BEGIN EXCLUSIVE) on the database."""
    open_database(sqlite_url).close()
    connection = sqlite3.connect(sqlite_path(sqlite_url), isolation_level=None, check_same_thread=False)
    connection.execute("BEGIN EXCLUSIVE")
    yield connection
    if connection.in_transaction:
        connection.rollback()
    connection.close()


def test_a_held_lock_is_retried_until_released(sqlite_url: str, locker: sqlite3.Connection,
                                               caplog: pytest.LogCaptureFixture):
    policy = RetryPolicy(total_s=10, initial_delay_s=0.05, max_delay_s=0.1)
    with open_database(sqlite_url, busy_timeout_ms=20, retry_policy=policy) as db:
        release = threading.Timer(0.4, locker.rollback)
        release.start()
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="inspectd.db.retry"):
            item_id = add(db, "a.png")
        release.join()
        assert time.monotonic() - started >= 0.3
        assert db.get_item(item_id).state == STATE_PENDING
    assert any("add_item: database locked" in r.getMessage() for r in caplog.records)


def test_a_lock_held_too_long_raises_database_busy_error(sqlite_url: str, locker: sqlite3.Connection):
    with open_database(sqlite_url, busy_timeout_ms=20, retry_policy=RetryPolicy(total_s=0.3)) as db:
        started = time.monotonic()
        with pytest.raises(DatabaseBusyError, match="add_item: database still locked"):
            add(db, "a.png")
        assert 0.25 <= time.monotonic() - started < 3


# --- another process reading while this one writes (WAL) -----------------------------

_READER = """
import json, sys, time
from inspectd.db import open_database
with open_database(sys.argv[1], busy_timeout_ms=int(sys.argv[2]), create=False) as db:
    seen, deadline = [db.status_summary().queue_depth], time.monotonic() + 20
    print("reading", flush=True)
    while seen[-1] < int(sys.argv[3]) and time.monotonic() < deadline:
        seen.append(db.status_summary().queue_depth)
    print(json.dumps({"seen": seen, "station": db.get_item(1).station}))
"""


def _start_reader(url: str, busy_timeout_ms: int, stop_at: int) -> subprocess.Popen[str]:
    """A separate Python process that polls the queue depth until it reaches *stop_at*."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-c", _READER, url, str(busy_timeout_ms), str(stop_at)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _reader_output(reader: subprocess.Popen[str]) -> dict:
    stdout, stderr = reader.communicate(timeout=60)
    assert reader.returncode == 0, stderr
    return json.loads(stdout.splitlines()[-1])


def test_another_process_reads_during_an_open_write_transaction(sqlite_url: str):
    with open_database(sqlite_url) as db:
        for n in range(5):
            add(db, f"{n}.png")
        # An EXCLUSIVE writer blocks every reader in rollback-journal mode, none in WAL.
        writer = sqlite3.connect(sqlite_path(sqlite_url), isolation_level=None)
        try:
            writer.execute("BEGIN EXCLUSIVE")
            writer.execute("UPDATE items SET station = 'uncommitted'")
            # busy_timeout 0: the reader fails at once if the writer blocks it.
            output = _reader_output(_start_reader(sqlite_url, 0, 5))
        finally:
            writer.rollback()
            writer.close()
    assert output == {"seen": [5], "station": "st1"}


def test_another_process_reads_while_this_process_keeps_writing(sqlite_url: str):
    with open_database(sqlite_url) as db:
        add(db, "first.png")
        reader = _start_reader(sqlite_url, 5000, 60)
        assert reader.stdout.readline().strip() == "reading"
        for n in range(59):
            add(db, f"{n}.png")
            time.sleep(0.002)
        output = _reader_output(reader)
    seen = output["seen"]
    assert (seen[0], seen[-1]) == (1, 60)  # first read before any of the 59 writes
    assert seen == sorted(seen), "reads must see committed writes in order"
