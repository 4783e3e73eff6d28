"""What cross-fitting's fold banks cost (a script, not a test), by where they resume the
final coreset's greedy selection (inspectd.crossfit.FOLD_RESUME_AT).

    python bench/fold_bank_cost.py [--images DIR] [--n-train 60] [--resume-at 0 0.5 1]
                                   [--repeats 2] [--size 224] [--precision auto]

Enrolls the same good images with the default settings (wide_resnet50_2, random
weights: none can be downloaded here) once per resume point, and once with held-out
calibration (`calibration_folds = 0`, no fold banks) for comparison; prints the median
of `--repeats` enrollments of the total, coreset and cross-fitting times. Resuming at 0
is a fresh greedy selection from the other folds' patches (the fold bank of commit
946ed8b); bench/fold_banks.py measures what each resume point does to the threshold.
Without --images it uses ../shared/data/bsdata's good training images when present.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import inspectd.enroll as enroll_module  # noqa: E402
from inspectd.config import Config, ProductSettings  # noqa: E402
from inspectd.imageio import list_images  # noqa: E402

BSDATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bsdata" / "ballscrew_1130x460" / "train" / "good"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=BSDATA)
    parser.add_argument("--n-train", type=int, default=60)
    parser.add_argument("--resume-at", nargs="+", type=float, default=[0.0, 0.5, 1.0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--size", type=int, default=ProductSettings().size)
    parser.add_argument("--precision", default=ProductSettings().precision, choices=("auto", "fp32", "bf16"),
                        help="fp32 keeps figures from a bf16 CPU comparable with a CPU's without bf16")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-fold-bank-cost-") as folder:
        good = Path(folder) / "good"
        good.mkdir()
        for path in list_images(args.images)[:args.n_train]:
            shutil.copy(path, good / path.name)
        print(f"{len(list_images(good))} images from {args.images}, size {args.size}, precision {args.precision}, "
              f"median of {args.repeats} enrollments; random weights")
        print("fold banks | enroll total s | coreset s | cross-fitting s")
        cases = [(f"resume at {r:g}", r, {}) for r in args.resume_at] + [("held out (no folds)", None,
                                                                          {"calibration_folds": 0})]
        for name, resume_at, changes in cases:
            if resume_at is not None:
                enroll_module.FOLD_RESUME_AT = resume_at
            settings = ProductSettings(weights="random", size=args.size, precision=args.precision, **changes)
            config = Config(store_dir=Path(folder) / "models", device="cpu", defaults=settings)
            timings = [enroll_module.enroll(config, "cost", good).timings_s for _ in range(args.repeats)]
            median = {key: statistics.median(t.get(key, 0.0) for t in timings)
                      for key in ("total", "coreset", "cross-fitting")}
            print(f"{name} | {median['total']:.2f} | {median['coreset']:.2f} | {median['cross-fitting']:.2f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
