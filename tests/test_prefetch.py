"""Decoding ahead: batches in order, errors handed over, the next batch decoded while
the current one is being worked on."""

from __future__ import annotations

import threading

from inspectd.prefetch import prefetched_batches


def test_batches_keep_order_and_hand_over_errors() -> None:
    def decode(item: int) -> int:
        if item == 3:
            raise ValueError("bad image 3")
        return item * 10

    batches = list(prefetched_batches(list(range(7)), decode, batch_size=3))
    assert [[item for item, _ in batch] for batch in batches] == [[0, 1, 2], [3, 4, 5], [6]]
    flat = dict(pair for batch in batches for pair in batch)
    assert isinstance(flat[3], ValueError) and flat[4] == 40 and flat[6] == 60
    assert list(prefetched_batches([], decode, batch_size=3)) == []


def test_next_batch_is_decoded_while_the_current_one_is_used() -> None:
    started = threading.Event()

    def decode(item: int) -> int:
        if item == 2:  # first item of the second batch
            started.set()
        return item

    batches = prefetched_batches([0, 1, 2, 3], decode, batch_size=2)
    first = next(batches)
    assert [item for item, _ in first] == [0, 1]
    assert started.wait(timeout=30)  # decoding of batch 2 began before it was asked for
    assert [item for item, _ in next(batches)] == [2, 3]
