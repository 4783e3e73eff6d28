"""Registering trained model versions of a product."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from inspectd.db.exceptions import InvalidValueError
from inspectd.db.products import ensure_product
from inspectd.db.records import ModelVersionRecord
from inspectd.db.schema import VERSION_LENGTH, ModelVersion, utcnow
from inspectd.db.session import SessionScope


class ModelVersionOperations(SessionScope):
    """register_model_version / list_model_versions."""

    def register_model_version(
        self,
        product: str,
        version: str,
        *,
        path: str | os.PathLike[str],
        threshold: float,
        bank_size: int,
        backbone: str,
        metadata: dict[str, Any] | None = None,
        created_at: datetime | None = None,
    ) -> int:
        """Insert or update (product, version); creates the product if needed.  Returns the row id."""
        if not version or len(version) > VERSION_LENGTH:
            raise InvalidValueError(f"invalid model version {version!r} for product {product!r}")

        def upsert(session: Session) -> int:
            ensure_product(session, product)
            row = session.scalar(
                select(ModelVersion).where(ModelVersion.product == product, ModelVersion.version == version)
            )
            if row is None:
                row = ModelVersion(product=product, version=version, created_at=created_at or utcnow())
                session.add(row)
            elif created_at is not None:
                row.created_at = created_at
            row.path = os.fspath(path)
            row.threshold = float(threshold)
            row.bank_size = int(bank_size)
            row.backbone = backbone
            row.model_metadata = dict(metadata or {})
            session.flush()
            return row.id

        return self._write_once_more_on_conflict("register_model_version", upsert)

    def list_model_versions(self, product: str) -> list[ModelVersionRecord]:
        """All registered versions of *product*, in version order."""

        def load(session: Session) -> list[ModelVersionRecord]:
            rows = session.scalars(
                select(ModelVersion).where(ModelVersion.product == product).order_by(ModelVersion.version)
            )
            return [ModelVersionRecord.from_row(row) for row in rows]

        return self._read("list_model_versions", load)
