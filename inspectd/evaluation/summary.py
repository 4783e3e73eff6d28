"""The evaluation's results as a JSON object and as table rows."""

from __future__ import annotations

import math
from typing import Sequence

from .evaluate import Evaluation
from .measures import METRIC_KEYS, mean_metrics

TABLE_HEADER = ("category", "n good", "n defect", "image AUROC", "pixel AUROC", "AUPRO", "F1", "miss rate",
                "false-alarm rate", "target FAR", "ms/image", "peak RAM MiB")


def category_json(evaluation: Evaluation) -> dict:
    """One category's figures (nan as None)."""
    m = evaluation.metrics
    row = {key: getattr(m, key) for key in METRIC_KEYS}
    row.update(threshold=evaluation.threshold, n_good=m.n_good, n_defect=m.n_defect,
               n_pixel_images=m.n_pixel_images, weights=evaluation.weights, product=evaluation.product,
               model_version=evaluation.version, ms_per_image=round(evaluation.seconds_per_image * 1000.0, 2),
               peak_ram_mb=round(evaluation.peak_ram_mb, 1),
               target_false_alarm_rate=evaluation.target_false_alarm_rate,
               calibration_folds=evaluation.calibration_folds,
               expected_false_alarm_range=[evaluation.expected_false_alarm.low, evaluation.expected_false_alarm.high]
               if evaluation.expected_false_alarm else None,
               skipped=[{"path": p, "reason": r} for p, r in evaluation.skipped], notes=list(evaluation.notes))
    return _no_nan(row)


def results_json(evaluations: Sequence[Evaluation]) -> dict:
    """`{"categories": {name: {...}}, "mean": {...}}`; the mean is over categories
    where a figure is defined."""
    mean = {**mean_metrics([e.metrics for e in evaluations]), "n_categories": len(evaluations)}
    return {"categories": {e.category: category_json(e) for e in evaluations}, "mean": _no_nan(mean)}


def _target(evaluation: Evaluation) -> str:
    """The calibrated rate, and the range a threshold from that many images falls in."""
    spread = evaluation.expected_false_alarm
    target = f"{evaluation.target_false_alarm_rate:g}"
    return f"{target} ({spread.low:.3f}-{spread.high:.3f})" if spread else target


def table_rows(evaluations: Sequence[Evaluation]) -> list[tuple]:
    """Rows for TABLE_HEADER, with a mean row when there are several categories."""
    rows = [(e.category, e.metrics.n_good, e.metrics.n_defect, *_figures(vars(e.metrics)),
             _target(e), f"{e.seconds_per_image * 1000.0:.1f}", f"{e.peak_ram_mb:.0f}")
            for e in evaluations]
    if len(evaluations) > 1:
        rows.append(("mean", "", "", *_figures(mean_metrics([e.metrics for e in evaluations])), "", "", ""))
    return rows


def _figures(values: dict) -> list[float | str]:
    return [values[key] if math.isfinite(values[key]) else "n/a" for key in METRIC_KEYS]


def _no_nan(row: dict) -> dict:
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}
