"""Demo data: synthetic images with fake scoring results, for demos, tests and the bench.

The fake anomaly map marks dark or blue pixels (where the synthetic defects are) plus
smooth noise; the heatmap PNG is rendered with the daemon's own
:func:`inspectd.heatmap.render_overlay`, so it looks like the real thing.

    python -m gui.demo OUT_DIR      # writes images, results, a database and config.toml
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np

from inspectd.db import VERDICT_NG, VERDICT_OK, Database, open_database
from inspectd.hashing import bytes_sha256
from inspectd.heatmap import render_overlay, write_map, write_png
from inspectd.synthetic import generate_images

DEMO_THRESHOLD = 2.0  # raw score at normalised 1.0
T0 = datetime(2024, 5, 1, 8, 0, tzinfo=timezone.utc)


@dataclass(frozen=True)
class FakeResult:
    """What a fake scoring of one image produced."""

    normalized_score: float
    heatmap: np.ndarray  # BGR uint8 overlay
    anomaly_map: np.ndarray  # raw scores, float32, image size


def fake_score(image_bgr: np.ndarray, rng: np.random.Generator, threshold: float = DEMO_THRESHOLD) -> FakeResult:
    """A plausible anomaly map for a synthetic tile image, its score and heatmap."""
    height, width = image_bgr.shape[:2]
    gray = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY).astype(np.float32)
    blue, _, red = (image_bgr[..., index].astype(np.float32) for index in range(3))
    marks = np.maximum(np.clip((70.0 - gray) / 30.0, 0, 1), np.clip((blue - red - 15.0) / 40.0, 0, 1))
    defect = cv2.GaussianBlur(marks, (0, 0), 3.0)
    defect = defect / max(float(defect.max()), 0.25)
    noise = cv2.GaussianBlur(rng.random((height, width), dtype=np.float32), (0, 0), 12.0)
    noise = (noise - noise.min()) / max(float(np.ptp(noise)), 1e-6)
    normalized = 0.25 + rng.uniform(0.3, 0.72) * noise + 1.1 * defect
    raw = (normalized * threshold).astype(np.float32)
    rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
    return FakeResult(float(normalized.max()), render_overlay(rgb, raw, threshold), raw)


def add_scored_image(
    db: Database, image: Path, results_dir: Path, product: str, station: str,
    *, scored_at: datetime, rng: np.random.Generator, model_version: str = "v0001",
) -> int:
    """Record *image* as an item with a fake result (heatmap and map files written); its id."""
    data = image.read_bytes()
    stat = image.stat()
    item_id, _ = db.add_item(str(image), stat.st_size, stat.st_mtime_ns, bytes_sha256(data), product, station,
                             discovered_at=scored_at - timedelta(seconds=2))
    fake = fake_score(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), rng)
    heatmap, anomaly_map = results_dir / product / f"{item_id:08d}.png", results_dir / product / f"{item_id:08d}.npy"
    write_png(heatmap, fake.heatmap)
    write_map(anomaly_map, fake.anomaly_map)
    db.record_result(
        item_id, raw_score=fake.normalized_score * DEMO_THRESHOLD, normalized_score=fake.normalized_score,
        verdict=VERDICT_NG if fake.normalized_score >= 1.0 else VERDICT_OK, model_version=model_version,
        threshold=DEMO_THRESHOLD, timings={"total_ms": 41.0}, heatmap_path=str(heatmap),
        anomaly_map_path=str(anomaly_map), scored_at=scored_at,
    )
    return item_id


def populate(
    db: Database, root: Path, *, n_good: int = 8, n_defect: int = 8, n_errors: int = 1,
    products: tuple[str, ...] = ("tiles",), stations: tuple[str, ...] = ("line1", "line2"),
    start: datetime = T0, seed: int = 0,
) -> list[int]:
    """Generate images under *root* and record fake results for them; item ids in time order.

    Images alternate between products and stations; *n_errors* extra items fail.
    """
    rng = np.random.default_rng(seed)
    images = generate_images(root / "images", n_good, n_defect, size=(256, 256), seed=seed)
    order = rng.permutation(len(images))
    ids = []
    for position, index in enumerate(order):
        ids.append(add_scored_image(
            db, images[index], root / "results", products[position % len(products)],
            stations[position % len(stations)], scored_at=start + timedelta(minutes=position), rng=rng,
        ))
    for number in range(n_errors):
        broken = root / "images" / f"broken_{number:03d}.png"
        broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
        item_id, _ = db.add_item(str(broken), broken.stat().st_size, broken.stat().st_mtime_ns,
                                 bytes_sha256(broken.read_bytes()), products[0], stations[0],
                                 discovered_at=start + timedelta(minutes=len(images) + number))
        db.record_error(item_id, f"{broken}: not a complete PNG file (truncated?)")
        ids.append(item_id)
    return ids


def write_demo(out_dir: Path, **options: object) -> Path:
    """A complete demo under *out_dir*: images, results, database and config.toml."""
    out_dir = out_dir.resolve()
    database = out_dir / "inspectd.db"
    with open_database(f"sqlite:///{database}") as db:
        populate(db, out_dir, **options)  # type: ignore[arg-type]
    config = out_dir / "config.toml"
    config.write_text(
        f'database_url = "sqlite:///{database}"\n'
        f'results_dir = "{out_dir / "results"}"\nstore_dir = "{out_dir / "models"}"\n'
        f'enroll_dir = "{out_dir / "enroll"}"\n\n[review]\noperator = "demo"\n'
        'unlisted_roles = ["quality_engineer"]\nunsaved_dir = "unsaved"\n',
        encoding="utf-8",
    )
    return config


def main(argv: list[str] | None = None) -> int:
    """Write a demo and print how to open it."""
    parser = argparse.ArgumentParser(prog="python -m gui.demo", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--good", type=int, default=12)
    parser.add_argument("--defects", type=int, default=12)
    args = parser.parse_args(argv)
    config = write_demo(args.out_dir, n_good=args.good, n_defect=args.defects)
    print(f"inspectd-gui --config {config}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
