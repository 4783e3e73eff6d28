"""Cross-fitted calibration: every usable good image in the final bank, every
calibration score from a bank that did not contain the image, the conformal rank over
all of them, `--add`, and the false-alarm rate on unseen good images."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from inspectd import crossfit as crossfit_module, enroll as enroll_module
from inspectd.calibration import calibrate
from inspectd.crossfit import cross_fitted_scores, fold_of_images
from inspectd.enroll import enroll
from inspectd.model import ProductModel
from inspectd.store import ModelStore
from inspectd.synthetic import generate_images

from engine_support import SOURCE_HW, copy_images

PATCHES = 24 * 24  # resnet18 layer1 at 96 px


def test_folds_are_balanced_seeded_and_cover_every_image() -> None:
    fold = fold_of_images(23, 5, seed=3)
    assert sorted(np.bincount(fold).tolist()) == [4, 4, 5, 5, 5]
    np.testing.assert_array_equal(fold, fold_of_images(23, 5, seed=3))
    assert not np.array_equal(fold, fold_of_images(23, 5, seed=4))
    assert sorted(fold_of_images(3, 5, seed=0).tolist()) == [0, 1, 2]  # never more folds than images
    with pytest.raises(ValueError):
        fold_of_images(1, 5, seed=0)


def test_each_fold_is_scored_by_one_bank_chosen_from_the_other_folds() -> None:
    fold = fold_of_images(11, 4, seed=0)
    pools: list[set[int]] = []
    scored_by: list[tuple[set[int], set[int]]] = []

    def select_bank(images: np.ndarray) -> torch.Tensor:
        pools.append(set(images.tolist()))
        return torch.from_numpy(images[::2].astype(np.float32))[:, None]  # rows carry their image number

    def score(bank: torch.Tensor, images: np.ndarray) -> np.ndarray:
        scored_by.append((set(bank[:, 0].int().tolist()), set(images.tolist())))
        return images * 10.0

    scores = cross_fitted_scores(fold, select_bank, score).scores
    np.testing.assert_array_equal(scores, np.arange(11) * 10.0)
    folds = [{i for i in range(11) if fold[i] == f} for f in range(4)]
    # one selection per fold, from exactly the images outside it (not a union of
    # per-fold selections)
    assert sorted(pools, key=sorted) == sorted((set(range(11)) - inside for inside in folds), key=sorted)
    assert sorted(map(sorted, (images for _, images in scored_by))) == sorted(map(sorted, folds))
    for bank_images, images in scored_by:
        assert not bank_images & images  # never a row of an image it scores
        assert bank_images == set(sorted(set(range(11)) - images)[::2])  # the selection from the others


@pytest.fixture
def bank_spy(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """Records the images of every coreset pool, the size of every coreset and the images
    of every scored fold."""
    seen: dict[str, list] = {"pools": [], "sizes": [], "scored": []}
    real_score_folds, real_select = crossfit_module.score_folds, enroll_module.select_bank
    real_choose, real_narrowed = enroll_module.choose_coreset, enroll_module.narrowed_bank

    def score_folds_spy(fitted, score):
        def recorded(bank, images):
            seen["scored"].append(set(images.tolist()))
            return score(bank, images)
        return real_score_folds(fitted, recorded)

    def select(pool, *args, **kwargs):  # --add's coreset
        seen["pools"].append(pool.shape[0])
        chosen = real_select(pool, *args, **kwargs)
        seen["sizes"].append(chosen.shape[0])
        return chosen

    def choose(pool, *args, **kwargs):  # a first enrollment's final coreset
        seen["pools"].append(pool.shape[0])
        coreset = real_choose(pool, *args, **kwargs)
        seen["sizes"].append(coreset.indices.size)
        return coreset

    def narrowed(coreset, pool, members, *args, **kwargs):  # a fold's bank
        seen["pools"].append(set(pool.images[members].tolist()))
        chosen = real_narrowed(coreset, pool, members, *args, **kwargs)
        seen["sizes"].append(chosen.shape[0])
        return chosen

    monkeypatch.setattr(enroll_module, "choose_coreset", choose)
    monkeypatch.setattr(enroll_module, "narrowed_bank", narrowed)
    monkeypatch.setattr(crossfit_module, "score_folds", score_folds_spy)
    monkeypatch.setattr(enroll_module, "select_bank", select)
    return seen


def test_enroll_cross_fits_and_banks_every_usable_image(tmp_path: Path, make_config, dataset: Path,
                                                         bank_spy: dict[str, list]) -> None:
    _, config = make_config(defaults={"calibration_folds": 3})
    good = copy_images(sorted((dataset / "train" / "good").glob("*.png"))[:7], tmp_path / "good")
    (good / "broken.png").write_bytes(b"")  # not usable: no part of the bank or the calibration
    report = enroll(config, "fit", good)
    # the final bank's coreset from the patches of all 7, then one bank per fold from the
    # patches of the images outside it (narrowed from the final one), each fold scored once by its own
    final, *pools = bank_spy["pools"]
    assert len(pools) == 3 and all(len(pool) < 7 for pool in pools)
    assert sorted(map(sorted, bank_spy["scored"])) == sorted(sorted(set(range(7)) - pool) for pool in pools)
    assert sorted(i for pool in pools for i in set(range(7)) - pool) == list(range(7))  # the folds partition
    assert final == 7 * PATCHES
    model = ProductModel.load(ModelStore(config.store_dir), "fit")
    meta = model.stored.metadata
    assert report.bank_images == 7 and meta["coreset"]["source_patches"] == 7 * PATCHES
    assert len(meta["images"]["bank"]) == 7
    assert report.bank_size == math.ceil(0.1 * 7 * PATCHES)
    assert bank_spy["sizes"] == [report.bank_size] * 4  # each fold's bank as large as the final one
    scores = model.stored.array("calibration_scores")
    assert scores.shape == (7,)
    assert model.threshold == calibrate(scores, 0.2).threshold == np.sort(scores)[math.ceil(8 * 0.8) - 1]
    # the final bank (which saw every image) scores each image lower than the bank that did not
    folder = tmp_path / "good"
    in_bank = [r.score for r in model.score_images([model.read(folder / e["name"])[1] for e in meta["images"]["bank"]])]
    assert np.all(np.asarray(in_bank) < scores)


def test_add_keeps_the_scores_and_scores_new_images_with_the_parent_bank(
        tmp_path: Path, make_config, dataset: Path, bank_spy: dict[str, list]) -> None:
    _, config = make_config(defaults={"calibration_folds": 3})
    images = sorted((dataset / "train" / "good").glob("*.png"))
    enroll(config, "grow", copy_images(images[:6], tmp_path / "day1"))
    store = ModelStore(config.store_dir)
    parent = ProductModel.load(store, "grow")
    new = images[6:10]
    expected_new = [r.score for r in parent.score_images([parent.read(p)[1] for p in new])]
    bank_spy["scored"].clear()
    bank_spy["pools"].clear()
    second = enroll(config, "grow", copy_images(new + images[:1], tmp_path / "day2"), add=True)
    assert bank_spy["scored"] == []  # no earlier image is cross-fitted again
    assert bank_spy["pools"] == [parent.index.bank.shape[0] + 4 * PATCHES]
    assert second.bank_images == second.calibration_images == 4
    child = ProductModel.load(store, "grow")
    scores = child.stored.array("calibration_scores")
    np.testing.assert_array_equal(scores[:6], parent.stored.array("calibration_scores"))
    np.testing.assert_allclose(scores[6:], expected_new, rtol=1e-3)
    assert child.threshold == calibrate(scores, 0.2).threshold
    assert child.calibration.n_good == 10 and child.calibration.folds == 3
    assert len(child.stored.metadata["images"]["bank"]) == 10


def test_false_alarm_rate_on_unseen_good_images(tmp_path: Path, enrolled, session_model: ProductModel) -> None:
    """alpha = 0.2 from 20 cross-fitted scores, 60 unseen good images: the observed rate
    is about alpha or below (binomial sd at 60 images: 0.05)."""
    paths = generate_images(tmp_path / "unseen", 60, 0, category="tiles", size=SOURCE_HW, seed=7)
    unseen = np.array([r.score for r in session_model.score_images([session_model.read(p)[1] for p in paths])])
    assert np.mean(unseen >= session_model.threshold) <= 0.2 + 0.1
    # What the check guards against: the bank images' own scores (the bank saw them)
    # would set a threshold that flags most new good parts.
    banked = sorted((enrolled.dataset / "train" / "good").glob("*.png"))
    own = [r.score for r in session_model.score_images([session_model.read(p)[1] for p in banked])]
    assert np.mean(unseen >= calibrate(np.array(own), 0.2).threshold) > 0.5
