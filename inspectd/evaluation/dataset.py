"""Labelled evaluation datasets: finding their layout and their images and masks.

Two layouts of one category are recognised, and a folder whose sub-folders are
categories in either layout:

* MVTec AD: ``train/good/``, ``test/<class>/`` (``good`` is the good class) and
  ``ground_truth/<class>/<stem>_mask.png``;
* plain: ``good/``, ``bad/`` and optional ``masks/<stem>_mask.png`` (or ``<stem>.png``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InspectdError
from ..imageio import IMAGE_SUFFIXES, list_images

MVTEC, PLAIN = "mvtec", "plain"
GOOD_CLASS = "good"
PLAIN_DEFECT_CLASS = "bad"
LAYOUT_HELP = ("expected MVTec AD (train/good/, test/<class>/ with good/, ground_truth/<class>/<stem>_mask.png), "
               "good/ and bad/ folders (optional masks/<stem>_mask.png), or a folder of such categories")


class DatasetError(InspectdError):
    """A dataset folder that cannot be evaluated (unknown layout, no images)."""


@dataclass(frozen=True)
class Sample:
    """One test image: label 0 good / 1 defect, its class folder, and its mask file if any."""

    path: Path
    label: int
    defect_class: str
    mask_path: Path | None = None


@dataclass(frozen=True)
class Category:
    """One category of a dataset. `samples` are all labelled test candidates (for the
    plain layout: every image in good/ and bad/); `train_dir` is MVTec's train/good."""

    name: str
    root: Path
    layout: str
    samples: tuple[Sample, ...]
    train_dir: Path | None = None


def layout_of(folder: Path) -> str | None:
    """MVTEC, PLAIN or None for a folder that is neither."""
    test = folder / "test"
    if test.is_dir() and any(d.is_dir() and not d.name.startswith(".") for d in test.iterdir()):
        return MVTEC
    if (folder / GOOD_CLASS).is_dir() and (folder / PLAIN_DEFECT_CLASS).is_dir():
        return PLAIN
    return None


def discover(root: Path) -> tuple[list[Category], list[str]]:
    """The categories under `root` (itself one, or its sub-folders), and the names of
    sub-folders that were ignored because they have no recognisable layout."""
    layout = layout_of(root)
    if layout is not None:
        return [load_category(root, layout, root.resolve().name)], []
    folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    layouts = {d: layout_of(d) for d in folders}
    categories = [load_category(d, lay, d.name) for d, lay in layouts.items() if lay is not None]
    if not categories:
        raise DatasetError(f"{root}: no recognisable dataset layout: {LAYOUT_HELP}")
    return categories, [d.name for d, lay in layouts.items() if lay is None]


def load_category(root: Path, layout: str, name: str) -> Category:
    """List a category's labelled images and their masks."""
    if layout == MVTEC:
        train = root / "train" / GOOD_CLASS
        category = Category(name, root, layout, tuple(_mvtec_samples(root)), train if train.is_dir() else None)
    else:
        goods = [Sample(path, 0, GOOD_CLASS) for path in list_images(root / GOOD_CLASS)]
        bads = [Sample(path, 1, PLAIN_DEFECT_CLASS, find_mask(root / "masks", path))
                for path in list_images(root / PLAIN_DEFECT_CLASS)]
        category = Category(name, root, layout, tuple(goods + bads))
    if not category.samples:
        raise DatasetError(f"{root}: no test images ({LAYOUT_HELP})")
    return category


def _mvtec_samples(root: Path) -> list[Sample]:
    samples = []
    for folder in sorted((root / "test").iterdir()):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        good = folder.name == GOOD_CLASS
        masks = root / "ground_truth" / folder.name
        samples += [Sample(path, int(not good), folder.name, None if good else find_mask(masks, path))
                    for path in list_images(folder)]
    return samples


def find_mask(folder: Path, image: Path) -> Path | None:
    """`<stem>_mask.<ext>` or `<stem>.<ext>` in `folder` (PNG first), or None."""
    for stem in (f"{image.stem}_mask", image.stem):
        for suffix in (".png", *IMAGE_SUFFIXES):
            candidate = folder / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def split_good(samples: tuple[Sample, ...], seed: int) -> tuple[list[Path], list[Sample]]:
    """Plain layout with --enroll: a seeded half of the good images (rounded up) to
    enroll from, and the test samples: the other good images and every defect image."""
    goods = [s for s in samples if s.label == 0]
    if len(goods) < 3:
        raise DatasetError(f"{len(goods)} good images: enrolling from half of good/ and testing on the rest "
                           "needs at least 3")
    order = np.random.default_rng(seed).permutation(len(goods))
    n_enroll = (len(goods) + 1) // 2
    enroll_ids = set(order[:n_enroll].tolist())
    enroll_paths = [s.path for i, s in enumerate(goods) if i in enroll_ids]
    test = [s for i, s in enumerate(goods) if i not in enroll_ids] + [s for s in samples if s.label == 1]
    return enroll_paths, test
