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
from pathlib import Path
from typing import Iterator

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from ..config import WatchFolder
from .intake import matches

log = logging.getLogger(__name__)


class _Forwarder(FileSystemEventHandler):
    """Puts (path, folder) on a queue for every event that may concern an image."""

    def __init__(self, folder: WatchFolder, sink: "queue.Queue[tuple[Path, WatchFolder]]"):
        self.folder, self.sink = folder, sink

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        # Created, modified, closed-after-write and moved-in all mean: look again.
        path = getattr(event, "dest_path", "") or event.src_path
        if event.event_type in ("deleted", "opened", "closed_no_write"):
            return
        path = Path(os.fsdecode(path))
        if matches(self.folder, path):
            self.sink.put((path, self.folder))


class FolderWatcher:
    """Observers for all watched folders, feeding one queue."""

    def __init__(self, folders: tuple[WatchFolder, ...], poll_seconds: float):
        self.folders = folders
        self.poll_seconds = poll_seconds
        self.events: "queue.Queue[tuple[Path, WatchFolder]]" = queue.Queue()
        self._observers: list[BaseObserver] = []

    def start(self) -> None:
        for folder in self.folders:
            folder.path.mkdir(parents=True, exist_ok=True)
        native = [f for f in self.folders if not f.network_share]
        polled = [f for f in self.folders if f.network_share]
        if native:
            self._observers.append(self._observe(Observer(), native))
        if polled:
            self._observers.append(self._observe(PollingObserver(timeout=self.poll_seconds), polled))

    def _observe(self, observer: BaseObserver, folders: list[WatchFolder]) -> BaseObserver:
        for folder in folders:
            observer.schedule(_Forwarder(folder, self.events), str(folder.path), recursive=folder.recursive)
        observer.daemon = True
        observer.start()
        log.info("watching %s (%s)", ", ".join(str(f.path) for f in folders), type(observer).__name__)
        return observer

    def healthy(self) -> bool:
        return all(observer.is_alive() for observer in self._observers)

    def restart(self) -> None:
        """Replace dead observers (a removed and recreated folder kills inotify watches)."""
        log.warning("a folder observer stopped; restarting the observers")
        self.stop()
        self._observers = []
        self.start()

    def stop(self) -> None:
        for observer in self._observers:
            observer.stop()
        for observer in self._observers:
            if observer.is_alive():
                observer.join(timeout=5)

    def drain(self, timeout: float | None) -> list[tuple[Path, WatchFolder]]:
        """Events so far, waiting up to `timeout` seconds for the first one."""
        items = []
        try:
            items.append(self.events.get(timeout=timeout) if timeout else self.events.get_nowait())
            while True:
                items.append(self.events.get_nowait())
        except queue.Empty:
            pass
        return items


def scan(folders: tuple[WatchFolder, ...]) -> Iterator[tuple[Path, WatchFolder]]:
    """Every matching file currently in the folders."""
    for folder in folders:
        if not folder.path.is_dir():
            continue
        if folder.recursive:
            walker = ((Path(root), names) for root, _, names in os.walk(folder.path))
        else:
            walker = iter([(folder.path, [e.name for e in os.scandir(folder.path) if e.is_file()])])
        for root, names in walker:
            for name in names:
                path = root / name
                if matches(folder, path):
                    yield path, folder
