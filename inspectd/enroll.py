"""Enrollment: good images -> coreset memory bank + calibrated threshold -> a new
model version. `add=True` extends the current version with new images only.

Incremental enrollment keeps the enrolled images' work: the new coreset is chosen
from the current bank plus the new images' patches (k-center coresets compose: a
coreset of the union of coresets covers the union), and the held-out calibration
features are stored in each version so the threshold can be re-derived for the new
bank without decoding or re-extracting any earlier image.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from . import __version__
from .backbone import WeightsInfo
from .calibration import Calibration, calibrate, required_good_images
from .config import Config, ProductSettings
from .coreset import coreset_size, select_coreset
from .device import resolve_device
from .errors import ImageError, InspectdError, ModelError
from .extractor_cache import new_extractor, shared_extractor
from .features import PatchFeatureExtractor
from .hashing import bytes_sha256
from .imageio import Geometry, apply_geometry, decode_image, list_images, read_image
from .precision import PrecisionChoice, cpu_bf16_features, enrolled_precision, resolve_precision, scoring_precision
from .precision_check import PrecisionCheck, check_bf16
from .scorer import Scorer
from .search import bank_index
from .settings_json import geometry_from_settings, settings_from_json, settings_to_json
from .store import ModelStore, StoredModel

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class EnrollReport:
    product: str
    version: str
    path: Path
    images_found: int
    bank_images: int
    calibration_images: int
    bad_images: int
    skipped: list[tuple[str, str]]
    bank_size: int
    feature_dim: int
    calibration: Calibration
    timings_s: dict[str, float]
    warnings: list[str] = field(default_factory=list)

    @property
    def threshold(self) -> float:
        return self.calibration.threshold


@dataclass
class _Images:
    """Images that decoded, with their file hashes, and the ones skipped with reasons."""

    paths: list[Path] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def enroll(config: Config, product: str, good_dir: str | Path, *, bad_dir: str | Path | None = None,
           weights: str | None = None, add: bool = False, base_version: str | None = None,
           progress: Progress | None = None) -> EnrollReport:
    """Enroll `product` from the good images in `good_dir` (see module docstring).
    With `add`, the new version extends `base_version` (default: the newest).
    With precision "auto" on a bf16 CPU, a bf16 model that does not score like fp32
    (precision_check.py) is not written: the product is enrolled in fp32 instead."""
    started = time.perf_counter()
    try:
        return _enroll(config, product, good_dir, bad_dir, weights, add, base_version, progress, None)
    except _Bf16Rejected as rejected:  # the fp32 enrollment logs why
        attempt = time.perf_counter() - started
        report = _enroll(config, product, good_dir, bad_dir, weights, add, base_version, progress, rejected.check)
        report.timings_s["rejected_bf16_attempt"] = attempt
        return report


class _Bf16Rejected(Exception):
    def __init__(self, check: PrecisionCheck):
        super().__init__(check.describe())
        self.check = check


def _enroll(config: Config, product: str, good_dir: str | Path, bad_dir: str | Path | None, weights: str | None,
            add: bool, base_version: str | None, progress: Progress | None,
            rejected: PrecisionCheck | None) -> EnrollReport:
    started = time.perf_counter()
    store = ModelStore(config.store_dir)
    device = resolve_device(config.device)
    progress = progress or (lambda stage, done, total: None)
    parent = store.open(product, base_version) if add else None
    settings = _settings_for(config, product, weights, parent)
    paths = list_images(good_dir)
    if not paths:
        raise InspectdError(f"no images (PNG, JPEG, BMP, TIFF) in {good_dir}")
    if parent is not None:
        weights_info = WeightsInfo.from_json(parent.metadata["weights"])
        extractor = shared_extractor(settings, weights_info, device)
        geometry = parent.geometry()
    else:
        extractor, weights_info = new_extractor(settings, device)
        geometry = _freeze_geometry(geometry_from_settings(settings), paths, config)
    bank_paths, cal_paths = _split(paths, settings, adding=parent is not None)
    precision = _precision_for(settings, parent, device, rejected)
    checking = precision.precision == "bf16" and settings.precision == "auto" and parent is None
    decoder = _Decoder(geometry, config, _enrolled_hashes(parent), retain=set(cal_paths) if checking else set())
    if precision.fallback:
        log.warning("%s: %s", product, precision.fallback)

    timings: dict[str, float] = {}
    clock = time.perf_counter()
    # One pass, bank images first: the split is settled on the images that decode, so
    # unusable files cannot empty the held-out share (both parts are views, no copy).
    feats, kept = _extract(extractor, decoder, bank_paths + cal_paths, settings.batch_size, precision.precision,
                           lambda d, t: progress("features", d, t))
    timings["features"] = time.perf_counter() - clock
    skipped = kept.skipped
    if not kept.paths:
        raise InspectdError(f"none of the {len(paths)} images in {good_dir} can be used: "
                            + "; ".join(f"{Path(n).name}: {r}" for n, r in skipped[:3]))
    n_bank = len(kept.paths) - _calibration_count(len(kept.paths), settings, adding=parent is not None)
    new_feats, cal_new = feats[:n_bank], feats[n_bank:]
    bank_set = _Images(kept.paths[:n_bank], kept.hashes[:n_bank])
    cal_set = _Images(kept.paths[n_bank:], kept.hashes[n_bank:])
    grid = tuple(feats.shape[1:3])

    clock = time.perf_counter()
    bank, source_patches = _choose_bank(parent, new_feats, settings, device, progress)
    timings["coreset"] = time.perf_counter() - clock

    clock = time.perf_counter()
    cal_feats = _calibration_pool(parent, cal_new)
    scorer = Scorer(bank_index(bank.to(device), settings, precision.precision), settings, geometry.input_hw)
    calibration, bad_count = _calibrate(scorer, cal_feats, bad_dir, extractor, geometry, config, settings,
                                        precision.precision, progress)
    timings["calibration"] = time.perf_counter() - clock
    check = rejected
    if checking:
        clock = time.perf_counter()
        held_out = [i for i, path in enumerate(cal_set.paths) if path in decoder.retained]
        check = check_bf16(scorer, extractor, [decoder.retained[cal_set.paths[i]] for i in held_out],
                           cal_new[held_out], settings.precision_tolerance, settings.batch_size)
        timings["precision_check"] = time.perf_counter() - clock
        if not check.passed:
            raise _Bf16Rejected(check)
    timings["total"] = time.perf_counter() - started

    warnings = [calibration.warning] if calibration.warning else []
    if weights_info.source == "random":
        warnings.insert(0, "backbone weights are RANDOM: for tests and demos only")
    metadata = _metadata(settings, weights_info, geometry, grid, bank, source_patches, calibration, parent,
                         bank_set, cal_set, skipped, timings, bad_count)
    metadata["precision"] = {"requested": settings.precision, "enrolled": precision.precision,
                             "cpu_bf16_features": list(cpu_bf16_features()), "note": precision.fallback,
                             "bf16_check": check.to_json() if check is not None else None}
    stored = store.write(product, metadata, {"bank": bank.cpu().numpy(),
                                             "calibration": cal_feats.cpu().numpy().astype(np.float16)})
    for message in warnings:
        log.warning("%s: %s", product, message)
    return EnrollReport(
        product=product, version=stored.version, path=stored.path, images_found=len(paths),
        bank_images=len(bank_set.paths), calibration_images=len(cal_set.paths), bad_images=bad_count,
        skipped=skipped, bank_size=int(bank.shape[0]), feature_dim=int(bank.shape[1]),
        calibration=calibration, timings_s=timings, warnings=warnings)


def _choose_bank(parent: StoredModel | None, new_feats: torch.Tensor, settings: ProductSettings,
                 device: torch.device, progress: Progress) -> tuple[torch.Tensor, int]:
    """The coreset memory bank (float32) and how many patches it stands for."""
    pool, source_patches = _bank_pool(parent, new_feats)
    count = min(coreset_size(source_patches, settings.coreset_ratio, settings.coreset_count), pool.shape[0])
    chosen = select_coreset(pool, count, projection_dim=settings.coreset_projection_dim, seed=settings.seed,
                            device=device, progress=lambda d, t: progress("coreset", d, t))
    return pool[torch.from_numpy(np.sort(chosen))].float(), source_patches


def _calibrate(scorer: Scorer, cal_feats: torch.Tensor, bad_dir: str | Path | None,
               extractor: PatchFeatureExtractor, geometry: Geometry, config: Config, settings: ProductSettings,
               precision: str, progress: Progress) -> tuple[Calibration, int]:
    """Threshold from the held-out good images' scores (and known defects, if given)."""
    if cal_feats.shape[0] == 0:
        raise InspectdError("no held-out good images to calibrate the threshold: enroll at least 2 images "
                            "with calibration_fraction > 0")
    good_scores = scorer.image_scores(cal_feats)
    bad_scores = None
    bad_count = 0
    if bad_dir is not None:
        bad_feats, bad_set = _extract(extractor, _Decoder(geometry, config, set()), list_images(bad_dir),
                                      settings.batch_size, precision, lambda d, t: progress("defect images", d, t))
        bad_scores = scorer.image_scores(bad_feats)
        bad_count = len(bad_set.paths)
    calibration = calibrate(good_scores, settings.false_alarm_rate, bad_scores=bad_scores,
                            mode=settings.threshold_mode, target_miss_rate=settings.target_miss_rate)
    return calibration, bad_count


def _precision_for(settings: ProductSettings, parent: StoredModel | None, device: torch.device,
                   rejected: PrecisionCheck | None) -> PrecisionChoice:
    """The precision of a new enrollment; with --add, the one the extended bank was built in."""
    if rejected is not None:
        return PrecisionChoice("fp32", f"{rejected.describe()}: enrolled in fp32")
    if parent is None:
        return resolve_precision(settings.precision, device)
    enrolled = enrolled_precision(parent.metadata, device)
    choice = scoring_precision(enrolled, device)
    if choice.fallback:
        raise InspectdError(f"cannot --add to {parent.product} {parent.version}: it was {choice.fallback.split(':')[0]}; "
                            "enroll a new model instead")
    return choice


def _settings_for(config: Config, product: str, weights: str | None, parent: StoredModel | None) -> ProductSettings:
    if parent is not None:
        if weights is not None:
            raise InspectdError("--weights cannot change with --add: the new images must match the enrolled ones")
        return settings_from_json(parent.metadata["settings"])
    settings = config.product(product)
    if weights is not None:
        settings = dataclasses.replace(settings, weights=weights)
    return settings


def _freeze_geometry(geometry: Geometry, paths: Sequence[Path], config: Config) -> Geometry:
    """Fix the input size from the first image that decodes."""
    for path in paths:
        try:
            image = read_image(path, max_bytes=config.images.max_bytes, max_pixels=config.images.max_pixels)
        except ImageError:
            continue
        return geometry.frozen_for(image.shape[:2])
    raise InspectdError("no image could be decoded to set the product's geometry")


def _enrolled_hashes(parent: StoredModel | None) -> set[str]:
    if parent is None:
        return set()
    images = parent.metadata.get("images", {})
    return {entry["sha256"] for role in ("bank", "calibration") for entry in images.get(role, [])}


def _calibration_count(n: int, settings: ProductSettings, adding: bool) -> int:
    """How many of n images are held out to calibrate the threshold."""
    n_cal = round(n * settings.calibration_fraction)
    if settings.calibration_fraction > 0 and not adding:
        n_cal = max(1, n_cal)  # a first enrollment needs at least one
    return max(0, min(n_cal, n - 1))


def _split(paths: Sequence[Path], settings: ProductSettings, adding: bool) -> tuple[list[Path], list[Path]]:
    """Seeded split into bank images and held-out calibration images."""
    n = len(paths)
    n_cal = _calibration_count(n, settings, adding)
    order = np.random.default_rng(settings.seed).permutation(n)
    return [paths[i] for i in sorted(order[n_cal:])], [paths[i] for i in sorted(order[:n_cal])]


class _Decoder:
    """Reads each file once: content hash (duplicates are skipped), decode, geometry."""

    def __init__(self, geometry: Geometry, config: Config, known: set[str], retain: set[Path] = frozenset()):
        self.geometry, self.config = geometry, config
        self.known, self.seen = known, set(known)
        self.retain = retain  # decoded images kept for the precision check
        self.retained: dict[Path, np.ndarray] = {}

    def __call__(self, path: Path, out: _Images) -> np.ndarray | None:
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


def _extract(extractor: PatchFeatureExtractor, decoder: _Decoder, paths: Sequence[Path], batch_size: int,
             precision: str, progress: Callable[[int, int], None]) -> tuple[torch.Tensor, _Images]:
    """Patch features (N, h, w, D) of the usable images among `paths`, float16 on the CPU.

    float16 halves the memory of a large enrollment (1,000 images at 1024-d: 1.6 GB);
    the preallocated buffer is filled in place, never built from Python lists."""
    kept = _Images()
    buffer: torch.Tensor | None = None
    for start in range(0, len(paths), batch_size):
        decoded = [decoder(p, kept) for p in paths[start:start + batch_size]]
        images = [image for image in decoded if image is not None]
        if images:
            feats = extractor(extractor.to_tensor(images), precision)
            if buffer is None:
                buffer = torch.empty((len(paths), *feats.shape[1:]), dtype=torch.float16)
            filled = len(kept.paths)
            buffer[filled - len(images):filled] = feats.to("cpu", torch.float16)
        progress(min(start + batch_size, len(paths)), len(paths))
    if buffer is None:
        h, w = _grid_of(extractor, decoder.geometry)
        return torch.empty((0, h, w, extractor.feature_dim()), dtype=torch.float16), kept
    return buffer[:len(kept.paths)], kept


def _grid_of(extractor: PatchFeatureExtractor, geometry: Geometry) -> tuple[int, int]:
    probe = extractor(extractor.to_tensor([np.zeros((*geometry.input_hw, 3), np.float32)]))
    return probe.shape[1], probe.shape[2]


def _bank_pool(parent: StoredModel | None, new_feats: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Candidate vectors for the coreset (float16, flat) and how many patches they stand for."""
    flat = new_feats.reshape(-1, new_feats.shape[-1])
    if parent is None:
        if flat.shape[0] == 0:
            raise InspectdError("no images left for the memory bank")
        return flat, flat.shape[0]
    old = torch.from_numpy(np.asarray(parent.array("bank"))).to(torch.float16)
    if old.shape[1] != flat.shape[1]:
        raise ModelError(f"stored bank has {old.shape[1]} dimensions, new features {flat.shape[1]}")
    source = int(parent.metadata["coreset"]["source_patches"]) + flat.shape[0]
    return torch.cat([old, flat]), source


def _calibration_pool(parent: StoredModel | None, new_cal: torch.Tensor) -> torch.Tensor:
    if parent is None:
        return new_cal
    old = torch.from_numpy(np.asarray(parent.array("calibration")))
    return torch.cat([old, new_cal]) if new_cal.shape[0] else old


def _metadata(settings: ProductSettings, weights: WeightsInfo, geometry: Geometry, grid: tuple[int, int],
              bank: torch.Tensor, source_patches: int, calibration: Calibration, parent: StoredModel | None,
              bank_set: _Images, cal_set: _Images, skipped: list[tuple[str, str]], timings: dict[str, float],
              bad_count: int) -> dict:
    previous = parent.metadata.get("images", {}) if parent is not None else {}

    def entries(images: _Images) -> list[dict]:
        return [{"name": p.name, "sha256": h} for p, h in zip(images.paths, images.hashes)]

    return {
        "inspectd_version": __version__,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "parent_version": parent.version if parent is not None else None,
        "settings": settings_to_json(settings),
        "weights": weights.to_json(),
        "geometry": dataclasses.asdict(geometry),
        "feature_dim": int(bank.shape[1]),
        "patch_grid": list(grid),
        "coreset": {"ratio": settings.coreset_ratio, "count": settings.coreset_count, "size": int(bank.shape[0]),
                    "source_patches": int(source_patches), "projection_dim": settings.coreset_projection_dim,
                    "seed": settings.seed},
        "calibration": calibration.to_json(),
        "calibration_required_images": required_good_images(settings.false_alarm_rate),
        "images": {"bank": previous.get("bank", []) + entries(bank_set),
                   "calibration": previous.get("calibration", []) + entries(cal_set),
                   "skipped": [{"name": Path(n).name, "reason": r} for n, r in skipped],
                   "bad": bad_count},
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }
