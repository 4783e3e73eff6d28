"""Anomaly maps and the reweighted image score (method.md section 3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from inspectd.config import ProductSettings
from inspectd.scorer import Scorer
from inspectd.scoring import anomaly_maps, gaussian_blur, gaussian_kernel, reweighted_scores
from inspectd.search import BankIndex


def random_maps(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).random(shape, dtype=np.float32))


# --------------------------------------------------------------------------- blur


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.5, 4.0])
def test_blur_matches_scipy(sigma: float) -> None:
    """torch's 'reflect' padding is scipy's 'mirror' (the edge pixel is not repeated)."""
    maps = random_maps(0, (2, 40, 53))
    got = gaussian_blur(maps, sigma).numpy()
    for i in range(2):
        expected = ndimage.gaussian_filter(maps[i].numpy().astype(np.float64), sigma, mode="mirror", truncate=4.0)
        np.testing.assert_allclose(got[i], expected, atol=1e-5)


def test_blur_interior_matches_scipy_reflect() -> None:
    maps = random_maps(1, (1, 60, 60))
    got = gaussian_blur(maps, 4.0)[0].numpy()
    expected = ndimage.gaussian_filter(maps[0].numpy().astype(np.float64), 4.0, mode="reflect", truncate=4.0)
    radius = 16  # int(4 * sigma + 0.5)
    np.testing.assert_allclose(got[radius:-radius, radius:-radius], expected[radius:-radius, radius:-radius],
                               atol=1e-5)


def test_blur_of_tiny_maps_replicates_edges() -> None:
    maps = random_maps(2, (1, 5, 40))  # shorter than the kernel radius in one axis
    got = gaussian_blur(maps, 4.0)[0].numpy()
    expected = ndimage.gaussian_filter(maps[0].numpy().astype(np.float64), 4.0, mode="nearest", truncate=4.0)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert gaussian_blur(random_maps(3, (2, 1, 1)), 4.0).shape == (2, 1, 1)


def test_blur_sigma_zero_is_identity_and_keeps_sum() -> None:
    maps = random_maps(4, (3, 20, 30))
    assert torch.equal(gaussian_blur(maps, 0.0), maps)
    blurred = gaussian_blur(maps, 2.0)
    assert blurred.shape == maps.shape
    assert not torch.allclose(blurred, maps)
    kernel = gaussian_kernel(4.0, torch.device("cpu"))
    assert kernel.numel() == 33 and kernel.sum().item() == pytest.approx(1.0)
    assert torch.equal(kernel, kernel.flip(0))


@pytest.mark.parametrize("grid, out_hw", [((8, 8), (64, 64)), ((12, 20), (96, 160)), ((5, 7), (33, 47))])
def test_anomaly_map_has_the_input_size(grid: tuple[int, int], out_hw: tuple[int, int]) -> None:
    patch = torch.zeros(2, *grid)
    patch[1, grid[0] // 2, grid[1] // 2] = 5.0
    maps = anomaly_maps(patch, out_hw, sigma=4.0)
    assert maps.shape == (2, *out_hw)
    assert torch.allclose(maps[0], torch.zeros(out_hw))
    peak = np.unravel_index(int(maps[1].argmax()), out_hw)
    cell_h, cell_w = out_hw[0] / grid[0], out_hw[1] / grid[1]
    assert abs(peak[0] - (grid[0] // 2 + 0.5) * cell_h) <= cell_h
    assert abs(peak[1] - (grid[1] // 2 + 0.5) * cell_w) <= cell_w
    flat = anomaly_maps(torch.full((1, *grid), 3.0), out_hw, sigma=4.0)
    torch.testing.assert_close(flat, torch.full((1, *out_hw), 3.0))


# ---------------------------------------------------------------- reweighting


def hand_bank(scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A bank where m*'s neighbourhood differs from the worst patch's own.

    p* = (0, 0) has nearest bank vector m* = (1, 0) at distance 1. m*'s nearest other
    bank vector is a = (2.05, 0) (1.05 away); p*'s second nearest is c = (0, 1.5).
    With b = 2: N_b(m*) = {m*, a}, so w = 1 - e^1 / (e^1 + e^2.05); using p*'s own
    neighbours {m*, c} would give 1 - e^1 / (e^1 + e^1.5) instead.
    """
    bank = torch.tensor([[1.0, 0.0], [2.05, 0.0], [0.0, 1.5], [10.0, 10.0], [-10.0, 10.0]]) * scale
    patches = torch.tensor([[0.0, 0.0], [2.05, 0.0], [0.0, 1.5], [10.0, 10.2]]) * scale  # p* first
    return bank, patches


def _score(bank: torch.Tensor, patches: torch.Tensor, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    index = BankIndex(bank, mode="exact")
    dist, idx = index.nearest(patches)
    return reweighted_scores(patches[None], dist[None], idx[None], index, b)


def test_reweighting_uses_the_neighbours_of_m_star() -> None:
    bank, patches = hand_bank()
    score, s_star = _score(bank, patches, 2)
    assert s_star.item() == pytest.approx(1.0)
    expected = 1.0 - math.exp(1.0) / (math.exp(1.0) + math.exp(2.05))
    wrong = 1.0 - math.exp(1.0) / (math.exp(1.0) + math.exp(1.5))
    assert score.item() == pytest.approx(expected, rel=1e-5)
    assert abs(score.item() - wrong) > 0.05


@pytest.mark.parametrize("scale", [100.0, 1e4])
def test_reweighting_is_stable_for_huge_distances(scale: float) -> None:
    bank, patches = hand_bank(scale)
    with np.errstate(over="ignore"):
        assert math.isinf(np.exp(np.float32(scale)))  # a naive exp overflows here
    score, s_star = _score(bank, patches, 2)
    assert torch.isfinite(score).all() and torch.isfinite(s_star).all()
    # w = 1 - 1 / (1 + exp(1.05 * scale)) rounds to 1
    assert score.item() == pytest.approx(s_star.item(), rel=1e-6)
    assert s_star.item() == pytest.approx(scale, rel=1e-5)


def test_weight_formula_against_numpy() -> None:
    rng = np.random.default_rng(5)
    bank = torch.from_numpy(rng.normal(size=(60, 8)).astype(np.float32))
    feats = torch.from_numpy(rng.normal(size=(3, 25, 8)).astype(np.float32) * 1.5)
    index = BankIndex(bank, mode="exact")
    dist, idx = index.nearest(feats.reshape(-1, 8))
    b = 5
    scores, s_star = reweighted_scores(feats, dist.view(3, 25), idx.view(3, 25), index, b)
    B, F = bank.double().numpy(), feats.double().numpy()
    for i in range(3):
        d = np.linalg.norm(F[i][:, None] - B[None], axis=2)  # (P, M)
        worst = d.min(axis=1).argmax()
        m_star = d[worst].argmin()
        support = np.argsort(np.linalg.norm(B - B[m_star], axis=1), kind="stable")[:b]
        assert support[0] == m_star
        dists = np.linalg.norm(F[i][worst] - B[support], axis=1)
        weight = 1.0 - np.exp(dists[0]) / np.exp(dists).sum()
        assert s_star[i].item() == pytest.approx(d.min(axis=1).max(), rel=1e-5)
        assert scores[i].item() == pytest.approx(weight * d.min(axis=1).max(), rel=1e-5)
        assert 0.0 < weight < 1.0


def test_one_neighbour_or_one_vector_means_no_reweighting() -> None:
    bank, patches = hand_bank()
    score, s_star = _score(bank, patches, 1)
    assert score.item() == s_star.item() == pytest.approx(1.0)
    score, s_star = _score(bank[:1], patches, 9)
    assert score.item() == s_star.item()


def test_scorer_end_to_end_on_hand_features() -> None:
    """Scorer: patch features (B, h, w, D) -> reweighted scores and input-size maps."""
    bank, _ = hand_bank()
    settings = ProductSettings(reweight_neighbors=2, blur_sigma=0.0)
    scorer = Scorer(BankIndex(bank, search_dim=1, candidates=2), settings, (8, 12))
    feats = bank[torch.tensor([0, 1, 2, 3, 4, 0])].view(1, 2, 3, 2).clone()
    good_scores, good_maps = scorer.score_features(feats)
    assert good_maps.shape == (1, 8, 12)
    assert good_scores.item() == pytest.approx(0.0, abs=1e-5)
    feats[0, 1, 2] = torch.tensor([0.0, 0.0])  # p*: distance 1 from m*
    scores, maps = scorer.score_features(feats)
    assert scores.item() == pytest.approx(1.0 - math.exp(1.0) / (math.exp(1.0) + math.exp(2.05)), rel=1e-5)
    assert maps[0, 4:, 8:].mean() > maps[0, :4, :4].mean()
    np.testing.assert_allclose(scorer.image_scores(torch.cat([feats, feats]).half(), batch=1),
                               [scores.item()] * 2, rtol=1e-3)
