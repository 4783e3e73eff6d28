"""Enrollment: good images -> coreset memory bank + calibrated threshold -> a new
model version. `add=True` extends the current version with new images only.

By default every usable good image goes into the bank and the threshold comes from
cross-fitted scores (crossfit.py); with `calibration_folds = 0` a share of the images
is held out of the bank instead.

Incremental enrollment keeps the enrolled images' work: the new coreset is chosen
from the current bank plus the new images' patches (k-center coresets compose: a
coreset of the union of coresets covers the union), and the held-out calibration
features (held out) or the cross-fitted scores are stored in each version so the
threshold can be re-derived for the new bank without decoding or re-extracting any
earlier image.

The stages: `_plan` (settings, backbone, geometry, precision, cost estimate),
`_extract_good` (enrollment_images.py), `_bank_and_scores` (fold banks and their
scores, the final coreset), the calibration, and `_write_version`.
"""

from __future__ import annotations

import contextlib
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
from .bank import ImageRows, ImageSubset, Selections, bank_of, choose_coreset, narrowed_bank, select_bank
from .cost import CostEstimate, estimate
from .crossfit import FOLD_RESUME_AT, CrossFit, cross_fitted_scores, fold_of_images
from .enrollment_images import Decoder, Images, extract, spill_folder
from .device import resolve_device
from .errors import ImageError, InspectdError, ModelError
from .extractor_cache import new_extractor, shared_extractor
from .features import PatchFeatureExtractor
from .imageio import Geometry, list_images, read_image
from .precision import PrecisionChoice, cpu_bf16_features
from .precision_check import Bf16Rejected, PrecisionCheck, check_bf16, enrollment_precision
from .scorer import Scorer
from .settings_json import geometry_from_settings, settings_from_json, settings_to_json
from .store import ModelStore, StoredModel
from .tiled_scorer import TiledScorer, make_scorer, tile_layout
from .tiling import TileLayout

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
    estimate: CostEstimate | None = None  # what was told before the work started

    @property
    def threshold(self) -> float:
        return self.calibration.threshold


def enroll(config: Config, product: str, good_dir: str | Path, *, bad_dir: str | Path | None = None,
           weights: str | None = None, add: bool = False, base_version: str | None = None,
           progress: Progress | None = None, on_estimate: Callable[[CostEstimate], None] | None = None
           ) -> EnrollReport:
    """Enroll `product` from the good images in `good_dir` (see module docstring).
    With `add`, the new version extends `base_version` (default: the newest).
    `on_estimate` hears what the enrollment and the model will cost before the work starts.
    With precision "auto" on a bf16 CPU, a bf16 model that does not score like fp32
    (precision_check.py) is not written: the product is enrolled in fp32 instead, with the
    coreset and fold banks the bf16 attempt chose (bank.Selections)."""
    started, selections = time.perf_counter(), Selections()
    try:
        return _enroll(config, product, good_dir, bad_dir, weights, add, base_version, progress, on_estimate, None,
                       selections)
    except Bf16Rejected as rejected:  # the fp32 enrollment logs why
        attempt = time.perf_counter() - started
        report = _enroll(config, product, good_dir, bad_dir, weights, add, base_version, progress, None,
                         rejected.check, selections)
        report.timings_s["rejected_bf16_attempt"] = attempt
        return report


@dataclass
class _Plan:
    """What an enrollment works with, settled before any image is decoded."""

    product: str
    store: ModelStore
    device: torch.device
    settings: ProductSettings
    parent: StoredModel | None  # the version `--add` extends
    paths: list[Path]
    extractor: PatchFeatureExtractor
    weights: WeightsInfo
    geometry: Geometry
    layout: TileLayout | None
    precision: PrecisionChoice
    cost: CostEstimate
    checking: bool  # auto's bf16 is checked against fp32 before the model is kept
    decoder: Decoder
    selections: Selections  # the coreset selections, kept for an fp32 enrollment after a rejected bf16 one

    @property
    def tiles(self) -> int:
        return len(self.layout) if self.layout is not None else 1

    @property
    def cross_fit(self) -> bool:
        return self.settings.calibration_folds >= 2


@dataclass
class _Extracted:
    """The usable good images' features: the bank images first, then (held out) the calibration images."""

    feats: torch.Tensor
    kept: Images
    n_bank: int
    tiles: int

    @property
    def bank_feats(self) -> torch.Tensor:
        return self.feats[:self.n_bank * self.tiles]

    @property
    def calibration_feats(self) -> torch.Tensor:
        return self.feats[self.n_bank * self.tiles:]

    @property
    def bank_set(self) -> Images:
        return Images(self.kept.paths[:self.n_bank], self.kept.hashes[:self.n_bank])

    @property
    def calibration_set(self) -> Images:
        return Images(self.kept.paths[self.n_bank:], self.kept.hashes[self.n_bank:])


@dataclass
class _Banks:
    """The final bank (one per region for a tiled product), and the good images' out-of-bank scores."""

    banks: list[torch.Tensor]
    source_patches: int
    good_scores: np.ndarray | None  # None: held out, scored once the final bank exists
    fitted: CrossFit | None  # the fold banks of a first untiled cross-fitted enrollment

    @property
    def bank(self) -> torch.Tensor:
        return torch.cat(self.banks) if len(self.banks) > 1 else self.banks[0]


class _Bf16Gate:
    """auto's bf16 check, run where the enrollment's shape allows it first: on the fold
    banks before any fold is scored (no fold is scored twice, and the fp32 enrollment after
    a rejection keeps the bf16 attempt's coreset and fold banks), or on the final bank
    when images are held out."""

    def __init__(self, plan: _Plan, extracted: _Extracted, timings: dict[str, float],
                 rejected: PrecisionCheck | None):
        self.plan, self.extracted, self.timings = plan, extracted, timings
        self.check = rejected  # what the model records: this check, or the one that rejected bf16

    def __call__(self, fitted: CrossFit | None, final: Scorer | TiledScorer | None = None) -> None:
        plan, clock = self.plan, time.perf_counter()
        self.check = _check_bf16(plan.decoder, self.extracted.kept, self.extracted.feats, fitted, final,
                                 plan.extractor, plan.settings, plan.geometry, plan.device)
        self.timings["precision_check"] = time.perf_counter() - clock
        if not self.check.passed:
            raise Bf16Rejected(self.check)


def _enroll(config: Config, product: str, good_dir: str | Path, bad_dir: str | Path | None, weights: str | None,
            add: bool, base_version: str | None, progress: Progress | None,
            on_estimate: Callable[[CostEstimate], None] | None, rejected: PrecisionCheck | None,
            selections: Selections) -> EnrollReport:
    started = time.perf_counter()
    progress = progress or (lambda stage, done, total: None)
    plan = _plan(config, product, good_dir, weights, add, base_version, rejected, selections)
    if on_estimate is not None:
        on_estimate(plan.cost)
    timings: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        clock = time.perf_counter()
        spill = spill_folder(plan.store, product, stack) if plan.cost.spills else None
        extracted = _extract_good(plan, good_dir, spill, progress)
        timings["features"] = time.perf_counter() - clock
        plan.selections.of_images(extracted.kept.hashes)
        gate = _Bf16Gate(plan, extracted, timings, rejected)
        chosen = _bank_and_scores(plan, extracted, gate if plan.checking else None, progress, timings)
        clock = time.perf_counter()
        scorer = make_scorer(chosen.banks, plan.settings, plan.geometry.input_hw, plan.layout, plan.device)
        if plan.cross_fit:
            good_scores, arrays = chosen.good_scores, {"calibration_scores": chosen.good_scores}
        else:
            cal_feats = _calibration_pool(plan.parent, extracted.calibration_feats)
            good_scores = _held_out_scores(scorer, cal_feats)
            arrays = {"calibration": cal_feats.cpu().numpy().astype(np.float16)}
        calibration, bad_count = _calibrate(scorer, good_scores, bad_dir, plan.extractor, plan.geometry, config,
                                            plan.settings, plan.precision.precision, progress)
        timings["calibration"] = time.perf_counter() - clock
        if plan.checking and chosen.fitted is None:  # held out: checked against the final bank
            gate(None, scorer)
        timings["total"] = time.perf_counter() - started
        return _write_version(plan, extracted, chosen, calibration, arrays, bad_count, gate.check, timings)


def _plan(config: Config, product: str, good_dir: str | Path, weights: str | None, add: bool,
          base_version: str | None, rejected: PrecisionCheck | None, selections: Selections) -> _Plan:
    """Settings, backbone, geometry, tiles, precision and the cost estimate of an enrollment."""
    store = ModelStore(config.store_dir)
    device = resolve_device(config.device)
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
    layout = tile_layout(settings, geometry.input_hw)
    if layout is not None and settings.calibration_folds < 2:
        raise InspectdError("a tiled product (tile = ...) is calibrated by cross-fitting (calibration_folds >= 2): "
                            "held-out calibration is not supported for tiles")
    precision = enrollment_precision(settings, parent, device, rejected, tiled=layout is not None)
    if precision.fallback:
        log.warning("%s: %s", product, precision.fallback)
    cost = estimate(extractor, layout.tile_hw if layout else geometry.input_hw, settings, len(paths),
                    len(layout) if layout is not None else 1,
                    int(parent.metadata["coreset"]["source_patches"]) if parent is not None else 0,
                    memory_limit_bytes=config.enroll_memory_mb * 2**20, precision=precision.precision)
    # auto's bf16 is checked against fp32 on the share of images that held-out
    # calibration would hold out (their decoded pixels are kept for the fp32 pass)
    checking = precision.precision == "bf16" and settings.precision == "auto" and parent is None
    check_paths = set(_split(paths, settings, adding=False)[1]) if checking else set()
    decoder = Decoder(geometry, config, _enrolled_hashes(parent), retain=check_paths)
    return _Plan(product, store, device, settings, parent, paths, extractor, weights_info, geometry, layout,
                 precision, cost, checking, decoder, selections)


def _extract_good(plan: _Plan, good_dir: str | Path, spill: Path | None, progress: Progress) -> _Extracted:
    """One pass, bank images first: the split is settled on the images that decode, so
    unusable files cannot empty the held-out share (both parts are views, no copy)."""
    adding = plan.parent is not None
    bank_paths, cal_paths = (list(plan.paths), []) if plan.cross_fit else _split(plan.paths, plan.settings, adding)
    feats, kept = extract(plan.extractor, plan.decoder, bank_paths + cal_paths, plan.settings.batch_size,
                          plan.precision.precision, lambda d, t: progress("features", d, t), spill, plan.layout)
    if not kept.paths:
        raise InspectdError(f"none of the {len(plan.paths)} images in {good_dir} can be used: "
                            + "; ".join(f"{Path(n).name}: {r}" for n, r in kept.skipped[:3]))
    n_bank = len(kept.paths) - (0 if plan.cross_fit else _calibration_count(len(kept.paths), plan.settings, adding))
    return _Extracted(feats, kept, n_bank, plan.tiles)


def _bank_and_scores(plan: _Plan, extracted: _Extracted, gate: _Bf16Gate | None, progress: Progress,
                     timings: dict[str, float]) -> _Banks:
    """The final bank from every bank image, and (cross-fitted) each good image's
    score by a bank that did not see it; `gate` checks bf16 on the fold banks."""
    settings, device, new_feats = plan.settings, plan.device, extracted.bank_feats
    if plan.layout is not None and plan.parent is not None:
        return _tiled_add(plan, new_feats, progress, timings)
    if plan.layout is not None:
        banks, good_scores = _tiled_banks(new_feats, plan.layout, settings, device, progress, timings)
        return _Banks(banks, int(np.prod(new_feats.shape[:3])), good_scores, None)
    if plan.cross_fit and plan.parent is None:
        n = new_feats.shape[0]
        if n < 2:
            raise InspectdError("cross-fitted calibration needs at least 2 usable good images")
        fold = fold_of_images(n, settings.calibration_folds, settings.seed)
        bank, fitted = _bank_and_fold_banks(new_feats, np.arange(n), fold, settings, plan.geometry.input_hw, device,
                                            progress, timings, gate or (lambda fitted: None), plan.selections)
        return _Banks([bank], int(np.prod(new_feats.shape[:3])), fitted.scores, fitted)
    good_scores = None
    if plan.cross_fit:
        clock = time.perf_counter()
        good_scores = _parent_scores_and_new(plan.parent, [_parent_bank(plan.parent)], new_feats, settings,
                                             plan.geometry, None, device)
        timings["cross-fitting"] = time.perf_counter() - clock
    clock = time.perf_counter()
    bank, source_patches = _choose_bank(plan.parent, new_feats, settings, device, progress, plan.selections)
    timings["coreset"] = time.perf_counter() - clock
    return _Banks([bank], source_patches, good_scores, None)


def _write_version(plan: _Plan, extracted: _Extracted, chosen: _Banks, calibration: Calibration,
                   arrays: dict[str, np.ndarray], bad_count: int, check: PrecisionCheck | None,
                   timings: dict[str, float]) -> EnrollReport:
    """Store the new version (bank, calibration arrays, metadata) and report on it."""
    warnings = [calibration.warning] if calibration.warning else []
    if plan.weights.source == "random":
        warnings.insert(0, "backbone weights are RANDOM: for tests and demos only")
    bank, bank_set, skipped = chosen.bank, extracted.bank_set, extracted.kept.skipped
    metadata = _metadata(plan.settings, plan.weights, plan.geometry, tuple(extracted.feats.shape[1:3]), bank,
                         chosen.source_patches, calibration, plan.parent, bank_set, extracted.calibration_set,
                         skipped, timings, bad_count)
    metadata["precision"] = {"requested": plan.settings.precision, "enrolled": plan.precision.precision,
                             "cpu_bf16_features": list(cpu_bf16_features()), "note": plan.precision.fallback,
                             "bf16_check": check.to_json() if check is not None else None,
                             "coreset_chosen_in": "bf16" if plan.selections.reused else plan.precision.precision}
    if plan.layout is not None:
        metadata["tiling"] = {"boxes": [list(box) for box in plan.layout.boxes],
                              "region_sizes": [int(b.shape[0]) for b in chosen.banks]}
    stored = plan.store.write(plan.product, metadata, {"bank": bank.cpu().numpy(), **arrays})
    for message in warnings:
        log.warning("%s: %s", plan.product, message)
    return EnrollReport(
        product=plan.product, version=stored.version, path=stored.path, images_found=len(plan.paths),
        bank_images=len(bank_set.paths),
        calibration_images=len(bank_set.paths if plan.cross_fit else extracted.calibration_set.paths),
        bad_images=bad_count, skipped=skipped, bank_size=int(bank.shape[0]), feature_dim=int(bank.shape[1]),
        calibration=calibration, timings_s=timings, warnings=warnings, estimate=plan.cost)


def _choose_bank(parent: StoredModel | None, new_feats: torch.Tensor, settings: ProductSettings,
                 device: torch.device, progress: Progress, selections: Selections) -> tuple[torch.Tensor, int]:
    """The coreset memory bank (float32) and how many patches it stands for."""
    pool, source_patches = _bank_pool(parent, new_feats)
    coreset = selections.recall("final", lambda: choose_coreset(pool, source_patches, settings, device, progress))
    return bank_of(pool, coreset.indices), source_patches


def _bank_and_fold_banks(feats: torch.Tensor, rows: np.ndarray, fold: np.ndarray, settings: ProductSettings,
                         input_hw: tuple[int, int], device: torch.device, progress: Progress,
                         timings: dict[str, float], before_scoring: Callable[[CrossFit], None] = lambda fitted: None,
                         selections: Selections | None = None) -> tuple[torch.Tensor, CrossFit]:
    """The bank of `rows` (images, or one region's tiles) of the feature store, then
    one out-of-bank score for each of them (crossfit.py), `fold` the fold of each: each
    fold's bank the final coreset narrowed to the other folds' patches (a warm start,
    resumed at FOLD_RESUME_AT of the greedy) with as many rows as the final bank.
    `before_scoring` sees the fold banks before any image is scored against them; the
    coreset and fold banks are those `selections` recorded, if any."""
    clock = time.perf_counter()
    pool = ImageRows(feats, rows)
    selections = selections or Selections()
    final = selections.recall("final", lambda: choose_coreset(pool, pool.shape[0], settings, device, progress,
                                                              resume_at=FOLD_RESUME_AT))
    bank = bank_of(pool, final.indices)
    timings["coreset"] = timings.get("coreset", 0.0) + time.perf_counter() - clock
    clock = time.perf_counter()

    def fold_bank(members: np.ndarray) -> torch.Tensor:
        return narrowed_bank(final, pool, members, bank.shape[0], progress, "calibration folds", selections)

    def score(fold_bank: torch.Tensor, members: np.ndarray) -> np.ndarray:
        scorer = make_scorer([fold_bank], settings, input_hw, None, device)
        return scorer.image_scores(ImageSubset(feats, rows[members]))

    fitted = cross_fitted_scores(fold, fold_bank, score, before_scoring)
    timings["cross-fitting"] = timings.get("cross-fitting", 0.0) + time.perf_counter() - clock
    return bank, fitted


def _tiled_banks(feats: torch.Tensor, layout: TileLayout, settings: ProductSettings, device: torch.device,
                 progress: Progress, timings: dict[str, float]) -> tuple[list[torch.Tensor], np.ndarray]:
    """Tiled product: the bank of each region (one shared region, or one per tile
    position) from every image's tiles, and each image's cross-fitted score, the
    worst of its tiles' out-of-bank scores. Folds are dealt by image, so no tile of an
    image is in the bank that scores it."""
    tiles = len(layout)
    n = feats.shape[0] // tiles
    if n < 2:
        raise InspectdError("cross-fitted calibration needs at least 2 usable good images")
    fold = np.repeat(fold_of_images(n, settings.calibration_folds, settings.seed), tiles)
    regions = ([np.arange(n * tiles)] if settings.tile_bank == "shared"
               else [np.arange(n) * tiles + r for r in range(tiles)])
    tile_scores = np.empty(n * tiles)
    banks = []
    for rows in regions:
        bank, fitted = _bank_and_fold_banks(feats, rows, fold[rows], settings, layout.tile_hw, device, progress,
                                            timings)
        banks.append(bank)
        tile_scores[rows] = fitted.scores
    return banks, tile_scores.reshape(n, tiles).max(axis=1)


def _tiled_add(plan: _Plan, new_feats: torch.Tensor, progress: Progress, timings: dict[str, float]) -> _Banks:
    """`--add` to a tiled product: the new images scored by the parent's region banks,
    which did not see them (beside the parent's cross-fitted scores), and each region's
    new bank a coreset of its parent bank and the new images' tiles of that region."""
    parent, layout, settings, device = plan.parent, plan.layout, plan.settings, plan.device
    clock = time.perf_counter()
    parent_banks = list(torch.split(_parent_bank(parent), parent.metadata["tiling"]["region_sizes"]))
    good_scores = _parent_scores_and_new(parent, parent_banks, new_feats, settings, plan.geometry, layout, device)
    timings["cross-fitting"] = time.perf_counter() - clock
    clock = time.perf_counter()
    tiles, n = len(layout), new_feats.shape[0] // len(layout)
    regions = ([np.arange(n * tiles)] if settings.tile_bank == "shared"
               else [np.arange(n) * tiles + r for r in range(tiles)])
    # every image gives each region the same number of patches, so the parent's
    # patches are shared evenly between its regions
    parent_source = int(parent.metadata["coreset"]["source_patches"]) // len(regions)
    banks = []
    for old, rows in zip(parent_banks, regions):
        new = new_feats[torch.from_numpy(rows)].reshape(-1, new_feats.shape[-1])
        banks.append(select_bank(torch.cat([old.to(torch.float16), new]), parent_source + new.shape[0], settings,
                                 device, progress))
    timings["coreset"] = time.perf_counter() - clock
    source = int(parent.metadata["coreset"]["source_patches"]) + int(np.prod(new_feats.shape[:3]))
    return _Banks(banks, source, good_scores, None)


def _parent_scores_and_new(parent: StoredModel, parent_banks: list[torch.Tensor], new_feats: torch.Tensor,
                           settings: ProductSettings, geometry: Geometry, layout: TileLayout | None,
                           device: torch.device) -> np.ndarray:
    """`--add`: the parent's cross-fitted scores, and the new images scored by the
    parent's bank(s), which did not see them either (no earlier image is read again)."""
    old = np.asarray(parent.array("calibration_scores"), dtype=np.float64)
    new = make_scorer(parent_banks, settings, geometry.input_hw, layout, device).image_scores(new_feats)
    return np.concatenate([old, new])


def _check_bf16(decoder: Decoder, kept: Images, feats: torch.Tensor, fitted: CrossFit | None,
                scorer: Scorer | TiledScorer | None, extractor: PatchFeatureExtractor, settings: ProductSettings,
                geometry: Geometry, device: torch.device) -> PrecisionCheck:
    """bf16 vs fp32 scores of the retained images, each against a bank that did not see
    it: its cross-fitting fold's bank, or (held out) the final bank."""
    rows = [i for i, path in enumerate(kept.paths) if path in decoder.retained]
    images = {i: decoder.retained[kept.paths[i]] for i in rows}
    if fitted is None:
        groups = [(scorer, rows)]
    else:
        groups = [(make_scorer([fitted.bank_without(label)], settings, geometry.input_hw, None, device),
                   [i for i in rows if fitted.fold[i] == label])
                  for label in fitted.labels]
    return check_bf16([(s, [images[i] for i in members], feats[members]) for s, members in groups if members],
                      extractor, settings.precision_tolerance, settings.batch_size)


def _held_out_scores(scorer: Scorer, cal_feats: torch.Tensor) -> np.ndarray:
    if cal_feats.shape[0] == 0:
        raise InspectdError("no held-out good images to calibrate the threshold: enroll at least 2 images "
                            "with calibration_fraction > 0 (or calibration_folds >= 2)")
    return scorer.image_scores(cal_feats)


def _calibrate(scorer: Scorer | TiledScorer, good_scores: np.ndarray, bad_dir: str | Path | None,
               extractor: PatchFeatureExtractor, geometry: Geometry, config: Config, settings: ProductSettings,
               precision: str, progress: Progress) -> tuple[Calibration, int]:
    """Threshold from the good images' out-of-bank scores (and known defects, scored
    with the final bank, if given)."""
    bad_scores = None
    bad_count = 0
    if bad_dir is not None:
        bad_feats, bad_set = extract(extractor, Decoder(geometry, config, set()), list_images(bad_dir),
                                     settings.batch_size, precision, lambda d, t: progress("defect images", d, t),
                                     layout=getattr(scorer, "layout", None))
        bad_scores = scorer.image_scores(bad_feats)
        bad_count = len(bad_set.paths)
    calibration = calibrate(good_scores, settings.false_alarm_rate, bad_scores=bad_scores,
                            mode=settings.threshold_mode, target_miss_rate=settings.target_miss_rate,
                            folds=settings.calibration_folds)
    return calibration, bad_count


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


def _bank_pool(parent: StoredModel | None, new_feats: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Candidate vectors for the coreset (float16, flat) and how many patches they stand for."""
    flat = new_feats.reshape(-1, new_feats.shape[-1])
    if parent is None:
        if flat.shape[0] == 0:
            raise InspectdError("no images left for the memory bank")
        return flat, flat.shape[0]
    old = _parent_bank(parent).to(torch.float16)
    if old.shape[1] != flat.shape[1]:
        raise ModelError(f"stored bank has {old.shape[1]} dimensions, new features {flat.shape[1]}")
    source = int(parent.metadata["coreset"]["source_patches"]) + flat.shape[0]
    return torch.cat([old, flat]), source


def _parent_bank(parent: StoredModel) -> torch.Tensor:
    return torch.from_numpy(np.asarray(parent.array("bank")))


def _calibration_pool(parent: StoredModel | None, new_cal: torch.Tensor) -> torch.Tensor:
    if parent is None:
        return new_cal
    old = torch.from_numpy(np.asarray(parent.array("calibration")))
    return torch.cat([old, new_cal]) if new_cal.shape[0] else old


def _metadata(settings: ProductSettings, weights: WeightsInfo, geometry: Geometry, grid: tuple[int, int],
              bank: torch.Tensor, source_patches: int, calibration: Calibration, parent: StoredModel | None,
              bank_set: Images, cal_set: Images, skipped: list[tuple[str, str]], timings: dict[str, float],
              bad_count: int) -> dict:
    previous = parent.metadata.get("images", {}) if parent is not None else {}

    def entries(images: Images) -> list[dict]:
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
