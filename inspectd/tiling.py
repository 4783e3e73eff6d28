"""Tiles of a large network input: positions with overlap, cutting, and stitching the
tiles' anomaly maps back into one map without seams.

A product with `tile` set cuts each image (after its geometry) into tile x tile pieces
that overlap by at least `tile_overlap` pixels; the last tile of a row or column ends at
the image border, so tiles never need padding. Each tile keeps its position: with a
per-region bank (fixtured parts) tile r of an image is only compared with tile r of
the good images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Box = tuple[int, int, int, int]  # (top, left, height, width) in input pixels


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Starts of tiles of `tile` pixels covering [0, length) with at least `overlap`
    pixels shared by neighbours, spread evenly, the first at 0 and the last at the end."""
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


@dataclass(frozen=True)
class TileLayout:
    """The tiles of an input of `input_hw` pixels."""

    input_hw: tuple[int, int]
    tile: int
    overlap: int

    @property
    def tile_hw(self) -> tuple[int, int]:
        return min(self.tile, self.input_hw[0]), min(self.tile, self.input_hw[1])

    @property
    def boxes(self) -> list[Box]:
        (h, w), (th, tw) = self.input_hw, self.tile_hw
        return [(top, left, th, tw) for top in tile_starts(h, self.tile, self.overlap)
                for left in tile_starts(w, self.tile, self.overlap)]

    def __len__(self) -> int:
        return len(self.boxes)

    def cut(self, image: np.ndarray) -> list[np.ndarray]:
        """The tiles of one (H, W, ...) image, in `boxes` order."""
        return [image[top:top + h, left:left + w] for top, left, h, w in self.boxes]

    def stitch(self, maps: np.ndarray) -> np.ndarray:
        """One (H, W) map from the tiles' (T, th, tw) maps: a weighted mean where tiles
        overlap, each tile's weight falling linearly to its edges inside the overlap,
        so the map has no step where one tile's view ends."""
        out = np.zeros(self.input_hw, dtype=np.float64)
        total = np.zeros(self.input_hw, dtype=np.float64)
        for tile_map, (top, left, h, w) in zip(maps, self.boxes):
            weight = self._feather(h, w)
            out[top:top + h, left:left + w] += weight * tile_map
            total[top:top + h, left:left + w] += weight
        return (out / total).astype(np.float32)

    def _feather(self, h: int, w: int) -> np.ndarray:
        ramp = max(1, self.overlap)

        def axis(n: int) -> np.ndarray:
            i = np.arange(n, dtype=np.float64)
            return np.clip(np.minimum(i + 1, n - i) / (ramp + 1), 0.0, 1.0)

        return np.outer(axis(h), axis(w))
