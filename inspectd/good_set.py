"""Feeding review decisions back into a product's model, on purpose and reversibly.

"Good part + add to the good set" (a quality engineer's decision in the review app):

1. :func:`check_image` refuses ERROR items, images that cannot be decoded and images
   already in the good set (same content in the active model or waiting for a candidate);
2. :func:`keep_image` copies the image into ``<enroll_dir>/<product>/good/`` (named by
   its item, never overwriting);
3. the decision and the good-set entry are stored in one transaction
   (``Database.add_good_set_decision``), which pins the active version;
4. :func:`build_candidate` builds a *candidate* version: the active version extended
   with every good-set image that is not in it yet.  The candidate scores nothing until
   someone activates it (after :func:`preview` shows how it would change the queue);
5. :func:`undo_decision` takes the image out of the good set again and, when the active
   version contains it, returns the product to the version active before.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .active import active_version
from .config import Config
from .db import VERDICT_ERROR, VERDICT_NG, VERDICT_OK, Database, UndoResult
from .errors import ImageError, InspectdError, ModelError
from .hashing import bytes_sha256
from .imageio import decode_image
from .lifecycle import image_hashes, pin_active, versions_containing
from .naming import validate_product_name
from .store import ModelStore

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]
EnrollFn = Callable[..., Any]  # inspectd.enroll.enroll


class GoodSetRefused(InspectdError):
    """An image that must not join the good set (ERROR item, unreadable, already in it)."""


@dataclass(frozen=True)
class GoodSetCheck:
    """An image that may join the good set."""

    sha256: str
    active_version: str  # the version it would extend


@dataclass(frozen=True)
class Candidate:
    """A candidate version built from good-set images."""

    product: str
    version: str
    base_version: str
    threshold: float
    base_threshold: float
    images: tuple[str, ...]  # the good-set files it adds to the base version


@dataclass(frozen=True)
class QueueImage:
    """An item of the review queue, as :func:`preview` rescores it."""

    item_id: int
    path: str
    verdict: str


@dataclass(frozen=True)
class Preview:
    """How a version would change the verdicts of the current queue."""

    version: str
    threshold: float
    queue: int  # OK and NG items looked at
    rescored: int  # of which could be read and scored again
    to_ok: tuple[int, ...]  # NG today, OK with this version (item ids)
    to_ng: tuple[int, ...]  # OK today, NG with this version

    @property
    def flips(self) -> int:
        return len(self.to_ok) + len(self.to_ng)


def good_dir(config: Config, product: str) -> Path:
    """Where a product's good enrollment images are kept."""
    return config.enroll_dir / validate_product_name(product) / "good"


def default_enroll(*args: Any, **kwargs: Any) -> Any:
    from .enroll import enroll  # imports torch: only when a candidate is built

    return enroll(*args, **kwargs)


def check_image(config: Config, db: Database, store: ModelStore, product: str, verdict: str,
                image: Path) -> GoodSetCheck:
    """Refuse (GoodSetRefused) an image that must not join *product*'s good set."""
    if verdict == VERDICT_ERROR:
        raise GoodSetRefused("scoring failed for this item (ERROR): it cannot join the good set")
    try:
        data = image.read_bytes()
    except OSError as exc:
        raise GoodSetRefused(f"cannot read {image}: {exc.strerror or exc}") from exc
    try:
        decode_image(data, name=image.name, max_pixels=config.images.max_pixels)
    except ImageError as exc:
        raise GoodSetRefused(f"not a usable image: {exc}") from exc
    sha256 = bytes_sha256(data)
    try:
        active = active_version(db, store, product)
        enrolled = image_hashes(store.open(product, active.version))
    except ModelError as exc:
        raise GoodSetRefused(f"no usable model to extend: {exc}") from exc
    if sha256 in enrolled:
        raise GoodSetRefused(f"this image is already in the good set: {product} {active.version} was built with it")
    for waiting in db.good_set_images(product, pending_only=True):
        if waiting.sha256 == sha256:
            where = f" (in candidate {waiting.candidate_version})" if waiting.candidate_version else ""
            raise GoodSetRefused(f"this image is already in the good set: added by {waiting.added_by} "
                                 f"for item {waiting.item_id}{where}")
    return GoodSetCheck(sha256, active.version)


def keep_image(config: Config, product: str, image: Path, item_id: int) -> Path:
    """Copy *image* into the product's good folder as ``review-<item>-<name>`` and return the copy.

    Written under a temporary name and renamed, so the folder never holds half an image.
    """
    folder = good_dir(config, product)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"review-{item_id:08d}-{image.name}"
    handle, temporary = tempfile.mkstemp(prefix=".incoming-", dir=folder)
    os.close(handle)
    try:
        shutil.copy2(image, temporary)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def build_candidate(config: Config, db: Database, store: ModelStore, product: str, by: str, *,
                    progress: Progress | None = None, enroll: EnrollFn = default_enroll) -> Candidate:
    """Build a candidate version: the active version plus every good-set image not in it.

    Only the new images are processed (incremental enrollment).  The active version is
    pinned first, so the candidate does not become active by being the newest.
    """
    base = pin_active(db, store, product, by, "pinned before a candidate is built from the review app")
    if base is None:
        raise GoodSetRefused(f"{product} has no model version to extend")
    base_model = store.open(product, base)
    enrolled = image_hashes(base_model)
    waiting = [image for image in db.good_set_images(product, pending_only=True)
               if image.sha256 not in enrolled and Path(image.kept_as).is_file()]
    if not waiting:
        raise GoodSetRefused(f"no good-set image of {product} waits for a candidate (the active {base} has them all)")
    folder = good_dir(config, product)
    with tempfile.TemporaryDirectory(prefix=".candidate-", dir=folder) as staging:
        for image in waiting:
            kept = Path(image.kept_as)
            try:
                os.link(kept, Path(staging) / kept.name)
            except OSError:  # another file system
                shutil.copy2(kept, Path(staging) / kept.name)
        report = enroll(config, product, staging, add=True, base_version=base, progress=progress)
    db.set_candidate_version([image.id for image in waiting], report.version)
    return Candidate(product, report.version, base, float(report.threshold),
                     float(base_model.metadata["calibration"]["threshold"]),
                     tuple(Path(image.kept_as).name for image in waiting))


def undo_decision(db: Database, store: ModelStore, item_id: int, target_review_id: int, operator: str,
                  client_id: str | None = None) -> UndoResult:
    """Undo review *target_review_id*; a good-set decision also takes its image out of the
    good set (the file is removed) and restores the version active before, if needed."""
    image = db.good_set_image_of_review(target_review_id)
    restore_from = versions_containing(store, image.product, image.sha256) if image is not None else set()
    result = db.undo_review(item_id, operator, target_review_id=target_review_id, client_id=client_id,
                            restore_from=restore_from)
    if result.removed is not None:
        try:
            Path(result.removed.kept_as).unlink(missing_ok=True)
        except OSError as exc:  # the database already says it left the good set; candidates skip it
            log.warning("cannot remove %s from the good set folder: %s", result.removed.kept_as, exc)
    return result


def preview(config: Config, store: ModelStore, product: str, version: str, queue: Sequence[QueueImage], *,
            progress: Progress | None = None) -> Preview:
    """Score the queue's images with *version* and count the verdicts that would change."""
    from .device import resolve_device
    from .model import ProductModel  # torch: only when a preview is asked for

    model = ProductModel.load(store, product, version, device=resolve_device(config.device))
    model.set_limits(config.images.max_bytes, config.images.max_pixels)
    queue = [entry for entry in queue if entry.verdict in (VERDICT_OK, VERDICT_NG)]  # ERROR items have no verdict
    to_ok: list[int] = []
    to_ng: list[int] = []
    rescored = 0
    for start in range(0, len(queue), model.settings.batch_size):
        batch, prepared = [], []
        for entry in queue[start:start + model.settings.batch_size]:
            try:
                prepared.append(model.read(entry.path)[1])
            except ImageError:
                continue  # moved, deleted or unreadable: not counted
            batch.append(entry)
        for entry, result in zip(batch, model.score_images(prepared, [entry.path for entry in batch])):
            rescored += 1
            if entry.verdict == VERDICT_NG and result.verdict == VERDICT_OK:
                to_ok.append(entry.item_id)
            elif entry.verdict == VERDICT_OK and result.verdict == VERDICT_NG:
                to_ng.append(entry.item_id)
        if progress is not None:
            progress("rescoring the queue", min(start + model.settings.batch_size, len(queue)), len(queue))
    return Preview(version, model.threshold, len(queue), rescored, tuple(to_ok), tuple(to_ng))
