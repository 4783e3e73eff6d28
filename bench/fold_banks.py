"""Fold-bank diagnosis (a script, not a test): why a cross-fitted threshold is conservative.

    python bench/fold_banks.py [--category washer] [--n 40] [--seed 1] [--folds 5]

Enrolls `--n` generated good images, then scores each fold's images against four kinds
of fold bank built here from the same features: the union of the other folds' separate
coresets ("union", the bank before commit 946ed8b), the same with each fold coreset
enlarged to k/(k-1) of its ratio ("union_eq"), one coreset of the other folds' patches
at the product's ratio ("joint"), and one with as many rows as the final bank
("joint_eq", the fold bank of commit 946ed8b), and the final coreset's greedy selection
resumed from 100, 50 or 25 % of its steps on the other folds' patches, to as many rows
("warm_1", "warm_0.5" (today's fold bank, crossfit.FOLD_RESUME_AT) and "warm_0.25"). For
each: the mean out-of-fold score, the conformal threshold from those scores, the
false-alarm rate it gives on 200 unseen good images scored by the final bank (one coreset
of all images) and the seconds the five fold banks took. The closer a fold bank's scores are
to the unseen images' final-bank scores, the less biased its threshold.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from calibration import SOURCE_HW, features_of, scorer_for, settings_for  # noqa: E402
from inspectd.bank import ImageRows, choose_coreset, narrowed_bank, select_bank  # noqa: E402
from inspectd.calibration import conformal_threshold  # noqa: E402
from inspectd.config import Config  # noqa: E402
from inspectd.crossfit import fold_of_images  # noqa: E402
from inspectd.enroll import enroll  # noqa: E402
from inspectd.model import ProductModel  # noqa: E402
from inspectd.store import ModelStore  # noqa: E402
from inspectd.synthetic import generate_images  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--category", default="washer")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--n-unseen", type=int, default=200)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-fold-banks-"))
    train = generate_images(folder / "train", args.n, 0, category=args.category, size=SOURCE_HW, seed=args.seed)
    unseen = generate_images(folder / "unseen", args.n_unseen, 0, category=args.category, size=SOURCE_HW,
                             seed=100 + args.seed)
    enroll(Config(store_dir=folder / "models", device="cpu", defaults=settings_for(args)), "p", folder / "train")
    model = ProductModel.load(ModelStore(folder / "models"), "p")
    settings = model.settings

    good, new = features_of(model, sorted(train)), features_of(model, sorted(unseen))

    def coreset(images: np.ndarray, scale: float = 1.0) -> torch.Tensor:
        pool = good[images].reshape(-1, good.shape[-1])
        scaled = dataclasses.replace(settings, coreset_ratio=settings.coreset_ratio * scale)
        return select_bank(pool, pool.shape[0], scaled, model.device, lambda *a: None)

    def scores(bank: torch.Tensor, feats: torch.Tensor) -> np.ndarray:
        return scorer_for(model, bank).image_scores(feats)

    fold = fold_of_images(args.n, args.folds, settings.seed)
    labels, eq = np.unique(fold), args.folds / (args.folds - 1)
    parts = {f: coreset(np.flatnonzero(fold == f)) for f in labels}
    parts_eq = {f: coreset(np.flatnonzero(fold == f), eq) for f in labels}
    banks = {"union": lambda f: torch.cat([parts[g] for g in labels if g != f]),
             "union_eq": lambda f: torch.cat([parts_eq[g] for g in labels if g != f]),
             "joint": lambda f: coreset(np.flatnonzero(fold != f)),
             "joint_eq": lambda f: coreset(np.flatnonzero(fold != f), eq)}
    everything = ImageRows(good, np.arange(args.n))

    def resumed(resume_at: float):
        final = choose_coreset(everything, everything.shape[0], settings, model.device, lambda *a: None,
                               resume_at=resume_at)
        return lambda f: narrowed_bank(final, everything, np.flatnonzero(fold != f), final.indices.size,
                                       lambda *a: None, "folds")

    banks.update({f"warm_{resume_at:g}": resumed(resume_at) for resume_at in (1.0, 0.5, 0.25)})
    unseen_scores = scores(coreset(np.arange(args.n)), new)
    print(f"{args.category}, {args.n} good, seed {args.seed}, {args.folds} folds; unseen good images scored by "
          f"the final bank: mean {unseen_scores.mean():.4f}, 95th percentile {np.quantile(unseen_scores, 0.95):.4f}")
    print("fold bank | mean out-of-fold score | threshold | FAR on unseen | s to build the fold banks")
    for name, bank_without in banks.items():
        out_of_fold = np.empty(args.n)
        clock = time.perf_counter()
        fold_banks = {f: bank_without(f) for f in labels}
        seconds = time.perf_counter() - clock
        for f in labels:
            inside = np.flatnonzero(fold == f)
            out_of_fold[inside] = scores(fold_banks[f], good[inside])
        threshold, _ = conformal_threshold(out_of_fold, args.alpha)
        print(f"{name} | {out_of_fold.mean():.4f} | {threshold:.4f} | {np.mean(unseen_scores >= threshold):.3f} | "
              f"{seconds:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
