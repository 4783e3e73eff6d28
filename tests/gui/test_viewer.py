"""Viewer: synchronised zoom and pan, overlay mode, outline, placeholders, decoding."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PySide6.QtCore import QPoint

from gui.images import ItemImages, Picture, decode_row, load_picture, outline_path, to_qimage
from gui.viewer import ImageViewer
from gui.data import QueueRow
from gui.demo import T0


def picture(width: int = 200, height: int = 120, value: int = 90) -> Picture:
    return Picture(to_qimage(np.full((height, width, 3), value, np.uint8)))


@pytest.fixture()
def viewer(qtbot) -> ImageViewer:
    widget = ImageViewer()
    qtbot.addWidget(widget)
    widget.resize(900, 500)
    widget.show()
    widget.show_images(ItemImages(1, picture(), picture(100, 60, 200)))  # heatmap at half resolution
    return widget


def test_zoom_and_pan_stay_in_step(qtbot, viewer: ImageViewer) -> None:
    left, right = viewer.image_pane.view, viewer.heatmap_pane.view
    assert left.fitting and right.transform() == left.transform()
    viewer.zoom_in()
    viewer.zoom_in()
    assert not left.fitting and right.zoom == pytest.approx(left.zoom)
    right.horizontalScrollBar().setValue(right.horizontalScrollBar().maximum())  # pan the other view
    assert left.horizontalScrollBar().value() == right.horizontalScrollBar().value() > 0
    viewer.actual_size()
    assert left.zoom == right.zoom == 1.0
    assert viewer.zoom_label.text() == "100 %"
    viewer.fit()
    assert left.fitting and right.zoom == pytest.approx(left.zoom) and "(fit)" in viewer.zoom_label.text()
    qtbot.mouseMove(left.viewport(), QPoint(50, 50))
    wheel_before = left.zoom
    left.zoom_by(1.25)
    assert right.zoom == pytest.approx(wheel_before * 1.25)


def test_heatmap_is_scaled_onto_the_image(viewer: ImageViewer) -> None:
    [item] = viewer.heatmap_pane.scene.items()
    assert item.sceneBoundingRect().width() == pytest.approx(200)
    assert item.sceneBoundingRect().height() == pytest.approx(120)


def test_overlay_mode_hides_the_second_view_and_uses_the_opacity(viewer: ImageViewer) -> None:
    assert viewer.heatmap_pane.isVisible()
    viewer.toggle_overlay()
    assert viewer.overlay_mode and not viewer.heatmap_pane.isVisible()
    assert viewer.image_pane.title.text() == "Image + heatmap"
    viewer.opacity.setValue(30)
    overlays = [item for item in viewer.image_pane.scene.items() if item.opacity() < 1.0]
    assert len(overlays) == 1 and overlays[0].opacity() == pytest.approx(0.3) and overlays[0].isVisible()
    viewer.toggle_overlay()
    assert viewer.heatmap_pane.isVisible() and not overlays[0].isVisible()


def test_missing_pictures_show_placeholders(qtbot, viewer: ImageViewer) -> None:
    viewer.show_images(ItemImages(2, Picture(None, "file not found: /x/y.png"), picture()))
    assert viewer.image_pane.showing_placeholder and not viewer.heatmap_pane.showing_placeholder
    assert "Image not available" in viewer.image_pane.placeholder.text()
    assert "file not found: /x/y.png" in viewer.image_pane.placeholder.text()
    viewer.set_overlay_mode(True)
    assert viewer.heatmap_pane.isVisible()  # nothing to overlay on: keep the heatmap in view


def test_outline_follows_the_anomaly_map_at_the_threshold() -> None:
    anomaly = np.zeros((50, 100), np.float32)
    anomaly[10:20, 30:60] = 5.0
    path = outline_path(anomaly, threshold=2.0, size=(200, 100))  # map at half resolution: stretched
    bounds = path.boundingRect()
    assert bounds.left() == pytest.approx(60, abs=2) and bounds.right() == pytest.approx(120, abs=2)
    assert bounds.top() == pytest.approx(20, abs=2) and bounds.bottom() == pytest.approx(40, abs=2)
    assert outline_path(anomaly, threshold=6.0, size=(200, 100)).isEmpty()


def test_decode_row_reports_why_files_are_missing(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.full((40, 60, 3), 128, np.uint8))
    anomaly = tmp_path / "a.npy"
    np.save(anomaly, np.full((40, 60), 3.0, np.float16))
    row = QueueRow(
        item_id=1, result_id=1, path=str(tmp_path / "drop" / "a.png"), file_name="a.png", product="p", station="s",
        discovered_at=T0, scored_at=T0, verdict="NG", raw_score=3.0, normalized_score=1.5, model_version="v0001",
        threshold=2.0, heatmap_path=str(tmp_path / "missing.png"), anomaly_map_path=str(anomaly),
        image_path=str(image), error=None)
    decoded = decode_row(row)
    assert decoded.source.ok and (decoded.source.image.width(), decoded.source.image.height()) == (60, 40)
    assert not decoded.heatmap.ok and decoded.heatmap.reason == f"file not found: {tmp_path / 'missing.png'}"
    assert decoded.outline is not None and not decoded.outline.isEmpty()
    no_heatmap = decode_row(QueueRow(**{**row.__dict__, "heatmap_path": None, "image_path": None}))
    assert no_heatmap.source.reason.startswith("file not found") and "no heatmap was saved" in no_heatmap.heatmap.reason
    assert load_picture(str(anomaly), "-").reason.startswith("cannot decode a.npy")
    assert load_picture(str(tmp_path), "-").reason.startswith("cannot read")
