"""Good images into patch features for enrollment: each file read once, hashed (an
image already enrolled, or a duplicate, is skipped), decoded to the product's
geometry, and its features stored in float16, in memory or in a memory-mapped file
beside the product's versions when the enrollment would not fit in RAM."""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .config import Config
from .errors import ImageError
from .features import PatchFeatureExtractor
from .hashing import bytes_sha256
from .imageio import Geometry, apply_geometry, decode_image
from .store import ModelStore
from .tiling import TileLayout


@dataclass
class Images:
    """Images that decoded, with their file hashes, and the ones skipped with reasons."""

    paths: list[Path] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


class Decoder:
    """Reads each file once: content hash (duplicates are skipped), decode, geometry."""

    def __init__(self, geometry: Geometry, config: Config, known: set[str], retain: set[Path] = frozenset()):
        self.geometry, self.config = geometry, config
        self.known, self.seen = known, set(known)
        self.retain = retain  # decoded images kept for the precision check
        self.retained: dict[Path, np.ndarray] = {}

    def __call__(self, path: Path, out: Images) -> np.ndarray | None:
        try:
            size = path.stat().st_size
            if size > self.config.images.max_bytes:
                raise ImageError(f"file is {size} bytes, over the limit of {self.config.images.max_bytes}")
            data = path.read_bytes()
        except (ImageError, OSError) as exc:
            out.skipped.append((str(path), str(exc).replace(f"{path}: ", "")))
            return None
        # Hash first: an already enrolled image or a duplicate is not decoded again.
        digest = bytes_sha256(data)
        if digest in self.seen:
            out.skipped.append((str(path), "already enrolled (same content)" if digest in self.known
                                else "duplicate of another image in this folder"))
            return None
        try:
            image = apply_geometry(decode_image(data, name=str(path), max_pixels=self.config.images.max_pixels),
                                   self.geometry, str(path))
        except ImageError as exc:
            out.skipped.append((str(path), str(exc).replace(f"{path}: ", "")))
            return None
        self.seen.add(digest)
        if path in self.retain:
            self.retained[path] = image
        out.paths.append(path)
        out.hashes.append(digest)
        return image


def spill_folder(store: ModelStore, product: str, stack: contextlib.ExitStack) -> Path:
    """A temporary folder for the memory-mapped feature store, beside the product's
    versions (on the store's disk, not in a RAM-backed /tmp), removed afterwards."""
    folder = store.product_dir(product)
    folder.mkdir(parents=True, exist_ok=True)
    return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=".features-", dir=folder)))


def feature_store(shape: tuple[int, ...], spill_dir: Path | None) -> torch.Tensor:
    if spill_dir is None:
        return torch.empty(shape, dtype=torch.float16)
    mapped = np.lib.format.open_memmap(spill_dir / "features.npy", mode="w+", dtype=np.float16, shape=shape)
    return torch.from_numpy(mapped)


def extract(extractor: PatchFeatureExtractor, decoder: Decoder, paths: Sequence[Path], batch_size: int,
            precision: str, progress: Callable[[int, int], None], spill_dir: Path | None = None,
            layout: TileLayout | None = None) -> tuple[torch.Tensor, Images]:
    """Patch features (N, h, w, D) of the usable images among `paths`, float16 on the CPU.

    float16 halves the memory of a large enrollment (1,000 images at 1024-d: 1.6 GB);
    the preallocated buffer is filled in place, never built from Python lists. With
    `spill_dir` the buffer is a memory-mapped file there: the operating system pages
    it in and out, and every later step reads it in runs (bank.ImageRows). With a
    tile `layout`, each image gives len(layout) rows, its tiles in order."""
    tiles = len(layout) if layout is not None else 1
    kept = Images()
    buffer: torch.Tensor | None = None
    for start in range(0, len(paths), batch_size):
        decoded = [decoder(p, kept) for p in paths[start:start + batch_size]]
        images = [image for image in decoded if image is not None]
        if images:
            pieces = [tile for image in images for tile in layout.cut(image)] if layout is not None else images
            feats = extractor(extractor.to_tensor(pieces), precision)
            if buffer is None:
                buffer = feature_store((len(paths) * tiles, *feats.shape[1:]), spill_dir)
            filled = len(kept.paths) * tiles
            buffer[filled - len(pieces):filled] = feats.to("cpu", torch.float16)
        progress(min(start + batch_size, len(paths)), len(paths))
    if buffer is None:
        h, w = grid_of(extractor, layout.tile_hw if layout is not None else decoder.geometry.input_hw)
        return torch.empty((0, h, w, extractor.feature_dim()), dtype=torch.float16), kept
    return buffer[:len(kept.paths) * tiles], kept


def grid_of(extractor: PatchFeatureExtractor, input_hw: tuple[int, int]) -> tuple[int, int]:
    probe = extractor(extractor.to_tensor([np.zeros((*input_hw, 3), np.float32)]))
    return probe.shape[1], probe.shape[2]
