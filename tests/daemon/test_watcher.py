"""Observers, matching and the settle tracker's rules: native and polling observers
deliver events, a dead observer or a recreated folder is watched again, patterns and
temporary names are honoured, and a file is taken in only when it is complete by
the daemon's own clock."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from inspectd.config import WatchFolder
from inspectd.daemon.intake import matches
from inspectd.daemon.settle import Landed, Refused, SettleTracker
from inspectd.daemon.watcher import FolderWatcher, scan


def wait_for_event(watcher: FolderWatcher, path: Path, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p == path for p, _, _ in watcher.drain(0.2)):
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


def tracker(settle: float = 0.0, incomplete: float = 60.0) -> SettleTracker:
    return SettleTracker(settle_seconds=settle, incomplete_seconds=incomplete, max_bytes=10**8)


def test_truncated_files_wait_until_complete(tmp_path: Path, sample_images: list[Path]) -> None:
    data = sample_images[0].read_bytes()
    path = tmp_path / "part.png"
    path.write_bytes(data[: len(data) // 2])
    folder = WatchFolder(path=tmp_path, product="p")
    settle = tracker(settle=1.0)
    now = time.monotonic()
    settle.touch(path, folder, now=now)
    assert settle.ready(now=now + 1.5) == []  # stable but incomplete: keep waiting
    assert "truncated PNG" in next(iter(settle.waiting()))
    path.write_bytes(data)
    assert settle.ready(now=now + 2.0) == []  # the change restarts the settle clock
    [landed] = settle.ready(now=now + 3.1)
    assert isinstance(landed, Landed) and landed.snapshot.data == data


def test_settle_time_is_respected(tmp_path: Path, sample_images: list[Path]) -> None:
    path = tmp_path / "s.png"
    path.write_bytes(sample_images[0].read_bytes())
    folder = WatchFolder(path=tmp_path, product="p")
    settle = tracker(settle=5.0)
    now = time.monotonic()
    settle.touch(path, folder, now=now)
    assert settle.ready(now=now + 1.0) == []
    assert settle.next_due(now=now + 1.0) == pytest.approx(4.0, abs=0.1)
    assert [o.path for o in settle.ready(now=now + 5.1)] == [path]


def test_a_file_with_an_mtime_an_hour_old_still_waits_the_settle_time(tmp_path: Path,
                                                                     sample_images: list[Path]) -> None:
    path = tmp_path / "old_clock.png"
    path.write_bytes(sample_images[0].read_bytes())
    hour_ago = time.time() - 3600
    os.utime(path, (hour_ago, hour_ago))
    settle = tracker(settle=2.0)
    now = time.monotonic()
    settle.touch(path, WatchFolder(path=tmp_path, product="p"), now=now)
    assert settle.ready(now=now + 0.5) == []
    assert len(settle.ready(now=now + 2.1)) == 1


def test_a_writer_that_keeps_the_file_open_is_waited_for_until_it_closes(tmp_path: Path,
                                                                       sample_images: list[Path]) -> None:
    path = tmp_path / "open.tiff"
    path.write_bytes(b"II*\x00" + bytes(100))  # what a TIFF writer leaves while it pauses
    folder = WatchFolder(path=tmp_path, product="p")
    settle = tracker(settle=0.1, incomplete=30.0)
    now = time.monotonic()
    settle.touch(path, folder, "modified", now=now)
    assert settle.ready(now=now + 5.0) == [] and settle.waiting() == {"writer still has the file open": 1}
    settle.touch(path, folder, "closed", now=now + 5.0)
    assert settle.ready(now=now + 5.2) == []  # closed, but its structure is still cut short
    assert len(settle.ready(now=now + 30.1)) == 1  # unchanged for incomplete_seconds: taken in as it is


def test_empty_files_and_partial_signatures_wait(tmp_path: Path, sample_images: list[Path]) -> None:
    folder = WatchFolder(path=tmp_path, product="p")
    settle = tracker()
    empty, four = tmp_path / "empty.png", tmp_path / "four.png"
    empty.write_bytes(b"")
    four.write_bytes(sample_images[0].read_bytes()[:4])
    for path in (empty, four):
        settle.touch(path, folder)
    assert settle.ready() == []
    assert set(settle.waiting()) == {"file is empty", "only the first 4 bytes of an image signature so far"}


def test_links_fifos_and_undecodable_names_are_refused_without_reading(tmp_path: Path,
                                                                      sample_images: list[Path]) -> None:
    folder = WatchFolder(path=tmp_path, product="p")
    outside = tmp_path.parent / "outside.png"
    outside.write_bytes(sample_images[0].read_bytes())
    (tmp_path / "link.png").symlink_to(outside)
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    os.mkfifo(tmp_path / "fifo.png")
    odd = Path(os.fsdecode(os.fsencode(str(tmp_path)) + b"/cam_\xe9.png"))
    odd.write_bytes(sample_images[0].read_bytes())
    settle = tracker()
    for path, found in scan((folder,)):
        settle.touch(path, found)
    outcomes = {o.path.name: o for o in settle.ready()}
    assert set(outcomes) == {"link.png", "loop.png", "fifo.png", odd.name}
    assert all(isinstance(o, Refused) for o in outcomes.values())
    assert "symbolic link to " + str(outside) in outcomes["link.png"].reason
    assert "FIFO" in outcomes["fifo.png"].reason
    assert "not valid UTF-8" in outcomes[odd.name].reason


def test_a_deleted_and_recreated_folder_is_watched_again(tmp_path: Path, sample_images: list[Path]) -> None:
    folder = WatchFolder(path=tmp_path / "drop", product="p")
    watcher = FolderWatcher((folder,), poll_seconds=0.2)
    watcher.start()
    try:
        folder.path.rmdir()
        assert watcher.check_folders() and watcher.missing() == [folder]
        folder.path.mkdir()
        assert watcher.check_folders() and watcher.missing() == []
        target = folder.path / "again.png"
        target.write_bytes(sample_images[0].read_bytes())
        assert wait_for_event(watcher, target)
    finally:
        watcher.stop()
