"""Coreset benchmark (a script, not a test): the CPU's greedy against the plain one.

    python bench/coreset.py [--images 222] [--ratio 0.1] [--precision bf16] [--no-dense]

Patch features of bsdata good images (generated ones when bsdata is absent; WRN50,
random weights, 224 px), projected as enrollment projects them (128-d), then the greedy
k-center selection of `ratio` of them: the product's CPU greedy (greedy_clusters.py;
its first call in a process compiles, timed apart) and the plain greedy (one
matrix-vector product over every point per step, the GPU path, here on the CPU), with
their covering radii and the share of points both choose. Median of `--repeats` runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inspectd.config import ProductSettings  # noqa: E402
from inspectd.coreset import covering_radius, coreset_size, greedy_dense, greedy_pruned, project  # noqa: E402
from inspectd.extractor_cache import new_extractor  # noqa: E402
from inspectd.imageio import apply_geometry, list_images, read_image  # noqa: E402
from inspectd.settings_json import geometry_from_settings  # noqa: E402
from inspectd.synthetic import generate_images  # noqa: E402

BSDATA = Path(__file__).resolve().parents[2] / "shared/data/bsdata/ballscrew_1130x460/train/good"


@torch.inference_mode()
def projected_patches(paths: list[Path], settings: ProductSettings, precision: str) -> torch.Tensor:
    extractor, _ = new_extractor(settings, torch.device("cpu"))
    geometry = geometry_from_settings(settings).frozen_for(read_image(paths[0]).shape[:2])
    feats = []
    for i in range(0, len(paths), 8):
        images = [apply_geometry(read_image(p), geometry, str(p)) for p in paths[i:i + 8]]
        feats.append(extractor(extractor.to_tensor(images), precision).to(torch.float16).flatten(0, 2))
    return project(torch.cat(feats), settings.coreset_projection_dim, settings.seed, torch.device("cpu"))


def timed(select, repeats: int) -> tuple[float, np.ndarray]:
    times, chosen = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        chosen = select()
        times.append(time.perf_counter() - started)
    return statistics.median(times), chosen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=222)
    parser.add_argument("--ratio", type=float, default=0.1)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-dense", action="store_true", help="skip the plain greedy (slow on a CPU)")
    args = parser.parse_args()
    settings = ProductSettings(weights="random")
    with tempfile.TemporaryDirectory() as workdir:
        paths = (list_images(BSDATA)[: args.images] if BSDATA.is_dir() else
                 generate_images(Path(workdir), args.images, 0, size=(256, 256), seed=0, category="washer"))
        points = projected_patches(paths, settings, args.precision)
    count = coreset_size(points.shape[0], args.ratio, None)
    print(f"{len(paths)} images, {points.shape[0]} patches projected to {points.shape[1]}-d, {count} selected; "
          f"{torch.get_num_threads()} threads")
    started = time.perf_counter()
    greedy_pruned(points[:1000], 10, 0)
    print(f"compiling the CPU greedy: {time.perf_counter() - started:.2f} s (once per process)")
    seconds, clusters = timed(lambda: greedy_pruned(points, count, 0), args.repeats)
    print(f"CPU greedy (clusters): {seconds:.2f} s, covering radius {covering_radius(points, clusters):.4f}")
    if not args.no_dense:
        seconds, plain = timed(lambda: greedy_dense(points, count, 0), 1)
        same = np.isin(clusters, plain).mean()
        print(f"plain greedy (every point each step): {seconds:.2f} s, covering radius "
              f"{covering_radius(points, plain):.4f}; {100 * same:.2f} % of the points chosen by both")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
