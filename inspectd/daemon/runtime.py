"""The daemon's run-time files: its status report and its folder locks.

Both live in the runtime directory (systemd's RuntimeDirectory=inspectd, a tmpfs),
not in the database or the results folder, because they must work exactly when
those do not: `inspectd status` shows a pause for a locked or full database, or a
full results disk, from this report.

A watched folder is locked with flock() on a file named after the folder's real
path, so a second `inspectd run` on the same folder refuses to start, and a crashed
daemon leaves no stale lock (the kernel drops a dead process's locks).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from ..config import Config, WatchFolder
from ..errors import InspectdError

log = logging.getLogger(__name__)


def runtime_dir(config: Config, *, create: bool) -> Path:
    """The configured runtime directory, or a per-user one in the temporary folder
    when that cannot be used (a user running the daemon by hand)."""
    configured = config.daemon.runtime_dir
    if create:
        try:
            configured.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass
    if os.access(configured, os.W_OK if create else os.R_OK):
        return configured
    fallback = Path(tempfile.gettempdir()) / f"inspectd-{os.getuid()}"
    if create:
        fallback.mkdir(mode=0o700, exist_ok=True)
    return fallback


def status_path(config: Config, *, create: bool = False) -> Path:
    """The status report of the daemon that runs with this configuration."""
    source = str(config.source.resolve()) if config.source is not None else "<defaults>"
    return runtime_dir(config, create=create) / f"status-{_short_hash(source)}.json"


def write_status(path: Path, report: dict[str, Any]) -> None:
    """Replace the report atomically (readers never see half of it)."""
    fd, temporary = tempfile.mkstemp(prefix=".status-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=1, sort_keys=True, default=str)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_status(path: Path) -> dict[str, Any] | None:
    """The last report, with "alive" telling whether its process still runs."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    report["alive"] = report.get("state") != "stopped" and _process_alive(int(report.get("pid", 0)))
    report["age_seconds"] = max(0.0, time.time() - float(report.get("updated_at", 0)))
    return report


def _process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


class FolderLocks:
    """Exclusive locks on the watched folders for the life of one daemon."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._handles: dict[Path, int] = {}

    def acquire(self, folders: tuple[WatchFolder, ...]) -> None:
        """Lock every folder not locked yet, and release the ones no longer watched.
        Raises InspectdError naming the other daemon when a folder is taken."""
        wanted = {_real(folder.path): folder for folder in folders}
        for real in list(self._handles):
            if real not in wanted:
                os.close(self._handles.pop(real))
        for real, folder in wanted.items():
            if real not in self._handles:
                self._handles[real] = self._lock(real, folder)

    def _lock(self, real: Path, folder: WatchFolder) -> int:
        lock_file = self.directory / f"watch-{_short_hash(str(real))}.lock"
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise InspectdError(f"watched folder {folder.path} is already watched by another inspectd run "
                                f"({holder}); stop that one first (one daemon per folder)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, folder {real}\n".encode(), 0)
        return fd

    def release(self) -> None:
        for fd in self._handles.values():
            os.close(fd)
        self._handles.clear()


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]
