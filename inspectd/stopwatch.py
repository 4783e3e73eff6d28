"""Per-stage wall-clock timing of the scoring pipeline."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import torch


class Stopwatch:
    """Adds elapsed milliseconds per stage; synchronises CUDA so GPU time is counted."""

    def __init__(self, device: torch.device, enabled: bool = True):
        self.device = device
        self.enabled = enabled  # disabled: no timing and no CUDA synchronisation
        self.totals: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.totals[stage] = self.totals.get(stage, 0.0) + (time.perf_counter() - start) * 1000.0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
