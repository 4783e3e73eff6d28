"""A real `inspectd run` follows the product's ACTIVE model version (recorded in the
database), not the newest one: after `inspectd activate` of an earlier version the
next dropped image is scored with it; a candidate built from "add to the good set"
scores nothing until activated; undo of that decision returns the product to the
version that was active before."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon_support import PRODUCT, DaemonEnv, copy_as
from inspectd.active import active_version
from inspectd.config import load_config
from inspectd.db import DECISION_OVERRULE, ReviewFields, open_database
from inspectd.good_set import build_candidate, check_image, good_dir, keep_image, undo_decision
from inspectd.lifecycle import STATE_WITHDRAWN, activate, state_of
from inspectd.store import ModelStore
from inspectd.synthetic import generate_images

pytestmark = pytest.mark.slow
MODEL_CHECK_WAIT = 1.3  # the worker looks for another active version at most once a second


def cli(config: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "inspectd.cli", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def scored(env: DaemonEnv, source: Path, name: str, count: int) -> dict:
    """Drop *source* as *name* and return its result row (the *count*-th result)."""
    copy_as(source, env.drop / name)
    rows = env.wait_results(count, timeout=90)
    return next(row for row in rows if Path(row["path"]).name == name)


def test_daemon_scores_with_the_active_version_and_undo_restores_it(
        daemon_env: DaemonEnv, model_store: Path, sample_images: list[Path], tmp_path: Path) -> None:
    store_dir = tmp_path / "models"
    shutil.copytree(model_store, store_dir)  # the session store stays at one version
    text = daemon_env.config_path.read_text().replace(f'store_dir = "{model_store}"', f'store_dir = "{store_dir}"')
    daemon_env.config_path.write_text(f'enroll_dir = "{tmp_path / "enroll"}"\n' + text)
    config = load_config(daemon_env.config_path)
    store = ModelStore(store_dir)

    more = generate_images(tmp_path / "more", n_good=4, n_defect=0, category="washer", size=(96, 96), seed=11)
    cli(daemon_env.config_path, "enroll", "--product", PRODUCT, "--add", str(more[0].parent), "--by", "kim")
    assert store.versions(PRODUCT) == ["v0001", "v0002"]
    out = cli(daemon_env.config_path, "activate", "--product", PRODUCT, "--version", "v0001", "--by", "kim")
    assert "v0001 is active now (was v0002)" in out

    defect = next(path for path in sample_images if "good" not in path.name)
    copy_as(defect, daemon_env.drop / "a.png")  # waiting at start: scored right after the warm-up
    daemon_env.start()
    daemon_env.wait_ready()
    first = daemon_env.wait_results(1, timeout=90)[0]
    assert first["model_version"] == "v0001"  # the active one, not the newest v0002

    with open_database(config.database_url, create=False) as db:
        # "good part + add to the good set" on the defect image, as the review app stores it
        check = check_image(config, db, store, PRODUCT, first["verdict"], Path(first["path"]))
        kept = keep_image(config, PRODUCT, Path(first["path"]), first["item_id"])
        decision = db.add_good_set_decision(
            ReviewFields(first["item_id"], DECISION_OVERRULE, "kim", verdict=first["verdict"],
                         model_version="v0001", threshold=first["threshold"], client_id="c-1"),
            product=PRODUCT, sha256=check.sha256, kept_as=str(kept), fallback_active=check.active_version)
        candidate = build_candidate(config, db, store, PRODUCT, "kim")
        assert (candidate.version, candidate.base_version) == ("v0003", "v0001")
        assert active_version(db, store, PRODUCT).version == "v0001"  # a candidate is not active

        time.sleep(MODEL_CHECK_WAIT)
        assert scored(daemon_env, defect, "b.png", 2)["model_version"] == "v0001"

        activate(db, store, PRODUCT, "v0003", "kim", "reviewed in the app")
        time.sleep(MODEL_CHECK_WAIT)
        with_image = scored(daemon_env, defect, "c.png", 3)
        assert with_image["model_version"] == "v0003"
        assert with_image["raw_score"] < first["raw_score"]  # its patches are in the bank now

        undone = undo_decision(db, store, first["item_id"], decision.review_id, "kim", client_id="c-2")
        assert undone.restored is not None and undone.restored.version == "v0001"
        assert active_version(db, store, PRODUCT).version == "v0001"
        assert not kept.exists() and not any(good_dir(config, PRODUCT).iterdir())
        assert state_of(db, store, PRODUCT, "v0003").state == STATE_WITHDRAWN
        history = [(record.previous_version, record.version) for record in db.activation_history(PRODUCT)]
        assert history == [("v0001", "v0002"), ("v0002", "v0001"), ("v0001", "v0003"), ("v0003", "v0001")]

    time.sleep(MODEL_CHECK_WAIT)
    again = scored(daemon_env, defect, "d.png", 4)
    assert again["model_version"] == "v0001"
    assert again["raw_score"] == pytest.approx(first["raw_score"], rel=1e-4)  # the same image scores as before
    assert daemon_env.stop(daemon_env.procs[0]) == 0
