"""What `enroll` says a chosen size costs before the work starts, and the feature store
that spills to disk when it would not fit the memory limit."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from inspectd import cost as cost_module
from inspectd import enrollment_images
from inspectd.config import ProductSettings
from inspectd.cost import CostEstimate, search_ms
from inspectd.enroll import enroll
from inspectd.store import ModelStore

from engine_support import copy_images


def test_estimate_matches_the_enrollment(tmp_path: Path, make_config, dataset: Path) -> None:
    _, config = make_config(defaults={"calibration_folds": 3})
    good = copy_images(sorted((dataset / "train" / "good").glob("*.png"))[:6], tmp_path / "good")
    told: list[CostEstimate] = []
    report = enroll(config, "sized", good, on_estimate=told.append)
    assert told == [report.estimate]
    estimate = told[0]
    meta = ModelStore(config.store_dir).open("sized").metadata
    assert estimate.grid == tuple(meta["patch_grid"]) and estimate.patches_per_image == 24 * 24
    assert estimate.feature_dim == report.feature_dim == 1024
    assert estimate.feature_store_bytes == 6 * 576 * 1024 * 2 and not estimate.spills
    assert estimate.bank_size == report.bank_size
    assert estimate.bank_bytes == estimate.bank_size * 1024 * 4
    assert estimate.backbone_ms > 0 and estimate.search_ms > 0
    assert "576 patches (24x24)" in estimate.summary() and "ms per image" in estimate.summary()


def test_search_estimate_counts_the_multiply_adds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cost_module, "matmul_rate", lambda width, device: 1e9)
    fast = ProductSettings(search_dim=8, search_candidates=4)
    assert search_ms(100, 1000, 64, fast, "cpu") == pytest.approx((100 * 1000 * 10 + 100 * 4 * 64) / 1e6)
    exact = dataclasses.replace(fast, search="exact")
    assert search_ms(100, 1000, 64, exact, "cpu") == pytest.approx(100 * 1000 * 64 / 1e6)


def test_a_feature_store_over_the_limit_spills_to_disk_with_the_same_model(
        tmp_path: Path, make_config, dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, config = make_config(defaults={"calibration_folds": 3})
    good = copy_images(sorted((dataset / "train" / "good").glob("*.png"))[:6], tmp_path / "good")
    in_memory = enroll(config, "ram", good)
    mapped: list[Path] = []
    real_store = enrollment_images.feature_store

    def feature_store(shape, spill_dir):
        store = real_store(shape, spill_dir)
        mapped.extend(spill_dir.iterdir() if spill_dir is not None else [])
        return store

    monkeypatch.setattr(enrollment_images, "feature_store", feature_store)
    spilled = enroll(dataclasses.replace(config, enroll_memory_mb=0), "disk", good)
    assert [p.name for p in mapped] == ["features.npy"] and mapped[0].parent.parent == config.store_dir / "disk"
    assert spilled.estimate.spills and not in_memory.estimate.spills
    store = ModelStore(config.store_dir)
    np.testing.assert_array_equal(store.open("disk").array("bank"), store.open("ram").array("bank"))
    assert spilled.threshold == in_memory.threshold
    assert not list((config.store_dir / "disk").glob(".features-*"))  # the spill folder is gone
    assert math.isfinite(spilled.threshold)
