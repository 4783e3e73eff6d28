"""Filesystem events from the drop folders, and full scans that catch what events miss.

watchdog's native observer (inotify on Linux) serves local folders; folders marked
`network_share` get its polling observer, since SMB/NFS mounts deliver no inotify
events. Events only say "look at this path": the settle tracker decides when a file
is complete, and periodic reconciliation scans find files whose events were lost or
that arrived while the daemon was down.
"""

from __future__ import annotations

import logging
import os
import queue
import stat
from pathlib import Path
from typing import Iterator

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from ..config import WatchFolder
from .intake import matches

log = logging.getLogger(__name__)


Event = tuple[Path, WatchFolder, "str | None"]  # path, its folder, watchdog event type (None: look again)


class _Forwarder(FileSystemEventHandler):
    """Puts (path, folder, event type) on a queue for every event that may concern an
    image. Polled folders give no writer information, so their events carry None."""

    def __init__(self, folder: WatchFolder, sink: "queue.Queue[Event]"):
        self.folder, self.sink = folder, sink

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type in ("deleted", "opened", "closed_no_write"):
            return
        path = Path(os.fsdecode(getattr(event, "dest_path", "") or event.src_path))
        if matches(self.folder, path):
            self.sink.put((path, self.folder, None if self.folder.network_share else event.event_type))


class FolderWatcher:
    """Observers for all watched folders, feeding one queue. A folder that is deleted
    (its inotify watch dies with it) and created again is watched again."""

    def __init__(self, folders: tuple[WatchFolder, ...], poll_seconds: float):
        self.folders = folders
        self.poll_seconds = poll_seconds
        self.events: "queue.Queue[Event]" = queue.Queue()
        self._observers: list[BaseObserver] = []
        self._identity: dict[Path, tuple[int, int] | None] = {}

    def start(self) -> None:
        for folder in self.folders:
            try:
                folder.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                log.error("cannot create watched folder %s: %s", folder.path, exc.strerror or exc)
        self._start_observers()

    def _start_observers(self) -> None:
        """Observe every folder that exists now. A missing one is not created again:
        that would hide a lost mount or a removed camera share."""
        for folder in self.folders:
            self._identity[folder.path] = _identity(folder.path)
        present = [f for f in self.folders if self._identity[f.path] is not None]
        native = [f for f in present if not f.network_share]
        polled = [f for f in present if f.network_share]
        if native:
            self._observers.append(self._observe(Observer(), native))
        if polled:
            self._observers.append(self._observe(PollingObserver(timeout=self.poll_seconds), polled))

    def _observe(self, observer: BaseObserver, folders: list[WatchFolder]) -> BaseObserver:
        for folder in folders:
            observer.schedule(_Forwarder(folder, self.events), str(folder.path),
                              recursive=folder.recursive)
        observer.daemon = True
        observer.start()
        log.info("watching %s (%s)", ", ".join(str(f.path) for f in folders), type(observer).__name__)
        return observer

    def healthy(self) -> bool:
        return all(observer.is_alive() for observer in self._observers)

    def restart(self) -> None:
        """Replace the observers (one died, or a folder was recreated)."""
        self.stop()
        self._observers = []
        self._start_observers()

    def missing(self) -> list[WatchFolder]:
        """Watched folders that do not exist at present."""
        return [f for f in self.folders if self._identity.get(f.path) is None]

    def check_folders(self) -> bool:
        """Restart the observers when a folder was deleted, recreated or appeared, or
        an observer died; True when that happened (a scan should follow)."""
        changed = [f for f in self.folders if _identity(f.path) != self._identity.get(f.path)]
        if not changed and self.healthy():
            return False
        for folder in changed:
            if _identity(folder.path) is None:
                log.warning("watched folder %s is missing", folder.path)
                self._identity[folder.path] = None
            else:
                log.warning("watched folder %s is back (or new); watching it again", folder.path)
        if not self.healthy():
            log.warning("a folder observer stopped; restarting the observers")
        self.restart()
        return True

    def stop(self) -> None:
        for observer in self._observers:
            observer.stop()
        for observer in self._observers:
            if observer.is_alive():
                observer.join(timeout=5)

    def drain(self, timeout: float | None) -> list[Event]:
        """Events so far, waiting up to `timeout` seconds for the first one."""
        items = []
        try:
            items.append(self.events.get(timeout=timeout) if timeout else self.events.get_nowait())
            while True:
                items.append(self.events.get_nowait())
        except queue.Empty:
            pass
        return items


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino) if stat.S_ISDIR(info.st_mode) else None


def scan(folders: tuple[WatchFolder, ...]) -> Iterator[tuple[Path, WatchFolder]]:
    """Every matching entry in the folders that is not a directory: files, and also
    links, FIFOs and devices (which get an error row rather than silence). Links are
    never followed."""
    for folder in folders:
        for root, names in _walk(folder):
            for name in names:
                path = root / name
                if matches(folder, path):
                    yield path, folder


def _walk(folder: WatchFolder) -> Iterator[tuple[Path, list[str]]]:
    if folder.recursive:
        for root, _, names in os.walk(folder.path):  # follows no links; unreadable parts are skipped
            yield Path(root), names
        return
    try:
        with os.scandir(folder.path) as entries:
            names = [e.name for e in entries if not _is_directory(e)]
    except OSError as exc:
        log.warning("cannot scan %s: %s", folder.path, exc.strerror or exc)
        return
    yield folder.path, names


def _is_directory(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False
