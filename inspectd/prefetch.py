"""Decode ahead: the next batch of images is decoded in worker threads while the
current one is scored (OpenCV and file reads release the GIL), so on big images the
decode time hides behind the backbone."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterator, Sequence, TypeVar

Item = TypeVar("Item")
Decoded = TypeVar("Decoded")


def prefetched_batches(items: Sequence[Item], decode: Callable[[Item], Decoded], batch_size: int,
                       workers: int = 2) -> Iterator[list[tuple[Item, Decoded | Exception]]]:
    """Batches of (item, decoded or the exception decoding raised), in order; batch
    k + 1 is being decoded while the caller works on batch k."""
    def attempt(item: Item) -> Decoded | Exception:
        try:
            return decode(item)
        except Exception as exc:  # handed to the caller, who knows which errors are the image's fault
            return exc

    starts = range(0, len(items), batch_size)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        def submit(start: int) -> list[Future]:
            return [pool.submit(attempt, item) for item in items[start:start + batch_size]]

        pending = submit(0) if items else []
        for index, start in enumerate(starts):
            current = pending
            if index + 1 < len(starts):
                pending = submit(starts[index + 1])
            yield [(item, future.result()) for item, future in zip(items[start:start + batch_size], current)]
