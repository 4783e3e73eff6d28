"""The products' models as the daemon uses them: loaded once, switched when a new
version is to be used, and never lost to one bad file.

The version to use is the product's active one (:mod:`.active_versions`: recorded in
the database, else the newest; the last known one while the database cannot be asked). When it cannot be loaded (a corrupt
array, an edited model.json, a changed weights file), the daemon keeps scoring with
the version it already has, or, at start, with the newest earlier version that
loads; the problem is logged once and shown in `inspectd status`, and the bad
version is tried again only when its files change.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import InspectdError, ModelError
from ..model import ProductModel
from ..store import ModelStore
from .active_versions import VersionUnknown

log = logging.getLogger(__name__)
CHECK_SECONDS = 1.0


@dataclass
class _Loaded:
    model: ProductModel
    checked_at: float


@dataclass(frozen=True)
class Problem:
    """A version that could not be loaded, and what is used instead."""

    version: str
    message: str
    fingerprint: tuple
    using: str | None


class ModelKeeper:
    def __init__(self, store: ModelStore, device_for: Callable[[str], torch.device],
                 prepare: Callable[[ProductModel], None], wanted: Callable[[str], str]):
        self.store = store
        self.wanted = wanted  # the version a product is to be scored with
        self.device_for = device_for
        self.prepare = prepare  # limits, registration: whatever a freshly loaded model needs
        self._loaded: dict[str, _Loaded] = {}
        self.problems: dict[str, Problem] = {}
        self._unknown: set[str] = set()  # products whose active version the database cannot tell now

    def get(self, product: str) -> ProductModel:
        """The model to score *product* with; ModelError when no version is usable."""
        now = time.monotonic()
        loaded = self._loaded.get(product)
        if loaded is not None and now - loaded.checked_at < CHECK_SECONDS:
            return loaded.model
        try:
            wanted: str | None = self.wanted(product)
        except VersionUnknown as exc:  # the database cannot be asked now: asked again at the next batch
            if loaded is None:  # the version it last named if stored here, else the newest
                versions = self.store.versions(product)
                guess = exc.known if exc.known in versions else (versions[-1] if versions else None)
                loaded = self._loaded[product] = _Loaded(self._load_with_fallback(product, guess, None), -math.inf)
            if product not in self._unknown:
                log.warning("%s: %s; scoring with %s until the database answers", product, exc, loaded.model.version)
                self._unknown.add(product)
            return loaded.model
        except InspectdError as exc:  # no version stored, or the database cannot say which is active
            if loaded is None:
                raise
            log.warning("%s: cannot tell which model version is active (%s); scoring with %s", product, exc,
                        loaded.model.version)
            loaded.checked_at = now
            return loaded.model
        self._unknown.discard(product)
        if loaded is not None:
            loaded.checked_at = now
            if loaded.model.version == wanted or self._known_bad(product, wanted):
                return loaded.model
        elif self._known_bad(product, wanted) and self.problems[product].using is None:
            raise ModelError(self.problems[product].message)  # nothing loads; do not retry every batch
        model = self._load_with_fallback(product, wanted, loaded.model if loaded else None)
        self._loaded[product] = _Loaded(model, now)
        return model

    def precision_fallbacks(self) -> dict[str, dict[str, str]]:
        """Loaded models scored in another precision than they were enrolled in."""
        return {product: {"version": loaded.model.version, "note": loaded.model.precision_choice.fallback}
                for product, loaded in self._loaded.items() if loaded.model.precision_choice.fallback}

    def reload(self, product: str, version: str) -> ProductModel:
        """*version* loaded again on the product's device now (after a move to the CPU)."""
        model = self._load(product, version)
        self._loaded[product] = _Loaded(model, time.monotonic())
        return model

    def _known_bad(self, product: str, version: str | None) -> bool:
        problem = self.problems.get(product)
        return problem is not None and problem.version == version and \
            problem.fingerprint == self._fingerprint(product, version)

    def _load_with_fallback(self, product: str, wanted: str | None, current: ProductModel | None) -> ProductModel:
        try:
            model = self._load(product, wanted)
        except ModelError as exc:
            if wanted is None:
                raise
            fallback = current or self._newest_loadable(product, before=wanted)
            self._report(product, wanted, exc, fallback)
            if fallback is None:
                raise
            return fallback
        if product in self.problems:
            log.warning("model %s %s loads again; scoring with it", product, model.version)
            del self.problems[product]
        return model

    def _load(self, product: str, version: str | None) -> ProductModel:
        device = self.device_for(product)
        model = ProductModel.load(self.store, product, version, device=device)
        self.prepare(model)
        log.info("loaded model %s %s (threshold %.4f, bank %d) on %s in %s", product, model.version, model.threshold,
                 model.index.bank.shape[0], device, model.precision)
        return model

    def _newest_loadable(self, product: str, before: str) -> ProductModel | None:
        versions = self.store.versions(product)
        for version in reversed(versions[:versions.index(before)] if before in versions else versions):
            try:
                return self._load(product, version)
            except InspectdError as exc:
                log.error("model %s %s cannot be used either: %s", product, version, exc)
        return None

    def _report(self, product: str, version: str, exc: Exception, fallback: ProductModel | None) -> None:
        using = fallback.version if fallback is not None else None
        problem = Problem(version, str(exc), self._fingerprint(product, version), using)
        if self.problems.get(product) != problem:
            tail = f"scoring with {using} instead" if using else "no earlier version loads: images get error rows"
            log.error("MODEL PROBLEM: %s %s cannot be used (%s); %s", product, version, exc, tail)
        self.problems[product] = problem

    def _fingerprint(self, product: str, version: str | None) -> tuple:
        """Names, sizes and mtimes of a version's files: a repaired version differs."""
        if version is None:
            return ()
        folder = self.store.product_dir(product) / version
        try:
            return tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()))
        except OSError:
            return ()
