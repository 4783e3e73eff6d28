"""File modes that follow the process umask, also for files made by `tempfile`.

`tempfile.mkstemp` and `mkdtemp` create 0600 files and 0700 folders whatever the
umask; heatmaps and models written that way would be unreadable to the operators'
group that the service unit's UMask=0007 means to let in. Everything written
through a temporary name gets the mode a plain `open`/`mkdir` would have given.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

_lock = threading.Lock()


def current_umask() -> int:
    """The process umask (Linux reports it in /proc; elsewhere set and restore it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    return 0o777 & ~current_umask()
