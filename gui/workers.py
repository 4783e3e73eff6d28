"""Background work: a thread-pool runner that answers on the GUI thread, a poller,
and an image loader with a small cache and prefetching.

Nothing here touches widgets from a worker thread: workers only compute values
(records, QImages) and the answers are delivered through a queued signal.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from PySide6.QtCore import QObject, QRunnable, QThreadPool, QTimer, Signal, Slot, Qt

from gui.qt_compat import emit

log = logging.getLogger(__name__)

T = TypeVar("T")
K = TypeVar("K")
Callback = Callable[[Any], None]


class _Delivery(QObject):
    """Lives in the GUI thread; calls callbacks there (queued from any thread)."""

    arrived = Signal(object, object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.arrived.connect(self._call, Qt.ConnectionType.QueuedConnection)

    @Slot(object, object)
    def _call(self, callback: Callback, value: object) -> None:
        callback(value)


class _Task(QRunnable):
    def __init__(self, work: Callable[[], Any], delivery: _Delivery, on_done: Callback, on_error: Callback) -> None:
        super().__init__()
        self._work, self._delivery, self._on_done, self._on_error = work, delivery, on_done, on_error

    def run(self) -> None:
        try:
            value = self._work()
        except Exception as exc:  # reported to the GUI, never lost in a thread
            log.debug("background task failed", exc_info=True)
            emit(self._delivery.arrived, self._on_error, exc)
        else:
            emit(self._delivery.arrived, self._on_done, value)


def _log_error(exc: BaseException) -> None:
    log.error("background task failed: %s", exc)


class TaskRunner(QObject):
    """Runs callables on its own thread pool; ``on_done``/``on_error`` run on the GUI thread.

    With ``threads=1`` tasks run one after the other in submission order (used for
    writes, so a decision and its undo cannot overtake each other).
    """

    def __init__(self, threads: int = 2, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(threads)
        self._delivery = _Delivery(self)

    def submit(self, work: Callable[[], T], on_done: Callable[[T], None] | None = None,
               on_error: Callback | None = None) -> None:
        """Run *work* in the pool; hand its value to *on_done* (or its exception to *on_error*)."""
        self._pool.start(_Task(work, self._delivery, on_done or (lambda _value: None), on_error or _log_error))

    def wait(self, timeout_ms: int = 30000) -> bool:
        """Block until every task has finished (shutdown, tests); False on timeout."""
        return self._pool.waitForDone(timeout_ms)


class ImmediateRunner:
    """A :class:`TaskRunner` stand-in that runs tasks at once on the calling thread."""

    def submit(self, work: Callable[[], T], on_done: Callable[[T], None] | None = None,
               on_error: Callback | None = None) -> None:
        try:
            value = work()
        except Exception as exc:
            (on_error or _log_error)(exc)
        else:
            if on_done is not None:
                on_done(value)

    def wait(self, timeout_ms: int = 0) -> bool:
        return True


class Poller(QObject):
    """Calls ``submit_poll`` every *interval_s*, never with two polls in flight.

    ``submit_poll(done)`` starts the background work and must call ``done()`` when its
    answer has been handled (or failed).
    """

    def __init__(self, interval_s: float, submit_poll: Callable[[Callable[[], None]], None],
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._submit = submit_poll
        self._busy = False
        self._timer = QTimer(self)
        self._timer.setInterval(max(50, int(interval_s * 1000)))
        self._timer.timeout.connect(self.poll_now)

    def start(self) -> None:
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    @property
    def busy(self) -> bool:
        return self._busy

    def poll_now(self) -> None:
        """Poll unless a poll is still running."""
        if self._busy:
            return
        self._busy = True
        self._submit(self._finished)

    def _finished(self) -> None:
        self._busy = False


class LruCache(Generic[K, T]):
    """A tiny least-recently-used mapping."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict[K, T] = OrderedDict()

    def get(self, key: K) -> T | None:
        if key not in self._data:
            return None
        self._data.move_to_end(key)
        return self._data[key]

    def put(self, key: K, value: T) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self._size:
            self._data.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        return key in self._data


class PrefetchLoader(QObject):
    """Decodes values off the GUI thread, caches them and prefetches neighbours.

    ``loaded(key, value)`` is emitted on the GUI thread when a requested or prefetched
    value is ready.
    """

    loaded = Signal(object, object)

    def __init__(self, runner: TaskRunner | ImmediateRunner, decode: Callable[[Any], Any],
                 key: Callable[[Any], Any], cache_size: int = 24, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._runner, self._decode, self._key = runner, decode, key
        self._cache: LruCache[Any, Any] = LruCache(cache_size)
        self._pending: set[Any] = set()

    def cached(self, source: Any) -> Any | None:
        """The decoded value of *source* if it is ready."""
        return self._cache.get(self._key(source))

    def request(self, source: Any) -> Any | None:
        """The value at once if cached; else None and ``loaded`` follows."""
        value = self.cached(source)
        if value is None:
            self._start(source)
        return value

    def prefetch(self, sources: Iterable[Any]) -> None:
        """Decode *sources* in the background unless cached or under way."""
        for source in sources:
            if self._key(source) not in self._cache:
                self._start(source)

    def _start(self, source: Any) -> None:
        key = self._key(source)
        if key in self._pending:
            return
        self._pending.add(key)

        def done(value: Any) -> None:
            self._pending.discard(key)
            self._cache.put(key, value)
            emit(self.loaded, key, value)

        def failed(exc: BaseException) -> None:
            self._pending.discard(key)
            log.warning("could not prepare %s: %s", key, exc)

        self._runner.submit(lambda: self._decode(source), done, failed)
