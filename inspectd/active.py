"""Which model version of a product is active: the one answer that the daemon,
``inspectd score`` and the review app all use.

The database is the source of truth (several line PCs may share one): the active
version is the one of the product's latest activation.  A product without any
activation uses its newest stored version, as every install did before versions had
a life cycle.  See :mod:`inspectd.lifecycle` for changing it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .db import ActivationRecord, Database, open_database
from .db.engine import sqlite_file
from .errors import ModelError
from .store import ModelStore


@dataclass(frozen=True)
class ActiveVersion:
    """The active version of a product and where that answer comes from."""

    product: str
    version: str
    activation: ActivationRecord | None  # None: no activation recorded, the newest stored version

    @property
    def recorded(self) -> bool:
        """True when the database names this version; False for the newest-version fallback."""
        return self.activation is not None

    def describe(self) -> str:
        """One line for logs and the CLI."""
        if self.activation is None:
            return f"{self.product} {self.version} (newest version; none activated)"
        when = self.activation.activated_at.astimezone().strftime("%Y-%m-%d %H:%M")
        return f"{self.product} {self.version} (activated by {self.activation.activated_by}, {when})"


def active_version(db: Database | None, store: ModelStore, product: str) -> ActiveVersion:
    """The active version of *product* (*db* None: no database, the newest stored version).

    Raises ModelError when the product has no stored version, or when its recorded
    active version is not in the store.
    """
    activation = db.active_activation(product) if db is not None else None
    if activation is None:
        newest = store.latest_version(product)
        if newest is None:
            raise ModelError(f"no model for product {product!r} in {store.root} (run 'inspectd enroll' first)")
        return ActiveVersion(product, newest, None)
    if activation.version not in store.versions(product):
        raise ModelError(
            f"the active model of {product} is {activation.version} (set by {activation.activated_by}), but "
            f"{store.product_dir(product) / activation.version} does not exist; "
            f"set another with 'inspectd activate --product {product} --version VERSION'")
    return ActiveVersion(product, activation.version, activation)


def existing_database(url: str) -> Database | None:
    """The database at *url*, or None when it is a SQLite file that does not exist yet
    (nothing was ever activated there: every product uses its newest version)."""
    path = sqlite_file(url)
    if path is not None and not path.exists():
        return None
    return open_database(url, create=False)
