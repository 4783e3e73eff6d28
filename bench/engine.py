"""Engine benchmark (a script, not a test): prints where the time goes.

    python bench/engine.py [--images DIR] [--n-train 200] [--device cpu|cuda] [--weights random]

Per image: decode, backbone, search and map; images per second at batch 1 and 8;
enrollment split into features and coreset; peak memory; and the fast search checked
against the exact fp32 oracle (largest relative image-score difference). Without
--images it uses ../shared/data/bsdata when present, else generated images.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inspectd.config import Config, ProductSettings  # noqa: E402
from inspectd.enroll import enroll  # noqa: E402
from inspectd.imageio import list_images  # noqa: E402
from inspectd.model import ProductModel  # noqa: E402
from inspectd.stopwatch import Stopwatch  # noqa: E402
from inspectd.store import ModelStore  # noqa: E402
from inspectd.synthetic import generate_images  # noqa: E402

BSDATA = Path(__file__).resolve().parents[2] / "shared/data/bsdata/ballscrew_1130x460"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pick_images(args: argparse.Namespace, workdir: Path) -> tuple[list[Path], list[Path]]:
    if args.images:
        files = list_images(args.images)
        return files[: args.n_train], files[args.n_train: args.n_train + args.n_test]
    if BSDATA.is_dir():
        train = list_images(BSDATA / "train/good")[: args.n_train]
        test = (list_images(BSDATA / "test/good") + list_images(BSDATA / "test/pitting"))[:: 4][: args.n_test]
        return train, test
    files = generate_images(workdir / "gen", args.n_train + args.n_test, 0, size=(256, 256), seed=0,
                            category="washer")
    return files[: args.n_train], files[args.n_train:]


def bench_enroll(config: Config, train: list[Path], workdir: Path) -> None:
    good = workdir / "good"
    good.mkdir(exist_ok=True)
    for path in train:
        (good / path.name).symlink_to(path.resolve())
    started = time.perf_counter()
    report = enroll(config, "bench", good)
    total = time.perf_counter() - started
    t = report.timings_s
    print(f"enroll {report.images_found - len(report.skipped)} images -> bank {report.bank_size} x "
          f"{report.feature_dim}: features {t['features']:.1f} s, coreset {t['coreset']:.1f} s, "
          f"calibration {t['calibration']:.1f} s, total {total:.1f} s; peak RSS {peak_rss_mb():.0f} MB")


def bench_score(config: Config, test: list[Path], device: torch.device) -> None:
    store = ModelStore(config.store_dir)
    fast = ProductModel.load(store, "bench", device=device)
    exact = ProductModel.load(store, "bench", device=device, search_mode="exact")
    started = time.perf_counter()
    images = [fast.read(p)[1] for p in test]
    decode_ms = (time.perf_counter() - started) * 1000 / len(images)
    fast.score_images(images[:2])  # warm-up
    exact.score_images(images[:2])
    for batch in (1, 8):
        for model, name in ((fast, "fast"), (exact, "exact")):
            model.settings = dataclasses.replace(model.settings, batch_size=batch)
            watch = Stopwatch(device)
            sync(device)
            started = time.perf_counter()
            results = model.score_images(images, watch=watch)
            sync(device)
            wall = time.perf_counter() - started
            per = {k: v / len(images) for k, v in watch.totals.items()}
            print(f"batch {batch} {name:5s}: {len(images) / wall:6.2f} images/s; per image decode {decode_ms:.1f} ms, "
                  + ", ".join(f"{k} {v:.1f} ms" for k, v in per.items())
                  + f"; scoring / backbone = {(per['backbone'] + per['search'] + per['map']) / per['backbone']:.2f}")
            if name == "fast":
                fast_scores = np.array([r.score for r in results])
            else:
                exact_scores = np.array([r.score for r in results])
        rel = np.abs(fast_scores - exact_scores) / np.abs(exact_scores)
        print(f"batch {batch}: fast vs exact image score: max relative difference {rel.max():.2e}; "
              f"uncertified patches {fast.index.stats.uncertified}/{fast.index.stats.queries}")


def bench_gpu_throughput(config: Config, device: torch.device, n: int = 256) -> None:
    """From decoded images already on the device: latency at batch 1, throughput batched."""
    model = ProductModel.load(ModelStore(config.store_dir), "bench", device=device)
    h, w = model.input_hw
    batch = torch.rand(64, 3, h, w, device=device)
    mean, std = model.extractor.mean, model.extractor.std

    def run(x: torch.Tensor) -> torch.Tensor:
        feats = model.extractor.aggregate(model.extractor.backbone((x - mean) / std))
        return model.scorer.score_features(feats)[0]

    for size in (1, 64):
        x = batch[:size]
        for _ in range(5):
            run(x)
        sync(device)
        started = time.perf_counter()
        reps = max(1, n // size)
        for _ in range(reps):
            run(x)
        sync(device)
        elapsed = time.perf_counter() - started
        print(f"GPU batch {size}: {elapsed / reps * 1000:.2f} ms per batch, {reps * size / elapsed:.0f} images/s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path)
    parser.add_argument("--n-train", type=int, default=222, help="200 bank + 22 calibration images")
    parser.add_argument("--n-test", type=int, default=24)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--weights", default="random")
    parser.add_argument("--backbone", default="wide_resnet50_2")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--enroll-only", action="store_true", help="measure enrollment (time, memory) only")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} CPU threads'}), "
          f"torch {torch.__version__}, backbone {args.backbone}, {args.size} px, weights {args.weights}")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        train, test = pick_images(args, workdir)
        settings = ProductSettings(backbone=args.backbone, weights=args.weights, size=args.size,
                                   coreset_ratio=0.1, calibration_fraction=0.1)
        config = Config(store_dir=workdir / "models", device=str(device), defaults=settings)
        bench_enroll(config, train, workdir)
        if args.enroll_only:
            print(f"peak RSS {peak_rss_mb():.0f} MB")
            return 0
        bench_score(config, test, device)
        if device.type == "cuda":
            bench_gpu_throughput(config, device)
    print(f"peak RSS {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
