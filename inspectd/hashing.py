"""Content hashes of files (model arrays, weights files, camera images), and
`sha256sum`-format checksum files beside a file (``<file>.sha256``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .errors import ModelError

CHECKSUM_SUFFIX = ".sha256"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def checksum_path(path: Path) -> Path:
    """Where the checksum file of `path` lives."""
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def write_checksum_file(path: Path, digest: str) -> Path:
    """Write `<path>.sha256` as `sha256sum` does, so `sha256sum -c` verifies a copy."""
    sidecar = checksum_path(path)
    sidecar.write_text(f"{digest}  {path.name}\n", encoding="utf-8")
    return sidecar


def verify_checksum_file(path: Path, actual_sha256: str) -> None:
    """Refuse a file that disagrees with its `<file>.sha256` (a copy cut short, or the
    wrong file); a file without one is not checked."""
    sidecar = checksum_path(path)
    if not sidecar.is_file():
        return
    try:
        expected = sidecar.read_text(encoding="utf-8").split()[0].lower()
    except (OSError, UnicodeDecodeError, IndexError) as exc:
        raise ModelError(f"checksum file {sidecar} is unreadable or empty ({exc})") from exc
    if expected != actual_sha256:
        raise ModelError(f"{path} does not match {sidecar.name} (sha256 {actual_sha256[:12]}..., "
                         f"expected {expected[:12]}...): copied incompletely, or the wrong file")
