"""The model-version life cycle in the database: which version of a product is active
(with its history), and the images added to a product's good set from the review app.

Both are append-only logs.  The active version of a product is the version of its
latest ``model_activations`` row; a product without one uses its newest stored version
(see :mod:`inspectd.active`, the one place that answers "which version is active").
A good-set image is taken out again by an undo of the decision that added it; when the
active version contains that image, the same transaction returns the product to the
version that was active before the image was added.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from inspectd.db.exceptions import InvalidReviewError, InvalidValueError
from inspectd.db.products import ensure_product
from inspectd.db.records import ActivationRecord, GoodSetRecord
from inspectd.db.reviews import ReviewFields
from inspectd.db.schema import (
    DECISION_UNDO,
    NAME_LENGTH,
    VERSION_LENGTH,
    GoodSetImage,
    ModelActivation,
    Review,
    utcnow,
)
from inspectd.db.session import SessionScope


class AlreadyInGoodSetError(InvalidReviewError):
    """The image is already in the product's good set."""


@dataclass(frozen=True)
class GoodSetDecision:
    """What a "good part + add to the good set" decision stored."""

    review_id: int
    image: GoodSetRecord


@dataclass(frozen=True)
class UndoResult:
    """What an undo stored: its row, the good-set image it took out, the version it restored."""

    review_id: int
    undone_review_id: int
    removed: GoodSetRecord | None = None
    restored: ActivationRecord | None = None


def _check_version(version: str) -> None:
    if not version or len(version) > VERSION_LENGTH:
        raise InvalidValueError(f"invalid model version {version!r}")


def _latest_activation(session: Session, product: str) -> ModelActivation | None:
    return session.scalar(
        select(ModelActivation).where(ModelActivation.product == product).order_by(ModelActivation.id.desc()).limit(1))


def _activate(session: Session, product: str, version: str, by: str, reason: str, *,
              fallback_previous: str | None, review_id: int | None = None) -> ModelActivation:
    _check_version(version)
    if not by or len(by) > NAME_LENGTH:
        raise InvalidValueError(f"invalid name {by!r} for who activates a model (1 to {NAME_LENGTH} characters)")
    ensure_product(session, product)
    current = _latest_activation(session, product)
    row = ModelActivation(product=product, version=version,
                          previous_version=current.version if current is not None else fallback_previous,
                          activated_by=by, activated_at=utcnow(), reason=reason, review_id=review_id)
    session.add(row)
    session.flush()
    return row


class ModelLifeCycleOperations(SessionScope):
    """Active versions (record/pin/history) and the good set (add/undo/candidate)."""

    # --- active versions ----------------------------------------------------------------

    def active_activation(self, product: str) -> ActivationRecord | None:
        """The latest activation of *product*, or None when none was ever recorded."""

        def load(session: Session) -> ActivationRecord | None:
            row = _latest_activation(session, product)
            return ActivationRecord.from_row(row) if row is not None else None

        return self._read("active_activation", load)

    def active_activations(self) -> dict[str, ActivationRecord]:
        """The latest activation of every product that has one."""

        def load(session: Session) -> dict[str, ActivationRecord]:
            latest = select(func.max(ModelActivation.id)).group_by(ModelActivation.product)
            rows = session.scalars(select(ModelActivation).where(ModelActivation.id.in_(latest)))
            return {row.product: ActivationRecord.from_row(row) for row in rows}

        return self._read("active_activations", load)

    def activation_history(self, product: str) -> list[ActivationRecord]:
        """Every activation of *product*, oldest first."""

        def load(session: Session) -> list[ActivationRecord]:
            rows = session.scalars(
                select(ModelActivation).where(ModelActivation.product == product).order_by(ModelActivation.id))
            return [ActivationRecord.from_row(row) for row in rows]

        return self._read("activation_history", load)

    def record_activation(self, product: str, version: str, activated_by: str, reason: str, *,
                          fallback_previous: str | None = None) -> ActivationRecord:
        """Make *version* the active version of *product*.  *fallback_previous* is recorded as
        the previous version when the product had no activation yet (its newest version)."""
        return self._write_once_more_on_conflict("record_activation", lambda session: ActivationRecord.from_row(
            _activate(session, product, version, activated_by, reason, fallback_previous=fallback_previous)))

    def pin_activation(self, product: str, version: str, activated_by: str, reason: str) -> ActivationRecord:
        """Record *version* as active unless *product* already has an activation; returns the one in force.

        Used before a candidate version is written, so that it does not become active
        merely by being the newest version in the store."""

        def pin(session: Session) -> ActivationRecord:
            current = _latest_activation(session, product)
            if current is None:
                current = _activate(session, product, version, activated_by, reason, fallback_previous=None)
            return ActivationRecord.from_row(current)

        return self._write_once_more_on_conflict("pin_activation", pin)

    # --- the good set -------------------------------------------------------------------

    def add_good_set_decision(self, review: ReviewFields, *, product: str, sha256: str, kept_as: str,
                              fallback_active: str | None) -> GoodSetDecision:
        """Store a "good part + add to the good set" decision: the review row and the
        good-set image, in one transaction.  The active version is pinned first (from
        *fallback_active*, the newest stored version, if the product has no activation),
        so that the candidate built from the image is not active by being the newest.

        Replaying the same client id returns the first result; an image whose content
        is already in the good set raises :class:`AlreadyInGoodSetError`.
        """
        review.validate()

        def store(session: Session) -> GoodSetDecision:
            if review.client_id is not None:
                earlier = session.scalar(select(GoodSetImage).join(Review, Review.id == GoodSetImage.review_id)
                                         .where(Review.client_id == review.client_id))
                if earlier is not None:
                    return GoodSetDecision(earlier.review_id, GoodSetRecord.from_row(earlier))
            twin = session.scalar(select(GoodSetImage).where(
                GoodSetImage.product == product, GoodSetImage.sha256 == sha256, GoodSetImage.removed_at.is_(None)))
            if twin is not None:
                raise AlreadyInGoodSetError(
                    f"this image is already in the good set of {product} (added by {twin.added_by} "
                    f"for item {twin.item_id})")
            active = _latest_activation(session, product)
            if active is None and fallback_active is not None:
                active = _activate(session, product, fallback_active, review.operator,
                                   "pinned before a candidate is built from the review app", fallback_previous=None)
            review_id = review.append(session)
            image = GoodSetImage(
                product=product, item_id=review.item_id, review_id=review_id, sha256=sha256, kept_as=kept_as,
                added_by=review.operator, added_at=utcnow(), active_before=active.version if active else None)
            session.add(image)
            session.flush()
            return GoodSetDecision(review_id, GoodSetRecord.from_row(image))

        return self._write("add_good_set_decision", store)

    def good_set_images(self, product: str, *, pending_only: bool = False) -> list[GoodSetRecord]:
        """Good-set images of *product* added from the review app, oldest first."""

        def load(session: Session) -> list[GoodSetRecord]:
            query = select(GoodSetImage).where(GoodSetImage.product == product)
            if pending_only:
                query = query.where(GoodSetImage.removed_at.is_(None))
            return [GoodSetRecord.from_row(row) for row in session.scalars(query.order_by(GoodSetImage.id))]

        return self._read("good_set_images", load)

    def good_set_image_of_review(self, review_id: int) -> GoodSetRecord | None:
        """The good-set image added by review *review_id*, if that decision added one."""

        def load(session: Session) -> GoodSetRecord | None:
            row = session.scalar(select(GoodSetImage).where(GoodSetImage.review_id == review_id))
            return GoodSetRecord.from_row(row) if row is not None else None

        return self._read("good_set_image_of_review", load)

    def set_candidate_version(self, image_ids: Iterable[int], version: str) -> None:
        """Record that candidate *version* was built with the good-set images *image_ids*."""
        _check_version(version)
        ids = list(image_ids)

        def mark(session: Session) -> None:
            session.execute(update(GoodSetImage).where(GoodSetImage.id.in_(ids)).values(candidate_version=version))

        if ids:
            self._write("set_candidate_version", mark)

    def undo_review(self, item_id: int, operator: str, *, target_review_id: int, client_id: str | None = None,
                    restore_from: Collection[str] = ()) -> UndoResult:
        """Cancel review *target_review_id* with an 'undo' row.

        If that review added an image to the good set, the image is taken out; and if
        the product's active version is one of *restore_from* (the versions that contain
        the image), the product returns to the version that was active before it was
        added, all in the same transaction.  Replaying *client_id* returns the first result.
        """

        def store(session: Session) -> UndoResult:
            target = session.get(Review, target_review_id)
            if target is None or target.item_id != item_id:
                raise InvalidReviewError(f"review {target_review_id} does not exist for item {item_id}")
            fields = ReviewFields(item_id, DECISION_UNDO, operator, verdict=target.verdict,
                                  model_version=target.model_version, threshold=target.threshold,
                                  undoes_review_id=target_review_id, client_id=client_id)
            fields.validate()
            replayed = client_id is not None and session.scalar(
                select(Review.id).where(Review.client_id == client_id)) is not None
            review_id = fields.append(session)
            image = session.scalar(select(GoodSetImage).where(GoodSetImage.review_id == target_review_id))
            if image is None or replayed:
                return UndoResult(review_id, target_review_id,
                                  GoodSetRecord.from_row(image) if image is not None else None)
            image.removed_at, image.removed_by = utcnow(), operator
            restored = None
            active = _latest_activation(session, image.product)
            if (active is not None and active.version in restore_from and image.active_before is not None
                    and image.active_before != active.version):
                restored = ActivationRecord.from_row(_activate(
                    session, image.product, image.active_before, operator,
                    f"undo of review {target_review_id}: {image.kept_as} left the good set",
                    fallback_previous=None, review_id=review_id))
            session.flush()
            return UndoResult(review_id, target_review_id, GoodSetRecord.from_row(image), restored)

        return self._write("undo_review", store)
