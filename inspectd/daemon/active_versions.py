"""Which model version the daemon scores each product with.

The answer comes from the database (:func:`inspectd.active.active_version`). When the
database cannot be asked (not connected yet at start, or a server that is unreachable
while the daemon scores into its local queue) the last answer it gave is used: kept in
memory, and in ``state_dir`` where a local queue exists, so that a daemon restarted
while the server is away still scores with the version that was active, not simply
with the newest one.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ..active import active_version
from ..db import Database
from ..errors import InspectdError
from ..store import ModelStore

log = logging.getLogger(__name__)
REMEMBERED_FILE = "active-versions.json"


class VersionUnknown(InspectdError):
    """The database cannot be asked now; *known* is its last answer (None: none yet)."""

    def __init__(self, product: str, known: str | None, why: str):
        super().__init__(f"{why}; the last known active version of {product} is {known}" if known else why)
        self.product, self.known = product, known


class ActiveVersions:
    def __init__(self, store: ModelStore, remembered_file: Path | None = None):
        self.store = store
        self.remembered_file = remembered_file
        self._known: dict[str, str] = self._read()

    def version(self, db: object, product: str) -> str:
        """The version to score *product* with; *db* is the daemon's current target
        (a Database, the offline queue, or None before the first connection).

        Raises VersionUnknown when the database cannot be asked, DatabaseError when
        asking it failed, and ModelError when the product has no usable version."""
        if not isinstance(db, Database):
            why = "not connected to the database yet" if db is None else "the database server is unreachable"
            raise VersionUnknown(product, self._known.get(product), why)
        answer = active_version(db, self.store, product).version
        if self._known.get(product) != answer:
            self._known[product] = answer
            self._write()
        return answer

    def _read(self) -> dict[str, str]:
        if self.remembered_file is None or not self.remembered_file.exists():
            return {}
        try:
            data = json.loads(self.remembered_file.read_text(encoding="utf-8"))
            return {str(k): str(v) for k, v in data.items()}
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("ignoring the remembered active versions in %s: %s", self.remembered_file, exc)
            return {}

    def _write(self) -> None:
        if self.remembered_file is None:
            return
        temporary = self.remembered_file.with_suffix(".tmp")
        try:  # a full disk must not stop scoring: the database stays the source of truth
            self.remembered_file.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_text(json.dumps(self._known, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(temporary, self.remembered_file)
        except OSError as exc:
            log.warning("cannot remember the active versions in %s: %s", self.remembered_file, exc)
