"""Heatmap images for people: the anomaly map laid over the original image, on a
fixed per-product colour scale, with the flagged region outlined."""

from __future__ import annotations

import os
import tempfile
from io import BytesIO
from pathlib import Path

import cv2
import numpy as np

from .filemodes import file_mode
from .imageio import Geometry

OVERLAY_ALPHA = 0.45
OUTLINE_BGR = (255, 255, 255)


def map_to_source(anomaly_map: np.ndarray, geometry: Geometry, source_hw: tuple[int, int]) -> np.ndarray:
    """Undo the geometry: the map at network input size -> the original image's size.
    Parts of the image the network never saw (outside ROI or crop) get the map's minimum."""
    fill = float(anomaly_map.min())
    if geometry.center_crop is not None and geometry.resize_hw is not None:
        canvas = np.full(geometry.resize_hw, fill, dtype=np.float32)
        top = (geometry.resize_hw[0] - anomaly_map.shape[0]) // 2
        left = (geometry.resize_hw[1] - anomaly_map.shape[1]) // 2
        canvas[top:top + anomaly_map.shape[0], left:left + anomaly_map.shape[1]] = anomaly_map
        anomaly_map = canvas
    if geometry.roi is None:
        return cv2.resize(anomaly_map, (source_hw[1], source_hw[0]), interpolation=cv2.INTER_LINEAR)
    x, y, w, h = geometry.roi
    full = np.full(source_hw, fill, dtype=np.float32)
    full[y:y + h, x:x + w] = cv2.resize(anomaly_map, (w, h), interpolation=cv2.INTER_LINEAR)
    return full


def render_overlay(image_rgb: np.ndarray, source_map: np.ndarray, threshold: float) -> np.ndarray:
    """BGR uint8 overlay. Colours: blue far below the threshold, green-yellow near it,
    red at twice the threshold or more; the region at or above the threshold is outlined."""
    scaled = np.clip(source_map / (2.0 * threshold), 0.0, 1.0)
    colours = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_JET)
    # one pass instead of numpy's three (decoded images are float RGB in [0, 1], see to_rgb_float)
    base = cv2.cvtColor(cv2.convertScaleAbs(image_rgb, alpha=255.0), cv2.COLOR_RGB2BGR)
    overlay = cv2.addWeighted(colours, OVERLAY_ALPHA, base, 1.0 - OVERLAY_ALPHA, 0.0)
    flagged = (source_map >= threshold).astype(np.uint8)
    contours, _ = cv2.findContours(flagged, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    thickness = max(1, round(max(image_rgb.shape[:2]) / 300))
    cv2.drawContours(overlay, contours, -1, OUTLINE_BGR, thickness)
    return overlay


def write_png(path: Path, image: np.ndarray) -> None:
    """Write a PNG atomically (temporary file, then rename); OSError on a full disk."""
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"could not encode PNG for {path}")
    _write_atomic(path, encoded.tobytes())


def write_map(path: Path, anomaly_map: np.ndarray) -> None:
    """Save the raw anomaly map (float16 .npy, no pickle) atomically."""
    buffer = BytesIO()
    np.save(buffer, anomaly_map.astype(np.float16), allow_pickle=False)
    _write_atomic(path, buffer.getvalue())


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_heatmap(png_path: Path, image_rgb: np.ndarray, anomaly_map: np.ndarray, geometry: Geometry,
                 threshold: float) -> None:
    """Overlay PNG at the original image's resolution."""
    source_map = map_to_source(anomaly_map, geometry, image_rgb.shape[:2])
    write_png(png_path, render_overlay(image_rgb, source_map, threshold))
