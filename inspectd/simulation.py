"""What cameras, shares and plants do to a drop folder: for the daemon's process
tests and the fault-soak benchmark (`bench/faults.py`), so both do exactly the same.

Nothing here is used by the service itself.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

# A product small enough to enroll and score in seconds on a CPU (tests, soak).
SMALL_PRODUCT_DEFAULTS = """
[defaults]
backbone = "resnet18"
weights = "random"
size = 64
coreset_ratio = 0.2
false_alarm_rate = 0.2
batch_size = 8
"""


def encode(image_bgr: np.ndarray, extension: str, params: list[int] | None = None) -> bytes:
    ok, data = cv2.imencode(extension, image_bgr, params or [])
    if not ok:
        raise ValueError(f"cannot encode {extension}")
    return data.tobytes()


def jpeg_with_thumbnail(jpeg: bytes, thumbnail: bytes) -> tuple[bytes, int]:
    """The JPEG with an EXIF APP1 segment that holds a thumbnail JPEG (whose own end
    marker sits inside the segment), and the offset just after that thumbnail."""
    payload = b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00" + thumbnail
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return jpeg[:2] + segment + jpeg[2:], 2 + len(segment)


def jpeg_claiming(jpeg: bytes, width: int, height: int) -> bytes:
    """A decode bomb: the small JPEG with a frame header claiming width x height."""
    data = bytearray(jpeg)
    position = 2
    while data[position + 1] not in (0xC0, 0xC1, 0xC2):
        position += 2 + int.from_bytes(data[position + 2:position + 4], "big")
    data[position + 5:position + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def write_in_chunks(path: Path, data: bytes, cuts: list[int], pause: float, *, keep_open: bool = True,
                    mtime_back: float | None = None) -> None:
    """Write `data` like a slow camera: up to each cut, then a pause. With keep_open
    the writer holds the file open throughout, else it reopens for every chunk; with
    mtime_back its clock is that many seconds behind."""
    bounds = [0, *cuts, len(data)]
    handle = path.open("wb") if keep_open else None
    try:
        for start, end in zip(bounds, bounds[1:]):
            if handle is None:
                with path.open("ab" if start else "wb") as chunk_handle:
                    chunk_handle.write(data[start:end])
            else:
                handle.write(data[start:end])
                handle.flush()
            if mtime_back is not None:
                past = time.time() - mtime_back
                os.utime(path, (past, past))
            if end < len(data):
                time.sleep(pause)
    finally:
        if handle is not None:
            handle.close()


def replace_atomically(path: Path, data: bytes) -> None:
    """Write under a hidden temporary name, then rename over `path` (overwrite latest.png)."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def odd_entries(folder: Path, image: bytes, outside: Path) -> dict[str, str]:
    """Create what an SMB share, an old camera or a careless script leaves in a drop
    folder; returns {shown name: words its error row must contain}. Also creates
    real.png (a plain image, scored)."""
    odd = os.fsencode(str(folder)) + b"/cam_\xe9.png"
    with open(odd, "wb") as handle:
        handle.write(image)
    (folder / "loop.png").symlink_to(folder / "loop.png")
    (folder / "outside.png").symlink_to(outside)
    (folder / "inside_link.png").symlink_to(folder / "real.png")
    (folder / "real.png").write_bytes(image)
    os.mkfifo(folder / "pipe.png")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(folder / "sock.png"))
    listener.close()
    expected = {"cam_\\xe9.png": "not valid UTF-8", "loop.png": "symbolic link", "outside.png": "symbolic link",
                "inside_link.png": "symbolic link", "pipe.png": "FIFO", "sock.png": "socket"}
    try:
        os.mknod(folder / "device.png", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        expected["device.png"] = "device file"
    except PermissionError:
        pass
    return expected


def hold_sqlite_lock(database_file: Path, seconds: float) -> subprocess.Popen:
    """Another program holding SQLite's write lock (BEGIN EXCLUSIVE) for `seconds`;
    returns once the lock is held."""
    holder = subprocess.Popen([sys.executable, "-c", f"""
import sqlite3, time
connection = sqlite3.connect({str(database_file)!r}, timeout=60, isolation_level=None)
connection.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep({seconds})
connection.execute("ROLLBACK")
"""], stdout=subprocess.PIPE, text=True)
    if holder.stdout.readline().strip() != "locked":
        raise RuntimeError("could not take the database lock")
    return holder


def fill_disk(disk: Path) -> Path:
    """Fill a file system to the last byte with one file; delete it to free the space."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, bytes(size))
            except OSError:
                continue
    finally:
        os.close(fd)
    return filler


def mount_tmpfs(point: Path, size: str) -> str | None:
    """Mount a small tmpfs at `point`; the reason when that is not allowed (not root)."""
    point.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                          capture_output=True, text=True)
    return None if done.returncode == 0 else (done.stderr.strip() or f"mount exited {done.returncode}")


def unmount(point: Path) -> None:
    subprocess.run(["umount", "-l", str(point)], capture_output=True)


# Run a process as root without root's power to read any file (so a chmod 000 file
# is unreadable to it, as it is to the service user).
WITHOUT_FILE_OVERRIDE = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--")


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no VmHWM for process {pid}")
