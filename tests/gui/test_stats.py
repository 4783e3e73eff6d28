"""What-if arithmetic and the histogram widget."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtGui import QImage

from gui.data import ScoreSample
from gui.stats import (
    DEFECT_COLOUR,
    GOOD_COLOUR,
    WHAT_IF_COLOUR,
    WHAT_IF_RANGE,
    StatsView,
    bin_edges,
    tick_step,
    what_if,
)

SAMPLE = ScoreSample(
    verdicts={"OK": 5, "NG": 4, "ERROR": 1},
    scores=[0.2, 0.5, 0.85, 0.95, 0.99, 1.0, 1.05, 1.3, 2.5],
    defects=[1.3, 2.5],
    good=[1.0, 1.05],
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


def test_bin_edges_cover_data_and_slider_with_an_edge_at_the_threshold() -> None:
    for values in ([1.2, 1.8], [1.029, 0.95], [0.3, 4.2], [0.97, 0.999], [1.0]):
        edges = bin_edges(values)
        assert edges[0] <= min(min(values), WHAT_IF_RANGE[0]) and edges[-1] > max(max(values), WHAT_IF_RANGE[1] - 1e-9)
        assert np.any(edges == 1.0)  # exactly: no bin straddles the threshold
        assert np.allclose(np.diff(edges), np.diff(edges)[0]) and len(edges) - 1 <= 24


def test_bins_stay_fixed_while_the_what_if_slider_moves_and_scores_stay_on_their_side(qtbot) -> None:
    """Issue 9, point 10: at what-if 0.50 a defect scoring 1.029 was drawn left of 1.00."""
    sample = ScoreSample(verdicts={"NG": 3, "OK": 1}, scores=[0.95, 1.029, 1.3, 1.6],
                         defects=[1.029, 1.3], good=[0.95, 1.6])
    view = StatsView()
    qtbot.addWidget(view)
    view.resize(800, 500)
    view.set_data(sample, {})
    edges = view.histogram.edges.copy()
    for value in (50, 73, 100, 137, 200):
        view.slider.setValue(value)
        assert np.array_equal(view.histogram.edges, edges)
        threshold_x = view.histogram.x_of(1.0)
        for x0, x1, start, _which, _count in view.histogram.bar_spans():
            assert (x0 >= threshold_x) == (start >= 1.0) and (x1 <= threshold_x) == (start < 1.0)
    bins = {start for _x0, _x1, start, which, _count in view.histogram.bar_spans() if which == 0}
    assert min(bins) >= 1.0  # 1.029's bar starts at or right of the threshold


def test_stats_view_draws_bars_threshold_and_what_if(qtbot) -> None:
    view = StatsView()
    qtbot.addWidget(view)
    view.resize(800, 500)
    view.set_data(SAMPLE, {"unreviewed": 3, "skipped": 1, "reviewed": 4})
    view.slider.setValue(120)
    assert "OK 5 · NG 4 · ERROR 1" in view.counts.text() and "unreviewed 3" in view.counts.text()
    assert "At threshold 1.20: 2 of 9 scored items would change verdict (0 OK → NG, 2 NG → OK)" in view.summary.text()
    defects, good = view.histogram.counts
    assert defects.sum() == 2 and good.sum() == 2
    image = view.histogram.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    pixels = np.frombuffer(image.constBits(), np.uint8)[: image.height() * image.bytesPerLine()]
    rows = pixels.reshape(image.height(), image.bytesPerLine())[:, : image.width() * 3].reshape(image.height(), -1, 3)
    red, green, amber = (np.all(np.abs(rows.astype(int) - colour.getRgb()[:3]) < 6, axis=2)
                         for colour in (DEFECT_COLOUR, GOOD_COLOUR, WHAT_IF_COLOUR))
    assert red.sum() > 200 and green.sum() > 200 and amber.sum() > 50  # bars and the what-if line
