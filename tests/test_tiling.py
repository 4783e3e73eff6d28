"""Tiles of large inputs: positions and overlaps, seamless stitching, a per-region bank
that only compares a tile with the same region of good parts, and tiled enrollment."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from inspectd import enroll as enroll_module
from inspectd.config import ProductSettings
from inspectd.enroll import enroll
from inspectd.model import ProductModel
from inspectd.store import ModelStore
from inspectd.tiled_scorer import make_scorer
from inspectd.tiling import TileLayout, tile_starts

from engine_support import copy_images


@pytest.mark.parametrize("length, tile, overlap", [(460, 224, 32), (1130, 224, 32), (1130, 460, 64),
                                                   (100, 64, 0), (97, 64, 63), (300, 100, 50)])
def test_tiles_cover_the_axis_with_the_overlap(length: int, tile: int, overlap: int) -> None:
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + tile == length
    gaps = np.diff(starts)
    assert np.all(gaps > 0) and np.all(tile - gaps >= overlap)  # neighbours share >= overlap pixels
    assert len(tile_starts(length, tile, overlap)) <= int(np.ceil((length - overlap) / (tile - overlap)))


def test_an_input_that_fits_is_one_tile() -> None:
    layout = TileLayout((96, 80), tile=128, overlap=32)
    assert layout.boxes == [(0, 0, 96, 80)] and layout.tile_hw == (96, 80)
    anomaly = np.random.default_rng(0).random((1, 96, 80)).astype(np.float32)
    np.testing.assert_array_equal(layout.stitch(anomaly), anomaly[0])


def test_stitching_crops_of_one_map_gives_that_map_without_seams() -> None:
    layout = TileLayout((200, 460), tile=128, overlap=40)
    assert len(layout) == 2 * 5
    whole = np.random.default_rng(1).random((200, 460)).astype(np.float32)
    np.testing.assert_allclose(layout.stitch(np.stack(layout.cut(whole))), whole, rtol=1e-6)
    # every pixel is covered; with a different constant per tile the blend has no step
    # larger than the difference spread over the overlap
    constants = np.stack([np.full((128, 128), float(i), np.float32) for i in range(len(layout))])
    blended = layout.stitch(constants)
    assert np.abs(np.diff(blended, axis=1)).max() <= 1.0 / 40 * 1.01 + 1e-6


def test_a_per_region_bank_only_compares_the_same_region() -> None:
    layout = TileLayout((8, 16), tile=8, overlap=0)  # two tiles side by side, a 2x2 grid each
    settings = ProductSettings(reweight_neighbors=1, blur_sigma=0, search="exact")
    left, right = torch.zeros(3, 4), torch.ones(3, 4)
    features = torch.cat([torch.ones(1, 2, 2, 4), torch.zeros(1, 2, 2, 4)])  # each tile looks like the other region
    per_region = make_scorer([left, right], settings, (8, 16), layout, torch.device("cpu"))
    shared = make_scorer([torch.cat([left, right])], settings, (8, 16), layout, torch.device("cpu"))
    scores, maps = per_region.score_features(features)
    assert scores.tolist() == [pytest.approx(2.0)] and maps.shape == (1, 8, 16)
    np.testing.assert_allclose(maps.numpy(), 2.0, rtol=1e-6)
    assert shared.score_features(features)[0].tolist() == [pytest.approx(0.0)]


def test_a_tiled_product_whose_input_fits_one_tile_scores_like_the_whole_image(
        tmp_path: Path, make_config, dataset: Path, eval_set) -> None:
    _, config = make_config(defaults={"calibration_folds": 3})
    good = copy_images(sorted((dataset / "train" / "good").glob("*.png"))[:6], tmp_path / "good")
    enroll(config, "whole", good)
    enroll(dataclasses.replace(config, defaults=dataclasses.replace(config.defaults, tile=128)), "onetile", good)
    store = ModelStore(config.store_dir)
    whole, tiled = ProductModel.load(store, "whole"), ProductModel.load(store, "onetile")
    assert len(tiled.layout) == 1
    np.testing.assert_array_equal(tiled.stored.array("bank"), whole.stored.array("bank"))
    assert tiled.threshold == whole.threshold
    images = [whole.read(p)[1] for p in eval_set.paths[:6]]
    for a, b in zip(whole.score_images(images), tiled.score_images(images)):
        assert a.score == pytest.approx(b.score, rel=1e-6)
        np.testing.assert_allclose(a.anomaly_map, b.anomaly_map, rtol=1e-5, atol=1e-6)


def test_per_region_enrollment_banks_each_region_from_its_own_tiles(
        tmp_path: Path, make_config, dataset: Path, eval_set, monkeypatch: pytest.MonkeyPatch) -> None:
    pools: list[np.ndarray] = []
    real_choose, real_narrowed = enroll_module.choose_coreset, enroll_module.narrowed_bank

    def choose(pool, *args, **kwargs):
        pools.append(pool.images.copy())
        return real_choose(pool, *args, **kwargs)

    def narrowed(coreset, pool, members, *args, **kwargs):
        pools.append(pool.images[members])
        return real_narrowed(coreset, pool, members, *args, **kwargs)

    monkeypatch.setattr(enroll_module, "choose_coreset", choose)
    monkeypatch.setattr(enroll_module, "narrowed_bank", narrowed)
    _, config = make_config(defaults={"calibration_folds": 3, "tile": 64, "tile_overlap": 32,
                                      "tile_bank": "per_region"})
    good = copy_images(sorted((dataset / "train" / "good").glob("*.png"))[:6], tmp_path / "good")
    report = enroll(config, "regions", good)
    model = ProductModel.load(ModelStore(config.store_dir), "regions")
    assert len(model.layout) == 4 and model.layout.boxes[-1] == (32, 32, 64, 64)  # 96 px input, starts 0 and 32
    sizes = model.stored.metadata["tiling"]["region_sizes"]
    assert len(sizes) == 4 and sum(sizes) == report.bank_size == model.bank_size
    assert len(pools) == 4 * (1 + 3)  # per region: its bank, then three fold banks
    for pool in pools:
        assert len(set((pool % 4).tolist())) == 1  # one region's tiles only
    assert report.estimate.tiles == 4 and report.estimate.bank_size == report.bank_size
    results = model.score_images([model.read(p)[1] for p in eval_set.paths[:3]])
    assert all(r.anomaly_map.shape == (96, 96) and np.isfinite(r.score) for r in results)


@pytest.mark.parametrize("tile_bank, regions", [("per_region", 4), ("shared", 1)])
def test_add_to_a_tiled_product_extends_each_region_and_scores_the_new_images_by_the_parent(
        tmp_path: Path, make_config, dataset: Path, eval_set, monkeypatch: pytest.MonkeyPatch, tile_bank: str,
        regions: int) -> None:
    _, config = make_config(defaults={"calibration_folds": 3, "tile": 64, "tile_overlap": 32,
                                      "tile_bank": tile_bank})
    train = sorted((dataset / "train" / "good").glob("*.png"))
    enroll(config, "regions", copy_images(train[:6], tmp_path / "first"))
    store = ModelStore(config.store_dir)
    parent = ProductModel.load(store, "regions")
    parent_regions = torch.split(torch.from_numpy(np.asarray(parent.stored.array("bank"))),
                                 parent.stored.metadata["tiling"]["region_sizes"])
    pools: list[torch.Tensor] = []
    real_select = enroll_module.select_bank

    def select(pool, *args, **kwargs):
        pools.append(pool.clone())
        return real_select(pool, *args, **kwargs)

    monkeypatch.setattr(enroll_module, "select_bank", select)
    added = copy_images(train[6:9], tmp_path / "more")
    report = enroll(config, "regions", added, add=True)
    child = ProductModel.load(store, "regions", report.version)
    assert child.stored.metadata["parent_version"] == parent.version and report.bank_images == 3
    # each region's coreset is chosen from its own parent bank and the new images' tiles of that region
    patches_per_tile = int(np.prod(child.stored.metadata["patch_grid"]))
    assert len(pools) == len(parent_regions) == regions
    for pool, old in zip(pools, parent_regions):
        assert pool.shape[0] == old.shape[0] + 3 * patches_per_tile * 4 // regions
        torch.testing.assert_close(pool[:old.shape[0]].float(), old.to(torch.float16).float())
    sizes = child.stored.metadata["tiling"]["region_sizes"]
    assert len(sizes) == regions and sum(sizes) == report.bank_size == child.bank_size
    # the threshold's scores: the parent's cross-fitted ones, then the new images scored by the parent's banks
    scores = np.asarray(child.stored.array("calibration_scores"))
    np.testing.assert_array_equal(scores[:6], np.asarray(parent.stored.array("calibration_scores")))
    by_parent = [r.score for r in parent.score_images([parent.read(p)[1] for p in sorted(added.iterdir())])]
    np.testing.assert_allclose(scores[6:], by_parent, rtol=5e-3)
    assert report.calibration.n_good == 9
    results = child.score_images([child.read(p)[1] for p in eval_set.paths[:2]])
    assert all(r.anomaly_map.shape == (96, 96) and np.isfinite(r.score) for r in results)
