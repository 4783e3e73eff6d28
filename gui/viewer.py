"""Image and heatmap side by side, or overlaid with an opacity slider.

Zoom (wheel, +/-), pan (drag), fit and 1:1 are kept in step between the two views.
The flagged region from the anomaly map can be outlined on the image.  A missing or
unreadable file shows a placeholder with the reason instead of a view.
"""

from __future__ import annotations

from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPen, QPixmap, QTransform, QWheelEvent
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QGraphicsPathItem,
    QGraphicsPixmapItem,
    QGraphicsScene,
    QGraphicsView,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QStackedWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from shiboken6 import Shiboken

from gui.images import ItemImages, Picture
from gui.qt_compat import emit

ZOOM_STEP = 1.25
ZOOM_LIMITS = (0.05, 40.0)
OUTLINE_COLOUR = QColor("#ff3df2")
BACKDROP = QColor("#15171a")


class ZoomView(QGraphicsView):
    """A graphics view with wheel zoom, drag panning and a fit mode that survives resizes."""

    viewChanged = Signal()

    def __init__(self, scene: QGraphicsScene, parent: QWidget | None = None) -> None:
        super().__init__(scene, parent)
        self.fitting = True
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setRenderHints(QPainter.RenderHint.SmoothPixmapTransform | QPainter.RenderHint.Antialiasing)
        self.setBackgroundBrush(BACKDROP)
        self.setFrameShape(QGraphicsView.Shape.NoFrame)
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # keys belong to the window's shortcuts
        self.horizontalScrollBar().valueChanged.connect(self.viewChanged)
        self.verticalScrollBar().valueChanged.connect(self.viewChanged)

    @property
    def zoom(self) -> float:
        return self.transform().m11()

    def fit(self) -> None:
        self.fitting = True
        self.fitInView(self.sceneRect(), Qt.AspectRatioMode.KeepAspectRatio)
        emit(self.viewChanged)

    def actual_size(self) -> None:
        self.fitting = False
        self.setTransform(QTransform())
        emit(self.viewChanged)

    def zoom_by(self, factor: float) -> None:
        target = min(max(self.zoom * factor, ZOOM_LIMITS[0]), ZOOM_LIMITS[1])
        self.fitting = False
        self.scale(target / self.zoom, target / self.zoom)
        emit(self.viewChanged)

    def wheelEvent(self, event: QWheelEvent) -> None:
        steps = event.angleDelta().y() / 120.0
        if steps:
            self.zoom_by(ZOOM_STEP ** steps)
        event.accept()

    def resizeEvent(self, event: object) -> None:  # noqa: N802 - Qt name
        super().resizeEvent(event)  # type: ignore[arg-type]
        if self.fitting:
            self.fit()

    def copy_view_of(self, other: ZoomView) -> None:
        """Take over *other*'s zoom and scroll position."""
        self.fitting = other.fitting
        self.setTransform(other.transform())
        self.horizontalScrollBar().setValue(other.horizontalScrollBar().value())
        self.verticalScrollBar().setValue(other.verticalScrollBar().value())


class Pane(QWidget):
    """A titled view, replaced by a placeholder text when there is nothing to show."""

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.scene = QGraphicsScene(self)
        self.view = ZoomView(self.scene)
        self.placeholder = QLabel()
        self.placeholder.setObjectName("placeholder")
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setWordWrap(True)
        self._stack = QStackedWidget()
        self._stack.addWidget(self.view)
        self._stack.addWidget(self.placeholder)
        self.title = QLabel(title)
        self.title.setObjectName("paneTitle")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.title)
        layout.addWidget(self._stack, 1)

    @property
    def showing_placeholder(self) -> bool:
        return self._stack.currentWidget() is self.placeholder

    def show_placeholder(self, headline: str, reason: str = "") -> None:
        self.placeholder.setText(f"<b>{headline}</b><br><br>{reason}" if reason else f"<b>{headline}</b>")
        self._stack.setCurrentWidget(self.placeholder)

    def show_view(self) -> None:
        self._stack.setCurrentWidget(self.view)


def _pixmap_item(picture: Picture, rect: QRectF) -> QGraphicsPixmapItem | None:
    """A pixmap item scaled onto *rect* (heatmaps may differ in resolution)."""
    if picture.image is None:
        return None
    item = QGraphicsPixmapItem(QPixmap.fromImage(picture.image))
    item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
    width, height = picture.image.width(), picture.image.height()
    if (width, height) != (rect.width(), rect.height()):
        item.setTransform(QTransform.fromScale(rect.width() / width, rect.height() / height))
    return item


class ImageViewer(QWidget):
    """The image (left) and heatmap (right) of one item, or both overlaid."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.images: ItemImages | None = None
        self.image_pane, self.heatmap_pane = Pane("Image"), Pane("Heatmap")
        self._overlay_item: QGraphicsPixmapItem | None = None
        self._outline_item: QGraphicsPathItem | None = None
        self._syncing = False
        self._build_controls()
        panes = QHBoxLayout()
        panes.setSpacing(6)
        panes.addWidget(self.image_pane, 1)
        panes.addWidget(self.heatmap_pane, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(self._controls)
        layout.addLayout(panes, 1)
        # Bound methods (not lambdas): Qt drops the connections when the viewer is destroyed.
        self.image_pane.view.viewChanged.connect(self._image_view_changed)
        self.heatmap_pane.view.viewChanged.connect(self._heatmap_view_changed)
        self.show_message("No item selected")

    def _build_controls(self) -> None:
        self.side_button, self.overlay_button = QPushButton("Side by side"), QPushButton("Overlay")
        modes = QButtonGroup(self)
        for button in (self.side_button, self.overlay_button):
            button.setCheckable(True)
            modes.addButton(button)
        self.side_button.setChecked(True)
        self.side_button.setToolTip("Image and heatmap next to each other (V toggles)")
        self.overlay_button.setToolTip("Heatmap over the image (V toggles)")
        modes.buttonToggled.connect(self._apply_mode)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(60)
        self.opacity.setFixedWidth(self.fontMetrics().horizontalAdvance("x") * 12)
        self.opacity.setToolTip("Heatmap opacity in overlay mode")
        self.opacity.valueChanged.connect(self._apply_opacity)
        self.outline = QCheckBox("Outline")
        self.outline.setChecked(True)
        self.outline.setToolTip("Outline the region at or above the threshold (from the anomaly map)")
        self.outline.toggled.connect(self._apply_outline)
        fit, actual = QToolButton(), QToolButton()
        fit.setText("Fit")
        actual.setText("1:1")
        fit.setToolTip("Fit the image (F)")
        actual.setToolTip("One image pixel per screen pixel (1)")
        fit.clicked.connect(self.fit)
        actual.clicked.connect(self.actual_size)
        self.zoom_label = QLabel()
        self.zoom_label.setMinimumWidth(self.fontMetrics().horizontalAdvance("9999 % (fit)"))
        for widget in (self.side_button, self.overlay_button, self.opacity, self.outline, fit, actual):
            widget.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # clicks must not take the keyboard from the queue
        self._controls = QHBoxLayout()
        for widget in (self.side_button, self.overlay_button, QLabel("Opacity"), self.opacity, self.outline):
            self._controls.addWidget(widget)
        self._controls.addStretch(1)
        for widget in (self.zoom_label, fit, actual):
            self._controls.addWidget(widget)

    # --- public -------------------------------------------------------------------------

    @property
    def overlay_mode(self) -> bool:
        return self.overlay_button.isChecked()

    def set_overlay_mode(self, on: bool) -> None:
        (self.overlay_button if on else self.side_button).setChecked(True)

    def toggle_overlay(self) -> None:
        self.set_overlay_mode(not self.overlay_mode)

    def fit(self) -> None:
        self.image_pane.view.fit()

    def actual_size(self) -> None:
        self.image_pane.view.actual_size()

    def zoom_in(self) -> None:
        self.image_pane.view.zoom_by(ZOOM_STEP)

    def zoom_out(self) -> None:
        self.image_pane.view.zoom_by(1 / ZOOM_STEP)

    def show_message(self, text: str) -> None:
        """Placeholders on both sides (nothing selected, loading)."""
        self.images = None
        for pane in (self.image_pane, self.heatmap_pane):
            pane.scene.clear()
            pane.show_placeholder(text)
        self._overlay_item = self._outline_item = None
        self._apply_mode()
        self._update_zoom_label()

    def show_images(self, images: ItemImages) -> None:
        """Show one item; keeps the zoom unless the image size changes."""
        previous = self.images
        self.images = images
        reference = images.reference
        rect = QRectF(0, 0, reference.width(), reference.height()) if reference is not None else QRectF(0, 0, 1, 1)
        self._fill_image_scene(images, rect)
        self._fill(self.heatmap_pane, images.heatmap, rect, "Heatmap not available")
        self._apply_mode()
        same_size = previous is not None and _size(previous) == _size(images)
        view = self.image_pane.view
        if not same_size or view.fitting:
            view.fit()
        else:
            self._mirror(view, self.heatmap_pane.view)
        self._update_zoom_label()

    # --- internals ----------------------------------------------------------------------

    def _fill_image_scene(self, images: ItemImages, rect: QRectF) -> None:
        self._fill(self.image_pane, images.source, rect, "Image not available")
        self._overlay_item = _pixmap_item(images.heatmap, rect)
        if self._overlay_item is not None and images.source.ok:
            self.image_pane.scene.addItem(self._overlay_item)
        self._outline_item = None
        if images.outline is not None and not images.outline.isEmpty():
            pen = QPen(OUTLINE_COLOUR, 2)
            pen.setCosmetic(True)
            pen.setStyle(Qt.PenStyle.DashLine)
            self._outline_item = self.image_pane.scene.addPath(images.outline, pen)
        self._apply_opacity()
        self._apply_outline()

    @staticmethod
    def _fill(pane: Pane, picture: Picture, rect: QRectF, headline: str) -> None:
        pane.scene.clear()
        pane.scene.setSceneRect(rect)
        item = _pixmap_item(picture, rect)
        if item is None:
            pane.show_placeholder(headline, picture.reason)
            return
        pane.scene.addItem(item)
        pane.show_view()

    def _apply_mode(self, *_toggled: object) -> None:
        overlay = self.overlay_mode
        source_missing = self.images is None or not self.images.source.ok
        self.heatmap_pane.setVisible(not overlay or source_missing)
        self.image_pane.title.setText("Image + heatmap" if overlay and not source_missing else "Image")
        if self._overlay_item is not None:
            self._overlay_item.setVisible(overlay)

    def _apply_opacity(self) -> None:
        if self._overlay_item is not None:
            self._overlay_item.setOpacity(self.opacity.value() / 100.0)

    def _apply_outline(self) -> None:
        if self._outline_item is not None:
            self._outline_item.setVisible(self.outline.isChecked())

    def _image_view_changed(self) -> None:
        self._mirror(self.image_pane.view, self.heatmap_pane.view)

    def _heatmap_view_changed(self) -> None:
        self._mirror(self.heatmap_pane.view, self.image_pane.view)

    def _mirror(self, source: ZoomView, target: ZoomView) -> None:
        if self._syncing or not all(map(Shiboken.isValid, (source, target, self.zoom_label))):
            return  # the widget tree is being torn down
        self._syncing = True
        try:
            target.copy_view_of(source)
        finally:
            self._syncing = False
        self._update_zoom_label()

    def _update_zoom_label(self) -> None:
        if self.images is None or self.images.reference is None:
            self.zoom_label.setText("")  # nothing shown (message, failed item): no zoom to speak of
            return
        view = self.image_pane.view
        self.zoom_label.setText(f"{view.zoom * 100:.0f} %" + (" (fit)" if view.fitting else ""))


def _size(images: ItemImages) -> tuple[int, int] | None:
    reference = images.reference
    return None if reference is None else (reference.width(), reference.height())

