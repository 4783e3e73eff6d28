"""The emit work-around keeps the bool singletons' reference counts intact."""

from __future__ import annotations

import sys

from gui.qt_compat import _Probe, emit


def test_many_emits_keep_the_reference_count_of_true(qapp) -> None:
    probe = _Probe()
    received: list[int] = []
    probe.ping.connect(lambda: received.append(1))
    before = sys.getrefcount(True)
    for _ in range(2000):
        emit(probe.ping)
    assert len(received) == 2000
    assert sys.getrefcount(True) >= before - 10  # a leak would take 2000 references
