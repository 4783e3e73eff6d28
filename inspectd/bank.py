"""Memory banks chosen from patch features: the candidate rows of some images, and the
coreset selected from them (method.md section 2)."""

from __future__ import annotations

from typing import Callable, Hashable, Sequence, TypeVar

import numpy as np
import torch

from .config import ProductSettings
from .coreset import Coreset, coreset_size

Progress = Callable[[str, int, int], None]  # (stage, done, total)
Chosen = TypeVar("Chosen")


class ImageRows:
    """The patch vectors of some images of a feature store (N, h, w, D), seen as one
    (rows, D) matrix without copying the store: slicing gathers only the rows asked for,
    so the coreset reads a fold's candidates run by run (the store may be memory-mapped)."""

    def __init__(self, features: torch.Tensor, images: np.ndarray):
        self.images = np.asarray(images, dtype=np.int64)
        self._features = features
        n, h, w, d = features.shape
        self.per_image = h * w
        self._flat = features.reshape(n, self.per_image, d)
        self.shape = (self.images.size * self.per_image, d)

    def __len__(self) -> int:
        return self.shape[0]

    def of_images(self, members: np.ndarray) -> tuple["ImageRows", np.ndarray]:
        """The rows of some of these images (`members`, sorted positions in
        `self.images`), and the indices of those rows in this matrix."""
        members = np.asarray(members, dtype=np.int64)
        rows = (members[:, None] * self.per_image + np.arange(self.per_image)).ravel()
        return ImageRows(self._features, self.images[members]), rows

    def __getitem__(self, key: slice | np.ndarray | torch.Tensor) -> torch.Tensor:
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            rows = np.arange(start, stop, step)
        else:
            rows = np.asarray(key, dtype=np.int64)
        image = torch.from_numpy(self.images[rows // self.per_image])
        return self._flat[image, torch.from_numpy(rows % self.per_image)]


class Selections:
    """The coreset selections of one enrollment, so that a second enrollment of the same
    image files in another precision uses them instead of choosing again: auto's fp32
    enrollment after its bf16 one failed the check. The patches are the same and their
    features differ by rounding alone (under 1 %), so the bf16 greedy's choice is a
    k-center coreset of the fp32 features too, and choosing again would repeat most of
    the enrollment's work (the final coreset and every fold bank)."""

    def __init__(self) -> None:
        self._images: tuple[str, ...] | None = None
        self._chosen: dict[Hashable, object] = {}
        self.reused = False  # whether the current enrollment used an earlier one's selection

    def of_images(self, hashes: Sequence[str]) -> "Selections":
        """These selections for an enrollment of the files `hashes` (sha256, in order):
        the recorded ones if they were made from the same files, else none (a file
        changed, went or came between the two enrollments)."""
        if tuple(hashes) != self._images:
            self._images, self._chosen = tuple(hashes), {}
        self.reused = False
        return self

    def recall(self, key: Hashable, choose: Callable[[], Chosen]) -> Chosen:
        """The selection recorded under `key`, else `choose()`, recorded."""
        if key in self._chosen:
            self.reused = True
        else:
            self._chosen[key] = choose()
        return self._chosen[key]  # type: ignore[return-value]


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
    return bank_of(pool, choose_coreset(pool, source_patches, settings, device, progress, stage).indices)


def choose_coreset(pool: torch.Tensor | ImageRows, source_patches: int, settings: ProductSettings,
                   device: torch.device, progress: Progress, stage: str = "coreset",
                   resume_at: float | None = None) -> Coreset:
    """The coreset selection of `pool` at the product's ratio of `source_patches`
    (`resume_at`: Coreset.select)."""
    count = min(coreset_size(source_patches, settings.coreset_ratio, settings.coreset_count), pool.shape[0])
    return Coreset.select(pool, count, projection_dim=settings.coreset_projection_dim, seed=settings.seed,
                          device=device, progress=lambda d, t: progress(stage, d, t), resume_at=resume_at)


def narrowed_bank(coreset: Coreset, pool: ImageRows, members: np.ndarray, count: int, progress: Progress,
                  stage: str, selections: Selections | None = None) -> torch.Tensor:
    """A bank of `count` rows from the images `members` of `pool` only, warm-started
    from `coreset` (chosen from all of `pool`): its rows of those images, topped up by
    the greedy rule; the selection `selections` recorded for these images if any."""
    subset, rows = pool.of_images(members)

    def choose() -> np.ndarray:
        return coreset.narrowed(subset, rows, count, lambda d, t: progress(stage, d, t))

    key = ("narrowed", tuple(subset.images.tolist()), count)
    return bank_of(subset, choose() if selections is None else selections.recall(key, choose))


def bank_of(pool: torch.Tensor | ImageRows, indices: np.ndarray) -> torch.Tensor:
    """The selected rows of `pool` in pool order, float32."""
    return pool[torch.from_numpy(np.sort(indices))].float()
