"""Benchmark of the review app on a large database (a script, not a test).

Creates a SQLite database of 100,000 scored items (about 5 % NG, 3 % near the
threshold, 0.5 % failed; some already reviewed), then measures

* opening the main window until the first item's image is on screen (target < 2 s),
* moving to the next item until its image is on screen (target < 100 ms),
* deciding with a key and landing on the next item,
* the background queries (poll with changes, counts, score-sorted page, statistics).

    python bench/gui.py [--items 100000] [--out DIR] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from gui.data import SORT_SCORE, STATE_ALL, QueueFilter, fetch_page, poll, review_counts, score_sample  # noqa: E402
from gui.demo import DEMO_THRESHOLD, T0, fake_score  # noqa: E402
from inspectd.config import Config, ReviewSettings  # noqa: E402
from inspectd.db import DECISION_CONFIRM_DEFECT, DECISION_OVERRULE, Database, open_database  # noqa: E402
from inspectd.db.schema import Item, Product, Result, Review, utcnow  # noqa: E402
from inspectd.heatmap import write_map, write_png  # noqa: E402
from inspectd.synthetic import generate_images  # noqa: E402

PRODUCTS = ("tiles", "plates", "washers")
STATIONS = ("line1", "line2", "line3", "line4")
BATCH = 10_000


def make_files(root: Path, count: int = 24) -> list[tuple[str, str, str]]:
    """(image, heatmap, anomaly map) paths of a few real files shared by all items."""
    rng = np.random.default_rng(0)
    files = []
    for index, image in enumerate(generate_images(root / "images", count // 2, count - count // 2, size=(512, 512))):
        fake = fake_score(cv2.imread(str(image)), rng)
        heatmap, anomaly = root / "results" / f"{index:03d}.png", root / "results" / f"{index:03d}.npy"
        write_png(heatmap, fake.heatmap)
        write_map(anomaly, fake.anomaly_map)
        files.append((str(image), str(heatmap), str(anomaly)))
    return files


def fill(db: Database, items: int, files: list[tuple[str, str, str]]) -> None:
    """Insert *items* items with results (and some reviews) in bulk."""
    rng = np.random.default_rng(1)
    now = utcnow()
    with db.engine.begin() as connection:
        connection.execute(insert(Product), [{"name": name, "created_at": now} for name in PRODUCTS])
        for start in range(0, items, BATCH):
            ids = range(start + 1, min(start + BATCH, items) + 1)
            kind = rng.random(len(ids))
            scores = np.where(kind < 0.05, rng.uniform(1.0, 2.5, len(ids)),
                              np.where(kind < 0.08, rng.uniform(0.9, 1.0, len(ids)), rng.uniform(0.2, 0.9, len(ids))))
            item_rows, result_rows = [], []
            for offset, item_id in enumerate(ids):
                image, heatmap, anomaly = files[item_id % len(files)]
                at = T0 + timedelta(seconds=3 * item_id)
                failed = kind[offset] > 0.995
                item_rows.append({
                    "id": item_id, "path": f"/drop/{item_id:06d}.png", "file_name": f"{item_id:06d}.png", "size": 1,
                    "mtime_ns": item_id, "sha256": f"{item_id:064x}", "product": PRODUCTS[item_id % 3],
                    "station": STATIONS[item_id % 4], "discovered_at": at, "state": "error" if failed else "done",
                    "attempts": 1, "updated_at": at})
                score = float(scores[offset])
                result_rows.append({
                    "item_id": item_id, "raw_score": None if failed else score * DEMO_THRESHOLD,
                    "normalized_score": None if failed else score,
                    "verdict": "ERROR" if failed else "NG" if score >= 1.0 else "OK", "model_version": "v0001",
                    "threshold": DEMO_THRESHOLD, "heatmap_path": None if failed else heatmap,
                    "anomaly_map_path": None if failed else anomaly, "image_path": image,
                    "error": "decode failed" if failed else None, "scored_at": at + timedelta(seconds=1)})
            connection.execute(insert(Item), item_rows)
            connection.execute(insert(Result), result_rows)
        reviewed = [{"item_id": item_id, "decision": DECISION_CONFIRM_DEFECT if item_id % 3 else DECISION_OVERRULE,
                     "operator": "bench", "decided_at": now, "verdict": "NG", "model_version": "v0001",
                     "threshold": DEMO_THRESHOLD} for item_id in range(1, items // 4, 20)]
        connection.execute(insert(Review), reviewed)


def timed(work: Callable[[], object], repeat: int = 5) -> float:
    """Median wall time of *work* in milliseconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def wait_for(app, condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.perf_counter() + timeout_s
    while not condition():
        if time.perf_counter() > deadline:
            raise TimeoutError("the window did not get there in time")
        app.processEvents()
        time.sleep(0.0005)


def measure_window(config: Config, db: Database, moves: int = 60) -> dict[str, float]:
    """Open the window, then step through items; times in ms."""
    from PySide6.QtWidgets import QApplication

    from gui.main_window import MainWindow

    app = QApplication.instance() or QApplication([])
    started = time.perf_counter()
    window = MainWindow(config, db)
    window.show()
    shown: list[int] = []
    window.imagesShown.connect(shown.append)
    wait_for(app, lambda: bool(shown))
    opened = (time.perf_counter() - started) * 1000
    wait_for(app, lambda: window.filters.state.itemText(0).endswith(")"))
    counted = (time.perf_counter() - started) * 1000

    def step(action: Callable[[], None]) -> float:
        target = window.table.currentIndex().row() + 1
        shown.clear()
        began = time.perf_counter()
        action()
        wait_for(app, lambda: window.table.currentIndex().row() >= target and bool(shown)
                 and shown[-1] == window.current_row().item_id)
        elapsed = (time.perf_counter() - began) * 1000
        for _ in range(3):  # let prefetching catch up as it would between key presses
            app.processEvents()
            time.sleep(0.05)
        return elapsed

    nexts = [step(lambda: window.move(1)) for _ in range(moves)]
    decides = [step(lambda: window.decide(DECISION_OVERRULE)) for _ in range(moves // 3)]
    window.shutdown()
    window.close()
    return {"open": opened, "counts": counted, "next_median": statistics.median(nexts), "next_max": max(nexts),
            "next_p95": sorted(nexts)[int(len(nexts) * 0.95) - 1], "decide_median": statistics.median(decides),
            "decide_max": max(decides), "rows_loaded": window.model.rowCount()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--out", type=Path, help="folder for the database (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the generated folder")
    args = parser.parse_args(argv)
    root = args.out or Path(tempfile.mkdtemp(prefix="inspectd-gui-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{root / 'bench.db'}"
    try:
        began = time.perf_counter()
        with open_database(url) as db:
            fill(db, args.items, make_files(root))
        print(f"created {args.items:,} items with results in {time.perf_counter() - began:.1f} s ({root})")
        config = Config(database_url=url, store_dir=root / "models", results_dir=root / "results",
                        enroll_dir=root / "enroll", review=ReviewSettings(operator="bench", unsaved_dir=root / "unsaved"))
        with open_database(url, create=False) as db:
            unreviewed, by_score = QueueFilter(), QueueFilter(review_state=STATE_ALL, sort=SORT_SCORE, descending=True)
            first = poll(db, unreviewed, None)
            page_20 = fetch_page(db, unreviewed, None, 4000)[-1].sort_key("time")
            queries = {
                "first page (200, time order)": timed(lambda: fetch_page(db, unreviewed, None, 200)),
                "first page (200, highest score)": timed(lambda: fetch_page(db, by_score, None, 200)),
                "page 21 (keyset, after 4,000 rows)": timed(lambda: fetch_page(db, unreviewed, page_20, 200)),
                "counts per review state": timed(lambda: review_counts(db, unreviewed)),
                "poll, nothing new": timed(lambda: poll(db, unreviewed, first.marks)),
                "poll, something new": timed(lambda: poll(db, unreviewed, None, force=True)),
                "statistics of one product": timed(lambda: score_sample(db, "tiles"), repeat=3),
            }
            print(f"queue: {first.counts}")
            for name, ms in queries.items():
                print(f"  {name:34s} {ms:8.1f} ms")
            figures = measure_window(config, db)
        print(f"open main window to first image shown: {figures['open']:8.1f} ms  (target < 2000 ms)")
        print(f"  ... until the queue counts are shown: {figures['counts']:8.1f} ms")
        print(f"next item (N) until its image is shown: median {figures['next_median']:.1f} ms, "
              f"p95 {figures['next_p95']:.1f} ms, max {figures['next_max']:.1f} ms  (target < 100 ms)")
        print(f"decide (O) and land on the next image:  median {figures['decide_median']:.1f} ms, "
              f"max {figures['decide_max']:.1f} ms")
        ok = figures["open"] < 2000 and figures["next_p95"] < 100
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        if not args.keep and args.out is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
