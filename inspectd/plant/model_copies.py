"""Line PCs read models from a shared store and score from verified local copies.

`shared_store_dir` is the plant's store, usually a read-only network mount that the
quality engineers enroll into. The daemon never scores from it: a background thread
copies each watched product's versions (newest first) into the local `store_dir`
(into a staging folder, every file checked against the version's SHA256SUMS, then
renamed into place), and the daemon switches to the active version at its next
batch. A network hiccup, a hung mount or a corrupt copy only delays the switch:
scoring goes on with the local copies it has.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

from ..config import Config
from ..errors import ModelError
from ..store import ModelStore, verify_copy

log = logging.getLogger(__name__)
SYNC_SECONDS = 5.0


class SharedModels:
    """Keeps the local store's copies of `products` up to date from the shared store."""

    def __init__(self, shared_root: Path, local_root: Path, products: Iterable[str],
                 interval_s: float = SYNC_SECONDS):
        self.shared, self.local = ModelStore(shared_root), ModelStore(local_root)
        self.products = sorted(set(products))
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._problems: dict[str, str] = {}
        self._thread = threading.Thread(target=self._run, name="model-copies", daemon=True)

    def sync_once(self) -> None:
        """Copy what is new (also used at start-up, before the models are loaded)."""
        for product in self.products:
            try:
                self._sync(product)
            except (OSError, ModelError) as exc:
                self._problem(product, str(exc))

    def start(self, first_wait_s: float = 30.0) -> None:
        """Copy what is new now (waiting at most `first_wait_s`: a hung mount must not
        hold up the start), then keep looking in the background."""
        first = threading.Thread(target=self.sync_once, name="model-copies-first", daemon=True)
        first.start()
        first.join(first_wait_s)
        if first.is_alive():
            log.warning("the shared model store %s did not answer within %.0f s; starting with the local copies",
                        self.shared.root, first_wait_s)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()  # a thread stuck on a hung mount is a daemon thread: it does not hold up the exit

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sync_once()

    def _sync(self, product: str) -> None:
        # Every version, not just the newest: the active one (recorded in the database)
        # may be an earlier one that a quality engineer set back to. Newest first.
        local = set(self.local.versions(product))
        failures = []
        for version in reversed(self.shared.versions(product)):
            if version not in local:
                try:
                    self._copy(product, version)
                except (OSError, ModelError) as exc:  # one bad version does not keep the others out
                    failures.append(f"{version}: {exc}")
        if failures:
            raise ModelError("; ".join(failures))
        self._problems.pop(product, None)

    def _copy(self, product: str, version: str) -> None:
        source = self.shared.product_dir(product) / version
        target_dir = self.local.product_dir(product)
        target_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".copy-{version}-", dir=target_dir))
        try:
            for entry in source.iterdir():
                if entry.is_file():
                    shutil.copyfile(entry, staging / entry.name)
            verify_copy(staging)
            os.rename(staging, target_dir / version)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        log.info("model %s %s copied from the shared store %s and verified", product, version, self.shared.root)

    def _problem(self, product: str, message: str) -> None:
        if self._problems.get(product) != message:
            log.warning("model copies of %s: %s; scoring goes on with the local copies", product, message)
        self._problems[product] = message


def shared_models(config: Config) -> SharedModels | None:
    """Started copies of the configured shared store's watched products, or None."""
    if config.shared_store_dir is None:
        return None
    copies = SharedModels(config.shared_store_dir, config.store_dir, {folder.product for folder in config.watch})
    copies.start()
    return copies
