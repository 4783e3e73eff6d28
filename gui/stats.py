"""Per-product statistics: counts, a histogram of the normalised scores of reviewed
items (what the operator said: defect vs good part) with the threshold drawn, and a
what-if threshold.  The bins are fixed for the data (one edge exactly at the
threshold, 1.0), so moving the what-if slider only moves its line.

Drawn with QPainter (QtCharts is not part of PySide6-Essentials).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QComboBox, QGridLayout, QGroupBox, QHBoxLayout, QLabel, QSlider, QVBoxLayout, QWidget

from gui.data import STATE_REVIEWED, STATE_SKIPPED, STATE_UNREVIEWED, ScoreSample

DEFECT_COLOUR = QColor("#ff6b61")
GOOD_COLOUR = QColor("#6bc46d")
THRESHOLD_COLOUR = QColor("#f0f0f0")
WHAT_IF_COLOUR = QColor("#f0b72f")
SLIDER_SCALE = 100  # slider units per 1.0 of normalised score
WHAT_IF_RANGE = (0.5, 2.0)


@dataclass(frozen=True)
class WhatIf:
    """How verdicts would change at another threshold (normalised; 1.0 is today's)."""

    threshold: float
    to_ng: int  # OK today, NG at the new threshold
    to_ok: int  # NG today, OK at the new threshold
    missed_defects: int  # items called defects that would score below the new threshold
    false_alarms_left: int  # items called good parts still at or above the new threshold

    @property
    def changed(self) -> int:
        return self.to_ng + self.to_ok


def _count_in(sorted_scores: np.ndarray, low: float, high: float) -> int:
    """How many scores lie in [low, high)."""
    return int(np.searchsorted(sorted_scores, high, "left") - np.searchsorted(sorted_scores, low, "left"))


def what_if(sample: ScoreSample, threshold: float) -> WhatIf:
    """Verdict changes of *sample* if the normalised threshold were *threshold*."""
    scores = np.sort(np.asarray(sample.scores, dtype=np.float64))
    defects = np.asarray(sample.defects, dtype=np.float64)
    good = np.asarray(sample.good, dtype=np.float64)
    return WhatIf(
        threshold=threshold,
        to_ng=_count_in(scores, threshold, 1.0) if threshold < 1.0 else 0,
        to_ok=_count_in(scores, 1.0, threshold) if threshold > 1.0 else 0,
        missed_defects=int(np.count_nonzero(defects < threshold)),
        false_alarms_left=int(np.count_nonzero(good >= threshold)),
    )


def tick_step(peak: int, most: int = 5) -> int:
    """A 1-2-5 step giving at most *most* ticks above zero up to *peak*."""
    magnitude = 1
    while True:
        for factor in (1, 2, 5):
            if peak / (factor * magnitude) <= most:
                return factor * magnitude
        magnitude *= 10


BIN_WIDTHS = (0.01, 0.02, 0.025, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0)


def bin_edges(values: Sequence[float], span: tuple[float, float] = WHAT_IF_RANGE, bins: int = 24) -> np.ndarray:
    """Equal bins of a round width covering *values* and *span*, with an edge exactly at 1.0.

    With 1.0 an edge, no bin straddles the threshold: a score is never drawn on the
    wrong side of its line.  The slider range is part of *span*, so the bins do not
    change while the what-if threshold moves.
    """
    low, high = min(min(values), span[0]), max(max(values), span[1])
    width = next((w for w in BIN_WIDTHS if (high - low) / w <= bins), BIN_WIDTHS[-1])
    below, above = math.ceil((1.0 - low) / width - 1e-9), math.ceil((high - 1.0) / width - 1e-9)
    if 1.0 + above * width <= high:  # the highest value must fall inside the last bin
        above += 1
    return 1.0 + width * np.arange(-below, above + 1)


class Histogram(QWidget):
    """Bars of defect and good-part scores per bin, threshold and what-if lines."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumSize(420, 240)
        self._sample: ScoreSample | None = None
        self._what_if = 1.0
        self.counts: tuple[np.ndarray, np.ndarray] | None = None
        self.edges: np.ndarray | None = None

    def set_data(self, sample: ScoreSample | None, what_if_threshold: float) -> None:
        if sample is not self._sample:  # the bins depend on the data only
            reviewed = list(sample.defects) + list(sample.good) if sample else []
            if reviewed:
                self.edges = bin_edges(reviewed)
                self.counts = (np.histogram(sample.defects, self.edges)[0], np.histogram(sample.good, self.edges)[0])
            else:
                self.edges = self.counts = None
        self._sample, self._what_if = sample, what_if_threshold
        self.update()

    def margins(self) -> tuple[float, float, float, float]:
        """left, top, right, bottom: room for the labels in the current font."""
        metrics = self.fontMetrics()
        return (metrics.horizontalAdvance("00000") + 10, metrics.height() * 2 + 8, 16, metrics.height() * 2 + 12)

    def x_of(self, value: float) -> float:
        """Where *value* is drawn (for the current size and bins)."""
        assert self.edges is not None
        left, _, right, _ = self.margins()
        low, high = float(self.edges[0]), float(self.edges[-1])
        return left + (value - low) / (high - low) * (self.width() - left - right)

    def bar_spans(self) -> list[tuple[float, float, float, int, int]]:
        """(x from, x to, bin start, which: 0 defects / 1 good parts, count) of every non-empty bar."""
        if self.counts is None or self.edges is None:
            return []
        spans = []
        for index in range(len(self.edges) - 1):
            x0, x1 = self.x_of(self.edges[index]), self.x_of(self.edges[index + 1])
            half = (x1 - x0 - 2) / 2
            for which in (0, 1):
                if self.counts[which][index]:
                    start = x0 + 1 + which * half
                    spans.append((start, start + half, float(self.edges[index]), which,
                                  int(self.counts[which][index])))
        return spans

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt name
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        text = self.palette().windowText().color()
        left, top, right, bottom = self.margins()
        plot = QRectF(left, top, self.width() - left - right, self.height() - top - bottom)
        if self.counts is None or self.edges is None:
            painter.setPen(text)
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "No reviewed items yet")
            return
        low, high = float(self.edges[0]), float(self.edges[-1])
        tallest = max(1, int(max(self.counts[0].max(), self.counts[1].max())))
        peak = tick_step(tallest) * math.ceil(tallest / tick_step(tallest))  # axis top on a tick

        def y_of(count: float) -> float:
            return plot.bottom() - count / peak * plot.height()

        self._draw_axes(painter, plot, low, high, peak, self.x_of, y_of, text)
        for x0, x1, _start, which, count in self.bar_spans():
            painter.fillRect(QRectF(x0, y_of(count), x1 - x0, plot.bottom() - y_of(count)),
                             (DEFECT_COLOUR, GOOD_COLOUR)[which])
        self._marker(painter, plot, self.x_of(1.0), THRESHOLD_COLOUR, Qt.PenStyle.SolidLine, "threshold 1.00")
        if abs(self._what_if - 1.0) > 1e-9:
            self._marker(painter, plot, self.x_of(self._what_if), WHAT_IF_COLOUR, Qt.PenStyle.DashLine,
                         f"what-if {self._what_if:.2f}")
        self._legend(painter, plot, text)

    @staticmethod
    def _draw_axes(painter: QPainter, plot: QRectF, low: float, high: float, peak: int,
                   x_of: object, y_of: object, text: QColor) -> None:
        grid = QColor(text)
        grid.setAlpha(40)
        line = painter.fontMetrics().height()
        for count in range(0, peak + 1, tick_step(peak)):
            y = y_of(count)  # type: ignore[operator]
            painter.setPen(QPen(grid, 1))
            painter.drawLine(QPointF(plot.left(), y), QPointF(plot.right(), y))
            painter.setPen(text)
            painter.drawText(QRectF(0, y - line / 2, plot.left() - 6, line),
                             Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, str(count))
        step = 0.1 if high - low <= 1.2 else 0.25 if high - low <= 3 else 0.5
        tick = math.ceil(low / step - 1e-9) * step
        label_width = painter.fontMetrics().horizontalAdvance("00.00") + 8
        while tick <= high + 1e-9:
            x = x_of(tick)  # type: ignore[operator]
            painter.setPen(QPen(grid, 1))
            painter.drawLine(QPointF(x, plot.bottom()), QPointF(x, plot.bottom() + 4))
            painter.setPen(text)
            painter.drawText(QRectF(x - label_width / 2, plot.bottom() + 5, label_width, line),
                             Qt.AlignmentFlag.AlignHCenter, f"{tick:.2f}")
            tick += step
        painter.drawText(QRectF(plot.left(), plot.bottom() + 6 + line, plot.width(), line),
                         Qt.AlignmentFlag.AlignHCenter, "normalised score (1.0 = threshold)")

    @staticmethod
    def _marker(painter: QPainter, plot: QRectF, x: float, colour: QColor, style: Qt.PenStyle, label: str) -> None:
        painter.setPen(QPen(colour, 2, style))
        painter.drawLine(QPointF(x, plot.top()), QPointF(x, plot.bottom()))
        painter.setPen(colour)
        line = painter.fontMetrics().height()
        painter.drawText(QRectF(x + 4, plot.top() - line - 2, painter.fontMetrics().horizontalAdvance(label) + 8, line),
                         Qt.AlignmentFlag.AlignLeft, label)

    def _legend(self, painter: QPainter, plot: QRectF, text: QColor) -> None:
        assert self._sample is not None
        x, line = plot.left(), painter.fontMetrics().height()
        for colour, label in ((DEFECT_COLOUR, f"operator: defect ({len(self._sample.defects)})"),
                              (GOOD_COLOUR, f"operator: good part ({len(self._sample.good)})")):
            painter.fillRect(QRectF(x, 4 + (line - 12) / 2, 12, 12), colour)
            painter.setPen(text)
            width = painter.fontMetrics().horizontalAdvance(label)
            painter.drawText(QRectF(x + 16, 4, width + 8, line), Qt.AlignmentFlag.AlignVCenter, label)
            x += 32 + width


def counts_text(verdicts: Mapping[str, int], queue: Mapping[str, int], sample: ScoreSample | None = None) -> str:
    """One line of result and queue counts (and how often operators agreed with the machine)."""
    scored = sum(verdicts.values())
    text = (f"Scored {scored:,}: OK {verdicts.get('OK', 0):,} · NG {verdicts.get('NG', 0):,} · "
            f"ERROR {verdicts.get('ERROR', 0):,}    Queue: unreviewed {queue.get(STATE_UNREVIEWED, 0):,} · "
            f"skipped {queue.get(STATE_SKIPPED, 0):,} · reviewed {queue.get(STATE_REVIEWED, 0):,}")
    if sample is not None:
        text += f"    Operators: agreed {sample.agreed:,} · overruled {sample.overruled:,}"
    return text


def what_if_text(change: WhatIf, sample: ScoreSample) -> str:
    if abs(change.threshold - 1.0) < 1e-9:
        return "Move the slider to see how verdicts would change at another threshold."
    return (f"At threshold {change.threshold:.2f}: {change.changed:,} of {len(sample.scores):,} scored items "
            f"would change verdict ({change.to_ng:,} OK → NG, {change.to_ok:,} NG → OK). "
            f"Reviewed: {change.missed_defects} of {len(sample.defects)} defects would be missed; "
            f"{change.false_alarms_left} of {len(sample.good)} good parts would still be flagged.")


class StatsView(QWidget):
    """The statistics tab.  ``productChanged`` asks the window to load a product's data."""

    productChanged = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.sample: ScoreSample | None = None
        self.product = QComboBox()
        self.product.currentTextChanged.connect(self.productChanged)
        self.counts = QLabel()
        self.histogram = Histogram()
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(int(WHAT_IF_RANGE[0] * SLIDER_SCALE), int(WHAT_IF_RANGE[1] * SLIDER_SCALE))
        self.slider.setValue(SLIDER_SCALE)
        self.slider.valueChanged.connect(self._refresh_what_if)
        self.slider_label = QLabel()
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        top = QHBoxLayout()
        top.addWidget(QLabel("Product:"))
        top.addWidget(self.product)
        top.addWidget(self.counts, 1)
        what_if_box = QGroupBox("What if the threshold were…")
        grid = QGridLayout(what_if_box)
        grid.addWidget(self.slider, 0, 0)
        grid.addWidget(self.slider_label, 0, 1)
        grid.addWidget(self.summary, 1, 0, 1, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.histogram, 1)
        layout.addWidget(what_if_box)
        self._refresh_what_if()

    @property
    def what_if_threshold(self) -> float:
        return self.slider.value() / SLIDER_SCALE

    def set_products(self, products: Sequence[str]) -> None:
        if [self.product.itemText(i) for i in range(self.product.count())] != list(products):
            current = self.product.currentText()
            self.product.blockSignals(True)
            self.product.clear()
            self.product.addItems(list(products))
            self.product.setCurrentIndex(max(self.product.findText(current), 0))
            self.product.blockSignals(False)

    def set_data(self, sample: ScoreSample, queue_counts: Mapping[str, int]) -> None:
        self.sample = sample
        self.counts.setText(counts_text(sample.verdicts, queue_counts, sample))
        self._refresh_what_if()

    def _refresh_what_if(self) -> None:
        threshold = self.what_if_threshold
        self.slider_label.setText(f"{threshold:.2f}")
        self.histogram.set_data(self.sample, threshold)
        self.summary.setText(what_if_text(what_if(self.sample, threshold), self.sample) if self.sample else "")
