"""The model-version life cycle: the active version recorded in the database with its
history, candidates, rollback, the good set's undo, roles on the command line, and the
upgrade of a schema-2 database (issue 9, point 4 and 5)."""

from __future__ import annotations

import getpass
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from engine_support import copy_images, restore_logging, run, write_config  # noqa: F401 (autouse fixture)
from inspectd.active import active_version
from inspectd.config import load_config
from inspectd.db import (
    DECISION_CONFIRM_DEFECT,
    DECISION_OVERRULE,
    SCHEMA_VERSION,
    AlreadyInGoodSetError,
    Database,
    ReviewFields,
    open_database,
)
from inspectd.errors import ModelError
from inspectd.lifecycle import STATE_ACTIVE, STATE_CANDIDATE, STATE_PREVIOUS, ActivationError, activate, state_of
from inspectd.store import ModelStore

META = {"coreset": {"size": 5}, "calibration": {"threshold": 2.5}, "weights": {"source": "random"},
        "settings": {"backbone": "resnet18"}, "images": {"bank": [{"name": "a.png", "sha256": "a" * 64}],
                                                         "calibration": []},
        "created_at": "2024-01-01T00:00:00+00:00"}


def fake_versions(store: ModelStore, product: str, count: int, hashes: list[list[str]] | None = None) -> None:
    for index in range(count):
        meta = dict(META)
        if hashes is not None:
            meta["images"] = {"bank": [{"name": f"{h[:4]}.png", "sha256": h} for h in hashes[index]], "calibration": []}
        store.write(product, meta, {"bank": np.zeros((5, 4), np.float32)})


def item(db: Database, name: str, product: str = "bolt") -> int:
    item_id, _ = db.add_item(f"/drop/{name}", 1, 1, "e" * 64, product, "cam")
    db.record_result(item_id, raw_score=3.0, normalized_score=1.5, verdict="NG", model_version="v0001",
                     threshold=2.0, timings=None, heatmap_path=None, anomaly_map_path=None)
    return item_id


def review(item_id: int, client_id: str, decision: str = DECISION_OVERRULE, operator: str = "kim") -> ReviewFields:
    return ReviewFields(item_id, decision, operator, verdict="NG", model_version="v0001", threshold=2.0,
                        client_id=client_id)


# --- the resolver and activation -----------------------------------------------------------


def test_without_a_record_the_newest_version_is_active_and_activation_is_recorded(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    fake_versions(store, "bolt", 3)
    with pytest.raises(ModelError, match="no model for product 'nut'"):
        active_version(None, store, "nut")
    with open_database(f"sqlite:///{tmp_path / 'db.sqlite'}") as db:
        newest = active_version(db, store, "bolt")
        assert (newest.version, newest.recorded) == ("v0003", False)
        record = activate(db, store, "bolt", "v0001", "kim", "roll back")
        assert (record.version, record.previous_version, record.activated_by) == ("v0001", "v0003", "kim")
        assert active_version(db, store, "bolt").version == "v0001"
        assert activate(db, store, "bolt", "v0001", "kim", "again").id == record.id  # nothing new recorded
        assert [s.state for s in map(lambda v: state_of(db, store, "bolt", v), ("v0001", "v0002", "v0003"))] == [
            STATE_ACTIVE, STATE_CANDIDATE, STATE_CANDIDATE]  # newer, never active
        activate(db, store, "bolt", "v0003", "kim", "forward")
        assert {state_of(db, store, "bolt", v).state for v in ("v0001", "v0002")} == {STATE_PREVIOUS}
        with pytest.raises(ActivationError, match="no model version 'v0009'"):
            activate(db, store, "bolt", "v0009", "kim", "typo")
        (store.root / "bolt" / "v0002" / "bank.npy").write_bytes(b"\x93NUMPY broken")
        with pytest.raises(ActivationError, match="v0002 cannot be activated"):
            activate(db, store, "bolt", "v0002", "kim", "corrupt")
        assert active_version(db, store, "bolt").version == "v0003"
        # a recorded version that disappeared from the store is a clear error, not a silent fallback
        activate(db, store, "bolt", "v0001", "kim", "back")
        (store.root / "bolt" / "v0001").rename(store.root / "bolt" / "gone")
        with pytest.raises(ModelError, match="active model of bolt is v0001.*does not exist"):
            active_version(db, store, "bolt")


def test_good_set_decisions_are_stored_once_and_undo_restores_only_a_version_with_the_image(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    fake_versions(store, "bolt", 2, hashes=[["a" * 64], ["a" * 64, "b" * 64]])
    with open_database(f"sqlite:///{tmp_path / 'db.sqlite'}") as db:
        first, second = item(db, "1.png"), item(db, "2.png")
        stored = db.add_good_set_decision(review(first, "c1"), product="bolt", sha256="b" * 64, kept_as="/g/1.png",
                                          fallback_active="v0001")
        again = db.add_good_set_decision(review(first, "c1"), product="bolt", sha256="b" * 64, kept_as="/g/1.png",
                                         fallback_active="v0001")
        assert again == stored and len(db.review_history(first)) == 1  # a retried write is stored once
        assert db.active_activation("bolt").version == "v0001"  # pinned: v0002 is not active by being newest
        with pytest.raises(AlreadyInGoodSetError, match="already in the good set of bolt"):
            db.add_good_set_decision(review(second, "c2"), product="bolt", sha256="b" * 64, kept_as="/g/2.png",
                                     fallback_active="v0001")
        assert db.review_history(second) == []  # refused as a whole
        db.record_activation("bolt", "v0002", "kim", "reviewed")
        undone = db.undo_review(first, "kim", target_review_id=stored.review_id, client_id="c3",
                                restore_from={"v0002"})
        assert undone.restored is not None and undone.restored.version == "v0001"
        assert undone.restored.review_id == undone.review_id and not undone.removed.pending
        replay = db.undo_review(first, "kim", target_review_id=stored.review_id, client_id="c3",
                                restore_from={"v0002"})
        assert replay.review_id == undone.review_id and replay.restored is None
        assert [a.version for a in db.activation_history("bolt")] == ["v0001", "v0002", "v0001"]
        # an undo while the active version does not contain the image changes no version
        third = db.add_good_set_decision(review(second, "c4"), product="bolt", sha256="b" * 64,
                                         kept_as="/g/2.png", fallback_active=None)
        db.undo_review(second, "kim", target_review_id=third.review_id, restore_from={"v0002"})
        assert db.active_activation("bolt").version == "v0001" and len(db.activation_history("bolt")) == 3
        # plain decisions with a client id are idempotent too
        plain = db.add_review(first, DECISION_CONFIRM_DEFECT, "ana", verdict="NG", model_version="v0001",
                              threshold=2.0, client_id="c5")
        assert db.add_review(first, DECISION_CONFIRM_DEFECT, "ana", verdict="NG", model_version="v0001",
                             threshold=2.0, client_id="c5") == plain


def test_a_schema_2_database_upgrades_and_keeps_its_reviews(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with open_database(f"sqlite:///{path}") as db:
        kept = db.add_review(item(db, "1.png"), DECISION_CONFIRM_DEFECT, "root", verdict="NG", model_version="v0001",
                             threshold=2.0)
    with sqlite3.connect(path) as connection:  # back to schema 2 (before the model life cycle)
        connection.executescript("""
            DROP TABLE good_set_images; DROP TABLE model_activations; DROP INDEX ix_reviews_client_id;
            ALTER TABLE reviews DROP COLUMN client_id; UPDATE schema_info SET version = 2;""")
    with open_database(f"sqlite:///{path}") as db:
        [old] = db.review_history(1)
        assert old.id == kept and old.client_id is None
        db.add_review(1, DECISION_OVERRULE, "ana", verdict="NG", model_version="v0001", threshold=2.0, client_id="x")
        assert db.review_by_client_id("x").operator == "ana"
        assert db.active_activation("bolt") is None
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT version FROM schema_info").fetchone()[0] == SCHEMA_VERSION == 3


# --- the command line -----------------------------------------------------------------------


@pytest.mark.slow
def test_cli_enroll_activates_candidates_wait_and_score_uses_the_active_version(
        capsys, tmp_path: Path, dataset: Path) -> None:
    path = write_config(tmp_path / "cfg")
    config = load_config(path)
    goods = sorted((dataset / "train" / "good").glob("*.png"))
    first = copy_images(goods[:12], tmp_path / "first")
    more = copy_images(goods[12:], tmp_path / "more")
    code, out, err = run(capsys, "--config", path, "enroll", "--product", "tiles", first)
    assert code == 0, err
    assert "tiles v0001 is the active version" in out
    code, out, err = run(capsys, "--config", path, "enroll", "--product", "tiles", "--add", more, "--candidate")
    assert code == 0, err
    assert "v0002 is a candidate; activate it with `inspectd activate --product tiles --version v0002`" in out
    code, out, _ = run(capsys, "--config", path, "products", "--all-versions", "--json")
    rows = {row["version"]: row for row in map(json.loads, out.splitlines())}
    assert (rows["v0001"]["state"], rows["v0002"]["state"]) == (STATE_ACTIVE, STATE_CANDIDATE)
    assert rows["v0001"]["activated_by"] == getpass.getuser() and rows["v0002"]["parent_version"] == "v0001"
    image = dataset / "test" / "crack" / "000.png"
    code, out, err = run(capsys, "--config", path, "score", "--product", "tiles", image, "--json")
    assert code == 0, err
    assert json.loads(out)["model_version"] == "v0001"  # the active one, not the newest
    code, out, err = run(capsys, "--config", path, "activate", "--product", "tiles", "--version", "v0002",
                         "--reason", "more good images")
    assert code == 0 and "v0002 is active now (was v0001)" in out, err
    code, out, _ = run(capsys, "--config", path, "score", "--product", "tiles", image, "--json")
    assert json.loads(out)["model_version"] == "v0002"
    code, out, _ = run(capsys, "--config", path, "products")
    header, _, row = out.splitlines()
    assert header.split()[-3:] == ["state", "activated", "by"] and row.split()[1] == "v0002"
    code, out, _ = run(capsys, "--config", path, "products", "--history")
    assert "more good images" in out and "v0001" in out
    code, _, err = run(capsys, "--config", path, "activate", "--product", "tiles", "--version", "v0007")
    assert code == 1 and "no model version 'v0007'" in err and len(err.strip().splitlines()) == 1
    with open_database(config.database_url, create=False) as db:
        assert [a.version for a in db.activation_history("tiles")] == ["v0001", "v0002"]


def test_cli_changes_of_the_model_need_the_quality_engineer_role(capsys, tmp_path: Path) -> None:
    extra = ('\n[[review.operators]]\nname = "ana"\n'
             '\n[[review.operators]]\nname = "kim"\nbadge = "20001"\nroles = ["quality_engineer"]\n')
    path = write_config(tmp_path / "cfg", extra="\n[review]\n" + extra)
    store = ModelStore(load_config(path).store_dir)
    fake_versions(store, "bolt", 2)
    code, _, err = run(capsys, "--config", path, "activate", "--product", "bolt", "--version", "v0001", "--by", "ana")
    assert code == 1 and "ana may not change the active model" in err and "quality engineer" in err
    code, _, err = run(capsys, "--config", path, "activate", "--product", "bolt", "--version", "v0001",
                       "--by", "someone")
    assert code == 1 and "'someone' is not listed" in err
    code, out, err = run(capsys, "--config", path, "activate", "--product", "bolt", "--version", "v0001",
                         "--by", "20001")
    assert code == 0 and "set by kim" in out, err
