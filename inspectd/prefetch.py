"""Decode ahead: the next batch of images is decoded in worker threads while the
current one is scored (OpenCV and file reads release the GIL), so on big images the
decode time hides behind the backbone."""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterator, Sequence, TypeVar

Item = TypeVar("Item")
Decoded = TypeVar("Decoded")

MAX_IO_WORKERS = 4  # decoding and PNG encoding beyond this wait on the disk or starve the backbone


def io_workers() -> int:
    """Threads for decoding and writing images: one per core, at most MAX_IO_WORKERS."""
    return max(1, min(MAX_IO_WORKERS, len(os.sched_getaffinity(0))))


def prefetched_batches(items: Sequence[Item], decode: Callable[[Item], Decoded], batch_size: int,
                       workers: int | None = None) -> Iterator[list[tuple[Item, Decoded | Exception]]]:
    """Batches of (item, decoded or the exception decoding raised), in order; batch
    k + 1 is being decoded while the caller works on batch k."""
    def attempt(item: Item) -> Decoded | Exception:
        try:
            return decode(item)
        except Exception as exc:  # handed to the caller, who knows which errors are the image's fault
            return exc

    starts = range(0, len(items), batch_size)
    with ThreadPoolExecutor(max_workers=workers or io_workers(), thread_name_prefix="decode") as pool:
        def submit(start: int) -> list[Future]:
            return [pool.submit(attempt, item) for item in items[start:start + batch_size]]

        pending = submit(0) if items else []
        for index, start in enumerate(starts):
            current = pending
            if index + 1 < len(starts):
                pending = submit(starts[index + 1])
            yield [(item, future.result()) for item, future in zip(items[start:start + batch_size], current)]
