"""`eval --report DIR`: one self-contained HTML page with PNGs beside it: per category
the ROC curve, score histograms, and the worst false alarms and misses as heatmaps."""

from __future__ import annotations

import datetime as dt
import html
import math
import re
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .. import metrics
from ..backbone import RANDOM_WEIGHTS_WARNING
from ..errors import ImageError, InspectdError
from ..heatmap import map_to_source, render_overlay, write_png
from ..imageio import read_image
from .dataset import GOOD_CLASS
from .evaluate import Evaluation
from .plots import histogram_plot, roc_plot
from .summary import TABLE_HEADER, table_rows

WORST = 4  # examples of each kind per category
MAX_SIDE = 640  # overlays are shrunk to this for the page
MASK_BGR = (255, 0, 255)
STYLE = """body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,th:first-child{text-align:left}
.warn{background:#fdd;border:2px solid #c00;padding:8px;margin:1em 0;font-weight:bold}
.plots img{margin-right:1em;vertical-align:top;border:1px solid #ddd}
.grid{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0;width:360px}
figure img{width:100%;border:1px solid #ccc}figcaption{font-size:85%;word-break:break-all}"""


def write_report(folder: Path, evaluations: Sequence[Evaluation], dataset: Path, max_pixels: int) -> Path:
    """Write `folder/index.html` and its PNGs; returns the HTML path."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        sections = [_category_section(folder, f"{i:02d}_{_slug(e.category)}", e, max_pixels)
                    for i, e in enumerate(evaluations, start=1)]
        page = _page(evaluations, dataset, sections)
        target = folder / "index.html"
        target.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise InspectdError(f"cannot write the report in {folder}: {exc}") from exc
    return target


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _page(evaluations: Sequence[Evaluation], dataset: Path, sections: list[str]) -> str:
    header = "".join(f"<th>{html.escape(h)}</th>" for h in TABLE_HEADER)
    rows = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in table_rows(evaluations))
    random = [e.product for e in evaluations if e.weights == "random"]
    warn = (f'<div class="warn">{html.escape(", ".join(random))}: {html.escape(RANDOM_WEIGHTS_WARNING)}</div>'
            if random else "")
    when = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>inspectd evaluation: "
            f"{html.escape(dataset.name)}</title><style>{STYLE}</style></head><body>"
            f"<h1>inspectd evaluation</h1><p>dataset {html.escape(str(dataset))}, {when}</p>{warn}"
            f"<table><tr>{header}</tr>{rows}</table>"
            "<p>Heatmaps: white outline = region at or above the threshold, magenta outline = ground-truth "
            "mask; colours from blue (far below the threshold) to red (twice the threshold).</p>"
            + "".join(sections) + "</body></html>\n")


def _fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else html.escape(str(value))


def _category_section(folder: Path, prefix: str, ev: Evaluation, max_pixels: int) -> str:
    labels, normalized = ev.labels, ev.normalized
    m = ev.metrics
    roc_name, hist_name = f"{prefix}_roc.png", f"{prefix}_hist.png"
    both = 0 < labels.sum() < labels.size
    fpr, tpr = metrics.roc_points(labels, ev.scores) if both else (None, None)
    point = None if math.isnan(m.false_alarm_rate) or math.isnan(m.miss_rate) else (
        m.false_alarm_rate, 1.0 - m.miss_rate)
    auroc = f"{m.image_auroc:.4f}" if both else "n/a"
    write_png(folder / roc_name, roc_plot(fpr, tpr, f"{ev.category}: image AUROC {auroc}", point))
    write_png(folder / hist_name, histogram_plot(_groups(ev, normalized), f"{ev.category}: scores by class"))
    goods = [i for i in np.argsort(-ev.scores, kind="stable") if labels[i] == 0][:WORST]
    defects = [i for i in np.argsort(ev.scores, kind="stable") if labels[i] == 1][:WORST]
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in ev.notes + [f"skipped {p}: {r}" for p, r in ev.skipped])
    return (f"<h2>{html.escape(ev.category)}</h2><p>model {html.escape(ev.product)} {html.escape(ev.version)}, "
            f"weights {html.escape(ev.weights)}, threshold {ev.threshold:.4f}; {m.n_good} good, {m.n_defect} defect "
            f"images ({m.n_pixel_images} with masks for pixel metrics); "
            f"{ev.seconds_per_image * 1000:.1f} ms per image</p><ul>{notes}</ul>"
            f'<div class="plots"><img src="{roc_name}" alt="ROC curve"><img src="{hist_name}" alt="histograms"></div>'
            "<h3>Worst false alarms (highest-scoring good images)</h3>"
            + _examples(folder, prefix, "fa", ev, goods, max_pixels)
            + "<h3>Worst misses (lowest-scoring defect images)</h3>"
            + _examples(folder, prefix, "miss", ev, defects, max_pixels))


def _groups(ev: Evaluation, normalized: np.ndarray) -> dict[str, np.ndarray]:
    """Normalised scores per class, good first."""
    classes = [s.defect_class for s in ev.samples]
    names = [GOOD_CLASS] + sorted({c for c, s in zip(classes, ev.samples) if s.label == 1})
    return {name: normalized[[c == name for c in classes]] for name in names}


def _examples(folder: Path, prefix: str, kind: str, ev: Evaluation, rows: list[int], max_pixels: int) -> str:
    if not rows:
        return "<p>none</p>"
    figures = []
    for rank, row in enumerate(rows, start=1):
        sample, name = ev.samples[row], f"{prefix}_{kind}_{rank}.png"
        verdict = "NG" if ev.scores[row] >= ev.threshold else "OK"
        caption = (f"{html.escape(sample.defect_class)}/{html.escape(sample.path.name)}<br>"
                   f"score {ev.scores[row]:.4f} = {ev.normalized[row]:.3f} x threshold, verdict {verdict}")
        try:
            write_png(folder / name, overlay(ev, row, max_pixels))
            figures.append(f'<figure><img src="{name}" alt="heatmap"><figcaption>{caption}</figcaption></figure>')
        except ImageError as exc:
            figures.append(f"<figure><figcaption>{caption}<br>{html.escape(str(exc))}</figcaption></figure>")
    return f'<div class="grid">{"".join(figures)}</div>'


def overlay(ev: Evaluation, row: int, max_pixels: int) -> np.ndarray:
    """Heatmap overlay of one scored image on its original, with its mask outlined."""
    sample = ev.samples[row]
    original = read_image(sample.path, max_pixels=max_pixels)
    source_map = map_to_source(ev.maps[row], ev.geometry, original.shape[:2])
    image = render_overlay(original, source_map, ev.threshold)
    if sample.mask_path is not None:
        mask = read_image(sample.mask_path, max_pixels=max_pixels).max(axis=2) > 0
        if mask.shape == image.shape[:2]:
            contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(image, contours, -1, MASK_BGR, max(1, round(max(image.shape[:2]) / 400)))
    scale = MAX_SIDE / max(image.shape[:2])
    if scale < 1:
        image = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                           interpolation=cv2.INTER_AREA)
    return image
