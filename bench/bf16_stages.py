"""Where bf16's image-score error comes from (a script, not a test).

    python bench/bf16_stages.py [--train 30] [--test 36] [--backbone wide_resnet50_2] [--size 224]

Runs the trunk with bf16 autocast (channels-last) up to a given stage and in fp32 from
there on, on bsdata images (generated ones when bsdata is absent), and prints for each
split: the patch features' relative L2 difference from fp32, the image scores'
relative difference from the fp32 oracle of the same model (same bank rows, exact
search; the largest, the median and the share of images within 1 %), and the trunk's
ms per image at batch 8 (median of three passes). "bf16 to layer3" is what
`precision = "bf16"` runs. Random backbone weights (no download here).
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
from inspectd.coreset import coreset_size, select_coreset  # noqa: E402
from inspectd.extractor_cache import new_extractor  # noqa: E402
from inspectd.features import PatchFeatureExtractor  # noqa: E402
from inspectd.imageio import apply_geometry, list_images, read_image  # noqa: E402
from inspectd.precision import cpu_bf16_features  # noqa: E402
from inspectd.precision_check import relative_differences  # noqa: E402
from inspectd.scorer import Scorer  # noqa: E402
from inspectd.search import bank_index  # noqa: E402
from inspectd.settings_json import geometry_from_settings  # noqa: E402
from inspectd.synthetic import generate_images  # noqa: E402

BSDATA = Path(__file__).resolve().parents[2] / "shared/data/bsdata/ballscrew_1130x460"
BATCH = 8


def trunk_in_bf16_through(extractor: PatchFeatureExtractor, batch: torch.Tensor, last_bf16: str | None
                          ) -> list[torch.Tensor]:
    """The trunk's requested maps, with bf16 autocast from the stem through stage
    `last_bf16` ("stem" for the stem alone, None for none) and fp32 after it."""
    trunk = extractor.trunk
    stages = [("stem", trunk.stem), *trunk.stages.items()]
    in_bf16 = last_bf16 is not None
    x, outputs = (batch.contiguous(memory_format=torch.channels_last) if in_bf16 else batch), []
    for name, stage in stages:
        if in_bf16:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                x = stage(x)
        else:
            x = stage(x.float())
        if name in trunk.layers:
            outputs.append(x)
        if name == last_bf16:
            in_bf16 = False
    return outputs


@torch.inference_mode()
def features(extractor: PatchFeatureExtractor, images: list[np.ndarray], last_bf16: str | None) -> torch.Tensor:
    """(N, h, w, D) float16 patch features, stored as enrollment stores them."""
    return torch.cat([extractor.aggregate(trunk_in_bf16_through(extractor, extractor.to_tensor(images[i:i + BATCH]),
                                                                last_bf16)).to(torch.float16)
                      for i in range(0, len(images), BATCH)])


@torch.inference_mode()
def trunk_ms(extractor: PatchFeatureExtractor, images: list[np.ndarray], last_bf16: str | None) -> float:
    batch = extractor.to_tensor(images[:BATCH])
    trunk_in_bf16_through(extractor, batch, last_bf16)  # warm-up
    times = []
    for _ in range(3):
        started = time.perf_counter()
        trunk_in_bf16_through(extractor, batch, last_bf16)
        times.append((time.perf_counter() - started) * 1000 / batch.shape[0])
    return statistics.median(times)


def pick_images(args: argparse.Namespace, workdir: Path) -> tuple[list[Path], list[Path]]:
    if BSDATA.is_dir():
        test = (list_images(BSDATA / "test/good") + list_images(BSDATA / "test/pitting"))[::3]
        return list_images(BSDATA / "train/good")[: args.train], test[: args.test]
    files = generate_images(workdir, args.train + args.test, 0, size=(256, 256), seed=0, category="washer")
    return files[: args.train], files[args.train:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=30)
    parser.add_argument("--test", type=int, default=36)
    parser.add_argument("--backbone", default="wide_resnet50_2")
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    settings = ProductSettings(backbone=args.backbone, weights="random", size=args.size, coreset_ratio=0.1)
    extractor, _ = new_extractor(settings, torch.device("cpu"))
    with tempfile.TemporaryDirectory() as workdir:
        train_paths, test_paths = pick_images(args, Path(workdir))
        geometry = geometry_from_settings(settings).frozen_for(read_image(train_paths[0]).shape[:2])
        train, test = ([apply_geometry(read_image(p), geometry, str(p)) for p in paths]
                       for paths in (train_paths, test_paths))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU bf16 features: "
          f"{', '.join(cpu_bf16_features()) or 'none'}; {args.backbone} (random weights), {args.size} px, "
          f"{len(train)} train and {len(test)} test images")
    splits = {"fp32": None, "bf16 stem": "stem"} | {f"bf16 to {name}": name for name in extractor.trunk.stages}
    train_feats = {label: features(extractor, train, last) for label, last in splits.items()}
    dim = train_feats["fp32"].shape[-1]
    bf16_pool = train_feats[f"bf16 to {extractor.trunk.layers[-1]}"].reshape(-1, dim)
    count = coreset_size(bf16_pool.shape[0], settings.coreset_ratio, None)
    rows = torch.from_numpy(np.sort(select_coreset(bf16_pool, count, projection_dim=settings.coreset_projection_dim,
                                                   seed=settings.seed, device=extractor.device)))
    hw = tuple(test[0].shape[:2])

    def scores(label: str, test_feats: torch.Tensor) -> np.ndarray:
        bank = train_feats[label].reshape(-1, dim)[rows].float()
        return Scorer(bank_index(bank, settings, mode="exact"), settings, hw).image_scores(test_feats)

    oracle_feats = features(extractor, test, None)
    oracle = scores("fp32", oracle_feats)
    print("trunk | feature rel L2 % | image score rel diff: max % | median % | within 1 % | trunk ms/image (batch 8)")
    for label, last in splits.items():
        test_feats = oracle_feats if last is None else features(extractor, test, last)
        feature_diff = ((test_feats.float() - oracle_feats.float()).norm() / oracle_feats.float().norm()).item()
        diff = relative_differences(scores(label, test_feats), oracle)
        print(f"{label} | {100 * feature_diff:.3f} | {100 * diff.max():.2f} | {100 * np.median(diff):.3f} | "
              f"{100 * (diff <= 0.01).mean():.0f} % | {trunk_ms(extractor, test, last):.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
