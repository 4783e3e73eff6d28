"""Greedy k-center coreset selection (method.md section 2).

Features are projected to a few dimensions with a seeded Gaussian matrix
(Johnson-Lindenstrauss); then, starting from one seeded point, the point farthest
from every selected point is added until the target count is reached.

Two exact implementations of the same greedy rule:
- `dense`: one N x d matrix-vector product per step, no host synchronisation: the
  GPU path;
- `pruned`: the CPU path. A point can only move closer to a new center c if
  d(c, c_x) < 2 d(x, c_x), where c_x is its current nearest center (triangle
  inequality), so each step only reads the clusters near c and, in them, the points
  that can move (greedy_clusters.py, compiled). It selects the same points as `dense`
  (up to rounding ties) while reading a few thousand points per step instead of all.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .greedy_clusters import Clusters

ProgressFn = Callable[[int, int], None]
MAX_POINTS_PER_RUN = 1 << 18  # 262,144 patches: about 330 images at 224 px


def coreset_size(n_points: int, ratio: float, count: int | None) -> int:
    """Number of points to keep: `count` if given, else ceil(ratio * n), within [1, n]."""
    wanted = count if count is not None else math.ceil(ratio * n_points)
    return max(1, min(n_points, wanted))


def project(features: torch.Tensor | np.ndarray, dim: int, seed: int, device: torch.device,
            chunk: int = 65536, rows: range | None = None) -> torch.Tensor:
    """Random Gaussian projection (N, D) -> (N, dim) float32 on `device` of `rows` (all
    by default), in chunks so that a float16, memory-mapped or gathered (ImageRows)
    feature store is never copied whole."""
    rows = range(features.shape[0]) if rows is None else rows
    d = features.shape[1]
    if dim >= d:
        return _as_tensor(features[rows.start:rows.stop], device)
    generator = torch.Generator().manual_seed(seed)
    matrix = (torch.randn(d, dim, generator=generator) / math.sqrt(dim)).to(device)
    out = torch.empty(len(rows), dim, device=device)
    for start in range(0, len(rows), chunk):
        block = features[rows.start + start:min(rows.start + start + chunk, rows.stop)]
        out[start:start + chunk] = _as_tensor(block, device) @ matrix
    return out


def _as_tensor(block: torch.Tensor | np.ndarray, device: torch.device) -> torch.Tensor:
    tensor = torch.from_numpy(np.asarray(block)) if isinstance(block, np.ndarray) else block
    return tensor.to(device=device, dtype=torch.float32)


@dataclass
class Cover:
    """The state of a greedy run: the points selected so far (indices, in selection
    order) and each point's nearest selected point, enough to go on selecting."""

    selected: np.ndarray
    owner: torch.Tensor  # per point: position in `selected` of its nearest selected point
    min_sq: torch.Tensor  # per point: squared distance to that point

    @classmethod
    def start(cls, points: torch.Tensor, index: int) -> "Cover":
        return cls(np.array([index], dtype=np.int64), torch.zeros(points.shape[0], dtype=torch.long,
                                                                  device=points.device),
                   _sq_dist_to(points, points[index]))

    def restricted(self, points: torch.Tensor, keep: np.ndarray) -> "Cover | None":
        """This cover on the subset `keep` (sorted indices of the run's points; `points`
        their projections) by the selected points inside it (None if there are none).
        Points whose nearest selected point lies outside are assigned anew."""
        inside = np.isin(self.selected, keep)
        if not inside.any():
            return None
        device = points.device
        position = torch.full((self.selected.size,), -1, dtype=torch.long, device=device)  # -1: dropped
        position[torch.from_numpy(np.flatnonzero(inside)).to(device)] = torch.arange(int(inside.sum()), device=device)
        selected = np.searchsorted(keep, self.selected[inside])
        rows = torch.from_numpy(keep).to(device)
        owner, min_sq = position[self.owner[rows]], self.min_sq[rows].clone()
        centers = points[torch.from_numpy(selected).to(device)]
        for block in torch.split(torch.nonzero(owner < 0).squeeze(1), 1024):
            min_sq[block], owner[block] = torch.cdist(points[block], centers).square_().min(dim=1)
        return Cover(selected, owner, min_sq)


def select_coreset(features: torch.Tensor | np.ndarray, n_select: int, *, projection_dim: int = 128,
                   seed: int = 0, device: torch.device | str = "cpu", method: str = "auto",
                   max_points_per_run: int = MAX_POINTS_PER_RUN, progress: ProgressFn | None = None) -> np.ndarray:
    """Indices of `n_select` greedy k-center points (in selection order per run)."""
    return Coreset.select(features, n_select, projection_dim=projection_dim, seed=seed, device=device,
                          method=method, max_points_per_run=max_points_per_run, progress=progress).indices


@dataclass
class _Run:
    start: int  # first pool row
    stop: int
    selected: np.ndarray  # indices into the run, selection order
    resume: Cover | None  # the state after the first share of `selected`, where a narrowed selection resumes


@dataclass
class Coreset:
    """A greedy k-center coreset of a pool, run by run, that can be narrowed to a subset
    of the pool's rows without starting over (cross-fitting's fold banks).

    Greedy k-center costs about N x n_select. Above `max_points_per_run` points the
    features are cut into contiguous runs (groups of images) and each run contributes
    its share of the coreset: k-center coresets compose, so the union covers the
    whole set, and the cost grows linearly with the number of images instead.
    """

    runs: list[_Run]
    projection_dim: int
    seed: int
    device: torch.device
    method: str

    @property
    def indices(self) -> np.ndarray:
        return np.concatenate([run.start + run.selected for run in self.runs])

    @classmethod
    def select(cls, features: torch.Tensor | np.ndarray, n_select: int, *, projection_dim: int = 128, seed: int = 0,
               device: torch.device | str = "cpu", method: str = "auto", max_points_per_run: int = MAX_POINTS_PER_RUN,
               progress: ProgressFn | None = None, resume_at: float | None = None) -> "Coreset":
        """The greedy selection; `resume_at` is the share of each run's selection after
        which `narrowed` resumes (its state there is kept; 0: from the first point). Without
        it no state is kept and the selection cannot be narrowed."""
        if method not in ("auto", "dense", "pruned"):
            raise ValueError(f"unknown coreset method {method!r}")
        device = torch.device(device)
        if method == "auto":
            method = "dense" if device.type == "cuda" else "pruned"
        n = features.shape[0]
        bounds = np.linspace(0, n, max(1, math.ceil(n / max_points_per_run)) + 1).round().astype(int)
        runs = []
        for run, (lo, hi), share in zip(itertools.count(), zip(bounds[:-1], bounds[1:]),
                                        _shares(np.diff(bounds), n_select)):
            points = project(features, projection_dim, seed, device, rows=range(lo, hi))
            first = int(np.random.default_rng(seed + run).integers(points.shape[0]))
            start, resume = Cover.start(points, first), None
            if resume_at is not None:  # two legs: stop to keep the state there, then go on
                shown = (lambda done, total, share=share: progress(done, share)) if progress else None
                start = resume = _extend(points, start, max(1, round(resume_at * share)), method, shown)
            selected = _extend(points, start, share, method, progress).selected
            runs.append(_Run(int(lo), int(hi), selected, resume))
        return cls(runs, projection_dim, seed, device, method)

    def narrowed(self, subset: torch.Tensor | np.ndarray, keep: np.ndarray, n_select: int,
                 progress: ProgressFn | None = None) -> np.ndarray:
        """Indices into `subset` (the pool rows `keep`, sorted) of `n_select` points
        selected from it alone: in each run, the greedy resumed from the selection's
        kept state, restricted to the subset. Much cheaper than a fresh selection from
        the subset (the early, costly greedy steps are not redone) and close to one
        (bench/fold_banks.py measures both)."""
        if any(run.resume is None for run in self.runs):
            raise ValueError("this coreset was selected without resume_at: it cannot be narrowed")
        parts = [keep[(keep >= run.start) & (keep < run.stop)] - run.start for run in self.runs]
        chosen, offset = [], 0
        for run, rows, share in zip(self.runs, parts, _shares(np.array([rows.size for rows in parts]), n_select)):
            if rows.size:
                points = project(subset, self.projection_dim, self.seed, self.device,
                                 rows=range(offset, offset + rows.size))
                start = run.resume.restricted(points, rows)
                if start is None:  # resumed so early that no selected point is in the subset
                    start = Cover.start(points, int(np.random.default_rng(self.seed).integers(rows.size)))
                selected = (start.selected[:share] if start.selected.size >= share
                            else _extend(points, start, share, self.method, progress).selected)
                chosen.append(offset + selected)
            offset += rows.size
        return np.concatenate(chosen)


def _shares(sizes: np.ndarray, n_select: int) -> list[int]:
    """Each run's share of `n_select`, proportional to its size, at least 1 where it
    has points (none where it has none), summing to n_select within the points there are."""
    n = int(sizes.sum())
    n_select = max(1, min(n, n_select))
    last = int(np.flatnonzero(sizes)[-1])
    shares, done = [], 0
    for run, size in enumerate(sizes):
        share = max(1, round(n_select * size / n)) if run < last else n_select - done
        share = max(1, min(int(size), share)) if size else 0
        shares.append(share)
        done += share
    return shares


def _extend(points: torch.Tensor, cover: Cover, n_select: int, method: str, progress: ProgressFn | None) -> Cover:
    if method == "dense":
        return _extend_dense(points, cover, n_select, progress)
    return _extend_pruned(points, cover, n_select, progress)


def _sq_dist_to(points: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """Squared distances from every row to one center, computed the same way everywhere
    so that both implementations compare identical numbers."""
    return (points - center).square().sum(dim=1)


def greedy_dense(points: torch.Tensor, n_select: int, start: int, progress: ProgressFn | None = None) -> np.ndarray:
    """Plain greedy k-center from `start`."""
    return _extend_dense(points, Cover.start(points, start), n_select, progress).selected


def greedy_pruned(points: torch.Tensor, n_select: int, start: int, progress: ProgressFn | None = None) -> np.ndarray:
    """Greedy k-center with triangle-inequality pruning (same selection as dense)."""
    return _extend_pruned(points, Cover.start(points, start), n_select, progress).selected


def _extend_dense(points: torch.Tensor, cover: Cover, n_select: int, progress: ProgressFn | None) -> Cover:
    """Greedy steps until `n_select` points; the selected index stays on the device
    between steps (no host synchronisation)."""
    first = cover.selected.size
    selected = torch.empty(n_select, dtype=torch.long, device=points.device)
    selected[:first] = torch.from_numpy(cover.selected).to(points.device)
    norms = points.square().sum(dim=1)
    min_sq, owner = cover.min_sq.clone(), cover.owner.clone()
    for step in range(first, n_select):
        index = torch.argmax(min_sq)
        selected[step] = index
        # One matrix-vector product per step: ||x||^2 + ||c||^2 - 2 x.c, clamped at 0.
        sq = (norms + norms[index] - 2.0 * (points @ points[index])).clamp_(min=0.0)
        owner = torch.where(sq < min_sq, step, owner)
        min_sq = torch.minimum(min_sq, sq)
        if progress is not None and step % 1024 == 0:
            progress(step, n_select)
    return Cover(selected.cpu().numpy(), owner, min_sq)


def _extend_pruned(points: torch.Tensor, cover: Cover, n_select: int, progress: ProgressFn | None) -> Cover:
    """Greedy steps until `n_select` points, cluster by cluster (greedy_clusters.py):
    only the clusters and members that the new center can take points from are read."""
    if cover.selected.size >= n_select:
        return cover
    state = Clusters.of(points.detach().cpu().float().contiguous().numpy(), cover.min_sq.cpu().numpy().copy(),
                        cover.owner.cpu().numpy().copy(), cover.selected, n_select)
    state.extend(cover.selected.size, n_select, progress)
    return Cover(state.selected, torch.from_numpy(state.owner).to(points.device),
                 torch.from_numpy(state.min_sq).to(points.device))


def covering_radius(points: torch.Tensor, selected: np.ndarray | torch.Tensor) -> float:
    """Largest distance from any point to its nearest selected point (in the same space)."""
    chosen = points[torch.as_tensor(selected, dtype=torch.long, device=points.device)]
    worst = torch.zeros((), device=points.device)
    for start in range(0, points.shape[0], 8192):
        # Direct differences, not the GEMM identity: a selected point is at distance exactly 0.
        block = torch.cdist(points[start:start + 8192], chosen, compute_mode="donot_use_mm_for_euclid_dist")
        worst = torch.maximum(worst, block.min(dim=1).values.max())
    return float(worst)
