"""Engine benchmark (a script, not a test): fp32 and the other precisions side by side.

    python bench/engine.py [--images DIR] [--n-train 222] [--precisions fp32,auto,bf16]
                           [--device cpu|cuda] [--weights random]

For each precision, in one run: enrollment (features, coreset, calibration, precision
check); per image decode, backbone (trunk), aggregate, search and map at batch 1 and 8
and images per second; the certified search against the exact oracle; and the image
scores against the fp32 model's (two separate enrollments, so the coreset differs too:
bench/fidelity.py compares against the fp32 oracle of the same model). Prints the CPU's
bf16 features as detected. Without --images it uses ../shared/data/bsdata when present,
else generated images.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inspectd.config import Config, ProductSettings  # noqa: E402
from inspectd.enroll import EnrollReport, enroll  # noqa: E402
from inspectd.imageio import list_images  # noqa: E402
from inspectd.model import ProductModel  # noqa: E402
from inspectd.precision import cpu_bf16_features, resolve_precision  # noqa: E402
from inspectd.precision_check import relative_differences  # noqa: E402
from inspectd.stopwatch import Stopwatch  # noqa: E402
from inspectd.store import ModelStore  # noqa: E402
from inspectd.synthetic import generate_images  # noqa: E402

BSDATA = Path(__file__).resolve().parents[2] / "shared/data/bsdata/ballscrew_1130x460"
STAGES = ("backbone", "aggregate", "search", "map")


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


def bench_enroll(config: Config, train: list[Path], workdir: Path, product: str) -> tuple[EnrollReport, float]:
    good = workdir / "good"
    if not good.is_dir():
        good.mkdir()
        for path in train:
            (good / path.name).symlink_to(path.resolve())
    started = time.perf_counter()
    report = enroll(config, product, good)
    return report, time.perf_counter() - started


def timed_scores(model: ProductModel, images: list[np.ndarray], batch: int, repeats: int
                 ) -> tuple[dict[str, float], float, np.ndarray]:
    """Median per-image stage times (ms), images/s and the scores, over `repeats` passes."""
    model.settings = dataclasses.replace(model.settings, batch_size=batch)
    model.score_images(images[:batch])  # warm-up
    passes = []
    for _ in range(repeats):
        watch = Stopwatch(model.device)
        sync(model.device)
        started = time.perf_counter()
        results = model.score_images(images, watch=watch)
        sync(model.device)
        passes.append((time.perf_counter() - started, watch.totals))
    walls = [wall for wall, _ in passes]
    per_stage = {stage: statistics.median(t.get(stage, 0.0) for _, t in passes) / len(images) for stage in STAGES}
    return per_stage, len(images) / statistics.median(walls), np.array([r.score for r in results])


def bench_precision(config: Config, store: ModelStore, product: str, test: list[Path], repeats: int) -> dict:
    """One precision's column of the table."""
    row: dict = {}
    fast = ProductModel.load(store, product, device=torch.device(config.device))
    exact = ProductModel.load(store, product, device=torch.device(config.device), search_mode="exact")
    row["model precision"] = fast.precision
    started = time.perf_counter()
    images = [fast.read(p)[1] for p in test]
    row["decode ms"] = (time.perf_counter() - started) * 1000 / len(images)
    for batch in (1, 8):
        stages, rate, scores = timed_scores(fast, images, batch, repeats)
        for stage, ms in stages.items():
            row[f"b{batch} {stage} ms"] = ms
        row[f"b{batch} scoring ms"] = sum(stages.values())
        row[f"b{batch} images/s"] = rate
        row["scores"] = scores
    exact_scores = timed_scores(exact, images, 8, 1)[2]
    row["fast vs exact max rel"] = float(relative_differences(row["scores"], exact_scores).max())
    row["uncertified patches"] = f"{fast.index.stats.uncertified}/{fast.index.stats.queries}"
    return row


def print_table(columns: dict[str, dict]) -> None:
    names = list(columns)
    keys = [k for k in next(iter(columns.values())) if k != "scores"]
    print(f"{'':28s}" + "".join(f"{n:>16s}" for n in names))
    for key in keys:
        cells = []
        for name in names:
            value = columns[name].get(key, "")
            cells.append(f"{value:16.2f}" if isinstance(value, float) else f"{str(value):>16s}")
        print(f"{key:28s}" + "".join(cells))


def bench_all(args: argparse.Namespace, workdir: Path, device: torch.device) -> None:
    train, test = pick_images(args, workdir)
    columns: dict[str, dict] = {}
    for precision in args.precisions.split(","):
        settings = ProductSettings(backbone=args.backbone, weights=args.weights, size=args.size, coreset_ratio=0.1,
                                   calibration_fraction=0.1, precision=precision)
        config = Config(store_dir=workdir / "models", device=str(device), defaults=settings)
        product = f"bench-{precision}"
        report, total = bench_enroll(config, train, workdir, product)
        store = ModelStore(config.store_dir)
        meta = store.open(product).metadata["precision"]
        t = report.timings_s
        row = {"enroll images": str(report.images_found - len(report.skipped)),
               "enroll features s": t["features"], "enroll cross-fitting s": t.get("cross-fitting", 0.0),
               "enroll coreset s": t["coreset"],
               "enroll calibration s": t["calibration"], "enroll bf16 check s": t.get("precision_check", 0.0),
               "enroll rejected bf16 s": t.get("rejected_bf16_attempt", 0.0), "enroll total s": total,
               "enrolled in": meta["enrolled"]}
        check = meta.get("bf16_check")
        if check:
            row["bf16 check max rel %"] = 100 * check["max_rel_diff"]
        row.update(bench_precision(config, store, product, test, args.repeats))
        columns[precision] = row
        print(f"{precision}: done ({meta['note'] or 'no fallback'})", flush=True)
    if "fp32" in columns:
        reference = columns["fp32"]["scores"]
        for row in columns.values():
            diff = relative_differences(row["scores"], reference)
            row["vs fp32 model max rel %"] = 100 * float(diff.max())
            row["vs fp32 model median rel %"] = 100 * float(np.median(diff))
    print_table(columns)


def bench_gpu_throughput(config: Config, device: torch.device, product: str, n: int = 256) -> None:
    """From decoded images already on the device: latency at batch 1, throughput batched."""
    model = ProductModel.load(ModelStore(config.store_dir), product, device=device)
    h, w = model.input_hw
    batch = torch.rand(64, 3, h, w, device=device)
    mean, std = model.extractor.mean, model.extractor.std

    def run(x: torch.Tensor) -> torch.Tensor:
        feats = model.extractor.aggregate(model.extractor.backbone((x - mean) / std, model.precision))
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
    parser.add_argument("--precisions", default="fp32,auto,bf16")
    parser.add_argument("--repeats", type=int, default=3, help="scoring passes per batch size (median)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--weights", default="random")
    parser.add_argument("--backbone", default="wide_resnet50_2")
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} CPU threads'}), "
          f"torch {torch.__version__}, backbone {args.backbone}, {args.size} px, weights {args.weights}")
    print(f"CPU bf16 features detected: {', '.join(cpu_bf16_features()) or 'none'}; "
          f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}; "
          f"auto would start as {resolve_precision('auto', device).precision}")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        bench_all(args, workdir, device)
        if device.type == "cuda":
            settings = ProductSettings(backbone=args.backbone, weights=args.weights, size=args.size)
            config = Config(store_dir=workdir / "models", device=str(device), defaults=settings)
            bench_gpu_throughput(config, device, f"bench-{args.precisions.split(',')[-1]}")
    print(f"peak RSS {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
