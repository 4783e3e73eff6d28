"""Products table helper shared by the item and model-version operations."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from inspectd.db.exceptions import InvalidValueError
from inspectd.db.schema import NAME_LENGTH, Product, utcnow


def ensure_product(session: Session, name: str) -> int:
    """The id of product *name*, inserting the product if it is new.

    A concurrent insert of the same name surfaces as IntegrityError at flush; callers
    run this through ``SessionScope._write_once_more_on_conflict``.
    """
    if not name or len(name) > NAME_LENGTH:
        raise InvalidValueError(f"invalid product name {name!r} (1 to {NAME_LENGTH} characters)")
    product_id = session.scalar(select(Product.id).where(Product.name == name))
    if product_id is not None:
        return product_id
    product = Product(name=name, created_at=utcnow())
    session.add(product)
    session.flush()
    return product.id
