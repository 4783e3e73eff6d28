"""`eval --enroll`: enroll a category's product from its good images before scoring."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..config import Config
from ..enroll import EnrollReport, enroll
from .dataset import MVTEC, Category, DatasetError, Sample, split_good

Progress = Callable[[str, int, int], None]


@dataclass
class Enrolled:
    """What --enroll did: the new model version, the samples left to test on, a note."""

    report: EnrollReport
    samples: tuple[Sample, ...]
    note: str


def enroll_category(config: Config, category: Category, product: str, weights: str | None = None,
                    progress: Progress | None = None) -> Enrolled:
    """MVTec: enroll from train/good and test on test/. Plain: enroll from a seeded half
    of good/ and test on the other half and bad/."""
    if category.layout == MVTEC:
        if category.train_dir is None:
            raise DatasetError(f"{category.root}: --enroll needs train/good/ (MVTec AD layout)")
        report = enroll(config, product, category.train_dir, weights=weights, progress=progress)
        return Enrolled(report, category.samples, f"enrolled {product} {report.version} from "
                                                  f"{report.images_found} images in train/good")
    seed = config.product(product).seed
    paths, samples = split_good(category.samples, seed)
    with tempfile.TemporaryDirectory(prefix="inspectd-eval-") as folder:
        report = enroll(config, product, _link_all(paths, Path(folder)), weights=weights, progress=progress)
    n_good = sum(1 for s in category.samples if s.label == 0)
    note = (f"plain layout: enrolled {product} {report.version} from {len(paths)} of the {n_good} images in good/ "
            f"(seeded split, seed {seed}); tested on the other {n_good - len(paths)} and bad/")
    return Enrolled(report, tuple(samples), note)


def _link_all(paths: list[Path], folder: Path) -> Path:
    """Put `paths` in `folder` as symbolic links (copies where links are not allowed)."""
    for path in paths:
        target = folder / path.name
        try:
            os.symlink(path.resolve(), target)
        except OSError:
            shutil.copy2(path, target)
    return folder
