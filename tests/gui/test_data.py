"""Queue queries against the real schema: membership, filters, order, review states, polling."""

from __future__ import annotations

import csv
from datetime import timedelta
from pathlib import Path

import pytest

from gui.data import (
    SORT_SCORE,
    SORT_TIME,
    STATE_ALL,
    STATE_REVIEWED,
    STATE_SKIPPED,
    STATE_UNREVIEWED,
    QueueFilter,
    fetch_page,
    iter_rows,
    poll,
    review_counts,
    score_sample,
)
from gui_support import Writer
from gui.demo import T0
from gui.export import EXPORT_FIELDS, export_csv
from inspectd.db import (
    DECISION_CONFIRM_DEFECT,
    DECISION_OVERRULE,
    DECISION_SKIP,
    VERDICT_ERROR,
    VERDICT_NG,
    VERDICT_OK,
    Database,
)

ALL = QueueFilter(review_state=STATE_ALL)


def expected_queue(db: Database, band: float = 0.9) -> dict[int, dict]:
    """The queue computed the slow way from the public export query."""
    return {
        row["item_id"]: row for row in db.query_results()
        if row["verdict"] in (VERDICT_NG, VERDICT_ERROR)
        or (row["verdict"] == VERDICT_OK and band <= row["normalized_score"] < 1.0)
    }


def ids(rows) -> list[int]:
    return [row.item_id for row in rows]


def test_queue_holds_ng_errors_and_the_band_below_the_threshold(db: Database) -> None:
    expected = expected_queue(db)
    rows = list(iter_rows(db, ALL, chunk=3))
    assert sorted(ids(rows)) == sorted(expected)
    verdicts = {row.verdict for row in rows}
    assert verdicts == {VERDICT_NG, VERDICT_ERROR, VERDICT_OK}  # the demo has all three kinds
    assert all(row.verdict != VERDICT_OK or 0.9 <= row.normalized_score < 1.0 for row in rows)
    wider = list(iter_rows(db, QueueFilter(review_state=STATE_ALL, band=0.5)))
    assert sorted(ids(wider)) == sorted(expected_queue(db, band=0.5))
    assert len(wider) > len(rows)


@pytest.mark.parametrize(("sort", "descending"), [(SORT_TIME, False), (SORT_TIME, True),
                                                  (SORT_SCORE, False), (SORT_SCORE, True)])
def test_keyset_pages_follow_the_sort_order(db: Database, sort: str, descending: bool) -> None:
    queue_filter = QueueFilter(review_state=STATE_ALL, sort=sort, descending=descending)
    paged = list(iter_rows(db, queue_filter, chunk=4))
    in_order = sorted(paged, key=lambda row: row.sort_key(sort), reverse=descending)
    assert ids(paged) == ids(in_order)
    assert len(set(ids(paged))) == len(paged) == len(expected_queue(db))
    if sort == SORT_SCORE and descending:
        assert paged[0].verdict == VERDICT_ERROR  # no score: sorts above every score


def test_filters_by_product_station_verdict_and_time(db: Database) -> None:
    expected = expected_queue(db)
    for product in ("tiles", "plates"):
        rows = list(iter_rows(db, QueueFilter(review_state=STATE_ALL, product=product)))
        assert rows and {row.product for row in rows} == {product}
        assert sorted(ids(rows)) == sorted(i for i, r in expected.items() if r["product"] == product)
    rows = list(iter_rows(db, QueueFilter(review_state=STATE_ALL, station="line2")))
    assert sorted(ids(rows)) == sorted(i for i, r in expected.items() if r["station"] == "line2")
    for verdict in (VERDICT_NG, VERDICT_ERROR, VERDICT_OK):
        rows = list(iter_rows(db, QueueFilter(review_state=STATE_ALL, verdict=verdict)))
        assert rows and {row.verdict for row in rows} == {verdict}
    since, until = T0 + timedelta(minutes=3), T0 + timedelta(minutes=9)
    rows = list(iter_rows(db, QueueFilter(review_state=STATE_ALL, since=since, until=until)))
    assert rows and all(since <= row.scored_at < until for row in rows)
    assert sorted(ids(rows)) == sorted(
        i for i, r in expected.items() if since.isoformat() <= r["scored_at"] < until.isoformat())


def test_review_states_follow_the_effective_review(db: Database) -> None:
    writer = Writer(db, "alice")
    first, second, third, fourth = fetch_page(db, ALL, None, 4)
    writer.decide(first, DECISION_CONFIRM_DEFECT, tag="scratch")
    writer.decide(second, DECISION_SKIP)
    writer.decide(third, DECISION_OVERRULE)
    writer.undo(third.item_id)  # back to unreviewed
    writer.decide(fourth, DECISION_SKIP)
    writer.decide(fourth, DECISION_OVERRULE)  # latest decision wins

    def state_ids(state: str) -> set[int]:
        return set(ids(iter_rows(db, QueueFilter(review_state=state))))

    assert state_ids(STATE_REVIEWED) == {first.item_id, fourth.item_id}
    assert state_ids(STATE_SKIPPED) == {second.item_id}
    unreviewed = state_ids(STATE_UNREVIEWED)
    assert third.item_id in unreviewed and not unreviewed & {first.item_id, second.item_id, fourth.item_id}
    for row in iter_rows(db, ALL):
        effective = db.effective_review(row.item_id)
        assert row.review == effective
    counts = review_counts(db, QueueFilter())
    assert counts == {STATE_UNREVIEWED: len(unreviewed), STATE_SKIPPED: 1, STATE_REVIEWED: 2,
                      STATE_ALL: len(expected_queue(db))}


def test_poll_reports_new_results_and_reviews(db: Database, demo) -> None:
    first = poll(db, ALL, None)
    assert first.changed and first.counts[STATE_ALL] == len(expected_queue(db))
    assert set(first.products) == {"tiles", "plates"} and set(first.stations) == {"line1", "line2"}
    assert not poll(db, ALL, first.marks).changed
    item_id, _ = db.add_item(str(demo.root / "new.png"), 1, 1, "a" * 64, "tiles", "line9")
    db.record_result(item_id, raw_score=3.0, normalized_score=1.5, verdict=VERDICT_NG, model_version="v0002",
                     threshold=2.0, timings=None, heatmap_path=None, anomaly_map_path=None)
    row = fetch_page(db, ALL, None, 1)[0]
    Writer(db, "bob").decide(row, DECISION_CONFIRM_DEFECT)
    second = poll(db, ALL, first.marks)
    assert second.changed
    assert item_id in ids(second.new_rows)
    assert second.reviews[row.item_id].decision == DECISION_CONFIRM_DEFECT
    assert "line9" in second.stations


def test_score_sample_splits_reviewed_scores(db: Database) -> None:
    writer = Writer(db, "alice")
    rows = [row for row in iter_rows(db, ALL) if row.normalized_score is not None][:3]
    writer.decide(rows[0], DECISION_CONFIRM_DEFECT)
    writer.decide(rows[1], DECISION_OVERRULE)
    writer.decide(rows[2], DECISION_OVERRULE)
    writer.undo(rows[2].item_id)
    samples = {product: score_sample(db, product) for product in ("tiles", "plates")}
    assert sum(sum(sample.verdicts.values()) for sample in samples.values()) == len(db.query_results())
    confirmed = [score for sample in samples.values() for score in sample.defects]
    overruled = [score for sample in samples.values() for score in sample.good]
    assert confirmed == [pytest.approx(rows[0].normalized_score)]
    assert overruled == [pytest.approx(rows[1].normalized_score)]


def test_export_writes_results_and_decisions_of_the_filter(db: Database, tmp_path: Path) -> None:
    row = fetch_page(db, ALL, None, 1)[0]
    Writer(db, "carol").decide(row, DECISION_CONFIRM_DEFECT, tag="crack", comment="deep, near edge")
    target = tmp_path / "out" / "review.csv"
    count = export_csv(db, QueueFilter(review_state=STATE_ALL, product=row.product), target)
    with target.open(newline="", encoding="utf-8") as handle:
        records = list(csv.DictReader(handle))
    assert count == len(records) > 1
    assert tuple(records[0]) == EXPORT_FIELDS
    assert {record["product"] for record in records} == {row.product}
    mine = next(record for record in records if int(record["item_id"]) == row.item_id)
    assert (mine["decision"], mine["operator"], mine["tag"], mine["comment"], mine["review_state"]) == (
        DECISION_CONFIRM_DEFECT, "carol", "crack", "deep, near edge", STATE_REVIEWED)
    assert all(record["decision"] == "" for record in records if int(record["item_id"]) != row.item_id)
