"""Seeded synthetic-defect images in MVTec AD layout, for demos and tests.

Good images are rendered procedurally: stationary textures (ceramic tiles, woven
fabric) with a random phase and grain per image, or an object (a tab washer on a
conveyor belt) with small position, rotation and brightness jitter. Defects are
painted on top with soft edges; each mask covers exactly the pixels that changed.
All randomness comes from ``numpy.random.Generator`` streams derived from one seed,
so the same seed writes byte-identical PNG files.

    python -m inspectd.synthetic OUT_DIR --category tiles washer --size 240 320
"""

from __future__ import annotations

import argparse
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

CATEGORIES: dict[str, str] = {"tiles": "texture", "fabric": "texture", "washer": "object"}
DEFECT_TYPES: dict[str, tuple[str, ...]] = {
    "texture": ("scratch", "spot", "contamination", "crack"),
    "object": ("scratch", "spot", "contamination", "missing"),
}
DEFAULT_CATEGORY: dict[str, str] = {"texture": "tiles", "object": "washer"}

MIN_SIZE = 32  # smallest height or width that still leaves room for a defect
MIN_DEFECT_FRACTION = 0.003  # defect area as a fraction of the image area
MAX_DEFECT_FRACTION = 0.05

Size = tuple[int, int]
Image = np.ndarray
DefectFn = Callable[[Image, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]

_ALPHA_CUT = 0.15  # coverage below this counts as "not painted": keeps masks exact
_MAX_TRIES = 50
_FOREGROUND_DELTA = 30  # grey levels an object pixel differs from the background
_SUBPIXEL_BITS = 4
_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 3]
_STAIN_TINTS = np.array(  # BGR multipliers: rust, grease, green coolant, blue ink
    [[0.35, 0.55, 0.95], [0.25, 0.40, 0.60], [0.45, 0.80, 0.40], [1.10, 0.60, 0.30]],
    dtype=np.float32,
)


# --------------------------------------------------------------------------- names


def _kind(name: str) -> str:
    """Kind ("texture"/"object") of a kind or category name."""
    if name in DEFECT_TYPES:
        return name
    if name in CATEGORIES:
        return CATEGORIES[name]
    raise ValueError(f"unknown category or kind {name!r}; choose from {sorted(CATEGORIES)}")


def _category(name: str) -> str:
    """Category of a category name, or the default category of a kind."""
    return name if name in CATEGORIES else DEFAULT_CATEGORY[_kind(name)]


def _validate_size(size: Sequence[int]) -> Size:
    """Return ``size`` as (height, width) ints, or raise ValueError."""
    if len(size) != 2:
        raise ValueError(f"size must be (height, width), got {size!r}")
    height, width = (int(v) for v in size)
    if min(height, width) < MIN_SIZE:
        raise ValueError(f"size {height}x{width} is too small (minimum {MIN_SIZE})")
    return height, width


def _stream(seed: int, *keys: str | int) -> np.random.Generator:
    """Independent generator for one image, keyed by seed, category, split and index."""
    words = [k if isinstance(k, int) else zlib.crc32(k.encode()) for k in keys]
    return np.random.default_rng([seed, *words])


# ---------------------------------------------------------------- rendering helpers


def _grid(size: Size) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinates as float32 arrays of ``size``."""
    ys, xs = np.mgrid[0 : size[0], 0 : size[1]]
    return ys.astype(np.float32), xs.astype(np.float32)


def _smooth_noise(rng: np.random.Generator, size: Size, sigma: float) -> np.ndarray:
    """Gaussian noise low-passed with ``sigma`` pixels, rescaled to unit std."""
    noise = rng.standard_normal(size).astype(np.float32)
    if sigma > 0:
        noise = cv2.GaussianBlur(noise, (0, 0), sigma)
    return noise / max(float(noise.std()), 1e-6)


def _streaks(rng: np.random.Generator, size: Size, length: int, vertical: bool) -> np.ndarray:
    """Unit-std noise smeared along one axis (fibres of a thread)."""
    noise = rng.standard_normal(size).astype(np.float32)
    noise = cv2.blur(noise, (1, length) if vertical else (length, 1))
    return noise / max(float(noise.std()), 1e-6)


def _coverage(signed_distance: np.ndarray) -> np.ndarray:
    """Anti-aliased pixel coverage of a shape from its signed distance (inside > 0)."""
    return np.clip(signed_distance + 0.5, 0.0, 1.0)


def _camera(bgr: np.ndarray, rng: np.random.Generator) -> Image:
    """Optics blur and sensor noise, then quantise to uint8 BGR."""
    blurred = cv2.GaussianBlur(bgr.astype(np.float32), (0, 0), 0.7)
    noisy = blurred + rng.normal(0.0, 1.5, blurred.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------- good parts


def _render_tiles(rng: np.random.Generator, size: Size) -> Image:
    """Glazed ceramic tiles with grout lines, per-tile shade and glaze grain."""
    pitch = max(12, round(min(size) / 5.5))
    grout = max(2, pitch // 14)
    ys, xs = _grid(size)
    offset_y, offset_x = rng.integers(0, pitch, size=2)
    rows, cols = (ys + offset_y).astype(int), (xs + offset_x).astype(int)
    fy, fx = rows % pitch, cols % pitch
    inside = np.minimum.reduce([fy - grout, pitch - 1 - fy, fx - grout, pitch - 1 - fx])
    tile_shade = 1 + 0.035 * rng.standard_normal((rows.max() // pitch + 1, cols.max() // pitch + 1))
    bevel = 1 - 0.12 * np.exp(-np.maximum(inside, 0) / 1.5)
    glaze = np.array([150, 178, 200], np.float32) * rng.uniform(0.95, 1.05)
    tile = glaze * (tile_shade[rows // pitch, cols // pitch] * bevel)[..., None]
    grout_bgr = np.array([100, 108, 115], np.float32) + 5 * _smooth_noise(rng, size, 0.8)[..., None]
    image = np.where((inside < 0)[..., None], grout_bgr, tile)
    return _camera(image + 5 * _smooth_noise(rng, size, 1.0)[..., None], rng)


def _render_fabric(rng: np.random.Generator, size: Size) -> Image:
    """Plain-weave fabric: indigo warp over/under undyed weft, with fibre streaks."""
    pitch = max(6, round(min(size) / 26))
    ys, xs = _grid(size)
    y, x = ys + rng.uniform(0, 2 * pitch), xs + rng.uniform(0, 2 * pitch)
    row, col = (y // pitch).astype(int), (x // pitch).astype(int)
    u, v = (x % pitch) / pitch, (y % pitch) / pitch
    warp_on_top = (row + col) % 2 == 0
    across, along = np.where(warp_on_top, u, v), np.where(warp_on_top, v, u)
    relief = np.sin(np.pi * across) ** 0.7 * (0.8 + 0.2 * np.sin(np.pi * along))
    warp_shade = 1 + 0.05 * rng.standard_normal(col.max() + 1)
    weft_shade = 1 + 0.05 * rng.standard_normal(row.max() + 1)
    thread = np.where(warp_on_top, warp_shade[col], weft_shade[row])
    streak_len = 2 * pitch + 1
    fibres = np.where(
        warp_on_top, _streaks(rng, size, streak_len, True), _streaks(rng, size, streak_len, False)
    )
    shade = ((0.45 + 0.55 * relief) * thread + 0.06 * fibres) * rng.uniform(0.94, 1.06)
    warp_bgr, weft_bgr = np.array([150, 100, 62], np.float32), np.array([185, 190, 192], np.float32)
    colour = np.where(warp_on_top[..., None], warp_bgr, weft_bgr)
    return _camera(shade[..., None] * colour, rng)


def _render_washer(rng: np.random.Generator, size: Size) -> Image:
    """A turned steel tab washer on a dark conveyor belt, lit from the upper left."""
    height, width = size
    scale = min(size)
    ys, xs = _grid(size)
    dx = xs - (width / 2 + rng.uniform(-0.03, 0.03) * scale)
    dy = ys - (height / 2 + rng.uniform(-0.03, 0.03) * scale)
    angle = np.deg2rad(-90 + rng.uniform(-6, 6))  # key tab points up, +-6 degrees
    outer = 0.36 * scale * rng.uniform(0.985, 1.015)
    inner = 0.42 * outer
    dist = np.hypot(dx, dy)
    along = dx * np.cos(angle) + dy * np.sin(angle)
    across = -dx * np.sin(angle) + dy * np.cos(angle)
    ring = _coverage(outer - dist) * _coverage(dist - inner)
    tab_edge = np.minimum(0.17 * inner - np.abs(across), along - 0.62 * inner)
    part = np.maximum(ring, _coverage(tab_edge) * _coverage(outer - dist))

    light = 1 + 0.15 * np.cos(np.arctan2(dy, dx) - (angle - 0.8))
    turning = 0.03 * np.sin(2 * np.pi * dist / 3.2 + rng.uniform(0, 2 * np.pi))
    bevel = 0.18 * np.exp(-(((outer - dist) / (0.025 * scale)) ** 2))
    bevel -= 0.08 * np.exp(-(((dist - inner) / (0.02 * scale)) ** 2))
    metal = 150 * rng.uniform(0.92, 1.08) * (light + turning + bevel) + 3 * _smooth_noise(rng, size, 1.0)
    metal_bgr = metal[..., None] * np.array([1.0, 0.98, 0.94], np.float32)

    belt = 55 * rng.uniform(0.95, 1.05) * (1 + 0.06 * (ys / height - 0.5)) + 2.5 * _smooth_noise(rng, size, 1.2)
    shadow = cv2.GaussianBlur(cv2.warpAffine(part, np.float32([[1, 0, 3], [0, 1, 4]]), (width, height)), (0, 0), 3)
    belt_bgr = (belt * (1 - 0.25 * shadow))[..., None] * np.array([1.0, 1.0, 0.97], np.float32)
    return _camera(belt_bgr * (1 - part[..., None]) + metal_bgr * part[..., None], rng)


_RENDERERS: dict[str, Callable[[np.random.Generator, Size], Image]] = {
    "tiles": _render_tiles,
    "fabric": _render_fabric,
    "washer": _render_washer,
}


def make_good(kind_or_category: str, rng: np.random.Generator, size: Sequence[int] = (256, 256)) -> Image:
    """Render one defect-free HxWx3 uint8 BGR image of a category (or a kind's default)."""
    return _RENDERERS[_category(kind_or_category)](rng, _validate_size(size))


# -------------------------------------------------------------------- defect shapes


def _scale(image: Image) -> float:
    """Length unit for defect sizes: the geometric mean of height and width."""
    return float(np.sqrt(image.shape[0] * image.shape[1]))


def _sample_point(region: np.ndarray, rng: np.random.Generator, margin: int) -> np.ndarray:
    """Random (x, y) in ``region`` at least ``margin`` pixels from its edge if possible."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    inner = cv2.erode(region.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    ys, xs = np.nonzero(inner if inner.any() else region)
    pick = rng.integers(len(ys))
    return np.array([xs[pick], ys[pick]], np.float64) + rng.uniform(-0.5, 0.5, 2)


def _sample_edge_point(region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random (x, y) on the boundary of ``region``."""
    eroded = cv2.erode(region.astype(np.uint8), np.ones((3, 3), np.uint8))
    return _sample_point(region & ~eroded.astype(bool), rng, margin=0)


def _border_pixels(image: Image, width: int = 2) -> np.ndarray:
    """All pixels within ``width`` of the image border, as an Nx3 array."""
    inner = np.ones(image.shape[:2], bool)
    inner[width:-width, width:-width] = False
    return image[inner].astype(np.float32)


def _blob(center: np.ndarray, radius: float, rng: np.random.Generator, wobble: float = 0.2) -> np.ndarray:
    """Closed polygon of an irregular ellipse-like blob around ``center``."""
    theta = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    r = np.ones_like(theta)
    for harmonic in (2, 3, 5):
        r += wobble / harmonic * np.cos(harmonic * theta + rng.uniform(0, 2 * np.pi))
    aspect, tilt = rng.uniform(0.65, 1.0), rng.uniform(0, np.pi)
    x, y = radius * r * np.cos(theta), radius * r * aspect * np.sin(theta)
    rotated = np.stack([x * np.cos(tilt) - y * np.sin(tilt), x * np.sin(tilt) + y * np.cos(tilt)], axis=1)
    return center + rotated


def _fixed_point(points: np.ndarray) -> np.ndarray:
    """Points as OpenCV sub-pixel fixed-point int32 (shift = _SUBPIXEL_BITS)."""
    return np.rint(points * (1 << _SUBPIXEL_BITS)).astype(np.int32).reshape(-1, 1, 2)


def _draw_lines(size: Size, paths: Iterable[np.ndarray], thickness: int) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of open polylines."""
    canvas = np.zeros(size, np.uint8)
    pts = [_fixed_point(p) for p in paths]
    cv2.polylines(canvas, pts, False, 255, thickness, cv2.LINE_AA, shift=_SUBPIXEL_BITS)
    return canvas.astype(np.float32) / 255


def _fill_polygons(size: Size, polygons: Iterable[np.ndarray]) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of filled polygons."""
    canvas = np.zeros(size, np.uint8)
    for polygon in polygons:
        cv2.fillPoly(canvas, [_fixed_point(polygon)], 255, cv2.LINE_AA, shift=_SUBPIXEL_BITS)
    return canvas.astype(np.float32) / 255


def _random_walk(start: np.ndarray, heading: float, length: float, rng: np.random.Generator) -> np.ndarray:
    """Jagged path of ``length`` pixels: the course of a crack."""
    step = max(2.0, length / 30)
    turns = heading + np.cumsum(rng.normal(0, 0.35, int(length / step)))
    steps = step * np.stack([np.cos(turns), np.sin(turns)], axis=1)
    return start + np.vstack([np.zeros(2), np.cumsum(steps, axis=0)])


def _contrast_grey(image: Image, coverage: np.ndarray, rng: np.random.Generator) -> float:
    """Dark or bright grey level that stands out against the covered pixels."""
    weights = coverage / max(float(coverage.sum()), 1e-6)
    mean = float((image.mean(axis=2) * weights).sum())
    dark, bright = rng.uniform(20, 45), rng.uniform(225, 250)
    options = [g for g in (dark, bright) if abs(g - mean) >= 80]
    if not options:
        return dark if mean - dark > bright - mean else bright
    return options[rng.integers(len(options))]


def _contrast_tint(image: Image, coverage: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One of the two stain tints that change the covered surface's hue the most."""
    weights = coverage / max(float(coverage.sum()), 1e-6)
    mean = (image.astype(np.float32) * weights[..., None]).sum(axis=(0, 1))
    swatches = np.clip(np.vstack([mean, mean * _STAIN_TINTS]), 0, 255)[None].astype(np.uint8)
    lab = cv2.cvtColor(swatches, cv2.COLOR_BGR2LAB)[0].astype(np.float32)
    chroma_shift = np.linalg.norm(lab[1:, 1:] - lab[0, 1:], axis=1)
    return _STAIN_TINTS[np.argsort(chroma_shift)[-2:][rng.integers(2)]]


def _paint(image: Image, value: np.ndarray | float, opacity: float, rng: np.random.Generator) -> np.ndarray:
    """Full-coverage appearance: ``image`` blended towards ``value`` plus a little noise."""
    base = image.astype(np.float32)
    grain = rng.normal(0, 4, image.shape[:2]).astype(np.float32)[..., None]
    return base + opacity * (np.asarray(value, np.float32) - base) + grain


# ----------------------------------------------------------------- defect painters
# Each returns (coverage HxW float32 in [0, 1], layer HxWx3 float32): the defect's
# shape, and how the image looks where the coverage is 1.


def _scratch(image: Image, region: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Thin, slightly curved line, brighter or darker than the surface."""
    scale = _scale(image)
    mid = _sample_point(region, rng, int(0.08 * scale))
    length, angle = rng.uniform(0.3, 0.5) * scale, rng.uniform(0, np.pi)
    half = 0.5 * length * np.array([np.cos(angle), np.sin(angle)])
    bow = rng.normal(0, 0.12) * length * np.array([-np.sin(angle), np.cos(angle)])
    t = np.linspace(0, 1, 48)[:, None]
    path = (1 - t) ** 2 * (mid - half) + 2 * t * (1 - t) * (mid + bow) + t**2 * (mid + half)
    coverage = _draw_lines(image.shape[:2], [path], max(1, round(scale / 128)))
    return coverage, _paint(image, _contrast_grey(image, coverage, rng), rng.uniform(0.75, 0.95), rng)


def _crack(image: Image, region: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Dark jagged fissure with one or two side branches."""
    scale = _scale(image)
    heading = rng.uniform(0, 2 * np.pi)
    trunk = _random_walk(_sample_point(region, rng, int(0.15 * scale)), heading, rng.uniform(0.3, 0.45) * scale, rng)
    branches = [
        _random_walk(
            trunk[rng.integers(len(trunk) // 4, len(trunk))],
            heading + rng.choice([-1, 1]) * rng.uniform(0.5, 1.0),
            rng.uniform(0.08, 0.18) * scale,
            rng,
        )
        for _ in range(rng.integers(1, 3))
    ]
    size = image.shape[:2]
    coverage = np.maximum(_draw_lines(size, [trunk], max(1, round(scale / 128))), _draw_lines(size, branches, 1))
    return coverage, _paint(image, rng.uniform(15, 35), rng.uniform(0.8, 0.95), rng)


def _spot(image: Image, region: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Roundish dark pit or bright splash."""
    scale = _scale(image)
    radius = rng.uniform(0.04, 0.065) * scale
    center = _sample_point(region, rng, int(radius) + 2)
    coverage = _fill_polygons(image.shape[:2], [_blob(center, radius, rng)])
    coverage = cv2.GaussianBlur(coverage, (0, 0), max(0.8, radius / 8))
    return coverage, _paint(image, _contrast_grey(image, coverage, rng), rng.uniform(0.85, 1.0), rng)


def _contamination(image: Image, region: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Mottled coloured stain (rust, grease, coolant, ink) that tints the surface."""
    scale = _scale(image)
    center = _sample_point(region, rng, int(0.08 * scale))
    blobs = [
        _blob(center + rng.normal(0, 0.035 * scale, 2), rng.uniform(0.025, 0.05) * scale, rng, wobble=0.3)
        for _ in range(rng.integers(3, 6))
    ]
    coverage = cv2.GaussianBlur(_fill_polygons(image.shape[:2], blobs), (0, 0), 1 + 0.008 * scale)
    mottle = np.clip(0.85 + 0.15 * _smooth_noise(rng, image.shape[:2], 0.02 * scale), 0.5, 1.0)
    tint = _contrast_tint(image, coverage, rng)
    stained = np.clip(image.astype(np.float32) * tint, 0, 255)
    opacity = rng.uniform(0.8, 1.0) * mottle[..., None]
    return coverage, image + opacity * (stained - image)


def _missing(image: Image, region: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Chunk broken off the part's edge; the background shows through."""
    radius = rng.uniform(0.06, 0.09) * _scale(image)
    polygon = _blob(_sample_edge_point(region, rng), radius, rng, wobble=0.35)
    coverage = _fill_polygons(image.shape[:2], [polygon])
    border = _border_pixels(image)
    spread = np.minimum(border.std(axis=0), 4.0)
    background = np.median(border, axis=0) + rng.normal(0, 1, image.shape) * spread
    return coverage, background.astype(np.float32)


_PAINTERS: dict[str, DefectFn] = {
    "scratch": _scratch,
    "crack": _crack,
    "spot": _spot,
    "contamination": _contamination,
    "missing": _missing,
}


# ----------------------------------------------------------------------- add_defect


def _defect_region(image: Image, kind: str, with_rim: bool = False) -> np.ndarray:
    """Where a defect may go: anywhere on a texture, only on the part of an object.

    ``with_rim`` adds the part's anti-aliased edge pixels, so that removing material
    leaves no ghost outline.
    """
    if kind == "texture":
        return np.ones(image.shape[:2], bool)
    background = np.median(_border_pixels(image), axis=0)
    distance = np.abs(image.astype(np.float32) - background).max(axis=2)
    part = (distance > _FOREGROUND_DELTA).astype(np.uint8)
    part = cv2.morphologyEx(part, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    if not part.any():
        raise ValueError("no object found in the image: is it a texture?")
    if with_rim:
        part = cv2.dilate(part, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    return part.astype(bool)


def _check_image(image: Image) -> None:
    """Raise ValueError unless ``image`` is HxWx3 uint8 of at least MIN_SIZE."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 image, got {image.dtype} {image.shape}")
    _validate_size(image.shape[:2])


def add_defect(image: Image, defect: str, rng: np.random.Generator, *, kind: str = "texture") -> tuple[Image, Image]:
    """Paint one ``defect`` onto a copy of ``image``; return (image, mask uint8 0/255).

    ``kind`` is "texture", "object" or a category name; on objects defects stay on
    the part. The mask is exactly the painted pixels; everything outside it is
    unchanged, and its area is MIN_DEFECT_FRACTION..MAX_DEFECT_FRACTION of the image.
    """
    kind = _kind(kind)
    if defect not in DEFECT_TYPES[kind]:
        raise ValueError(f"defect {defect!r} is not one of {kind} defects {DEFECT_TYPES[kind]}")
    _check_image(image)
    region = _defect_region(image, kind, with_rim=defect == "missing")
    for _ in range(_MAX_TRIES):
        coverage, layer = _PAINTERS[defect](image, region, rng)
        alpha = np.clip((coverage - _ALPHA_CUT) / (1 - _ALPHA_CUT), 0, 1) * region
        mask = alpha > 0
        if MIN_DEFECT_FRACTION <= mask.mean() <= MAX_DEFECT_FRACTION:
            blended = image * (1 - alpha[..., None]) + layer * alpha[..., None]
            defective = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
            return defective, mask.astype(np.uint8) * 255
    raise RuntimeError(f"could not place a {defect!r} defect of sensible size in {_MAX_TRIES} tries")


# ------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class DatasetSpec:
    """What `generate_dataset` writes for one category."""

    category: str = "tiles"  # a key of CATEGORIES
    n_train: int = 20
    n_test_good: int = 10
    n_test_defect: int = 4  # per defect type
    size: tuple[int, int] = (256, 256)  # (height, width)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(f"unknown category {self.category!r}; choose from {sorted(CATEGORIES)}")
        for name in ("n_train", "n_test_good", "n_test_defect", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        object.__setattr__(self, "size", _validate_size(self.size))


def _write_png(path: Path, image: Image) -> Path:
    """Write ``image`` as PNG (creating folders) and return ``path``."""
    ok, encoded = cv2.imencode(".png", image, _PNG_PARAMS)
    if not ok:
        raise OSError(f"cannot encode PNG for {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encoded.tobytes())
    return path


def _good_sample(spec: DatasetSpec, stream: str, index: int) -> Image:
    """Good image ``index`` of a named random stream ("train", "test", ...)."""
    return make_good(spec.category, _stream(spec.seed, spec.category, stream, index), spec.size)


def _defect_sample(spec: DatasetSpec, defect: str, stream: str, index: int) -> tuple[Image, Image]:
    """Defective image ``index`` of a named random stream, with its mask."""
    rng = _stream(spec.seed, spec.category, stream, index)
    return add_defect(make_good(spec.category, rng, spec.size), defect, rng, kind=CATEGORIES[spec.category])


def generate_dataset(root: Path, spec: DatasetSpec) -> Path:
    """Write ``spec`` in MVTec AD layout under ``root`` and return ``root/<category>``.

    Each image has its own random stream, so changing one count leaves the other
    files unchanged. Existing files of the same names are overwritten.
    """
    base = Path(root) / spec.category
    for split, count in (("train", spec.n_train), ("test", spec.n_test_good)):
        for i in range(count):
            _write_png(base / split / "good" / f"{i:03d}.png", _good_sample(spec, split, i))
    for defect in DEFECT_TYPES[CATEGORIES[spec.category]]:
        for i in range(spec.n_test_defect):
            image, mask = _defect_sample(spec, defect, defect, i)
            _write_png(base / "test" / defect / f"{i:03d}.png", image)
            _write_png(base / "ground_truth" / defect / f"{i:03d}_mask.png", mask)
    return base


def generate_images(
    out_dir: Path,
    n_good: int,
    n_defect: int,
    category: str = "tiles",
    size: Sequence[int] = (256, 256),
    seed: int = 0,
) -> list[Path]:
    """Write a flat folder of ``good_XXX.png`` and ``<defect>_XXX.png`` (no masks).

    Defect types take turns; XXX counts the good and the defective files separately.
    Returns the written paths, good ones first.
    """
    # The spec only validates the arguments and carries category, size and seed.
    spec = DatasetSpec(category=category, n_train=n_good, n_test_defect=n_defect, size=tuple(size), seed=seed)
    out = Path(out_dir)
    paths = [_write_png(out / f"good_{i:03d}.png", _good_sample(spec, "flat-good", i)) for i in range(n_good)]
    defects = DEFECT_TYPES[CATEGORIES[category]]
    for i in range(n_defect):
        defect = defects[i % len(defects)]
        image, _ = _defect_sample(spec, defect, f"flat-{defect}", i)
        paths.append(_write_png(out / f"{defect}_{i:03d}.png", image))
    return paths


# ------------------------------------------------------------------------------ CLI


def _parser() -> argparse.ArgumentParser:
    """Command-line options; defaults come from DatasetSpec."""
    default = DatasetSpec()
    parser = argparse.ArgumentParser(
        prog="python -m inspectd.synthetic",
        description="Write synthetic defect datasets in MVTec AD layout.",
    )
    parser.add_argument("out_dir", type=Path, help="root folder; one sub-folder per category")
    parser.add_argument(
        "--category", nargs="+", action="extend", choices=sorted(CATEGORIES), help="categories (default: all)"
    )
    parser.add_argument("--seed", type=int, default=default.seed)
    parser.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), default=list(default.size))
    parser.add_argument("--n-train", type=int, default=default.n_train)
    parser.add_argument("--n-test-good", type=int, default=default.n_test_good)
    parser.add_argument("--n-test-defect", type=int, default=default.n_test_defect, help="per defect type")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Generate one dataset per requested category and print its path."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        specs = [
            DatasetSpec(
                category=category,
                n_train=args.n_train,
                n_test_good=args.n_test_good,
                n_test_defect=args.n_test_defect,
                size=tuple(args.size),
                seed=args.seed,
            )
            for category in dict.fromkeys(args.category or CATEGORIES)
        ]
    except ValueError as exc:
        parser.error(str(exc))
    for spec in specs:
        print(generate_dataset(args.out_dir, spec))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
