"""What GPU out-of-memory taught the daemon about each product, until it restarts.

A batch that does not fit is halved; the largest size not known to fail becomes the
product's batch on the GPU from then on, so later batches do not run out of memory
first and pay for a failed attempt each time. A single image that does not fit moves
the product to the CPU. Both are shown in `inspectd status`, since a plant sees them
as slower scoring.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class GpuFallback:
    """One product's reduced batch or move to the CPU, and when it happened."""

    version: str
    batch_size: int | None  # the GPU batch from now on; None when the product moved to the CPU
    since: float

    def note(self) -> str:
        if self.batch_size is None:
            return "GPU out of memory on a single image: scoring on the CPU until the service restarts"
        return (f"GPU out of memory: batches of at most {self.batch_size} image(s) on the GPU "
                f"until the service restarts")


class GpuMemoryLimits:
    def __init__(self) -> None:
        self._fallbacks: dict[str, GpuFallback] = {}

    def batch_size(self, product: str, configured: int) -> int:
        """The batch to send to the GPU: the configured one, or less after an out-of-memory."""
        fallback = self._fallbacks.get(product)
        if fallback is None or fallback.batch_size is None:
            return configured
        return min(configured, fallback.batch_size)

    def did_not_fit(self, product: str, version: str, size: int) -> None:
        """*size* images ran out of memory: at most half of them from now on."""
        cap = max(1, size // 2)
        current = self._fallbacks.get(product)
        if current is None or (current.batch_size is not None and cap < current.batch_size):
            self._fallbacks[product] = GpuFallback(version, cap, time.time())

    def moved_to_cpu(self, product: str, version: str) -> None:
        self._fallbacks[product] = GpuFallback(version, None, time.time())

    def on_cpu(self, product: str) -> bool:
        fallback = self._fallbacks.get(product)
        return fallback is not None and fallback.batch_size is None

    def report(self) -> dict[str, dict]:
        """For the status report: product -> version, batch (None on the CPU), since, note."""
        return {product: {"version": f.version, "batch_size": f.batch_size, "since": f.since, "note": f.note()}
                for product, f in self._fallbacks.items()}
