"""Decoding what the viewer shows: source image, heatmap PNG and the outline of the
flagged region from the anomaly map.  Runs in worker threads (QImage and
QPainterPath are plain values there; no QPixmap).

Each missing or unreadable file becomes a :class:`Picture` without image but with
the reason, which the viewer shows as a placeholder.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from PySide6.QtCore import QPointF
from PySide6.QtGui import QImage, QPainterPath, QPolygonF

from gui.data import QueueRow
from inspectd.errors import InspectdError
from inspectd.heatmap import map_to_source
from inspectd.imageio import Geometry
from inspectd.store import ModelStore

GeometryLookup = Callable[[str, str], Geometry | None]


@dataclass(frozen=True)
class Picture:
    """A decoded image, or the reason there is none."""

    image: QImage | None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.image is not None


@dataclass(frozen=True)
class ItemImages:
    """Everything the viewer needs for one queue row."""

    item_id: int
    source: Picture
    heatmap: Picture
    outline: QPainterPath | None = None  # flagged region in source-image pixels

    @property
    def reference(self) -> QImage | None:
        """The image that sets the coordinate system: the source, else the heatmap."""
        return self.source.image if self.source.ok else self.heatmap.image


def to_qimage(bgr: np.ndarray) -> QImage:
    """A QImage owning a copy of an 8-bit BGR array."""
    bgr = np.ascontiguousarray(bgr)
    height, width = bgr.shape[:2]
    return QImage(bgr.data, width, height, bgr.strides[0], QImage.Format.Format_BGR888).copy()


def load_picture(path: str | None, absent: str) -> Picture:
    """Decode *path* for display; *absent* is the reason shown when there is no path."""
    if not path:
        return Picture(None, absent)
    file = Path(path)
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        return Picture(None, f"file not found: {file}")
    except OSError as exc:
        return Picture(None, f"cannot read {file}: {exc.strerror or exc}")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None:
        return Picture(None, f"cannot decode {file.name}: not a readable image (corrupt or truncated?)")
    return Picture(to_qimage(image))


def outline_path(anomaly_map: np.ndarray, threshold: float, size: tuple[int, int],
                 geometry: Geometry | None = None) -> QPainterPath:
    """Contours of ``anomaly_map >= threshold`` (normalised 1.0), scaled to *size* (w, h).

    With the product's *geometry* the map is placed as the daemon's heatmap places it
    (ROI, crop); without it, it is stretched over the whole image.
    """
    width, height = size
    values = np.asarray(anomaly_map, dtype=np.float32)
    if values.shape != (height, width):
        if geometry is not None and geometry.resize_hw is not None:
            values = map_to_source(values, geometry, (height, width))
        else:
            values = cv2.resize(values, (width, height), interpolation=cv2.INTER_LINEAR)
    mask = (values >= threshold).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    path = QPainterPath()
    for contour in contours:
        points = [QPointF(float(x) + 0.5, float(y) + 0.5) for x, y in contour.reshape(-1, 2)]
        if len(points) >= 2:
            path.addPolygon(QPolygonF(points))
            path.closeSubpath()
    return path


class StoredGeometry:
    """Input geometry of (product, model version) from the model store, cached; thread-safe."""

    def __init__(self, store_dir: Path) -> None:
        self._store = ModelStore(store_dir)
        self._cache: dict[tuple[str, str], Geometry | None] = {}
        self._lock = threading.Lock()

    def __call__(self, product: str, version: str) -> Geometry | None:
        key = (product, version)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        geometry = self._read(product, version)
        with self._lock:
            self._cache[key] = geometry
        return geometry

    def _read(self, product: str, version: str) -> Geometry | None:
        try:
            return self._store.open(product, version).geometry()
        except InspectdError:
            return None  # model not on this machine: stretch the map instead


def _outline(row: QueueRow, reference: QImage | None, geometry: GeometryLookup) -> QPainterPath | None:
    """The flagged-region outline of *row* in *reference*'s pixels, or None without a usable map."""
    if not row.anomaly_map_path or row.threshold is None or reference is None:
        return None
    try:
        anomaly_map = np.load(row.anomaly_map_path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if anomaly_map.ndim != 2:
        return None
    known = geometry(row.product, row.model_version) if row.model_version else None
    return outline_path(anomaly_map, row.threshold, (reference.width(), reference.height()), known)


def decode_row(row: QueueRow, geometry: GeometryLookup = lambda product, version: None) -> ItemImages:
    """Decode the image, heatmap and outline of *row* (the slow part; run in a worker)."""
    source = load_picture(row.source_image, "the item has no image path")
    if row.error:
        absent = f"scoring failed: {row.error}"
    else:
        absent = "no heatmap was saved for this result"
    images = ItemImages(row.item_id, source, load_picture(row.heatmap_path, absent))
    return replace(images, outline=_outline(row, images.reference, geometry))
