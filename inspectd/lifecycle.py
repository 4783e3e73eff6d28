"""The life cycle of a product's model versions: activate, pin, and the state of each.

States of a stored version:

* ``active``: the version the daemon scores with (:func:`inspectd.active.active_version`);
* ``candidate``: newer than the active one and never active, e.g. built from review
  feedback ("add to the good set"); it scores nothing until someone activates it;
* ``withdrawn``: contains an image that has since left the good set (its "add to the
  good set" decision was undone); it cannot be activated;
* ``previous``: any other version (it can be activated again to roll back).

Activation is recorded in the database, with who, when, why and the previous version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .active import active_version
from .db import ActivationRecord, Database
from .errors import InspectdError, ModelError
from .store import ModelStore, StoredModel

STATE_ACTIVE = "active"
STATE_CANDIDATE = "candidate"
STATE_WITHDRAWN = "withdrawn"
STATE_PREVIOUS = "previous"
STATE_UNREADABLE = "unreadable"


class ActivationError(InspectdError):
    """A version that cannot be made active (missing, corrupt, withdrawn)."""


@dataclass(frozen=True)
class VersionInfo:
    """One stored version of a product with its life-cycle state."""

    product: str
    version: str
    state: str
    threshold: float | None = None
    created_at: str | None = None
    parent_version: str | None = None
    images: int = 0
    added_from_review: tuple[str, ...] = ()  # good-set images from the review app it contains
    error: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


def image_hashes(model: StoredModel) -> set[str]:
    """The sha256 of every good image a version was built from (bank and calibration)."""
    images = model.metadata.get("images", {})
    return {entry["sha256"] for role in ("bank", "calibration") for entry in images.get(role, []) if "sha256" in entry}


def versions_containing(store: ModelStore, product: str, sha256: str) -> set[str]:
    """The stored versions of *product* built with the image whose content hash is *sha256*."""
    found = set()
    for version in store.versions(product):
        try:
            if sha256 in image_hashes(store.open(product, version)):
                found.add(version)
        except ModelError:
            continue
    return found


def _number(version: str) -> int:
    return int(version[1:])


def version_states(db: Database | None, store: ModelStore, product: str) -> list[VersionInfo]:
    """Every stored version of *product*, oldest first, with its state."""
    active = active_version(db, store, product).version if store.versions(product) else None
    activated = {record.version for record in db.activation_history(product)} if db is not None else set()
    good_set = db.good_set_images(product) if db is not None else []
    pending = {image.sha256: image for image in good_set if image.pending}
    removed = {image.sha256 for image in good_set if not image.pending} - set(pending)
    infos = []
    for version in store.versions(product):
        try:
            model = store.open(product, version)
        except ModelError as exc:  # the active one stays "active": that is what the daemon tries to load
            infos.append(VersionInfo(product, version, STATE_ACTIVE if version == active else STATE_UNREADABLE,
                                     error=str(exc)))
            continue
        hashes = image_hashes(model)
        meta = model.metadata
        if version == active:
            state = STATE_ACTIVE
        elif hashes & removed:
            state = STATE_WITHDRAWN
        elif active is not None and _number(version) > _number(active) and version not in activated:
            state = STATE_CANDIDATE
        else:
            state = STATE_PREVIOUS
        images = meta.get("images", {})
        infos.append(VersionInfo(
            product, version, state, threshold=meta.get("calibration", {}).get("threshold"),
            created_at=meta.get("created_at"), parent_version=meta.get("parent_version"),
            images=len(images.get("bank", [])) + len(images.get("calibration", [])),
            added_from_review=tuple(sorted(pending[h].kept_as for h in hashes & set(pending))),
            metadata=meta))
    return infos


def state_of(db: Database | None, store: ModelStore, product: str, version: str) -> VersionInfo:
    """The :class:`VersionInfo` of one version; ActivationError if it is not stored."""
    for info in version_states(db, store, product):
        if info.version == version:
            return info
    known = ", ".join(store.versions(product)) or "none"
    raise ActivationError(f"{product} has no model version {version!r} in {store.root} (versions: {known})")


def activate(db: Database, store: ModelStore, product: str, version: str, by: str, reason: str, *,
             fallback_previous: str | None = None) -> ActivationRecord:
    """Make *version* the active version of *product*, after checking that it loads.

    Refused (ActivationError) for a version that is not stored, is corrupt (every
    array is checked against its checksum) or is withdrawn.  Activating the version
    that is already active records nothing and returns the activation in force.
    *fallback_previous* names the previous version when none was ever recorded (the
    newest one is assumed otherwise).
    """
    info = state_of(db, store, product, version)
    if info.error is not None:
        raise ActivationError(f"{product} {version} cannot be activated: {info.error}")
    if info.state == STATE_WITHDRAWN:
        raise ActivationError(f"{product} {version} cannot be activated: it was built with an image that has "
                              "since been taken out of the good set (its decision was undone)")
    model = store.open(product, version)
    try:
        for name in model.metadata.get("files", {}):
            model.array(name)  # checksum and shape of every array
    except ModelError as exc:
        raise ActivationError(f"{product} {version} cannot be activated: {exc}") from exc
    current = active_version(db, store, product)
    if current.version == version and current.activation is not None:
        return current.activation
    return db.record_activation(product, version, by, reason,
                                fallback_previous=fallback_previous if fallback_previous else current.version)


def pin_active(db: Database, store: ModelStore, product: str, by: str, reason: str) -> str | None:
    """Record the product's current active version unless one is recorded already.

    Called before a candidate version is written: without a record, the newest stored
    version is active, and the candidate would become active by being written.
    Returns the active version (None: the product has no version yet).
    """
    newest = store.latest_version(product)
    if newest is None:
        return None
    return db.pin_activation(product, active_version(db, store, product).version, by, reason).version
