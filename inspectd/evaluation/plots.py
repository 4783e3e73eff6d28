"""Small plots drawn with OpenCV (no plotting library): an ROC curve and score
histograms. Each function returns a BGR uint8 image."""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

WHITE, BLACK, GREY, LIGHT = (255, 255, 255), (30, 30, 30), (140, 140, 140), (228, 228, 228)
RED, BLUE, GOOD_GREEN = (40, 40, 220), (180, 90, 20), (80, 160, 60)
# BGR colours for defect classes (tab10-like, without green and red).
PALETTE = ((180, 119, 31), (14, 127, 255), (189, 103, 148), (75, 86, 140), (194, 119, 227), (127, 127, 127),
           (34, 189, 188), (207, 190, 23))
FONT = cv2.FONT_HERSHEY_SIMPLEX
Point = tuple[int, int]


def text(img: np.ndarray, label: str, at: Point, scale: float = 0.45, color=BLACK, anchor: str = "left",
         thickness: int = 1) -> None:
    """Text with its baseline at `at`; anchor "left", "center" or "right"."""
    (w, _), _ = cv2.getTextSize(label, FONT, scale, thickness)
    x = at[0] - {"left": 0, "center": w // 2, "right": w}[anchor]
    cv2.putText(img, label, (x, at[1]), FONT, scale, color, thickness, cv2.LINE_AA)


def vertical_text(img: np.ndarray, label: str, center: Point, scale: float = 0.5) -> None:
    """Text rotated 90 degrees counter-clockwise, centred on `center`."""
    (w, h), base = cv2.getTextSize(label, FONT, scale, 1)
    strip = np.full((h + base + 4, w + 4, 3), 255, np.uint8)
    cv2.putText(strip, label, (2, h + 2), FONT, scale, BLACK, 1, cv2.LINE_AA)
    strip = cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)
    top, left = center[1] - strip.shape[0] // 2, center[0] - strip.shape[1] // 2
    img[top:top + strip.shape[0], left:left + strip.shape[1]] = np.minimum(
        img[top:top + strip.shape[0], left:left + strip.shape[1]], strip)


def dashed(img: np.ndarray, p0: Point, p1: Point, color, thickness: int = 1, dash: int = 7) -> None:
    length = math.hypot(p1[0] - p0[0], p1[1] - p0[1])
    for start in np.arange(0.0, length, 2 * dash):
        a, b = start / length, min(start + dash, length) / length
        cv2.line(img, _lerp(p0, p1, a), _lerp(p0, p1, b), color, thickness, cv2.LINE_AA)


def _lerp(p0: Point, p1: Point, t: float) -> Point:
    return round(p0[0] + t * (p1[0] - p0[0])), round(p0[1] + t * (p1[1] - p0[1]))


def nice_ticks(lo: float, hi: float, target: int = 6) -> np.ndarray:
    """Round tick values (1, 2 or 5 times a power of ten apart) covering [lo, hi]."""
    raw = (hi - lo) / max(1, target)
    power = 10.0 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return np.arange(math.ceil(lo / step - 1e-9) * step, hi + step * 1e-6, step)


def tick_label(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".") if value != round(value) else str(int(round(value)))


class Axes:
    """A rectangle of an image with linear data coordinates."""

    def __init__(self, img: np.ndarray, box: tuple[int, int, int, int], xlim: tuple[float, float],
                 ylim: tuple[float, float]):
        self.img, (self.left, self.top, self.right, self.bottom) = img, box
        self.xlim, self.ylim = xlim, ylim

    def px(self, x: float, y: float) -> Point:
        fx = (x - self.xlim[0]) / (self.xlim[1] - self.xlim[0])
        fy = (y - self.ylim[0]) / (self.ylim[1] - self.ylim[0])
        return (round(self.left + fx * (self.right - self.left)), round(self.bottom - fy * (self.bottom - self.top)))

    def frame(self) -> None:
        cv2.rectangle(self.img, (self.left, self.top), (self.right, self.bottom), BLACK, 1)

    def xticks(self, ticks: Sequence[float], grid: bool = False, labels: bool = True) -> None:
        for t in ticks:
            x = self.px(t, self.ylim[0])[0]
            if grid:
                cv2.line(self.img, (x, self.top), (x, self.bottom), LIGHT, 1)
            cv2.line(self.img, (x, self.bottom), (x, self.bottom + 5), BLACK, 1)
            if labels:
                text(self.img, tick_label(t), (x, self.bottom + 20), anchor="center")

    def yticks(self, ticks: Sequence[float], grid: bool = False) -> None:
        for t in ticks:
            y = self.px(self.xlim[0], t)[1]
            if grid:
                cv2.line(self.img, (self.left, y), (self.right, y), LIGHT, 1)
            cv2.line(self.img, (self.left - 5, y), (self.left, y), BLACK, 1)
            text(self.img, tick_label(t), (self.left - 8, y + 5), anchor="right")


def roc_plot(fpr: np.ndarray | None, tpr: np.ndarray | None, title: str,
             operating_point: tuple[float, float] | None = None, size: int = 520) -> np.ndarray:
    """ROC curve with the chance diagonal; `operating_point` (FPR, TPR) at the model's
    threshold is marked. With no curve (one class only) the axes say so."""
    img = np.full((size, size, 3), 255, np.uint8)
    ax = Axes(img, (75, 50, size - 25, size - 65), (0.0, 1.0), (0.0, 1.0))
    ticks = np.linspace(0, 1, 6)
    ax.xticks(ticks, grid=True)
    ax.yticks(ticks, grid=True)
    dashed(img, ax.px(0, 0), ax.px(1, 1), GREY)
    if fpr is not None and tpr is not None:
        points = np.array([ax.px(x, y) for x, y in zip(fpr, tpr)], np.int32)
        cv2.polylines(img, [points], False, BLUE, 2, cv2.LINE_AA)
    else:
        text(img, "undefined: needs good and defect images", ax.px(0.5, 0.5), anchor="center", color=RED)
    if operating_point is not None:
        x, y = ax.px(*operating_point)
        cv2.circle(img, (x, y), 6, RED, -1, cv2.LINE_AA)
        flip = operating_point[0] > 0.6
        text(img, "at threshold", (x - 10 if flip else x + 10, y + 18), color=RED, anchor="right" if flip else "left")
    ax.frame()
    text(img, title, (size // 2, 30), scale=0.55, anchor="center", thickness=1)
    text(img, "false-alarm rate (FPR)", ((ax.left + ax.right) // 2, size - 20), scale=0.5, anchor="center")
    vertical_text(img, "detection rate (TPR)", (18, (ax.top + ax.bottom) // 2))
    return img


def histogram_plot(groups: dict[str, np.ndarray], title: str, threshold: float = 1.0, width: int = 720,
                   bins: int = 40) -> np.ndarray:
    """One histogram strip per group on a shared x axis, with a vertical threshold line.
    The first group is drawn green (the good images), the others in palette colours."""
    values = np.concatenate([v for v in groups.values() if v.size] or [np.array([threshold])])
    lo, hi = min(float(values.min()), threshold), max(float(values.max()), threshold)
    pad = 0.04 * (hi - lo) or 0.1
    lo, hi = lo - pad, hi + pad
    edges = np.linspace(lo, hi, bins + 1)
    strip_h, top, left, right = 70, 55, 150, width - 25
    height = top + strip_h * len(groups) + 60
    img = np.full((height, width, 3), 255, np.uint8)
    for i, (name, scores) in enumerate(groups.items()):
        counts, _ = np.histogram(scores, edges)
        box = (left, top + i * strip_h + 6, right, top + (i + 1) * strip_h)
        ax = Axes(img, box, (lo, hi), (0.0, max(1.0, float(counts.max())) * 1.1))
        colour = GOOD_GREEN if i == 0 else PALETTE[(i - 1) % len(PALETTE)]
        for count, x0, x1 in zip(counts, edges[:-1], edges[1:]):
            if count:
                cv2.rectangle(img, ax.px(x0, 0), ax.px(x1, count), colour, -1)
        ax.frame()
        last = i == len(groups) - 1
        ax.xticks(nice_ticks(lo, hi), labels=last)
        text(img, name, (left - 12, box[1] + 26), scale=0.5, anchor="right", color=colour, thickness=2)
        text(img, f"n={scores.size}, max {int(counts.max()) if counts.size else 0}/bin", (left - 12, box[1] + 46),
             scale=0.38, anchor="right", color=GREY)
    x = Axes(img, (left, top, right, height - 60), (lo, hi), (0, 1)).px(threshold, 0)[0]
    dashed(img, (x, top - 2), (x, height - 60), RED, 2)
    text(img, f"threshold ({tick_label(threshold)})", (x, top - 8), color=RED, anchor="center")
    text(img, title, (width // 2, 24), scale=0.55, anchor="center")
    text(img, "normalised score (score / threshold)", ((left + right) // 2, height - 15), scale=0.5, anchor="center")
    return img
