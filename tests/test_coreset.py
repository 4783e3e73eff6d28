"""Greedy k-center coreset (method.md section 2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from inspectd.coreset import (Coreset, covering_radius, coreset_size, greedy_dense, greedy_pruned, project,
                              select_coreset)

CPU = torch.device("cpu")


def clustered(seed: int, n: int = 2000, d: int = 48, clusters: int = 10, spread: float = 8.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, spread, (clusters, d))
    return (centers[rng.integers(0, clusters, n)] + rng.normal(0.0, 1.0, (n, d))).astype(np.float32)


def uniform(seed: int, n: int = 1500, d: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).random((n, d), dtype=np.float32)


def radius_to_prefix(points: torch.Tensor, chosen: np.ndarray) -> float:
    return covering_radius(points, chosen)


@pytest.mark.parametrize("dim", [16, 40], ids=["16-d", "40-d"])  # 40: centers tested on 16 coordinates first
@pytest.mark.parametrize("data", [clustered(0), clustered(1, clusters=40, spread=3.0), uniform(2)],
                         ids=["clustered", "many-clusters", "uniform"])
def test_dense_and_pruned_select_the_same_points(data: np.ndarray, dim: int) -> None:
    points = project(data, dim, seed=0, device=CPU)
    dense = greedy_dense(points, 250, start=11)
    pruned = greedy_pruned(points, 250, start=11)
    assert dense[0] == pruned[0] == 11
    assert len(set(dense.tolist())) == 250 and len(set(pruned.tolist())) == 250
    if not np.array_equal(dense, pruned):  # rounding ties may pick another, equally far point
        r_dense, r_pruned = covering_radius(points, dense), covering_radius(points, pruned)
        assert abs(r_dense - r_pruned) <= 1e-5 * r_dense
        assert (dense == pruned).mean() > 0.9


def test_greedy_rule_and_covering_radius_property() -> None:
    """Each selected point is the farthest from those before it; the covering radius never
    grows as points are added and is 0 once every point is selected."""
    data = clustered(3, n=300, d=24, clusters=6)
    points = project(data, 8, seed=3, device=CPU)
    order = select_coreset(data, len(data), projection_dim=8, seed=3, method="pruned")
    assert sorted(order.tolist()) == list(range(len(data)))
    radii = [covering_radius(points, order[:k]) for k in range(1, len(data) + 1)]
    assert all(later <= earlier for earlier, later in zip(radii, radii[1:]))
    assert radii[-1] == 0.0
    assert radii[0] > radii[50] > 0
    for k in (1, 2, 5, 20, 100):
        # The radius of the first k points is the distance of point k+1 (greedy: the farthest).
        chosen = points[torch.from_numpy(order[:k])]
        nxt = torch.cdist(points[order[k]][None], chosen).min().item()
        assert nxt == pytest.approx(radii[k - 1], rel=1e-5)


def test_duplicate_points_are_covered_at_once_and_each_index_is_selected_once() -> None:
    """Patches repeat (a saturated or blank region): once one copy is selected the others
    are at distance 0, and asking for more points than distinct ones takes the copies
    left, never an index twice."""
    distinct = clustered(8, n=60, d=24)
    data = np.concatenate([distinct, distinct[:30]])  # points 60..89 repeat points 0..29
    points = torch.from_numpy(data)
    order = greedy_pruned(points, 90, start=0)
    assert sorted(order.tolist()) == list(range(90))
    first = order[:60]
    assert covering_radius(points, first) == 0.0  # every position is covered by then
    assert len({tuple(row) for row in data[first]}) == 60  # by 60 different positions
    # the plain greedy's choice, up to which copy of a point it takes
    np.testing.assert_array_equal(data[first], data[greedy_dense(points, 60, start=0)])


def test_dense_selects_every_point_too() -> None:
    data = uniform(4, n=200, d=8)
    order = select_coreset(data, 200, projection_dim=128, seed=1, method="dense")
    assert sorted(order.tolist()) == list(range(200))
    assert covering_radius(torch.from_numpy(data), order) == 0.0


def test_coreset_beats_a_random_subset() -> None:
    data = clustered(5)
    points = project(data, 16, seed=0, device=CPU)
    greedy = select_coreset(data, 40, projection_dim=16, seed=0)
    random = np.random.default_rng(0).choice(len(data), 40, replace=False)
    assert covering_radius(points, greedy) < covering_radius(points, random)


def test_deterministic_with_seed() -> None:
    data = clustered(6)
    a = select_coreset(data, 100, projection_dim=16, seed=7)
    b = select_coreset(data, 100, projection_dim=16, seed=7)
    c = select_coreset(data, 100, projection_dim=16, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_methods() -> None:
    data = clustered(7, n=500)
    auto = select_coreset(data, 30, projection_dim=16, seed=0, device="cpu")
    np.testing.assert_array_equal(auto, select_coreset(data, 30, projection_dim=16, seed=0, method="pruned"))
    with pytest.raises(ValueError, match="method"):
        select_coreset(data, 30, method="random")


@pytest.mark.parametrize("n, ratio, count, expected", [
    (1000, 0.1, None, 100),
    (1001, 0.1, None, 101),  # ceil
    (1000, 0.01, None, 10),
    (50, 0.001, None, 1),  # at least one
    (1000, 0.1, 37, 37),  # count overrides ratio
    (20, 0.1, 500, 20),  # never more than n
    (7, 1.0, None, 7),
])
def test_coreset_size(n: int, ratio: float, count: int | None, expected: int) -> None:
    assert coreset_size(n, ratio, count) == expected


def test_select_clamps_the_count() -> None:
    data = uniform(8, n=30, d=4)
    assert len(select_coreset(data, 100, projection_dim=4)) == 30
    assert len(select_coreset(data, 0, projection_dim=4)) == 1


def test_projection_chunking_equals_unchunked() -> None:
    data = clustered(9, n=1000, d=64)
    whole = project(data, 16, seed=4, device=CPU)
    chunked = project(data, 16, seed=4, device=CPU, chunk=37)
    assert whole.shape == (1000, 16) and whole.dtype == torch.float32
    torch.testing.assert_close(chunked, whole, rtol=1e-6, atol=1e-5)
    # A Gaussian projection with 1/sqrt(dim) scaling roughly keeps distances (JL).
    d_orig = torch.cdist(torch.from_numpy(data[:50]), torch.from_numpy(data[50:100]))
    d_proj = torch.cdist(whole[:50], whole[50:100])
    ratio = (d_proj / d_orig).flatten()
    assert 0.7 < ratio.median().item() < 1.3
    assert not torch.allclose(whole, project(data, 16, seed=5, device=CPU))


def test_projection_to_more_dims_is_identity() -> None:
    data = uniform(10, n=20, d=8)
    torch.testing.assert_close(project(data, 128, seed=0, device=CPU), torch.from_numpy(data))


@pytest.mark.filterwarnings("ignore:The given NumPy array is not writable")
def test_float16_and_memmap_inputs(tmp_path: Path) -> None:
    data16 = clustered(11, n=1200, d=32).astype(np.float16)
    expected = select_coreset(data16.astype(np.float32), 60, projection_dim=8, seed=2)
    memmap = np.lib.format.open_memmap(tmp_path / "feats.npy", mode="w+", dtype=np.float16, shape=data16.shape)
    memmap[:] = data16
    memmap.flush()
    readonly = np.load(tmp_path / "feats.npy", mmap_mode="r")
    for source in (data16, torch.from_numpy(data16), readonly):
        np.testing.assert_array_equal(select_coreset(source, 60, projection_dim=8, seed=2), expected)
    # chunked projection of a memmap reads it block by block
    torch.testing.assert_close(project(readonly, 8, seed=2, device=CPU, chunk=100),
                               project(data16.astype(np.float32), 8, seed=2, device=CPU), rtol=1e-6, atol=1e-5)


def test_large_sets_are_selected_in_runs_that_compose() -> None:
    """Above max_points_per_run the set is cut into runs; the union still covers the
    whole set nearly as well as one greedy run, with exactly n_select distinct points."""
    data = torch.from_numpy(clustered(4, n=3000, d=32, clusters=30))
    whole = select_coreset(data, 300, projection_dim=32, seed=0)
    runs = select_coreset(data, 300, projection_dim=32, seed=0, max_points_per_run=800)
    assert len(runs) == 300 and len(np.unique(runs)) == 300
    assert runs.min() >= 0 and runs.max() < 3000
    # each run picks its share from its own slice
    assert np.all(np.histogram(runs, bins=[0, 750, 1500, 2250, 3000])[0] == 75)
    assert covering_radius(data, runs) <= 2.0 * covering_radius(data, whole)
    assert covering_radius(data, runs) < covering_radius(data, np.arange(300) * 10)


@pytest.mark.parametrize("resume_at", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("max_points_per_run", [10_000, 700])
def test_a_narrowed_coreset_selects_from_the_subset_alone_and_covers_it_like_a_fresh_one(
        resume_at: float, max_points_per_run: int) -> None:
    """Cross-fitting's fold banks: the final selection narrowed to a subset of the pool
    picks exactly n points of the subset, and covers the subset nearly as well as a
    fresh greedy selection from it."""
    data = torch.from_numpy(clustered(5, n=2000, d=32, clusters=25))
    coreset = Coreset.select(data, 200, projection_dim=32, seed=0, resume_at=resume_at,
                             max_points_per_run=max_points_per_run)
    keep = np.flatnonzero(np.random.default_rng(1).random(2000) < 0.8)
    subset = data[torch.from_numpy(keep)]
    chosen = coreset.narrowed(subset, keep, 200)
    assert len(chosen) == 200 and len(np.unique(chosen)) == 200
    assert chosen.min() >= 0 and chosen.max() < keep.size
    fresh = select_coreset(subset, 200, projection_dim=32, seed=0, max_points_per_run=max_points_per_run)
    assert covering_radius(subset, chosen) <= 1.25 * covering_radius(subset, fresh)
    assert covering_radius(subset, chosen) < covering_radius(subset, np.arange(200) * 4)


def test_a_coreset_selected_without_a_resume_point_cannot_be_narrowed() -> None:
    data = torch.from_numpy(clustered(6, n=500, d=16))
    keep = np.arange(0, 500, 2)
    with pytest.raises(ValueError, match="cannot be narrowed"):
        Coreset.select(data, 50, projection_dim=16).narrowed(data[torch.from_numpy(keep)], keep, 50)
    assert len(Coreset.select(data, 50, projection_dim=16, resume_at=0.5).narrowed(
        data[torch.from_numpy(keep)], keep, 50)) == 50
