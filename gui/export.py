"""CSV export of the results and effective decisions matching the current filter."""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path

from gui.data import QueueFilter, QueueRow, iter_rows
from gui.decisions import DECISION_LABELS, agreement
from inspectd.db import Database

RESULT_FIELDS = ("item_id", "path", "image_path", "file_name", "product", "station", "discovered_at",
                 "scored_at", "verdict", "raw_score", "normalized_score", "threshold", "model_version",
                 "heatmap_path", "anomaly_map_path", "error")
# "part" is what the operator said (defect / good part / skipped); "machine" whether that
# agrees with the verdict or overrules it.  "decision" is the stored value.
REVIEW_FIELDS = ("review_state", "part", "machine", "decision", "operator", "decided_at", "tag", "comment",
                 "review_id")
EXPORT_FIELDS = RESULT_FIELDS + REVIEW_FIELDS


def export_record(row: QueueRow) -> dict[str, object]:
    """One CSV record: the result, then its effective review (blank when none)."""
    record: dict[str, object] = {name: getattr(row, name) for name in RESULT_FIELDS}
    review = row.review
    record.update(
        review_state=row.review_state,
        part=DECISION_LABELS.get(review.decision, review.decision).lower() if review else "",
        machine=(agreement(review.decision, row.verdict) or "") if review else "",
        decision=review.decision if review else "",
        operator=review.operator if review else "",
        decided_at=review.decided_at if review else "",
        tag=(review.tag or "") if review else "",
        comment=(review.comment or "") if review else "",
        review_id=review.id if review else "",
    )
    return {key: value.isoformat() if hasattr(value, "isoformat") else value for key, value in record.items()}


def export_csv(db: Database, queue_filter: QueueFilter, path: Path) -> int:
    """Write every row of *queue_filter* to *path* (atomically); returns the row count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    count = 0
    try:
        with os.fdopen(handle, "w", newline="", encoding="utf-8") as stream:
            writer = csv.DictWriter(stream, fieldnames=EXPORT_FIELDS)
            writer.writeheader()
            for row in iter_rows(db, queue_filter):
                writer.writerow(export_record(row))
                count += 1
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return count
