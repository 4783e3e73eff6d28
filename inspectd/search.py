"""Nearest-neighbour search of patch features against a product's memory bank.

`exact_nearest` is the plain fp32 oracle of method.md section 3: the GEMM identity
||a||^2 + ||b||^2 - 2ab in chunks, clamped at 0 before the square root.

`BankIndex.nearest` is the fast path. Two strategies, chosen by device:

"half" (CUDA): one half-precision GEMM against the whole bank finds `candidates`
nearest rows per query, which are then re-checked exactly in fp32. Tensor cores make
the GEMM cheap, and there is no host synchronisation in it.

"bound" (CPU, exact answers): the bank is rotated onto its principal axes once; a query compares against the bank in only the
first `search_dim` axes plus one extra coordinate, the norm of the remainder:

    ||a - b||^2  =  ||P(a - b)||^2 + ||R(a - b)||^2  >=  ||Pa - Pb||^2 + (||Ra|| - ||Rb||)^2

so one small GEMM gives a lower bound on every distance. The `candidates` bank vectors
with the smallest bounds are re-checked exactly; when the best exact distance is no
larger than the largest bound among them, no other vector can be nearer and the answer
is certified. The rare uncertified queries fall back to the exact search.

With `precision="bf16"` (CPUs with AMX/AVX512-BF16) the bound is one bf16 GEMM whose
inputs are exact bf16 numbers: the projected query x and bank row y are rounded to bf16
(x~, y~), and their squared norms are split into two bf16 parts (hi + lo), so that

    [x~, |x~|^2_hi, |x~|^2_lo, 1, 1] . [-2 y~, 1, 1, |y~|^2_hi, |y~|^2_lo]  =  ||x~ - y~||^2

up to the norm split (relative 2^-16). bf16 x bf16 products are exact in fp32 and
accumulate in fp32 (error at most n 2^-24 of the sum of |terms|); the one lossy step is
rounding the result to bf16, relative u = 2^-8 of the small squared distance itself.
The rounding of the inputs is paid back in distance, with the triangle inequality and
each vector's measured rounding displacement (||x - x~||, ||y - y~||, about 0.2 % of
their norms):

    ||a - b||  >=  ||x - y||  >=  ||x~ - y~|| - ||x - x~|| - ||y - y~||

so the certificate stays a proven lower bound on every true distance, and the reported
distances are the exact fp32 ones of the re-check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .precision import cpu_bf16_features

if TYPE_CHECKING:
    from .config import ProductSettings

CHUNK_ELEMENTS = 1 << 21  # query rows x bank rows per block: 8 MB in fp32 stays in cache
GPU_CHUNK_ELEMENTS = 1 << 27  # on a GPU, large blocks keep the tensor cores busy
HALF_CANDIDATES = 32
BF16_UNIT_ROUNDOFF = 2.0 ** -8  # round to nearest with an 8-bit significand
FP32_UNIT_ROUNDOFF = 2.0 ** -24


def exact_nearest(queries: torch.Tensor, bank: torch.Tensor, bank_sq: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance, index) of each query's nearest bank row, exact fp32, in chunks."""
    if bank_sq is None:
        bank_sq = bank.square().sum(dim=1)
    rows = max(1, CHUNK_ELEMENTS // max(1, bank.shape[0]))
    dists, indices = [], []
    for start in range(0, queries.shape[0], rows):
        block = queries[start:start + rows]
        sq = block.square().sum(dim=1, keepdim=True) + bank_sq[None, :] - 2.0 * (block @ bank.T)
        best, index = sq.min(dim=1)
        dists.append(best.clamp_(min=0.0).sqrt_())
        indices.append(index)
    return torch.cat(dists), torch.cat(indices)


@dataclass
class SearchStats:
    queries: int = 0
    uncertified: int = 0


class BankIndex:
    """A memory bank resident on a device, with the certified fast search."""

    def __init__(self, bank: torch.Tensor, *, search_dim: int = 128, candidates: int = 8,
                 mode: str = "fast", strategy: str = "auto", half_dtype: torch.dtype = torch.float16,
                 precision: str = "fp32"):
        if mode not in ("fast", "exact"):
            raise ValueError(f"unknown search mode {mode!r}")
        if strategy not in ("auto", "bound", "half"):
            raise ValueError(f"unknown search strategy {strategy!r}")
        self.bank = bank.float().contiguous()
        # Distances are translation invariant; centring on the bank mean keeps the
        # norms small, so the GEMM identity loses far less to cancellation in fp32.
        self.mean = self.bank.mean(dim=0)
        self.centered = (self.bank - self.mean).contiguous()
        self.bank_sq = self.centered.square().sum(dim=1)
        self.mode = mode
        self.stats = SearchStats()
        m, d = self.bank.shape
        self.candidates = min(candidates, m)
        self.search_dim = min(search_dim, d)
        if strategy == "auto":
            strategy = "half" if self.bank.device.type == "cuda" else "bound"
        self.strategy = strategy
        # bf16 only speeds up the CPU bound's GEMM where the CPU has bf16 matrix units.
        self.bf16_bound = precision == "bf16" and strategy == "bound"
        if mode == "fast" and strategy == "bound":
            self._build_projection()
        if mode == "fast" and strategy == "half":
            self.half_bank = self.centered.to(half_dtype)

    @property
    def device(self) -> torch.device:
        return self.bank.device

    def _build_projection(self) -> None:
        centered = self.centered
        # Principal axes from the d x d covariance (float64 for a stable eigensolver).
        cov = (centered.T.double() @ centered.double()) / max(1, centered.shape[0] - 1)
        _, vectors = torch.linalg.eigh(cov)
        self.axes = vectors[:, -self.search_dim:].flip(1).float().contiguous()  # (d, r)
        bank_proj = self._project(centered)  # (m, r + 1)
        bank_centered_sq = self.bank_sq
        # Laid out so that one GEMM with [proj, ||q||^2, 1] yields the bound directly:
        # ||q||^2 + ||b||^2 - 2 proj(q).proj(b), with no full-size temporaries.
        ones = torch.ones_like(bank_centered_sq)[:, None]
        self.bound_rhs = torch.cat([-2.0 * bank_proj, ones, bank_centered_sq[:, None]], dim=1).T.contiguous()
        # Rounding in the bound's GEMM, scaled to the data: subtracted before certifying.
        self.slack = 1e-5 * float(bank_centered_sq.max())
        if self.bf16_bound:
            rounded = bank_proj.to(torch.bfloat16)
            # The largest distance any bank row moved by rounding (module docstring).
            self.bf16_shift = float(torch.linalg.vector_norm(bank_proj - rounded.float(), dim=1).max())
            self.bf16_norm = float(torch.linalg.vector_norm(rounded.float(), dim=1).max())
            ones = torch.ones_like(rounded[:, :1])
            self.bf16_rhs = torch.cat([-2.0 * rounded, ones, ones, *_split_bf16(_sq_norm(rounded))],
                                      dim=1).T.contiguous()

    def _project(self, centered: torch.Tensor) -> torch.Tensor:
        """Centred vectors -> [coordinates on the principal axes, norm of the rest]."""
        head = centered @ self.axes
        rest_sq = (centered.square().sum(dim=1) - head.square().sum(dim=1)).clamp_(min=0.0)
        return torch.cat([head, rest_sq.sqrt()[:, None]], dim=1)

    def nearest(self, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(distance, bank index) of each query's nearest bank vector."""
        queries = queries.float() - self.mean
        if self.mode == "exact":
            return exact_nearest(queries, self.centered, self.bank_sq)
        block = self._nearest_block if self.strategy == "bound" else self._nearest_block_half
        chunk = CHUNK_ELEMENTS if self.device.type == "cpu" else GPU_CHUNK_ELEMENTS
        rows = max(1, chunk // max(1, self.bank.shape[0]))
        dists, indices = [], []
        for start in range(0, queries.shape[0], rows):
            d, i = block(queries[start:start + rows])
            dists.append(d)
            indices.append(i)
        return torch.cat(dists), torch.cat(indices)

    def _nearest_block(self, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest bank rows of centred queries."""
        centered_sq = queries.square().sum(dim=1, keepdim=True)
        projected = self._project(queries)
        if self.bf16_bound:
            candidate, lower = self._bf16_candidates(projected)
        else:
            bounds = torch.cat([projected, centered_sq, torch.ones_like(centered_sq)], dim=1) @ self.bound_rhs
            bound_sq, candidate = torch.topk(bounds, self.candidates, dim=1, largest=False, sorted=False)
            lower = bound_sq.max(dim=1).values - self.slack
        best_sq, index = self._recheck(queries, centered_sq, candidate)
        certified = best_sq <= lower
        if self.candidates == self.bank.shape[0]:
            certified[:] = True
        dist = best_sq.clamp_(min=0.0).sqrt_()
        self.stats.queries += queries.shape[0]
        missing = torch.nonzero(~certified).squeeze(1)
        if missing.numel():
            self.stats.uncertified += int(missing.numel())
            dist[missing], index[missing] = exact_nearest(queries[missing], self.centered, self.bank_sq)
        return dist, index

    def _bf16_candidates(self, projected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Candidates ranked by the bf16 GEMM of exact bf16 inputs, and for each query the
        squared distance that no other bank row can be nearer than (module docstring)."""
        rounded = projected.to(torch.bfloat16)
        shift = torch.linalg.vector_norm(projected - rounded.float(), dim=1)
        sq_norm = _sq_norm(rounded)
        ones = torch.ones_like(rounded[:, :1])
        lhs = torch.cat([rounded, *_split_bf16(sq_norm), ones, ones], dim=1)
        approx_sq = lhs @ self.bf16_rhs  # bf16 result
        bound_sq, candidate = torch.topk(approx_sq, self.candidates, dim=1, largest=False, sorted=False)
        # Undo the result's rounding, the fp32 accumulation and the norm split ...
        terms = (sq_norm.sqrt().float() + self.bf16_norm).square()
        accumulation = (lhs.shape[1] + 2) * FP32_UNIT_ROUNDOFF * terms + 2 * BF16_UNIT_ROUNDOFF ** 2 * terms
        rounded_sq = (bound_sq.max(dim=1).values.float() / (1 + BF16_UNIT_ROUNDOFF) - accumulation).clamp_(min=0.0)
        # ... then the inputs' rounding, in distance; the re-check's own rounding last.
        lower = (rounded_sq.sqrt_() - shift - self.bf16_shift).clamp_(min=0.0)
        return candidate, torch.where(lower > 0, lower.square() - self.slack, -math.inf)

    def _recheck(self, queries: torch.Tensor, queries_sq: torch.Tensor, candidate: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact fp32 squared distance to the best of each query's candidates, and its row."""
        exact_sq = torch.baddbmm(self.bank_sq[candidate][:, :, None], self.centered[candidate], queries[:, :, None],
                                 alpha=-2.0).squeeze(2) + queries_sq
        best_sq, slot = exact_sq.min(dim=1)
        return best_sq, candidate.gather(1, slot[:, None]).squeeze(1)

    def _nearest_block_half(self, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Candidates from a half-precision GEMM, re-checked exactly in fp32."""
        queries_sq = queries.square().sum(dim=1, keepdim=True)
        approx = self.bank_sq[None, :] - 2.0 * (queries.to(self.half_bank.dtype) @ self.half_bank.T).float()
        # Rounding in half precision can reorder near neighbours: re-check more of them.
        k = min(self.bank.shape[0], max(self.candidates, HALF_CANDIDATES))
        candidate = torch.topk(approx, k, dim=1, largest=False, sorted=False).indices
        best_sq, index = self._recheck(queries, queries_sq, candidate)
        self.stats.queries += queries.shape[0]
        return best_sq.clamp_(min=0.0).sqrt_(), index

    def neighbours_of_bank(self, rows: torch.Tensor, k: int) -> torch.Tensor:
        """Indices (len(rows), k) of the k nearest bank vectors of the given bank rows,
        the row itself first (distance 0)."""
        k = min(k, self.bank.shape[0])
        points = self.centered[rows]
        sq = self.bank_sq[rows][:, None] + self.bank_sq[None, :] - 2.0 * (points @ self.centered.T)
        sq[torch.arange(rows.shape[0], device=sq.device), rows] = -1.0  # the row itself
        return torch.topk(sq, k, dim=1, largest=False).indices


def _sq_norm(rows: torch.Tensor) -> torch.Tensor:
    """Squared norms of bf16 rows, in float64 (exact enough to split)."""
    return rows.double().square().sum(dim=1)


def _split_bf16(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 values as two bf16 columns whose sum is within 2^-16 of them."""
    high = values.to(torch.bfloat16)
    low = (values - high.double()).to(torch.bfloat16)
    return high[:, None], low[:, None]


def bank_index(bank: torch.Tensor, settings: "ProductSettings", mode: str | None = None) -> BankIndex:
    """A product's bank index with its search settings. The candidate stage does not
    follow the model's precision: its answers are certified exact fp32 either way, so a
    CPU with native bf16 always gets the faster bf16 bound (bench/search.py: 0.33 % of
    bsdata's patches needed the exact fallback); a GPU uses its half-precision stage."""
    precision = "bf16" if bank.device.type == "cpu" and cpu_bf16_features() else "fp32"
    return BankIndex(bank, search_dim=settings.search_dim, candidates=settings.search_candidates,
                     mode=mode or settings.search, precision=precision)
