"""What-if arithmetic and the histogram widget."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtGui import QImage

from gui.data import ScoreSample
from gui.stats import StatsView, bin_edges, tick_step, what_if

SAMPLE = ScoreSample(
    verdicts={"OK": 5, "NG": 4, "ERROR": 1},
    scores=[0.2, 0.5, 0.85, 0.95, 0.99, 1.0, 1.05, 1.3, 2.5],
    confirmed=[1.3, 2.5],
    overruled=[1.0, 1.05],
)


def test_what_if_counts_verdict_changes_both_ways() -> None:
    stricter = what_if(SAMPLE, 0.9)
    assert (stricter.to_ng, stricter.to_ok, stricter.changed) == (2, 0, 2)  # 0.95 and 0.99 become NG
    looser = what_if(SAMPLE, 1.1)
    assert (looser.to_ng, looser.to_ok) == (0, 2)  # 1.0 and 1.05 become OK
    assert (looser.missed_defects, looser.false_alarms_left) == (0, 0)
    much_looser = what_if(SAMPLE, 2.0)
    assert (much_looser.to_ok, much_looser.missed_defects, much_looser.false_alarms_left) == (3, 1, 0)
    same = what_if(SAMPLE, 1.0)
    assert (same.changed, same.missed_defects, same.false_alarms_left) == (0, 0, 2)


@pytest.mark.parametrize(("peak", "step"), [(1, 1), (3, 1), (5, 1), (7, 2), (12, 5), (60, 20), (4000, 1000)])
def test_tick_step(peak: int, step: int) -> None:
    assert tick_step(peak) == step


def test_bin_edges_cover_data_and_markers() -> None:
    edges = bin_edges([1.2, 1.8], (1.0, 0.7))
    assert edges[0] == pytest.approx(0.7) and edges[-1] == pytest.approx(1.8)
    assert np.all(np.diff(edges) > 0)


def test_stats_view_draws_bars_threshold_and_what_if(qtbot) -> None:
    view = StatsView()
    qtbot.addWidget(view)
    view.resize(800, 500)
    view.set_data(SAMPLE, {"unreviewed": 3, "skipped": 1, "reviewed": 4})
    view.slider.setValue(120)
    assert "OK 5 · NG 4 · ERROR 1" in view.counts.text() and "unreviewed 3" in view.counts.text()
    assert "At threshold 1.20: 2 of 9 scored items would change verdict (0 OK → NG, 2 NG → OK)" in view.summary.text()
    confirmed, overruled = view.histogram.counts
    assert confirmed.sum() == 2 and overruled.sum() == 2
    image = view.histogram.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    pixels = np.frombuffer(image.constBits(), np.uint8)[: image.height() * image.bytesPerLine()]
    rows = pixels.reshape(image.height(), image.bytesPerLine())[:, : image.width() * 3].reshape(image.height(), -1, 3)
    red = np.all(np.abs(rows.astype(int) - (0xE5, 0x53, 0x4B)) < 6, axis=2)
    green = np.all(np.abs(rows.astype(int) - (0x57, 0xAB, 0x5A)) < 6, axis=2)
    amber = np.all(np.abs(rows.astype(int) - (0xF0, 0xB7, 0x2F)) < 6, axis=2)
    assert red.sum() > 200 and green.sum() > 200 and amber.sum() > 50  # bars and the what-if line
