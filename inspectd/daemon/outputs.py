"""Where results go, and what happens to a source image after scoring."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from ..config import WatchFolder
from ..db.records import ItemRecord

log = logging.getLogger(__name__)


def output_paths(results_dir: Path, item: ItemRecord) -> tuple[Path, Path]:
    """(heatmap PNG, raw anomaly map .npy) under <results>/<product>/<YYYY-MM-DD>/."""
    day = item.discovered_at.strftime("%Y-%m-%d")
    # Negative ids are items of the local queue (database server unreachable).
    stem = f"{item.id:08d}_{Path(item.path).stem}" if item.id >= 0 else f"q{-item.id:07d}_{Path(item.path).stem}"
    folder = results_dir / item.product / day
    return folder / f"{stem}_heatmap.png", folder / f"{stem}_map.npy"


def archive_target(folder: WatchFolder, path: Path) -> Path:
    """The archive path for a source image, keeping its sub-folder; never overwrites."""
    assert folder.archive_dir is not None
    try:
        relative = path.relative_to(folder.path)
    except ValueError:
        relative = Path(path.name)
    target = folder.archive_dir / relative
    counter = 1
    while target.exists():
        target = target.with_name(f"{path.stem}.{counter}{path.suffix}")
        counter += 1
    return target


def destination(folder: WatchFolder | None, path: Path, *, failed: bool = False) -> Path | None:
    """Where the source image will be after scoring, as the folder says: the same path
    (keep), an archive path (move) or None (delete). Images that failed to score are
    never deleted: they are kept (or archived)."""
    action = folder.after_scoring if folder is not None else "keep"
    if action == "keep" or (action == "delete" and failed):
        return path
    if action == "delete":
        return None
    return archive_target(folder, path)


def relocate(path: Path, target: Path | None) -> None:
    """Carry out a `destination`: nothing, a move, or a delete. Failures are logged;
    the result is already recorded, and the file stays where it was."""
    if target == path:
        return
    if target is None:
        _remove(path)
        return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(os.fspath(path), os.fspath(target))
    except OSError as exc:
        log.error("could not archive %s to %s: %s", path, target, exc)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.error("could not delete %s after scoring: %s", path, exc)
