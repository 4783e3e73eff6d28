"""Reading camera images safely and bringing them to a product's input geometry.

Decoding goes through OpenCV from bytes already in memory, so a file is read once.
Formats whose decoders accept a truncated stream (JPEG, PNG padding) are checked for
their end marker first: a half-written camera file must fail, not score as a grey part.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .errors import ImageError
from .imageformat import dimensions, incomplete, sniff_format

# OpenCV reads this once at import: keep its own pixel guard above ours so that our
# message (with the file name) is the one a user sees.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(2**31 - 1))
import cv2  # noqa: E402

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_PIXELS = 100_000_000


@dataclass(frozen=True)
class Geometry:
    """Per-product input geometry: ROI cut, resize, optional centre crop.

    `resize_hw` is fixed when a product is enrolled (see `frozen_for`) so that every
    image of the product becomes a tensor of the same shape.
    """

    resize: str = "square"  # "square" or "keep_aspect"
    size: int = 224
    center_crop: int | None = None
    roi: tuple[int, int, int, int] | None = None
    resize_hw: tuple[int, int] | None = None

    def frozen_for(self, source_hw: tuple[int, int]) -> "Geometry":
        """This geometry with the resize target fixed from an enrollment image's size."""
        h, w = (self.roi[3], self.roi[2]) if self.roi is not None else source_hw
        if self.resize == "square":
            target = (self.size, self.size)
        else:
            scale = self.size / min(h, w)
            target = (max(self.size, round(h * scale)), max(self.size, round(w * scale)))
        return replace(self, resize_hw=target)

    @property
    def input_hw(self) -> tuple[int, int]:
        """Network input size (after the centre crop). Only for a frozen geometry."""
        if self.resize_hw is None:
            raise ValueError("geometry is not frozen to an enrollment size")
        h, w = self.resize_hw
        if self.center_crop is None:
            return h, w
        return min(h, self.center_crop), min(w, self.center_crop)


def read_image(path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as float32 RGB in [0, 1], shape (H, W, 3).

    Accepts JPEG, PNG, BMP and TIFF; 8 or 16 bit; grayscale, RGB or RGBA (alpha is
    dropped). Raises ImageError naming the file for anything else.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise ImageError(f"{path}: file is {size} bytes, over the limit of {max_bytes}")
        data = path.read_bytes()
    except ImageError:
        raise
    except OSError as exc:
        raise ImageError(f"{path}: cannot read file: {exc.strerror or exc}") from exc
    return decode_image(data, name=str(path), max_pixels=max_pixels)


def decode_image(data: bytes, *, name: str = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode encoded image bytes; see read_image. The header's dimensions are
    checked against *max_pixels* before the decoder allocates anything."""
    if len(data) == 0:
        raise ImageError(f"{name}: file is empty")
    kind = sniff_format(data)
    if kind is None:
        raise ImageError(f"{name}: not a supported image (JPEG, PNG, BMP or TIFF)")
    reason = incomplete(data, kind)
    if reason:
        raise ImageError(f"{name}: {reason}")
    size = dimensions(data, kind)
    if size is not None and size[0] * size[1] > max_pixels:
        raise ImageError(f"{name}: {kind} header declares {size[0]}x{size[1]} = {size[0] * size[1]} pixels, "
                         f"over the limit of {max_pixels}; not decoded")
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise ImageError(f"{name}: corrupt {kind} image ({exc.msg if hasattr(exc, 'msg') else exc})") from exc
    if image is None or image.size == 0:
        raise ImageError(f"{name}: corrupt or truncated {kind} image")
    if image.shape[0] * image.shape[1] > max_pixels:
        raise ImageError(f"{name}: image has {image.shape[0] * image.shape[1]} pixels, over the limit of {max_pixels}")
    return to_rgb_float(image, name)


def to_rgb_float(image: np.ndarray, name: str) -> np.ndarray:
    """OpenCV's BGR(A)/gray, 8/16-bit or float array -> float32 RGB in [0, 1]."""
    if image.dtype == np.uint8:
        scaled = image.astype(np.float32) / 255.0
    elif image.dtype == np.uint16:
        scaled = image.astype(np.float32) / 65535.0
    elif image.dtype in (np.float32, np.float64):
        scaled = np.clip(np.nan_to_num(image.astype(np.float32)), 0.0, 1.0)
    else:
        raise ImageError(f"{name}: unsupported pixel type {image.dtype}")
    if scaled.ndim == 2:
        return np.repeat(scaled[:, :, None], 3, axis=2)
    channels = scaled.shape[2]
    if channels == 1:
        return np.repeat(scaled, 3, axis=2)
    if channels in (3, 4):
        return np.ascontiguousarray(scaled[:, :, 2::-1])  # BGR(A) -> RGB, alpha dropped
    raise ImageError(f"{name}: unsupported channel count {channels}")


def apply_geometry(image: np.ndarray, geometry: Geometry, name: str = "") -> np.ndarray:
    """ROI cut, resize and optional centre crop to the frozen geometry's input size.

    With "keep_aspect", an image whose aspect ratio is more than 5% off the one the
    product was enrolled with is refused: it comes from another camera or part.
    """
    if geometry.resize_hw is None:
        raise ValueError("apply_geometry needs a geometry frozen by Geometry.frozen_for")
    if geometry.roi is not None:
        x, y, w, h = geometry.roi
        if x + w > image.shape[1] or y + h > image.shape[0]:
            raise ImageError(f"{name}: ROI {list(geometry.roi)} lies outside the "
                             f"{image.shape[1]}x{image.shape[0]} image")
        image = image[y:y + h, x:x + w]
    target_h, target_w = geometry.resize_hw
    if geometry.resize == "keep_aspect":
        aspect, enrolled = image.shape[1] / image.shape[0], target_w / target_h
        if abs(aspect - enrolled) > 0.05 * enrolled:
            raise ImageError(f"{name}: aspect ratio {aspect:.3f} differs from the product's {enrolled:.3f}")
    shrinking = image.shape[0] * image.shape[1] > target_h * target_w
    image = cv2.resize(image, (target_w, target_h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    if geometry.center_crop is not None:
        out_h, out_w = geometry.input_hw
        top, left = (target_h - out_h) // 2, (target_w - out_w) // 2
        image = image[top:top + out_h, left:left + out_w]
    return np.ascontiguousarray(image)


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in `folder`, sorted; hidden and temporary files excluded."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"{folder}: not a folder")
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
