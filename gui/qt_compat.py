"""Work-around for a PySide6 reference-count bug in ``SignalInstance.emit``.

Some releases (seen with PySide6 6.12.0 on Python 3.11, where True and False are not
immortal) return the bool of ``emit()`` without a reference of its own: every emit
from Python then takes one reference from the True singleton, and after a few
thousand emits the interpreter aborts with "bool_dealloc: deallocating True or
False".  :func:`emit` hands the reference back when a probe at import shows the bug;
on fixed releases and on Python >= 3.12 it is a plain emit.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any

from PySide6.QtCore import QObject, Signal

PROBES = 8


class _Probe(QObject):
    ping = Signal()


def _emit_loses_references() -> bool:
    """True when emitting takes references from the bool it returns."""
    probe = _Probe()
    before = sys.getrefcount(True)
    for _ in range(PROBES):
        probe.ping.emit()
    return before - sys.getrefcount(True) >= PROBES - 1


EMIT_LOSES_REFERENCES = _emit_loses_references()


def emit(signal: Any, *args: Any) -> None:
    """``signal.emit(*args)``, without the reference leak (see the module docstring)."""
    returned = signal.emit(*args)
    if EMIT_LOSES_REFERENCES and isinstance(returned, bool):
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(returned))
