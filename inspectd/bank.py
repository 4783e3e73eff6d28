"""Memory banks chosen from patch features: the candidate rows of some images, and the
coreset selected from them (method.md section 2)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .config import ProductSettings
from .coreset import coreset_size, select_coreset

Progress = Callable[[str, int, int], None]  # (stage, done, total)


class ImageRows:
    """The patch vectors of some images of a feature store (N, h, w, D), seen as one
    (rows, D) matrix without copying the store: slicing gathers only the rows asked for,
    so the coreset reads a fold's candidates run by run (the store may be memory-mapped)."""

    def __init__(self, features: torch.Tensor, images: np.ndarray):
        self.images = np.asarray(images, dtype=np.int64)
        n, h, w, d = features.shape
        self.per_image = h * w
        self._flat = features.reshape(n, self.per_image, d)
        self.shape = (self.images.size * self.per_image, d)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice | np.ndarray | torch.Tensor) -> torch.Tensor:
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            rows = np.arange(start, stop, step)
        else:
            rows = np.asarray(key, dtype=np.int64)
        image = torch.from_numpy(self.images[rows // self.per_image])
        return self._flat[image, torch.from_numpy(rows % self.per_image)]


class ImageSubset:
    """Some images of a feature store (N, h, w, D), sliced in batches without copying
    the others (what Scorer.image_scores reads)."""

    def __init__(self, features: torch.Tensor, images: np.ndarray):
        self.features, self.images = features, torch.from_numpy(np.asarray(images, dtype=np.int64))
        self.shape = (self.images.numel(), *features.shape[1:])

    def __getitem__(self, key: slice) -> torch.Tensor:
        return self.features[self.images[key]]


def select_bank(pool: torch.Tensor | ImageRows, source_patches: int, settings: ProductSettings,
                device: torch.device, progress: Progress, stage: str = "coreset") -> torch.Tensor:
    """The coreset of `pool` (float32 rows) at the product's ratio of `source_patches`."""
    count = min(coreset_size(source_patches, settings.coreset_ratio, settings.coreset_count), pool.shape[0])
    chosen = select_coreset(pool, count, projection_dim=settings.coreset_projection_dim, seed=settings.seed,
                            device=device, progress=lambda d, t: progress(stage, d, t))
    return pool[torch.from_numpy(np.sort(chosen))].float()
