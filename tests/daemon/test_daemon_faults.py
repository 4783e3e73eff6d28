"""Faults inside the daemon, driven in-process so they can be injected: a full disk,
a locked database, GPU out of memory, a worker crash, a missing model, a new model
version, and what happens to source files after scoring."""

from __future__ import annotations

import dataclasses
import errno
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable

import pytest
import torch

from daemon_support import PRODUCT, DaemonEnv, copy_as
from engine_support import run as run_cli
from inspectd.config import load_config
from inspectd.daemon import models as models_module
from inspectd.daemon import worker as worker_module
from inspectd.daemon.intake import take_in
from inspectd.daemon.runtime import status_path
from inspectd.daemon.service import RESULTS_DISK, Daemon
from inspectd.daemon.spool import Spool
from inspectd.db import open_database
from inspectd.enroll import enroll
from inspectd.model import ProductModel
from inspectd.prefetch import io_workers
from inspectd.synthetic import generate_images


def make_daemon(env: DaemonEnv, **daemon_settings) -> Daemon:
    config = load_config(env.config_path)
    if daemon_settings:
        config = dataclasses.replace(config, daemon=dataclasses.replace(config.daemon, **daemon_settings))
    daemon = Daemon(config, str(env.config_path))
    daemon.db = open_database(config.database_url)
    daemon.status_file = status_path(config, create=True)
    daemon.spool = Spool(config.daemon.spool_dir)
    daemon.worker = worker_module.ScoringWorker(config, daemon.db, torch.device("cpu"), daemon.folder_of,
                                                daemon.cache, daemon.spool, daemon.retake)
    return daemon


def intake_all(daemon: Daemon) -> None:
    daemon.reconcile()
    deadline = time.monotonic() + 10
    while len(daemon.tracker) and time.monotonic() < deadline:
        for outcome in daemon.tracker.ready():
            take_in(daemon.db, outcome, daemon.cache, daemon.spool)
        time.sleep(0.05)


def drain(daemon: Daemon, rounds: int = 50) -> None:
    for _ in range(rounds):
        daemon._score_batch()
        if not daemon.db.status_summary().queue_depth and not daemon.worker.unrecorded:
            break


def test_disk_full_pauses_and_retries_without_losing_items(daemon_env: DaemonEnv, sample_images: list[Path],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(3):
        copy_as(sample_images[i], daemon_env.drop / f"d{i}.png")
    daemon = make_daemon(daemon_env)
    intake_all(daemon)
    real_save = worker_module.save_heatmap

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(worker_module, "save_heatmap", full_disk)
    daemon._score_batch()
    assert daemon.pauses.blocked(RESULTS_DISK)
    summary = daemon.db.status_summary()
    assert summary.counts[PRODUCT] == {"pending": 3}
    monkeypatch.setattr(worker_module, "save_heatmap", real_save)
    daemon.pauses._active[RESULTS_DISK].retry_at = 0.0  # the pause has passed
    drain(daemon)
    rows = daemon.db.query_results()
    assert sorted(Path(r["path"]).name for r in rows) == ["d0.png", "d1.png", "d2.png"]
    assert all(r["verdict"] in ("OK", "NG") for r in rows)


def test_a_claim_is_decoded_in_threads_and_its_heatmaps_drawn_beside_the_next_batch(
        daemon_env: DaemonEnv, sample_images: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    if io_workers() < 2:
        pytest.skip("one core: the I/O pool has a single thread")
    for i, image in enumerate(sample_images):  # 10 images: a model batch of 8, then one of 2
        copy_as(image, daemon_env.drop / f"p{i}.png")
    daemon = make_daemon(daemon_env, batch_size=len(sample_images))
    intake_all(daemon)
    lock, decoding, most_decoding = threading.Lock(), [0], [0]
    scoring_started: list[float] = []
    saved: list[float] = []
    real_decode, real_score, real_save = ProductModel.decode, ProductModel.score_images, worker_module.save_heatmap

    def slow_decode(self, data, name):
        with lock:
            decoding[0] += 1
            most_decoding[0] = max(most_decoding[0], decoding[0])
        time.sleep(0.1)  # a large image
        try:
            return real_decode(self, data, name)
        finally:
            with lock:
                decoding[0] -= 1

    def timed_score(self, images, names=None, watch=None):
        scoring_started.append(time.monotonic())
        return real_score(self, images, names, watch)

    def slow_save(*args):
        time.sleep(0.3)  # a large PNG on a slow disk
        real_save(*args)
        saved.append(time.monotonic())

    monkeypatch.setattr(ProductModel, "decode", slow_decode)
    monkeypatch.setattr(ProductModel, "score_images", timed_score)
    monkeypatch.setattr(worker_module, "save_heatmap", slow_save)
    drain(daemon)
    rows = daemon.db.query_results()
    assert sorted(Path(r["path"]).name for r in rows) == sorted(f"p{i}.png" for i in range(len(sample_images)))
    assert all(r["verdict"] in ("OK", "NG") and Path(r["heatmap_path"]).is_file() for r in rows)
    assert most_decoding[0] >= 2  # images decoded side by side
    assert len(scoring_started) == 2 and len(saved) == len(sample_images)
    assert scoring_started[1] < sorted(saved)[7]  # batch 2 was scored before batch 1's heatmaps were all written


def test_a_disk_that_fills_in_the_middle_of_a_claim_loses_and_repeats_nothing(
        daemon_env: DaemonEnv, sample_images: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    for i, image in enumerate(sample_images):
        copy_as(image, daemon_env.drop / f"m{i}.png")
    daemon = make_daemon(daemon_env, batch_size=len(sample_images))
    intake_all(daemon)
    real_save, writes, lock = worker_module.save_heatmap, [0], threading.Lock()

    def fills_after_four(*args):
        with lock:
            writes[0] += 1
            full = writes[0] > 4
        if full:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(*args)

    monkeypatch.setattr(worker_module, "save_heatmap", fills_after_four)
    daemon._score_batch()
    assert daemon.pauses.blocked(RESULTS_DISK)
    recorded = daemon.db.query_results()
    assert 1 <= len(recorded) <= 4  # the heatmaps written before the disk filled, in claim order
    assert daemon.db.status_summary().counts[PRODUCT] == {"done": len(recorded), "pending": 10 - len(recorded)}
    monkeypatch.setattr(worker_module, "save_heatmap", real_save)
    daemon.pauses._active[RESULTS_DISK].retry_at = 0.0
    drain(daemon)
    rows = daemon.db.query_results()
    assert sorted(Path(r["path"]).name for r in rows) == sorted(f"m{i}.png" for i in range(10))
    assert all(r["verdict"] in ("OK", "NG") and Path(r["heatmap_path"]).is_file() for r in rows)


def test_locked_database_is_retried(daemon_env: DaemonEnv, sample_images: list[Path]) -> None:
    copy_as(sample_images[0], daemon_env.drop / "locked.png")
    daemon = make_daemon(daemon_env)
    intake_all(daemon)
    db_file = daemon_env.database_url.removeprefix("sqlite:///")
    locked = threading.Event()

    def hold_lock() -> None:  # another process-like writer holds the lock for 1.5 s
        holder = sqlite3.connect(db_file, timeout=5)
        holder.execute("BEGIN EXCLUSIVE")
        locked.set()
        time.sleep(1.5)
        holder.rollback()
        holder.close()

    thread = threading.Thread(target=hold_lock)
    thread.start()
    locked.wait(5)
    started = time.monotonic()
    drain(daemon)
    thread.join()
    rows = daemon.db.query_results()
    assert len(rows) == 1 and rows[0]["verdict"] in ("OK", "NG")
    assert time.monotonic() - started >= 1.0  # it waited for the lock instead of failing


def _gpu_fallback_lines(daemon: Daemon, capsys: pytest.CaptureFixture) -> list[str]:
    """The GPU FALLBACK lines `inspectd status` prints from the daemon's report as it stands now."""
    daemon._report("running")
    _, out, _ = run_cli(capsys, "--config", daemon.config_path, "status")
    return [line for line in out.splitlines() if line.startswith("GPU FALLBACK")]


def _out_of_memory_when(monkeypatch: pytest.MonkeyPatch, fails: Callable[[ProductModel, int], bool]
                        ) -> list[tuple[ProductModel, int]]:
    """Scoring raises CUDA out-of-memory where `fails(model, batch size)`; returns the
    calls as they happen: (model, batch size)."""
    real_score = ProductModel.score_images
    calls: list[tuple[ProductModel, int]] = []

    def score_images(self, images, names=None, watch=None):
        calls.append((self, len(images)))
        if fails(self, len(images)):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_score(self, images, names, watch)

    monkeypatch.setattr(ProductModel, "score_images", score_images)
    return calls


def test_gpu_out_of_memory_halves_the_batch_and_later_batches_stay_small(
        daemon_env: DaemonEnv, sample_images: list[Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    for i in range(4):
        copy_as(sample_images[i], daemon_env.drop / f"o{i}.png")
    daemon = make_daemon(daemon_env)
    intake_all(daemon)
    calls = _out_of_memory_when(monkeypatch, lambda model, size: size > 2)
    drain(daemon)
    assert [size for _, size in calls] == [4, 2, 2]
    for i in range(4, 8):  # the next images: batches of two straight away, no failed attempt first
        copy_as(sample_images[i], daemon_env.drop / f"o{i}.png")
    intake_all(daemon)
    drain(daemon)
    assert [size for _, size in calls] == [4, 2, 2, 2, 2]
    assert len(daemon.db.query_results()) == 8
    fallback = _gpu_fallback_lines(daemon, capsys)
    assert len(fallback) == 1 and f"GPU FALLBACK {PRODUCT}" in fallback[0]
    assert "batches of at most 2 image(s) on the GPU" in fallback[0]


def test_gpu_out_of_memory_on_one_image_moves_the_product_to_the_cpu(
        daemon_env: DaemonEnv, sample_images: list[Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    for i in range(6):
        copy_as(sample_images[i], daemon_env.drop / f"g{i}.png")
    daemon = make_daemon(daemon_env)
    intake_all(daemon)
    gpu_model = daemon.worker.models.get(PRODUCT)  # stands in for the model on the GPU: it never fits
    gpu_model.settings = dataclasses.replace(gpu_model.settings, batch_size=2)  # a claim of several batches
    calls = _out_of_memory_when(monkeypatch, lambda model, size: model is gpu_model)
    drain(daemon)
    rows = daemon.db.query_results()
    assert len(rows) == 6 and all(r["verdict"] in ("OK", "NG") for r in rows)
    # halved down to one image, then the move; the rest of the claim is scored on the CPU
    # in the CPU model's own batch size, without trying the GPU again
    assert [("gpu" if model is gpu_model else "cpu", size) for model, size in calls] == [
        ("gpu", 2), ("gpu", 1), ("cpu", 1), ("cpu", 1), ("cpu", 4)]
    assert daemon.worker.models.get(PRODUCT).version == gpu_model.version
    assert daemon.worker._device_for(PRODUCT) == torch.device("cpu")
    fallback = _gpu_fallback_lines(daemon, capsys)
    assert len(fallback) == 1 and "scoring on the CPU until the service restarts" in fallback[0]


def test_a_poison_image_gets_an_error_after_max_attempts(daemon_env: DaemonEnv, sample_images: list[Path],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    copy_as(sample_images[0], daemon_env.drop / "fine.png")
    copy_as(sample_images[1], daemon_env.drop / "poison.png")
    daemon = make_daemon(daemon_env, max_attempts=2, batch_size=1)
    intake_all(daemon)
    real_decode = ProductModel.decode

    def crash_on_poison(self, data, name):
        if Path(name).name == "poison.png":
            raise RuntimeError("decoder crashed")
        return real_decode(self, data, name)

    monkeypatch.setattr(ProductModel, "decode", crash_on_poison)
    drain(daemon)
    rows = {Path(r["path"]).name: r for r in daemon.db.query_results()}
    assert rows["fine.png"]["verdict"] in ("OK", "NG")
    assert rows["poison.png"]["verdict"] == "ERROR"
    assert "failed 2 times" in rows["poison.png"]["error"] and "decoder crashed" in rows["poison.png"]["error"]


def test_missing_model_is_an_error_result(daemon_env: DaemonEnv, sample_images: list[Path]) -> None:
    other = daemon_env.root / "drop_unknown"
    other.mkdir()
    daemon_env.config_path.write_text(daemon_env.config_path.read_text()
                                      + f'\n[[watch]]\npath = "{other}"\nproduct = "nosuchproduct"\n')
    copy_as(sample_images[0], other / "x.png")
    daemon = make_daemon(daemon_env)
    intake_all(daemon)
    drain(daemon)
    rows = daemon.db.query_results()
    assert len(rows) == 1 and rows[0]["verdict"] == "ERROR"
    assert "no model for product 'nosuchproduct'" in rows[0]["error"]


def test_a_newly_enrolled_version_is_used_without_restart(daemon_env: DaemonEnv, sample_images: list[Path],
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    store = tmp_path / "store"
    shutil.copytree(load_config(daemon_env.config_path).store_dir, store)
    daemon_env.config_path.write_text(daemon_env.config_path.read_text().replace(
        str(load_config(daemon_env.config_path).store_dir), str(store)))
    monkeypatch.setattr(models_module, "CHECK_SECONDS", 0.0)
    copy_as(sample_images[0], daemon_env.drop / "first.png")
    daemon = make_daemon(daemon_env)
    intake_all(daemon)
    drain(daemon)
    more = generate_images(tmp_path / "more", n_good=3, n_defect=0, category="washer", size=(96, 96), seed=9)
    report = enroll(load_config(daemon_env.config_path), PRODUCT, more[0].parent, add=True)
    copy_as(sample_images[1], daemon_env.drop / "second.png")
    intake_all(daemon)
    drain(daemon)
    versions = {Path(r["path"]).name: r["model_version"] for r in daemon.db.query_results()}
    assert versions == {"first.png": "v0001", "second.png": report.version} and report.version == "v0002"


@pytest.mark.parametrize("action", ["move", "delete"])
def test_source_files_are_moved_or_deleted_after_scoring(daemon_env: DaemonEnv, sample_images: list[Path],
                                                         action: str) -> None:
    archive = daemon_env.root / "archive"
    text = daemon_env.config_path.read_text().replace('station = "cam1"', f'station = "cam1"\nafter_scoring = "{action}"'
                                                      f'\narchive_dir = "{archive}"')
    daemon_env.config_path.write_text(text)
    source = copy_as(sample_images[0], daemon_env.drop / "a.png")
    bad = daemon_env.drop / "bad.png"
    bad.write_text("junk")
    daemon = make_daemon(daemon_env)
    intake_all(daemon)
    drain(daemon)
    rows = {Path(r["path"]).name: r for r in daemon.db.query_results()}
    assert not source.exists()
    if action == "move":
        assert rows["a.png"]["image_path"] == str(archive / "a.png") and (archive / "a.png").is_file()
        assert (archive / "bad.png").is_file()  # failed images are archived too
    else:
        assert rows["a.png"]["image_path"] is None
        assert bad.exists()  # an image that failed to score is never deleted
