"""Looking at one path in a drop folder without trusting it.

Nothing here follows a symbolic link, blocks on a FIFO, reads a device, or fails on
a name that is not valid UTF-8: a path is described by `lstat`, a file is opened
with O_NOFOLLOW | O_NONBLOCK and checked to be a regular file before a byte is read,
and names are shown with undecodable bytes as \\xNN escapes.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

_READ_BLOCK = 1 << 20


@dataclass(frozen=True)
class Signature:
    """What `lstat` says of a path. Any write or replacement changes it: size and
    mtime (which a camera may set), and ctime and inode (which it cannot)."""

    kind: str  # "file", "symlink", "fifo", "socket", "device", "directory", "other"
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int


@dataclass(frozen=True)
class Snapshot:
    """A regular file read whole, with the signature it had throughout the read."""

    data: bytes
    signature: Signature


class Vanished(Exception):
    """The path is gone."""


class Changed(Exception):
    """The file changed while it was being read."""


class Unreadable(Exception):
    """The file exists but cannot be read (permission, I/O error); str() says why."""


def signature(path: Path) -> Signature | None:
    """The path's signature, or None when it does not exist (or cannot be looked at)."""
    try:
        return _signature(os.lstat(path))
    except OSError:
        return None


def _signature(info: os.stat_result) -> Signature:
    return Signature(_kind(info.st_mode), info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino,
                     info.st_dev)


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "other"


def read_whole(path: Path, expected: Signature) -> Snapshot:
    """Read a regular file that had signature *expected*, all of it, once.

    Raises Vanished, Unreadable, or Changed when the file is not the one expected
    any more, or changed while it was read (a writer is still at work).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise Vanished(str(exc)) from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # replaced by a link since it was looked at
            raise Changed("the file was replaced by a symbolic link") from exc
        raise Unreadable(_reason(exc)) from exc
    try:
        before = _signature(os.fstat(fd))
        if before != expected:
            raise Changed("the file changed before it was read")
        chunks = []
        while True:
            try:
                chunk = os.read(fd, _READ_BLOCK)
            except OSError as exc:
                raise Unreadable(_reason(exc)) from exc
            if not chunk:
                break
            chunks.append(chunk)
        after = _signature(os.fstat(fd))
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if after != before or len(data) != before.size or signature(path) != before:
        raise Changed("the file changed while it was read")
    return Snapshot(data, before)


def _reason(exc: OSError) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied: the service user may not read this file"
    return f"cannot read the file: {exc.strerror or exc}"


def display_path(path: str | os.PathLike[str]) -> str:
    """The path as text that can always be stored and shown: bytes that are not
    valid UTF-8 (an SMB share or old camera using another code page) as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def name_is_text(path: str | os.PathLike[str]) -> bool:
    """True when the path's bytes are valid UTF-8, so that it can be stored as is."""
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def not_a_file(path: Path, kind: str) -> str:
    """Why a path that is not a regular file is not read, for its error row."""
    if kind == "symlink":
        try:
            target = display_path(os.readlink(path))
        except OSError:
            target = "?"
        return f"symbolic link to {target}: links are not followed (drop the image itself)"
    names = {"fifo": "a FIFO (named pipe)", "socket": "a socket", "device": "a device file",
             "directory": "a directory", "other": "not a regular file"}
    return f"{names.get(kind, kind)}: not read"
