"""Accuracy and cost of input sizes on the bsdata ball-screw images (a script, not a test).

    python bench/bsdata.py [--configs default224 native460 ...] [--train 40] [--test 40]

Builds a subset of ../shared/data/bsdata/ballscrew_1130x460 (MVTec layout, 1130x460) from
evenly spaced images (`--train` of train/good, `--test` of test/good and as many of
test/pitting), then runs `inspectd eval --enroll --json` once per configuration in its
own process and prints one table: image AUROC, pixel AUROC, AUPRO, ms per image, peak RAM
(of that process, enrollment included). Seeded random WRN50 weights: no pretrained
weights can be downloaded here, so the figures compare sizes, not the product.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inspectd.imageio import list_images  # noqa: E402

BSDATA = Path(__file__).resolve().parents[2] / "shared/data/bsdata/ballscrew_1130x460"
ROOT = Path(__file__).resolve().parents[1]

# Product settings of each configuration ([defaults] of the config file).
CONFIGS: dict[str, dict] = {
    "default224": {},  # the current default: square resize to 224
    "native460": {"resize": "keep_aspect", "size": 460},
    # native size in three 460 x 460 tiles overlapping by >= 64 px: one shared bank,
    # or one bank per tile position (the ball screws are fixtured)
    "tiles460": {"resize": "keep_aspect", "size": 460, "tile": 460, "tile_overlap": 64},
    "tiles460-region": {"resize": "keep_aspect", "size": 460, "tile": 460, "tile_overlap": 64,
                        "tile_bank": "per_region"},
}


def evenly(paths: list[Path], count: int) -> list[Path]:
    if count >= len(paths):
        return paths
    step = len(paths) / count
    return [paths[int(i * step)] for i in range(count)]


def make_subset(target: Path, n_train: int, n_test: int) -> Path:
    """An MVTec-layout folder of symbolic links to evenly spaced bsdata images."""
    category = target / "ballscrew"
    picks = {("train", "good"): n_train, ("test", "good"): n_test, ("test", "pitting"): n_test}
    for (split, label), count in picks.items():
        folder = category / split / label
        folder.mkdir(parents=True)
        for path in evenly(list_images(BSDATA / split / label), count):
            (folder / path.name).symlink_to(path)
            if label != "good":
                masks = category / "ground_truth" / label
                masks.mkdir(parents=True, exist_ok=True)
                mask = BSDATA / "ground_truth" / label / f"{path.stem}_mask.png"
                (masks / mask.name).symlink_to(mask)
    return category


def toml(values: dict) -> str:
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())


def run(name: str, settings: dict, dataset: Path, workdir: Path, extra: dict) -> dict:
    folder = workdir / name
    folder.mkdir()
    config = folder / "config.toml"
    config.write_text(f'store_dir = "models"\ndatabase_url = "sqlite:///{folder}/db.sqlite"\ndevice = "cpu"\n'
                      "\n[defaults]\n" + toml({"weights": "random", **extra, **settings}))
    out = subprocess.run([sys.executable, "-m", "inspectd.cli", "eval", str(dataset), "--enroll", "--json",
                          "--config", str(config)], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    if out.returncode != 0:
        raise SystemExit(f"{name}: eval failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout)["categories"]["ballscrew"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--train", type=int, default=40)
    parser.add_argument("--test", type=int, default=40, help="test images of each class")
    parser.add_argument("--coreset-ratio", type=float, default=0.1)
    args = parser.parse_args()
    extra = {"coreset_ratio": args.coreset_ratio}
    print(f"bsdata subset: {args.train} train/good, {args.test} test/good, {args.test} test/pitting "
          f"(evenly spaced); random WRN50 weights; settings {extra}", flush=True)
    print("config | image AUROC | pixel AUROC | AUPRO | FAR (target) | ms/image | peak RAM MiB", flush=True)
    estimates = []
    with tempfile.TemporaryDirectory(prefix="bench-bsdata-") as tmp:
        workdir = Path(tmp)
        dataset = make_subset(workdir / "data", args.train, args.test)
        for name in args.configs:
            r = run(name, CONFIGS[name], dataset, workdir, extra)
            print(f"{name} | {r['image_auroc']:.4f} | {r['pixel_auroc']:.4f} | {r['aupro']:.4f} | "
                  f"{r['false_alarm_rate']:.3f} ({r['target_false_alarm_rate']:g}) | {r['ms_per_image']:.0f} | "
                  f"{r['peak_ram_mb']:.0f}", flush=True)
            estimates.append(f"{name}: " + next(n for n in r["notes"] if n.startswith("estimated")))
    print("\n".join(estimates))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
