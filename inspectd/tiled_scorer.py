"""Scoring a tiled product (tiling.py): every tile against its region's bank (per
region) or against the one shared bank; the image score is the worst tile's, and the
tiles' maps are stitched into one map of the whole input."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .config import ProductSettings
from .scorer import Scorer
from .search import BankIndex, bank_index
from .stopwatch import Stopwatch
from .tiling import TileLayout


class TiledScorer:
    """Tile features (B * T, h, w, D), image-major, -> image scores (B,) and maps (B, H, W)."""

    def __init__(self, scorers: Sequence[Scorer], layout: TileLayout):
        if len(scorers) not in (1, len(layout)):
            raise ValueError(f"{len(scorers)} banks for {len(layout)} tiles: one shared, or one per tile")
        self.scorers, self.layout = list(scorers), layout

    @property
    def index(self) -> BankIndex:
        return self.scorers[0].index

    def score_features(self, features: torch.Tensor, watch: Stopwatch | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        tiles = len(self.layout)
        images = features.shape[0] // tiles
        if len(self.scorers) == 1:
            scores, maps = self.scorers[0].score_features(features, watch)
        else:  # tile r of every image against bank r only
            per_region = [scorer.score_features(features[r::tiles], watch) for r, scorer in enumerate(self.scorers)]
            scores = torch.stack([s for s, _ in per_region], dim=1).reshape(-1)
            maps = torch.stack([m for _, m in per_region], dim=1).reshape(-1, *per_region[0][1].shape[1:])
        tile_maps = maps.reshape(images, tiles, *maps.shape[1:]).cpu().numpy()
        stitched = np.stack([self.layout.stitch(m) for m in tile_maps])
        return scores.reshape(images, tiles).max(dim=1).values, torch.from_numpy(stitched).to(features.device)

    def image_scores(self, features: torch.Tensor, batch: int = 4) -> np.ndarray:
        """Scores only, for stored tile features of whole images, `batch` images at a time."""
        rows = batch * len(self.layout)
        out = [self.score_features(features[start:start + rows].to(self.index.device))[0].cpu().numpy()
               for start in range(0, features.shape[0], rows)]
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def make_scorer(banks: Sequence[torch.Tensor], settings: ProductSettings, input_hw: tuple[int, int],
                layout: TileLayout | None, device: torch.device, search_mode: str | None = None
                ) -> Scorer | TiledScorer:
    """The scorer of a product's bank(s): plain, or tiled with one bank or one per tile."""
    scorers = [Scorer(bank_index(bank.to(device), settings, search_mode), settings,
                      layout.tile_hw if layout is not None else input_hw) for bank in banks]
    if layout is None:
        return scorers[0]
    return TiledScorer(scorers, layout)


def tile_layout(settings: ProductSettings, input_hw: tuple[int, int]) -> TileLayout | None:
    return None if settings.tile is None else TileLayout(tuple(input_hw), settings.tile, settings.tile_overlap)
