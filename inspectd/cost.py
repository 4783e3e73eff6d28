"""What a product's chosen size costs, told before the long work of an enrollment starts.

Patches per image and bank size follow from the geometry and the coreset settings;
the feature store is every image's patches in float16; scoring time per image is
the backbone, timed on blank images of the input size in the enrollment's precision
(the best of two passes, so one disturbed pass does not decide it), plus the search,
estimated from the multiply-adds it needs at the matrix-multiply rate measured here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from .config import ProductSettings
from .coreset import coreset_size
from .features import PatchFeatureExtractor

FEATURE_BYTES = 2  # the enrollment feature store is float16
BANK_BYTES = 4  # the bank is float32


@dataclass(frozen=True)
class CostEstimate:
    images: int
    grid: tuple[int, int]  # patches of what the network sees: the input, or one tile
    tiles: int
    feature_dim: int
    bank_size: int
    feature_store_bytes: int
    spills: bool  # the feature store goes to a memory-mapped file instead of RAM
    backbone_ms: float
    search_ms: float

    @property
    def patches_per_image(self) -> int:
        return self.grid[0] * self.grid[1] * self.tiles

    @property
    def bank_bytes(self) -> int:
        return self.bank_size * self.feature_dim * BANK_BYTES

    @property
    def ms_per_image(self) -> float:
        return self.backbone_ms + self.search_ms

    def summary(self) -> str:
        store = f"{self.feature_store_bytes / 2**20:.0f} MiB" + (" (spilled to disk)" if self.spills else "")
        tiles = f"{self.tiles} tiles of " if self.tiles > 1 else ""
        return (f"{self.images} images x {self.patches_per_image} patches ({tiles}{self.grid[0]}x{self.grid[1]}) x "
                f"{self.feature_dim}: feature store {store}; bank about {self.bank_size} vectors "
                f"({self.bank_bytes / 2**20:.0f} MiB); scoring about {self.ms_per_image:.0f} ms per image "
                f"(backbone {self.backbone_ms:.0f} ms, search {self.search_ms:.0f} ms, estimated)")


def estimate(extractor: PatchFeatureExtractor, input_hw: tuple[int, int], settings: ProductSettings, images: int,
             tiles: int = 1, source_patches_before: int = 0, memory_limit_bytes: int | None = None,
             precision: str = "fp32") -> CostEstimate:
    """The cost of enrolling `images` more images (on top of a bank that stands for
    `source_patches_before` patches) and of scoring one image with the result.
    `input_hw` is what the network sees: the whole input, or one of `tiles` tiles."""
    batch = min(settings.batch_size, 2)  # per image, a batch is cheaper than one image alone
    blank = extractor.to_tensor([np.zeros((*input_hw, 3), np.float32)] * batch)
    probe = extractor(blank, precision)  # the first pass also builds the aggregation matrices
    backbone_ms = float("inf")
    for _ in range(2):
        clock = time.perf_counter()
        extractor(blank, precision)
        backbone_ms = min(backbone_ms, (time.perf_counter() - clock) * 1000.0 / batch)
    _, h, w, d = probe.shape
    patches = h * w * tiles
    per_region = settings.tile_bank == "per_region" and tiles > 1
    regions = tiles if per_region else 1
    bank = regions * coreset_size(source_patches_before + images * patches // regions, settings.coreset_ratio,
                                  settings.coreset_count)
    store = images * patches * d * FEATURE_BYTES
    # a per-region bank compares each tile's patches with its region's bank only
    searched = bank // regions
    return CostEstimate(images=images, grid=(h, w), tiles=tiles, feature_dim=d, bank_size=bank,
                        feature_store_bytes=store, spills=memory_limit_bytes is not None and store > memory_limit_bytes,
                        backbone_ms=backbone_ms * tiles,
                        search_ms=search_ms(patches, searched, d, settings, extractor.device))


def search_ms(patches: int, bank: int, dim: int, settings: ProductSettings, device: torch.device) -> float:
    """Multiply-adds of one image's nearest-neighbour search at the measured rate: the
    fast search compares in `search_dim` + 2 coordinates and re-checks `candidates`
    rows in full; the exact one compares in full."""
    width = dim if settings.search == "exact" else settings.search_dim + 2
    macs = patches * bank * width + patches * settings.search_candidates * dim * (settings.search != "exact")
    return macs / matmul_rate(width, device) * 1000.0


def matmul_rate(width: int, device: torch.device, rows: int = 2048, cols: int = 8192) -> float:
    """Multiply-adds per second of a (rows x width) @ (width x cols) float32 product."""
    a = torch.randn(rows, width, device=device)
    b = torch.randn(width, cols, device=device)
    a @ b
    best = float("inf")
    for _ in range(3):
        clock = time.perf_counter()
        (a @ b).min(dim=1)  # the search also reduces every row
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - clock)
    return rows * cols * width / best
