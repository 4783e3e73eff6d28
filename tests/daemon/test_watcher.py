"""Observers and matching: native and polling observers deliver events, a dead
observer is detected and replaced, patterns and temporary names are honoured."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from inspectd.config import WatchFolder
from inspectd.daemon.intake import SettleTracker, looks_complete, matches
from inspectd.daemon.watcher import FolderWatcher, scan


def wait_for_event(watcher: FolderWatcher, path: Path, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p == path for p, _ in watcher.drain(0.2)):
            return True
    return False


@pytest.mark.parametrize("network_share", [False, True])
def test_observers_deliver_new_files(tmp_path: Path, sample_images: list[Path], network_share: bool) -> None:
    folder = WatchFolder(path=tmp_path / "drop", product="p", network_share=network_share)
    watcher = FolderWatcher((folder,), poll_seconds=0.2)
    watcher.start()
    try:
        target = folder.path / "a.png"
        target.write_bytes(sample_images[0].read_bytes())
        assert wait_for_event(watcher, target)
    finally:
        watcher.stop()


def test_a_dead_observer_is_detected_and_replaced(tmp_path: Path, sample_images: list[Path]) -> None:
    folder = WatchFolder(path=tmp_path / "drop", product="p")
    watcher = FolderWatcher((folder,), poll_seconds=0.2)
    watcher.start()
    try:
        watcher._observers[0].stop()
        watcher._observers[0].join(5)
        assert not watcher.healthy()
        watcher.restart()
        assert watcher.healthy()
        target = folder.path / "after.png"
        target.write_bytes(sample_images[0].read_bytes())
        assert wait_for_event(watcher, target)
    finally:
        watcher.stop()


def test_patterns_hidden_and_temporary_names(tmp_path: Path) -> None:
    folder = WatchFolder(path=tmp_path, product="p", ignore=("*.tmp", "*.part"))
    assert matches(folder, tmp_path / "a.PNG")
    assert not matches(folder, tmp_path / "a.png.part")
    assert not matches(folder, tmp_path / "a.tmp")
    assert not matches(folder, tmp_path / ".a.png")
    assert not matches(folder, tmp_path / "notes.txt")
    assert not matches(folder, tmp_path / "sub" / "a.png")  # not recursive
    assert matches(WatchFolder(path=tmp_path, product="p", recursive=True), tmp_path / "sub" / "a.png")
    assert not matches(folder, tmp_path.parent / "a.png")
    (tmp_path / "sub").mkdir()
    for name in ("x.png", "y.part", ".z.png", "sub/w.png"):
        (tmp_path / name).write_bytes(b"")
    assert sorted(p.name for p, _ in scan((folder,))) == ["x.png"]


def test_truncated_files_wait_until_complete(tmp_path: Path, sample_images: list[Path]) -> None:
    data = sample_images[0].read_bytes()
    path = tmp_path / "part.png"
    path.write_bytes(data[: len(data) // 2])
    assert not looks_complete(path)
    folder = WatchFolder(path=tmp_path, product="p")
    tracker = SettleTracker(settle_seconds=0.0, incomplete_timeout=60.0)
    tracker.touch(path, folder)
    assert tracker.ready() == []  # stable but incomplete: keep waiting
    path.write_bytes(data)
    assert looks_complete(path)
    assert tracker.ready() == []  # the change restarts the settle clock
    assert [p for p, *_ in tracker.ready()] == [path]


def test_settle_time_is_respected(tmp_path: Path, sample_images: list[Path]) -> None:
    path = tmp_path / "s.png"
    path.write_bytes(sample_images[0].read_bytes())
    folder = WatchFolder(path=tmp_path, product="p")
    tracker = SettleTracker(settle_seconds=5.0)
    now = time.monotonic()
    tracker.touch(path, folder, now=now)
    assert tracker.ready(now=now + 1.0) == []
    assert tracker.next_due(now=now + 1.0) == pytest.approx(4.0, abs=0.1)
    assert [p for p, *_ in tracker.ready(now=now + 5.1)] == [path]
