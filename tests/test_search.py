"""Nearest-neighbour search: the certified fast path against the exact oracle."""

from __future__ import annotations

import pytest
import torch

from inspectd import search
from inspectd.search import BankIndex, exact_nearest


def gaussian(seed: int, n: int, d: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def low_rank(seed: int, n: int, d: int = 192, rank: int = 8, noise: float = 0.05) -> torch.Tensor:
    """Data near a low-dimensional subspace, like CNN patch features: PCA bounds are tight."""
    generator = torch.Generator().manual_seed(seed)
    basis = torch.randn(rank, d, generator=torch.Generator().manual_seed(1000))
    return 3 * torch.randn(n, rank, generator=generator) @ basis + noise * torch.randn(n, d, generator=generator)


def clustered(seed: int, n: int, d: int = 64, clusters: int = 12) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    centers = 6 * torch.randn(clusters, d, generator=torch.Generator().manual_seed(2000))
    return centers[torch.randint(0, clusters, (n,), generator=generator)] + torch.randn(n, d, generator=generator)


def brute_force(queries: torch.Tensor, bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dist = torch.cdist(queries.double(), bank.double(), compute_mode="donot_use_mm_for_euclid_dist")
    best, index = dist.min(dim=1)
    return best.float(), index


def check_same(queries: torch.Tensor, index: BankIndex, images: int = 4) -> None:
    dist, idx = index.nearest(queries)
    exact_dist, exact_idx = exact_nearest(queries, index.bank)
    assert dist.shape == idx.shape == (queries.shape[0],)
    assert (idx == exact_idx).float().mean().item() >= 0.99  # ties may pick another index
    torch.testing.assert_close(dist, exact_dist, rtol=1e-4, atol=1e-5)
    # Wherever the indices differ, both vectors are equally near.
    torch.testing.assert_close(torch.linalg.vector_norm(queries - index.bank[idx], dim=1), exact_dist,
                               rtol=1e-4, atol=1e-5)
    per_image, exact_per_image = dist.view(images, -1), exact_dist.view(images, -1)
    torch.testing.assert_close(per_image.max(dim=1).values, exact_per_image.max(dim=1).values, rtol=1e-5, atol=0)
    assert torch.equal(per_image.argmax(dim=1), exact_per_image.argmax(dim=1))


DATA = {
    "gaussian": lambda seed, n: gaussian(seed, n, 64),
    "low-rank": low_rank,
    "clustered": clustered,
}


@pytest.mark.parametrize("kind", sorted(DATA))
@pytest.mark.parametrize("search_dim, candidates", [(16, 8), (128, 16), (1, 1), (4, 2)])
def test_fast_path_equals_exact(kind: str, search_dim: int, candidates: int) -> None:
    bank, queries = DATA[kind](0, 700), DATA[kind](1, 4 * 96)
    index = BankIndex(bank, search_dim=search_dim, candidates=candidates)
    check_same(queries, index)
    assert index.stats.queries == queries.shape[0]


@pytest.mark.parametrize("kind", sorted(DATA))
@pytest.mark.parametrize("half_dtype", [torch.float16, torch.bfloat16])
def test_half_precision_strategy_matches_exact(kind: str, half_dtype: torch.dtype) -> None:
    """The GPU strategy (half-precision candidates, fp32 re-check), run on the CPU."""
    bank, queries = DATA[kind](0, 700), DATA[kind](1, 4 * 96)
    index = BankIndex(bank, candidates=8, strategy="half", half_dtype=half_dtype)
    assert index.strategy == "half"
    check_same(queries, index)


@pytest.mark.parametrize("kind", sorted(DATA))
@pytest.mark.parametrize("search_dim, candidates", [(16, 8), (128, 16), (4, 2)])
def test_bf16_candidates_give_the_exact_fp32_nearest(kind: str, search_dim: int, candidates: int) -> None:
    """bf16 bound GEMM (the CPU's AMX path), exact fp32 re-check: the same answers as fp32."""
    bank, queries = DATA[kind](0, 700), DATA[kind](1, 4 * 96)
    index = BankIndex(bank, search_dim=search_dim, candidates=candidates, precision="bf16")
    assert index.bf16_bound
    check_same(queries, index)


@pytest.mark.parametrize("offset", [0.0, 50.0])
def test_bf16_certificate_is_a_lower_bound_on_every_other_distance(offset: float) -> None:
    """No bank row outside a query's bf16 candidates is nearer than what the certificate
    assumes, even far from the origin where bf16 rounding is largest; and on feature-like
    data the certificate is tight enough to certify almost every query."""
    for bank, queries in ((offset + clustered(20, 500), offset + clustered(21, 200)),
                          (offset + low_rank(22, 800), offset + low_rank(23, 300))):
        index = BankIndex(bank, search_dim=16, candidates=8, precision="bf16")
        centered = queries - index.mean
        candidate, lower = index._bf16_candidates(index._project(centered))
        true_sq = torch.cdist(queries.double(), bank.double()).square()
        true_sq.scatter_(1, candidate, float("inf"))  # every row that is not a candidate
        assert (true_sq.min(dim=1).values >= lower.double()).all()
    best_sq, _ = index._recheck(centered, centered.square().sum(dim=1, keepdim=True), candidate)
    assert (best_sq <= lower).float().mean() > 0.9


def test_bf16_candidates_with_too_few_certified_fall_back_to_exact() -> None:
    bank, queries = gaussian(8, 600, 48), gaussian(9, 4 * 50, 48)
    index = BankIndex(bank, search_dim=1, candidates=1, precision="bf16")
    check_same(queries, index)
    assert index.stats.uncertified > 0.5 * queries.shape[0]


def test_unknown_strategy() -> None:
    with pytest.raises(ValueError, match="strategy"):
        BankIndex(gaussian(0, 10, 4), strategy="lsh")
    assert BankIndex(gaussian(0, 10, 4)).strategy == "bound"  # the CPU default


def test_exact_oracle_against_brute_force() -> None:
    bank, queries = clustered(3, 500), clustered(4, 300)
    dist, idx = exact_nearest(queries, bank)
    ref_dist, ref_idx = brute_force(queries, bank)
    torch.testing.assert_close(dist, ref_dist, rtol=1e-4, atol=1e-4)
    assert (idx == ref_idx).float().mean().item() >= 0.99


def test_exact_distance_is_clamped_at_zero() -> None:
    bank = 10 + gaussian(5, 50, 32)
    dist, idx = exact_nearest(bank, bank)  # rounding can make ||a||^2+||b||^2-2ab < 0
    assert torch.isfinite(dist).all() and (dist >= 0).all()
    assert dist.max().item() < 0.1  # rounding only: each query is in the bank
    assert torch.equal(idx, torch.arange(50))
    fast, _ = BankIndex(bank, search_dim=8, candidates=4).nearest(bank)
    assert torch.isfinite(fast).all() and (fast >= 0).all()


@pytest.mark.parametrize("mode", ["fast", "exact"])
def test_index_is_precise_far_from_the_origin(mode: str) -> None:
    """Features with a large common offset (post-ReLU CNN features are all positive):
    the index works on centred vectors, so the GEMM identity keeps its precision."""
    bank = 1000 + gaussian(5, 200, 32)
    queries = bank[:50] + 0.01 * gaussian(6, 50, 32)
    dist, idx = BankIndex(bank, search_dim=8, candidates=4, mode=mode).nearest(queries)
    assert torch.equal(idx, torch.arange(50))
    torch.testing.assert_close(dist, torch.linalg.vector_norm(queries - bank[:50], dim=1), rtol=0.05, atol=2e-3)


def test_certified_queries_on_feature_like_data() -> None:
    """On data with a low-dimensional structure almost every query is certified."""
    bank, queries = low_rank(6, 1000), low_rank(7, 500)
    index = BankIndex(bank, search_dim=16, candidates=8)
    check_same(queries, index)
    assert index.stats.uncertified <= 0.05 * queries.shape[0]


def test_forced_uncertified_falls_back_to_exact() -> None:
    bank, queries = gaussian(8, 600, 48), gaussian(9, 4 * 50, 48)
    index = BankIndex(bank, search_dim=1, candidates=1)
    check_same(queries, index)
    assert index.stats.uncertified > 0.5 * queries.shape[0]


def test_all_candidates_is_always_certified() -> None:
    bank, queries = gaussian(10, 40, 16), gaussian(11, 4 * 20, 16)
    index = BankIndex(bank, search_dim=2, candidates=1000)
    assert index.candidates == 40
    check_same(queries, index)
    assert index.stats.uncertified == 0


def test_exact_mode_and_bad_mode() -> None:
    bank, queries = clustered(12, 300), clustered(13, 4 * 25)
    index = BankIndex(bank, mode="exact")
    dist, idx = index.nearest(queries)
    exact_dist, exact_idx = exact_nearest(queries, bank)
    # Not bitwise: torch's reductions round differently with the buffers' alignment.
    assert torch.equal(idx, exact_idx)
    torch.testing.assert_close(dist, exact_dist, rtol=1e-4, atol=1e-5)
    assert index.stats.queries == 0  # the fast path was not used
    with pytest.raises(ValueError, match="mode"):
        BankIndex(bank, mode="approximate")


@pytest.mark.parametrize("mode", ["fast", "exact"])
def test_chunking_gives_identical_results(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    bank, queries = clustered(14, 500), clustered(15, 4 * 77)
    whole_dist, whole_idx = BankIndex(bank, search_dim=8, candidates=4, mode=mode).nearest(queries)
    monkeypatch.setattr(search, "CHUNK_ELEMENTS", 500 * 13 + 7)  # 13 query rows per block
    index = BankIndex(bank, search_dim=8, candidates=4, mode=mode)
    dist, idx = index.nearest(queries)
    assert torch.equal(idx, whole_idx)
    torch.testing.assert_close(dist, whole_dist, rtol=1e-4, atol=1e-5)
    monkeypatch.setattr(search, "CHUNK_ELEMENTS", 1)  # one query row per block
    dist1, idx1 = index.nearest(queries)
    assert torch.equal(idx1, whole_idx)
    torch.testing.assert_close(dist1, whole_dist, rtol=1e-4, atol=1e-5)


def test_neighbours_of_bank() -> None:
    bank = clustered(16, 200)
    bank[57] = bank[3]  # an exact duplicate must not displace the row itself
    index = BankIndex(bank, search_dim=8, candidates=4)
    rows = torch.tensor([3, 0, 57, 199])
    neighbours = index.neighbours_of_bank(rows, 6)
    assert neighbours.shape == (4, 6)
    assert torch.equal(neighbours[:, 0], rows)
    assert set(neighbours[0, :2].tolist()) == {3, 57} and set(neighbours[2, :2].tolist()) == {3, 57}
    ref = torch.cdist(bank[rows].double(), bank.double(), compute_mode="donot_use_mm_for_euclid_dist")
    for r in range(4):
        got = ref[r, neighbours[r]]
        expected = ref[r].sort().values[:6]
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-3)
    assert index.neighbours_of_bank(rows, 1000).shape == (4, 200)


def test_search_dim_and_candidates_are_clamped() -> None:
    index = BankIndex(gaussian(17, 5, 3), search_dim=128, candidates=16)
    assert index.search_dim == 3 and index.candidates == 5
    check_same(gaussian(18, 8, 3), index)
