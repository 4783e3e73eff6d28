"""Fidelity benchmark (a script, not a test): bf16 against the fp32 oracle of the same
model, on generated categories and on bsdata, with the detection metrics of both.

    python bench/fidelity.py [--synthetic tiles,fabric,washer] [--bsdata-train 100]
                             [--bsdata-test-step 2] [--backbone wide_resnet50_2] [--size 224]

Per dataset: the largest and median relative image-score difference, the share of
test images within 1 %, and image AUROC, pixel AUROC and AUPRO for fp32 and bf16 (same
run, same bank rows; masks resized to the network input with nearest neighbour).
Random backbone weights (nothing can be downloaded here): ImageNet weights may round
differently.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inspectd.config import ProductSettings  # noqa: E402
from inspectd.evaluation.dataset import MVTEC, load_category  # noqa: E402
from inspectd.extractor_cache import new_extractor  # noqa: E402
from inspectd.fidelity import compare_precisions  # noqa: E402
from inspectd.imageio import apply_geometry, list_images, read_image  # noqa: E402
from inspectd.metrics import aupro, image_auroc, pixel_auroc  # noqa: E402
from inspectd.precision import cpu_bf16_features  # noqa: E402
from inspectd.settings_json import geometry_from_settings  # noqa: E402
from inspectd.synthetic import DatasetSpec, generate_dataset  # noqa: E402

BSDATA = Path(__file__).resolve().parents[2] / "shared/data/bsdata/ballscrew_1130x460"


def evaluate(name: str, root: Path, settings: ProductSettings, n_train: int | None, test_step: int) -> None:
    started = time.perf_counter()
    category = load_category(root, MVTEC, name)
    samples = list(category.samples)[::test_step]
    train_paths = list_images(category.train_dir)[:n_train]
    geometry = geometry_from_settings(settings).frozen_for(read_image(train_paths[0]).shape[:2])
    load = lambda paths: [apply_geometry(read_image(p), geometry, str(p)) for p in paths]  # noqa: E731
    extractor, _ = new_extractor(settings, torch.device("cpu"))
    result = compare_precisions(extractor, settings, load(train_paths), load([s.path for s in samples]), "bf16")
    labels = np.array([s.label for s in samples])
    hw = result.maps.shape[1:]
    masks = np.stack([np.zeros(hw, bool) if s.mask_path is None else
                      cv2.resize((cv2.imread(str(s.mask_path), cv2.IMREAD_GRAYSCALE) > 0).astype(np.uint8),
                                 (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST) > 0 for s in samples])
    diff = result.rel_diff
    print(f"\n{name}: {len(train_paths)} train, {len(samples)} test ({int(labels.sum())} defective), "
          f"{time.perf_counter() - started:.0f} s; bf16 search uncertified {result.uncertified}/{result.queries}")
    print(f"  image score bf16 vs fp32 oracle: max rel {100 * diff.max():.2f} %, median {100 * np.median(diff):.3f} %, "
          f"within 1 %: {(diff <= 0.01).mean() * 100:.1f} % of images")
    print(f"  {'':8s}{'image AUROC':>12s}{'pixel AUROC':>12s}{'AUPRO':>8s}")
    for label, scores, maps in (("fp32", result.oracle_scores, result.oracle_maps), ("bf16", result.scores, result.maps)):
        print(f"  {label:8s}{image_auroc(labels, scores):12.4f}{pixel_auroc(masks, maps):12.4f}{aupro(masks, maps):8.4f}",
              flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synthetic", default="tiles,fabric,washer")
    parser.add_argument("--synthetic-train", type=int, default=40)
    parser.add_argument("--bsdata-train", type=int, default=100)
    parser.add_argument("--bsdata-test-step", type=int, default=2, help="every n-th test image")
    parser.add_argument("--backbone", default="wide_resnet50_2")
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU bf16 features: "
          f"{', '.join(cpu_bf16_features()) or 'none'}; backbone {args.backbone} (random weights), {args.size} px")
    settings = ProductSettings(backbone=args.backbone, weights="random", size=args.size, coreset_ratio=0.1)
    with tempfile.TemporaryDirectory() as tmp:
        for category in filter(None, args.synthetic.split(",")):
            root = generate_dataset(Path(tmp), DatasetSpec(category=category, n_train=args.synthetic_train,
                                                           n_test_good=20, n_test_defect=5, seed=0))
            evaluate(f"synthetic {category}", root, settings, None, 1)
    if BSDATA.is_dir() and args.bsdata_train > 0:
        evaluate("bsdata", BSDATA, settings, args.bsdata_train, args.bsdata_test_step)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
