"""Taken-in bytes kept on disk until their item's row is written.

The memory buffer holds an item's bytes from intake to scoring, but not across a
crash: a camera that overwrites `latest.png` while the daemon is down would leave
the queued item without its bytes. So each taken-in file is also written to the
spool before its item is recorded (named by its path and content hash, so that
no moment exists where an item is recorded and its bytes are not kept), read back
if the memory copy is gone, and removed once the item's row is written. The spool only adds safety: when it cannot be
written (no folder, full disk), the daemon goes on without it and says so once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


class Spool:
    def __init__(self, folder: Path):
        self.folder = folder
        self._warned = False
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self.enabled = True
        except OSError as exc:
            self.enabled = False
            log.warning("no spool at %s (%s): queued images survive a crash only in their folders",
                        folder, exc.strerror or exc)

    def _path(self, path: str, digest: str) -> Path:
        return self.folder / _name(path, digest)

    def put(self, path: str, digest: str, data: bytes) -> None:
        if not self.enabled:
            return
        temporary: str | None = None
        try:
            fd, temporary = tempfile.mkstemp(prefix=".incoming-", dir=self.folder)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(temporary, self._path(path, digest))
        except OSError as exc:
            if temporary is not None:
                Path(temporary).unlink(missing_ok=True)
            if not self._warned:
                self._warned = True
                log.warning("cannot spool taken-in images to %s (%s); going on without", self.folder,
                            exc.strerror or exc)

    def get(self, path: str, digest: str | None) -> bytes | None:
        if digest is None:
            return None
        try:
            return self._path(path, digest).read_bytes()
        except OSError:
            return None

    def discard(self, path: str, digest: str | None) -> None:
        if digest is not None:
            self._path(path, digest).unlink(missing_ok=True)

    def sweep(self, queued: set[tuple[str, str]]) -> None:
        """After a restart: drop the bytes of everything but the queued items' (path, hash)."""
        if not self.enabled:
            return
        keep = {_name(path, digest) for path, digest in queued}
        for entry in self.folder.iterdir():
            if entry.name not in keep:
                entry.unlink(missing_ok=True)


def _name(path: str, digest: str) -> str:
    """The same bytes may wait under two names (a camera writing one image twice)."""
    return f"{digest}-{hashlib.sha256(path.encode('utf-8', 'surrogateescape')).hexdigest()[:16]}"
