"""Calibration benchmark (a script, not a test): what cross-fitting gains and what it promises.

    python bench/calibration.py [--categories tiles fabric washer] [--n-good 40 200]
                                [--alpha 0.05] [--n-unseen 200] [--size 96] [--seeds 1 2 3]
                                [--folds 5] [--precision auto]

For each synthetic category and good-set size, on generated images (inspectd.synthetic):

- image AUROC of the default (cross-fitted: every good image in the bank), of the
  former default (20 % of the good images held out of the bank), and of the reference:
  a bank selected here from every good image's features, independently of enroll, from
  the features as enrollment stores them (float16); beside it the same selection from
  float32 features, which shows how far the coreset's choice alone moves AUROC (the
  same greedy on unrounded candidates picks other points);
- false-alarm rate on `--n-unseen` good images never seen by enrollment, at the
  default's threshold, and at a reference threshold: the conformal rank of as many
  *separate* good images scored by the default's final bank (split conformal, exact).

With several `--seeds` (each a different good set, test set and unseen set), a last
table gives per category and size the mean false-alarm rate over the seeds beside the
mean and 5-95 % range the enrollment summary states: a mean outside the stated range's
middle is a bias of the threshold, the seeds' scatter is the stated spread.

Seeded random weights (no pretrained weights can be downloaded here): resnet18,
layers 1 and 2 (random weights carry more signal in shallow layers), as in the tests.
`--precision fp32` keeps figures from a bf16 CPU comparable with those of a CPU without
bf16 (`auto`, the product default, picks bf16 where the CPU has it).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inspectd.bank import bank_of, choose_coreset  # noqa: E402
from inspectd.calibration import FalseAlarmSpread, conformal_threshold  # noqa: E402
from inspectd.config import Config, ProductSettings  # noqa: E402
from inspectd.enroll import enroll  # noqa: E402
from inspectd.metrics import image_auroc  # noqa: E402
from inspectd.model import ProductModel  # noqa: E402
from inspectd.scorer import Scorer  # noqa: E402
from inspectd.search import BankIndex  # noqa: E402
from inspectd.store import ModelStore  # noqa: E402
from inspectd.synthetic import DatasetSpec, generate_dataset, generate_images  # noqa: E402

SOURCE_HW = (128, 128)


def settings_for(args: argparse.Namespace, **changes) -> ProductSettings:
    changes = {"calibration_folds": args.folds, "precision": args.precision, **changes}
    return ProductSettings(backbone="resnet18", weights="random", layers=("layer1", "layer2"), size=args.size,
                           false_alarm_rate=args.alpha, **changes)


def scores_of(model: ProductModel, paths: list[Path]) -> np.ndarray:
    return np.array([r.score for r in model.score_images([model.read(p)[1] for p in paths])])


def features_of(model: ProductModel, paths: list[Path], precision: str | None = None) -> torch.Tensor:
    """(N, h, w, D) patch features of the images in `precision` (default: the model's), 16 at a time."""
    extractor, precision = model.extractor, precision or model.precision
    return torch.cat([extractor(extractor.to_tensor([model.read(p)[1] for p in paths[i:i + 16]]), precision)
                      for i in range(0, len(paths), 16)])


def scorer_for(model: ProductModel, bank: torch.Tensor) -> Scorer:
    """A scorer with the model's settings against a bank built outside enroll."""
    index = BankIndex(bank, search_dim=model.settings.search_dim, candidates=model.settings.search_candidates,
                      mode=model.settings.search)
    return Scorer(index, model.settings, model.input_hw)


def reference_aurocs(model: ProductModel, train: list[Path], test: list[Path], labels: np.ndarray
                     ) -> tuple[float, float]:
    """Image AUROC of banks from every training image's features, built here and not by
    enroll: the same engine (the coreset chosen on the features enrollment chose it on,
    as it stores them: float16, and bf16 ones where `auto`'s rejected bf16 attempt chose
    it; the bank rows in the model's precision), and the coreset chosen on float32
    features of the model's precision (how far the coreset's choice alone moves AUROC)."""
    pool = features_of(model, train).flatten(0, 2)
    chosen_in = model.stored.metadata["precision"].get("coreset_chosen_in", model.precision)
    chooser = pool if chosen_in == model.precision else features_of(model, train, chosen_in).flatten(0, 2)
    test_feats = features_of(model, test)

    def auroc(candidates: torch.Tensor, rows_of: torch.Tensor) -> float:
        rows = choose_coreset(candidates, candidates.shape[0], model.settings, model.device, lambda *a: None).indices
        return image_auroc(labels, scorer_for(model, bank_of(rows_of, rows)).image_scores(test_feats))

    stored = pool.to(torch.float16)
    return auroc(chooser.to(torch.float16), stored), auroc(pool, pool)


def run_case(args: argparse.Namespace, category: str, n_good: int, seed: int, workdir: Path) -> dict:
    workdir = workdir / f"seed{seed}"
    base = generate_dataset(workdir / f"{category}-{n_good}",
                            DatasetSpec(category=category, n_train=n_good, n_test_good=40, n_test_defect=5,
                                        size=SOURCE_HW, seed=seed))
    train = sorted((base / "train" / "good").glob("*.png"))
    test = sorted(p for p in (base / "test").rglob("*.png"))
    labels = np.array([int(p.parent.name != "good") for p in test])
    unseen = generate_images(workdir / f"{category}-{n_good}-unseen", args.n_unseen, 0, category=category,
                             size=SOURCE_HW, seed=100 + seed)
    separate = generate_images(workdir / f"{category}-{n_good}-separate", args.n_unseen, 0, category=category,
                               size=SOURCE_HW, seed=201 + seed)
    row: dict = {"category": category, "n_good": n_good, "seed": seed}
    store = ModelStore(workdir / "models")
    for name, changes in (("default", {}), ("held_out", {"calibration_folds": 0})):
        config = Config(store_dir=workdir / "models", device="cpu", defaults=settings_for(args, **changes))
        product = f"{category}-{n_good}-{name}"
        clock = time.perf_counter()
        report = enroll(config, product, base / "train" / "good")
        row[f"{name}_enroll_s"] = time.perf_counter() - clock
        model = ProductModel.load(store, product)
        row[f"{name}_auroc"] = image_auroc(labels, scores_of(model, test))
        row[f"{name}_far"] = float(np.mean(scores_of(model, unseen) >= model.threshold))
        row[f"{name}_guaranteed"] = report.calibration.guaranteed
        if name == "default":
            row["reference_auroc"], row["fp32_pool_auroc"] = reference_aurocs(model, train, test, labels)
            threshold, _ = conformal_threshold(scores_of(model, separate), args.alpha)
            row["reference_far"] = float(np.mean(scores_of(model, unseen) >= threshold))
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--categories", nargs="+", default=["tiles", "fabric", "washer"])
    parser.add_argument("--n-good", nargs="+", type=int, default=[40, 200])
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--n-unseen", type=int, default=200)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1], help="one good/test/unseen set per seed")
    parser.add_argument("--folds", type=int, default=ProductSettings().calibration_folds,
                        help="cross-fitting folds of the default column (the product default unless given)")
    parser.add_argument("--precision", default=ProductSettings().precision, choices=("auto", "fp32", "bf16"))
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"settings: {dataclasses.asdict(settings_for(args))}")
    print(f"false_alarm_rate {args.alpha}; FAR on {args.n_unseen} unseen good images; reference threshold from "
          f"{args.n_unseen} separate good images; random weights (tests and benchmarks only)")
    header = ("category", "n good", "seed", "AUROC default", "AUROC full bank (ref)", "AUROC full bank fp32 pool",
              "AUROC held-out 20%", "FAR default", "FAR ref threshold", "FAR held-out", "enroll s default",
              "enroll s held-out")
    print(" | ".join(header))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-calibration-") as folder:
        for n_good, category, seed in itertools.product(args.n_good, args.categories, args.seeds):
            row = run_case(args, category, n_good, seed, Path(folder))
            rows.append(row)
            print(f"{category} | {n_good} | {seed} | {row['default_auroc']:.4f} | {row['reference_auroc']:.4f} | "
                  f"{row['fp32_pool_auroc']:.4f} | {row['held_out_auroc']:.4f} | {row['default_far']:.3f} | "
                  f"{row['reference_far']:.3f} | {row['held_out_far']:.3f} | {row['default_enroll_s']:.1f} | "
                  f"{row['held_out_enroll_s']:.1f}", flush=True)
    gap = max(abs(r["default_auroc"] - r["reference_auroc"]) for r in rows)
    choice = max(abs(r["fp32_pool_auroc"] - r["reference_auroc"]) for r in rows)
    far_gap = max(abs(r["default_far"] - args.alpha) for r in rows)
    print(f"largest |AUROC default - full bank| {gap:.4f} (target <= 0.005); "
          f"largest |AUROC full bank - fp32 pool| {choice:.4f} (the coreset's choice alone); "
          f"largest |FAR default - {args.alpha}| {far_gap:.3f} (target <= 0.02); "
          f"mean FAR default {np.mean([r['default_far'] for r in rows]):.3f}")
    if len(args.seeds) > 1:
        print_far_over_seeds(rows, args.alpha)
    return 0


def print_far_over_seeds(rows: list[dict], alpha: float) -> None:
    """Bias against spread: the seeds' mean FAR beside what the summary promises."""
    print("category | n good | seeds | FAR default mean (min-max) | stated mean (5-95 %) | "
          "FAR ref threshold mean")
    for (category, n_good), group in itertools.groupby(rows, key=lambda r: (r["category"], r["n_good"])):
        group = list(group)
        far = np.array([r["default_far"] for r in group])
        stated = FalseAlarmSpread.of(n_good, alpha)
        stated_text = f"{stated.mean:.3f} ({stated.low:.3f}-{stated.high:.3f})" if stated else "no guarantee"
        print(f"{category} | {n_good} | {len(group)} | {far.mean():.3f} ({far.min():.3f}-{far.max():.3f}) | "
              f"{stated_text} | {np.mean([r['reference_far'] for r in group]):.3f}")


if __name__ == "__main__":
    raise SystemExit(main())
