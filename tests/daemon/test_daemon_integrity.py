"""Every image gets exactly one correct result, and no file can stop the line.

Each test drives a real `inspectd run` process on real files and a real SQLite
database, doing to it what cameras, shares and plants do: slow writers in every
format, overwritten names, wrong clocks, odd names, links and special files,
unreadable files, decode bombs, locked and full databases, corrupt models, a
second daemon, a deleted folder.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import cv2
import pytest

from daemon_support import PRODUCT, DaemonEnv, copy_as
from inspectd.config import load_config
from inspectd.enroll import enroll
from inspectd.imageio import apply_geometry, decode_image
from inspectd.model import ProductModel
from inspectd.simulation import (WITHOUT_FILE_OVERRIDE, encode, fill_disk, hold_sqlite_lock, jpeg_claiming,
                                 jpeg_with_thumbnail, mount_tmpfs, odd_entries, peak_rss_mb, replace_atomically,
                                 unmount, write_in_chunks)
from inspectd.store import ModelStore
from inspectd.synthetic import generate_images

pytestmark = pytest.mark.slow


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def encoded(image_path: Path, extension: str, params: list[int] | None = None) -> bytes:
    return encode(cv2.imread(str(image_path)), extension, params)


def rows_by_name(rows: list[dict]) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for row in rows:
        found.setdefault(Path(row["path"]).name, []).append(row)
    return found


def offline_scores(model_store: Path, images: dict[str, bytes]) -> dict[str, float]:
    """What the product's model scores for these bytes, computed here and not by the daemon."""
    model = ProductModel.load(ModelStore(model_store), PRODUCT)
    prepared = [apply_geometry(decode_image(data, name=name), model.geometry) for name, data in images.items()]
    return {name: result.score for name, result in zip(images, model.score_images(prepared))}


def settled_db_rows(env: DaemonEnv, expected: int, timeout: float = 90.0) -> list[dict]:
    """Wait for `expected` rows, then a little longer to catch any extra one."""
    env.wait_results(expected, timeout=timeout)
    time.sleep(1.5)
    return env.results()


# -- 1, 5: slow writers of every format, wrong clocks ------------------------------------


def test_slow_writers_of_every_format_get_one_scored_row_each(daemon_env: DaemonEnv, sample_images: list[Path],
                                                              tmp_path: Path) -> None:
    share = tmp_path / "share"
    daemon_env.add_config(f'\n[[watch]]\npath = "{share}"\nproduct = "{PRODUCT}"\nstation = "share"\n'
                          'network_share = true\n')
    daemon_env.set_daemon(poll_seconds=0.2)
    source = sample_images[6]
    thumbnail_jpeg, after_thumbnail = jpeg_with_thumbnail(
        encoded(source, ".jpg"), encoded(sample_images[0], ".jpg", [cv2.IMWRITE_JPEG_QUALITY, 30]))
    bmp = bytearray(encoded(source, ".bmp"))
    bmp[2:6] = bytes(4)  # a size field left at zero
    writers = {  # name: (bytes, cut points, keep open, old clock, folder)
        "chunks.tiff": (encoded(source, ".tiff"), [300, 9000, 20000], True, None, daemon_env.drop),
        "chunks_reopened.tiff": (encoded(source, ".tiff"), [300, 9000], False, None, daemon_env.drop),
        "empty_then_filled.png": (source.read_bytes(), [0], False, None, daemon_env.drop),
        "four_bytes_first.png": (source.read_bytes(), [4], True, None, daemon_env.drop),
        "thumbnail.jpg": (thumbnail_jpeg, [after_thumbnail], False, None, daemon_env.drop),
        "wrong_size_field.bmp": (bytes(bmp), [54, 9000], False, None, daemon_env.drop),
        "old_clock.png": (source.read_bytes(), [200, 2000], False, 3600.0, daemon_env.drop),
        "on_share.png": (source.read_bytes(), [8, 3000], False, None, share),
        "on_share.tiff": (encoded(source, ".tiff"), [300, 9000], False, 3600.0, share),
    }
    proc = daemon_env.start()
    daemon_env.wait_ready()
    threads = [threading.Thread(target=write_in_chunks, args=(folder / name, data, cuts, 2.0),
                                kwargs={"keep_open": keep_open, "mtime_back": back})
               for name, (data, cuts, keep_open, back, folder) in writers.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rows = settled_db_rows(daemon_env, len(writers))
    assert daemon_env.stop(proc) == 0
    found = rows_by_name(rows)
    assert {name: len(found.get(name, [])) for name in writers} == {name: 1 for name in writers}, rows
    for name, (data, *_) in writers.items():
        [row] = found[name]
        assert row["verdict"] in ("OK", "NG"), (name, row["error"])
        assert row["sha256"] == sha256(data), name


# -- 2, 19: move never takes a file that is still being written; error rows say where ----


def test_move_after_scoring_never_moves_a_file_still_being_written(daemon_env: DaemonEnv,
                                                                    sample_images: list[Path]) -> None:
    archive = daemon_env.root / "archive"
    daemon_env.config_path.write_text(daemon_env.config_path.read_text().replace(
        'station = "cam1"', f'station = "cam1"\nafter_scoring = "move"\narchive_dir = "{archive}"'))
    proc = daemon_env.start()
    daemon_env.wait_ready()
    images = {f"slow_{i}.tiff": encoded(sample_images[i], ".tiff") for i in range(4)}
    threads = [threading.Thread(target=write_in_chunks, args=(daemon_env.drop / name, data, [500, 12000], 1.5))
               for name, data in images.items()]
    for thread in threads:
        thread.start()
    (daemon_env.drop / "broken.png").write_bytes(sample_images[0].read_bytes()[:-30])  # never completed
    for thread in threads:
        thread.join()
    rows = settled_db_rows(daemon_env, len(images) + 1)
    assert daemon_env.stop(proc) == 0
    found = rows_by_name(rows)
    for name, data in images.items():
        [row] = found[name]
        assert row["verdict"] in ("OK", "NG") and row["image_path"] == str(archive / name)
        assert (archive / name).read_bytes() == data  # the whole image was archived, once
    [broken] = found["broken.png"]
    assert broken["verdict"] == "ERROR" and "truncated PNG" in broken["error"]
    assert broken["image_path"] == str(archive / "broken.png") and (archive / "broken.png").is_file()
    assert not any(daemon_env.drop.iterdir())


# -- 3: the row belongs to the bytes that were scored ----------------------------------------


@pytest.mark.parametrize("buffer_mb", [256, 0])
def test_an_overwritten_latest_png_never_gets_another_images_score(daemon_env: DaemonEnv, sample_images: list[Path],
                                                                    model_store: Path, buffer_mb: int) -> None:
    daemon_env.set_daemon(intake_buffer_mb=buffer_mb, batch_size=4)
    proc = daemon_env.start()
    daemon_env.wait_ready()
    first, second = sample_images[0].read_bytes(), sample_images[7].read_bytes()
    latest = daemon_env.drop / "latest.png"
    backlog = [copy_as(sample_images[i % 10], daemon_env.drop / f"queue_{i:02d}.png") for i in range(40)]
    time.sleep(0.4)
    latest.write_bytes(first)  # taken in behind the backlog ...
    daemon_env.wait_for(lambda: "latest.png" in str(_item_paths(daemon_env)), "latest.png taken in")
    replace_atomically(latest, second)  # ... and replaced before its turn
    rows = settled_db_rows(daemon_env, len(backlog) + 2)
    assert daemon_env.stop(proc) == 0
    latest_rows = rows_by_name(rows)["latest.png"]
    expected = offline_scores(model_store, {"first": first, "second": second})
    by_hash = {row["sha256"]: row for row in latest_rows}
    assert len(latest_rows) == 2 and set(by_hash) == {sha256(first), sha256(second)}
    assert by_hash[sha256(second)]["raw_score"] == pytest.approx(expected["second"], rel=1e-5)
    first_row = by_hash[sha256(first)]
    if first_row["verdict"] == "ERROR":  # its bytes were gone when its turn came (no memory budget)
        assert buffer_mb == 0 and "replaced before it could be scored" in first_row["error"]
    else:
        assert first_row["raw_score"] == pytest.approx(expected["first"], rel=1e-5)


def test_a_latest_png_overwritten_while_the_daemon_is_down_is_still_scored(daemon_env: DaemonEnv,
                                                                          sample_images: list[Path],
                                                                          model_store: Path) -> None:
    proc = daemon_env.start()
    daemon_env.wait_ready()
    first, second = sample_images[1].read_bytes(), sample_images[8].read_bytes()
    backlog = [copy_as(sample_images[i % 10], daemon_env.drop / f"queue_{i:02d}.png") for i in range(80)]
    time.sleep(0.4)
    latest = daemon_env.drop / "latest.png"
    latest.write_bytes(first)
    daemon_env.wait_for(lambda: "latest.png" in str(_item_paths(daemon_env)), "latest.png taken in", every=0.02)
    proc.kill()  # queued, its bytes in memory and in the spool only ...
    proc.wait(timeout=10)
    assert not [r for r in daemon_env.results() if r["path"] == str(latest)], "scored before the kill"
    replace_atomically(latest, second)  # ... when the camera overwrites it
    proc = daemon_env.start()
    rows = settled_db_rows(daemon_env, len(backlog) + 2, timeout=180)
    assert daemon_env.stop(proc) == 0
    expected = offline_scores(model_store, {"first": first, "second": second})
    by_hash = {row["sha256"]: row for row in rows_by_name(rows)["latest.png"]}
    assert by_hash[sha256(first)]["raw_score"] == pytest.approx(expected["first"], rel=1e-5)
    assert by_hash[sha256(second)]["raw_score"] == pytest.approx(expected["second"], rel=1e-5)
    assert not list((daemon_env.root / "spool").iterdir())  # nothing left behind once recorded


def _item_paths(env: DaemonEnv) -> list[str]:
    try:
        with sqlite3.connect(env.database_url.removeprefix("sqlite:///")) as connection:
            return [row[0] for row in connection.execute("SELECT path FROM items")]
    except sqlite3.Error:
        return []


# -- 4: new content under an old name, size and mtime while the daemon was down --------------


def test_a_restart_scores_new_content_with_the_same_name_size_and_mtime(daemon_env: DaemonEnv,
                                                                        sample_images: list[Path]) -> None:
    first, second = encoded(sample_images[0], ".bmp"), encoded(sample_images[7], ".bmp")
    assert len(first) == len(second) and first != second
    target = daemon_env.drop / "same.bmp"
    target.write_bytes(first)
    proc = daemon_env.start()
    daemon_env.wait_results(1)
    assert daemon_env.stop(proc) == 0
    mtime = target.stat().st_mtime_ns
    target.write_bytes(second)
    os.utime(target, ns=(mtime, mtime))  # a copy that keeps the camera's timestamp
    proc = daemon_env.start()
    rows = settled_db_rows(daemon_env, 2)
    assert daemon_env.stop(proc) == 0
    assert sorted(row["sha256"] for row in rows) == sorted([sha256(first), sha256(second)])
    assert all(row["verdict"] in ("OK", "NG") for row in rows)


# -- 6, 7, 8: names, links, special files, unreadable files, decode bombs ---------------------


def test_odd_names_links_and_special_files_get_error_rows_and_never_stop_the_daemon(
        daemon_env: DaemonEnv, sample_images: list[Path], tmp_path: Path) -> None:
    image = sample_images[0].read_bytes()
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(image)
    before = daemon_env.drop / "before"
    expected = odd_entries(daemon_env.drop, image, outside)  # there at start-up: the scan finds them
    proc = daemon_env.start()
    rows = settled_db_rows(daemon_env, len(expected) + 1)
    arriving = daemon_env.drop / "later"
    arriving.mkdir()
    daemon_env.add_config(f'\n[[watch]]\npath = "{arriving}"\nproduct = "{PRODUCT}"\nstation = "cam2"\n')
    proc.send_signal(__import__("signal").SIGHUP)
    daemon_env.wait_for(lambda: "configuration reloaded" in daemon_env.log(), "reload")
    later = odd_entries(arriving, image, outside)  # arriving while it runs: events find them
    rows = settled_db_rows(daemon_env, 2 * (len(expected) + 1))
    assert proc.poll() is None, daemon_env.log()[-3000:]
    assert daemon_env.stop(proc) == 0
    proc = daemon_env.start()  # a restart finds them all again, and adds nothing
    daemon_env.wait_ready(count=2)
    time.sleep(3)
    assert daemon_env.stop(proc) == 0
    rows = daemon_env.results()
    counts = Counter(row["path"] for row in rows)
    assert set(counts.values()) == {1}, counts
    for folder, names in ((daemon_env.drop, expected), (arriving, later)):
        for name, words in names.items():
            [row] = [r for r in rows if r["path"] == f"{folder}/{name}"]
            assert row["verdict"] == "ERROR" and words in row["error"], row
        [real] = [r for r in rows if r["path"] == f"{folder}/real.png"]
        assert real["verdict"] in ("OK", "NG")
    assert outside.read_bytes() == image and not before.exists()


def test_an_unreadable_file_gets_a_permission_denied_row_counted_by_status(daemon_env: DaemonEnv,
                                                                          sample_images: list[Path]) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to run the daemon without root's file access")
    locked = copy_as(sample_images[0], daemon_env.drop / "locked.png")
    locked.chmod(0)
    fine = copy_as(sample_images[1], daemon_env.drop / "fine.png")
    # As root, drop the capabilities that read any file: the daemon is an ordinary user here.
    proc = daemon_env.start(wrapper=WITHOUT_FILE_OVERRIDE)
    rows = settled_db_rows(daemon_env, 2)
    status = daemon_env.status()
    assert daemon_env.stop(proc) == 0
    found = rows_by_name(rows)
    assert found["fine.png"][0]["verdict"] in ("OK", "NG")
    [row] = found["locked.png"]
    assert row["verdict"] == "ERROR" and "permission denied" in row["error"]
    assert status["counts"][PRODUCT]["error"] == 1
    assert fine.exists() and locked.exists()


def test_a_decode_bomb_is_refused_from_its_header_without_the_memory(daemon_env: DaemonEnv,
                                                                     sample_images: list[Path]) -> None:
    data = jpeg_claiming(encoded(sample_images[0], ".jpg"), 30000, 30000)
    proc = daemon_env.start()
    daemon_env.wait_ready()
    (daemon_env.drop / "bomb.jpg").write_bytes(data)
    [row] = settled_db_rows(daemon_env, 1)
    peak = peak_rss_mb(proc.pid)
    assert daemon_env.stop(proc) == 0
    assert row["verdict"] == "ERROR" and "declares 30000x30000" in row["error"] and len(data) < 10_000
    assert peak < 1500, f"peak RSS {peak:.0f} MB"


# -- 9, 11, 12: a long database lock, SIGTERM under a lock, pauses in status -------------------


def sqlite_file(env: DaemonEnv) -> Path:
    return Path(env.database_url.removeprefix("sqlite:///"))


def _states(env: DaemonEnv) -> Counter:
    with sqlite3.connect(sqlite_file(env)) as connection:
        return Counter(state for (state,) in connection.execute("SELECT state FROM items"))


def test_a_long_database_lock_pauses_visibly_and_strands_nothing(daemon_env: DaemonEnv,
                                                                 sample_images: list[Path]) -> None:
    proc = daemon_env.start()
    daemon_env.wait_results(0)
    daemon_env.wait_ready()
    files = [copy_as(sample_images[i % 10], daemon_env.drop / f"burst_{i:02d}.png") for i in range(24)]
    daemon_env.wait_for(lambda: len(daemon_env.results()) >= 3, "the burst to start")
    holder = hold_sqlite_lock(sqlite_file(daemon_env), 40)
    # On a fast machine the whole burst can be recorded before the lock is won; images that
    # arrive while it is held need the database whatever the speed.
    files += [copy_as(sample_images[i % 10], daemon_env.drop / f"locked_{i:02d}.png") for i in range(6)]
    paused = daemon_env.wait_for(
        lambda: [p for p in daemon_env.status()["service"]["pauses"] if "database locked" in p["message"]],
        "the pause to show in inspectd status", timeout=30)
    assert paused[0]["reason"] == "database"
    holder.wait(timeout=60)
    rows = settled_db_rows(daemon_env, len(files), timeout=120)
    status = daemon_env.status()
    assert proc.poll() is None and daemon_env.stop(proc) == 0
    assert sorted(Path(r["path"]).name for r in rows) == sorted(f.name for f in files)
    assert _states(daemon_env) == Counter({"done": len(files)})
    assert status["service"]["pauses"] == []
    assert "resumed (database)" in daemon_env.log()


def test_sigterm_under_a_database_lock_is_bounded_and_truthful(daemon_env: DaemonEnv,
                                                               sample_images: list[Path]) -> None:
    daemon_env.set_daemon(stop_timeout_seconds=10.0)
    proc = daemon_env.start()
    daemon_env.wait_ready()
    files = [copy_as(sample_images[i % 10], daemon_env.drop / f"t_{i:02d}.png") for i in range(30)]
    daemon_env.wait_for(lambda: len(daemon_env.results()) >= 4, "scoring to start")
    holder = hold_sqlite_lock(sqlite_file(daemon_env), 60)
    # A fast machine may record the whole burst before the lock is won: images that arrive
    # while it is held are work in hand that cannot be recorded, whatever the speed.
    files += [copy_as(sample_images[i % 10], daemon_env.drop / f"locked_{i:02d}.png") for i in range(4)]
    time.sleep(3)  # the batch in hand is scored, and cannot be recorded
    started = time.monotonic()
    assert daemon_env.stop(proc, timeout=60) == 0
    took = time.monotonic() - started
    log = daemon_env.log()
    holder.kill()
    holder.wait()
    assert took < 30, f"took {took:.0f} s to stop"
    in_flight = _states(daemon_env)["scoring"]
    if in_flight:
        assert "stopped, but not cleanly" in log and "stopped cleanly" not in log
    else:
        assert "stopped cleanly" in log
    proc = daemon_env.start()
    daemon_env.wait_ready(count=2)
    rows = settled_db_rows(daemon_env, len(files), timeout=120)
    assert daemon_env.stop(proc) == 0
    assert sorted(Path(r["path"]).name for r in rows) == sorted(f.name for f in files)


def test_sigterm_during_start_up_stops_cleanly_and_loses_nothing(daemon_env: DaemonEnv,
                                                                 sample_images: list[Path]) -> None:
    """systemctl stop while the service is still loading torch and its models."""
    files = [copy_as(sample_images[i], daemon_env.drop / f"early_{i}.png") for i in range(3)]
    proc = daemon_env.start()
    time.sleep(0.5)  # the interpreter runs; torch and the models are not loaded yet
    assert daemon_env.stop(proc) == 0
    log = daemon_env.log()
    assert "received SIGTERM during start-up" in log and "stopped cleanly" in log
    assert daemon_env.results() == []
    proc = daemon_env.start()
    rows = settled_db_rows(daemon_env, len(files))
    assert daemon_env.stop(proc) == 0
    assert sorted(Path(r["path"]).name for r in rows) == sorted(f.name for f in files)


# -- 10, 12: full disks pause and resume, also across restarts ----------------------------------


@pytest.fixture
def small_disks(tmp_path: Path):
    """Two small tmpfs mounts (database, results); skipped where mounting is not allowed."""
    mounts = []
    for name in ("dbdisk", "resultsdisk"):
        refused = mount_tmpfs(tmp_path / name, "3m")
        if refused:
            for point in mounts:
                unmount(point)
            pytest.skip(f"cannot mount a tmpfs here ({refused}); needs root")
        mounts.append(tmp_path / name)
    yield mounts
    for point in mounts:
        unmount(point)


def test_full_database_and_results_disks_pause_visibly_and_resume(daemon_env: DaemonEnv, sample_images: list[Path],
                                                                   small_disks: list[Path]) -> None:
    db_disk, results_disk = small_disks
    daemon_env.database_url = f"sqlite:///{db_disk / 'inspectd.db'}"
    text = daemon_env.config_path.read_text()
    text = text.replace(f"sqlite:///{daemon_env.root / 'inspectd.db'}", daemon_env.database_url)
    daemon_env.config_path.write_text(text.replace(str(daemon_env.root / "results"), str(results_disk)))
    proc = daemon_env.start()
    copy_as(sample_images[0], daemon_env.drop / "before.png")
    daemon_env.wait_results(1)
    filler = fill_disk(db_disk)
    names = [copy_as(sample_images[i], daemon_env.drop / f"dbfull_{i}.png").name for i in range(3)]
    daemon_env.wait_for(lambda: any("database disk full" in p["message"]
                                    for p in (daemon_env.status().get("service") or {}).get("pauses", [])),
                        "the database-full pause in inspectd status")
    assert daemon_env.stop(proc) == 0
    proc = daemon_env.start()  # a start while the disk is full is no crash either
    daemon_env.wait_ready(count=2)
    time.sleep(3)
    assert proc.poll() is None, daemon_env.log()[-2000:]
    filler.unlink()
    settled_db_rows(daemon_env, 4)
    filler = fill_disk(results_disk)
    names += [copy_as(sample_images[i], daemon_env.drop / f"resultsfull_{i}.png").name for i in range(3)]
    daemon_env.wait_for(lambda: any(p["reason"] == "results disk"
                                    for p in (daemon_env.status().get("service") or {}).get("pauses", [])),
                        "the results-disk pause in inspectd status")
    filler.unlink()
    rows = settled_db_rows(daemon_env, 7, timeout=120)
    assert daemon_env.stop(proc) == 0
    assert Counter(Path(r["path"]).name for r in rows) == Counter(["before.png", *names])
    assert all(r["verdict"] in ("OK", "NG") for r in rows)
    log = daemon_env.log()
    assert "unexpected error" not in log and "OperationalError" not in log
    assert "resumed (database)" in log and "resumed (results disk)" in log


def test_a_results_disk_that_fills_partway_through_a_claim_loses_and_repeats_nothing(
        daemon_env: DaemonEnv, sample_images: list[Path], small_disks: list[Path]) -> None:
    """Heatmaps are written in threads beside the next batch's scoring: a disk that fills
    after a few of them must hand back exactly the rest, in a real daemon process."""
    results_disk = small_disks[1]
    text = daemon_env.config_path.read_text()
    daemon_env.config_path.write_text(text.replace(str(daemon_env.root / "results"), str(results_disk)))
    daemon_env.set_daemon(batch_size=16)  # one claim of two model batches
    filler = fill_disk(results_disk)
    os.truncate(filler, filler.stat().st_size - 150_000)  # room for a few images' outputs
    names = [copy_as(sample_images[i % len(sample_images)], daemon_env.drop / f"burst_{i:02d}.png").name
             for i in range(12)]
    proc = daemon_env.start()
    daemon_env.wait_for(lambda: any(p["reason"] == "results disk"
                                    for p in (daemon_env.status().get("service") or {}).get("pauses", [])),
                        "the results-disk pause in inspectd status")
    assert len(daemon_env.results()) < 12
    filler.unlink()
    rows = settled_db_rows(daemon_env, 12, timeout=120)
    assert daemon_env.stop(proc) == 0
    assert Counter(Path(r["path"]).name for r in rows) == Counter(names)
    assert all(r["verdict"] in ("OK", "NG") for r in rows)
    for row in rows:
        heatmap = cv2.imread(row["heatmap_path"])
        assert heatmap is not None and heatmap.shape[:2] == cv2.imread(str(sample_images[0])).shape[:2]
    assert "resumed (results disk)" in daemon_env.log()


# -- 13, 14: corrupt and edited models ---------------------------------------------------------


def _own_store(env: DaemonEnv, model_store: Path) -> Path:
    store = env.root / "store"
    shutil.copytree(model_store, store)
    env.config_path.write_text(env.config_path.read_text().replace(str(model_store), str(store)))
    return store


def test_a_corrupt_newest_version_never_takes_the_line_down(daemon_env: DaemonEnv, sample_images: list[Path],
                                                            model_store: Path) -> None:
    store = _own_store(daemon_env, model_store)
    more = generate_images(daemon_env.root / "more", n_good=3, n_defect=0, category="washer", size=(96, 96), seed=9)
    config = load_config(daemon_env.config_path)
    assert enroll(config, PRODUCT, more[0].parent, add=True).version == "v0002"
    bank = store / PRODUCT / "v0002" / "bank.npy"
    data = bytearray(bank.read_bytes())
    data[-4:] = bytes(b ^ 0xFF for b in data[-4:])
    bank.write_bytes(bytes(data))
    proc = daemon_env.start()
    copy_as(sample_images[0], daemon_env.drop / "a.png")
    [row] = settled_db_rows(daemon_env, 1)
    status = daemon_env.status()["service"]
    assert row["verdict"] in ("OK", "NG") and row["model_version"] == "v0001"
    assert status["model_problems"][PRODUCT]["version"] == "v0002"
    assert "fails its checksum" in status["model_problems"][PRODUCT]["problem"]
    assert status["model_problems"][PRODUCT]["using"] == "v0001"
    newer = generate_images(daemon_env.root / "newer", n_good=3, n_defect=0, category="washer", size=(96, 96),
                            seed=10)
    assert enroll(config, PRODUCT, newer[0].parent).version == "v0003"  # a good one follows
    copy_as(sample_images[1], daemon_env.drop / "b.png")
    rows = daemon_env.wait_for(lambda: [r for r in daemon_env.results() if r["model_version"] == "v0003"],
                               "scoring with v0003")
    assert daemon_env.stop(proc) == 0
    assert [Path(r["path"]).name for r in rows] == ["b.png"]
    assert daemon_env.log().count("MODEL PROBLEM") == 1


def test_an_edited_threshold_in_model_json_is_refused(daemon_env: DaemonEnv, sample_images: list[Path],
                                                      model_store: Path) -> None:
    store = _own_store(daemon_env, model_store)
    meta = store / PRODUCT / "v0001" / "model.json"
    text = meta.read_text()
    edited = re.sub(r'"threshold": [0-9.e+-]+', '"threshold": 99.0', text, count=1)
    assert edited != text
    meta.write_text(edited)
    proc = daemon_env.start()
    copy_as(sample_images[9], daemon_env.drop / "defect.png")
    [row] = settled_db_rows(daemon_env, 1)
    assert daemon_env.stop(proc) == 0
    assert row["verdict"] == "ERROR" and "model.json fails its checksum" in row["error"]


# -- 16: file modes follow the umask ------------------------------------------------------------


def test_heatmaps_and_models_follow_the_umask_of_the_service(daemon_env: DaemonEnv, sample_images: list[Path],
                                                             model_store: Path) -> None:
    store = _own_store(daemon_env, model_store)
    more = generate_images(daemon_env.root / "more", n_good=3, n_defect=0, category="washer", size=(96, 96), seed=9)
    subprocess.run([sys.executable, "-m", "inspectd.cli", "--config", str(daemon_env.config_path), "enroll",
                    "--product", PRODUCT, "--add", str(more[0].parent)], check=True, capture_output=True,
                   preexec_fn=lambda: os.umask(0o007))
    version = store / PRODUCT / "v0002"
    assert stat.S_IMODE(version.stat().st_mode) == 0o770
    assert {stat.S_IMODE(p.stat().st_mode) for p in version.iterdir()} == {0o660}
    proc = daemon_env.start(umask=0o007)
    copy_as(sample_images[0], daemon_env.drop / "a.png")
    [row] = settled_db_rows(daemon_env, 1)
    assert daemon_env.stop(proc) == 0
    heatmap, raw_map = Path(row["heatmap_path"]), Path(row["anomaly_map_path"])
    assert stat.S_IMODE(heatmap.stat().st_mode) == 0o660 and stat.S_IMODE(raw_map.stat().st_mode) == 0o660
    assert stat.S_IMODE(heatmap.parent.stat().st_mode) == 0o770


# -- 17, 18: one daemon per folder; a recreated folder is watched again ----------------------------


def test_a_second_daemon_on_the_same_folder_refuses_and_a_crash_leaves_no_stale_lock(
        daemon_env: DaemonEnv, sample_images: list[Path]) -> None:
    first = daemon_env.start()
    daemon_env.wait_ready()
    second = daemon_env.start()
    assert second.wait(timeout=60) == 1
    assert f"pid {first.pid}" in daemon_env.log() and "already watched by another inspectd run" in daemon_env.log()
    daemon_env.procs.remove(second)  # its refusal is the expected exit
    copy_as(sample_images[0], daemon_env.drop / "a.png")
    daemon_env.wait_results(1)
    first.kill()
    first.wait(timeout=10)
    third = daemon_env.start()
    daemon_env.wait_ready(count=2)
    copy_as(sample_images[1], daemon_env.drop / "b.png")
    rows = settled_db_rows(daemon_env, 2)
    assert daemon_env.stop(third) == 0
    assert sorted(Path(r["path"]).name for r in rows) == ["a.png", "b.png"]


def test_a_deleted_and_recreated_drop_folder_is_watched_again(daemon_env: DaemonEnv,
                                                              sample_images: list[Path]) -> None:
    daemon_env.set_daemon(reconcile_seconds=600.0)  # events alone must find the new file
    proc = daemon_env.start()
    daemon_env.wait_ready()
    shutil.rmtree(daemon_env.drop)
    daemon_env.wait_for(lambda: daemon_env.status()["service"]["missing_folders"] == [str(daemon_env.drop)],
                        "the missing folder in inspectd status", timeout=30)
    daemon_env.drop.mkdir()
    time.sleep(1.5)
    copy_as(sample_images[0], daemon_env.drop / "after.png")
    [row] = daemon_env.wait_results(1, timeout=20)
    assert daemon_env.stop(proc) == 0
    assert Path(row["path"]).name == "after.png" and "watching it again" in daemon_env.log()
