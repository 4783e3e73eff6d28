"""Greedy k-center coreset selection (method.md section 2).

Features are projected to a few dimensions with a seeded Gaussian matrix
(Johnson-Lindenstrauss); then, starting from one seeded point, the point farthest
from every selected point is added until the target count is reached.

Two exact implementations of the same greedy rule:
- `dense`: one N x d matrix-vector product per step, no host synchronisation: the
  GPU path;
- `pruned`: the CPU path. A point can only move closer to a new center c if
  d(c, c_x) < 2 d(x, c_x), where c_x is its current nearest center (triangle
  inequality), so each step only touches the points of nearby clusters. It selects
  the same points as `dense` (up to rounding ties) while reading a fraction of the
  memory.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

ProgressFn = Callable[[int, int], None]
MAX_POINTS_PER_RUN = 1 << 18  # 262,144 patches: about 330 images at 224 px


def coreset_size(n_points: int, ratio: float, count: int | None) -> int:
    """Number of points to keep: `count` if given, else ceil(ratio * n), within [1, n]."""
    wanted = count if count is not None else math.ceil(ratio * n_points)
    return max(1, min(n_points, wanted))


def project(features: torch.Tensor | np.ndarray, dim: int, seed: int, device: torch.device,
            chunk: int = 65536) -> torch.Tensor:
    """Random Gaussian projection (N, D) -> (N, dim) float32 on `device`, in chunks so
    that a float16 or memory-mapped feature store is never copied whole."""
    n, d = features.shape
    if dim >= d:
        return _as_tensor(features[:], device)
    generator = torch.Generator().manual_seed(seed)
    matrix = (torch.randn(d, dim, generator=generator) / math.sqrt(dim)).to(device)
    out = torch.empty(n, dim, device=device)
    for start in range(0, n, chunk):
        out[start:start + chunk] = _as_tensor(features[start:start + chunk], device) @ matrix
    return out


def _as_tensor(block: torch.Tensor | np.ndarray, device: torch.device) -> torch.Tensor:
    tensor = torch.from_numpy(np.asarray(block)) if isinstance(block, np.ndarray) else block
    return tensor.to(device=device, dtype=torch.float32)


def select_coreset(features: torch.Tensor | np.ndarray, n_select: int, *, projection_dim: int = 128,
                   seed: int = 0, device: torch.device | str = "cpu", method: str = "auto",
                   max_points_per_run: int = MAX_POINTS_PER_RUN, progress: ProgressFn | None = None) -> np.ndarray:
    """Indices of `n_select` greedy k-center points (in selection order per run).

    Greedy k-center costs about N x n_select. Above `max_points_per_run` points the
    features are cut into contiguous runs (groups of images) and each run contributes
    its share of the coreset: k-center coresets compose, so the union covers the
    whole set, and the cost grows linearly with the number of images instead.
    """
    if method not in ("auto", "dense", "pruned"):
        raise ValueError(f"unknown coreset method {method!r}")
    device = torch.device(device)
    n = features.shape[0]
    n_select = max(1, min(n, n_select))
    runs = max(1, math.ceil(n / max_points_per_run))
    bounds = np.linspace(0, n, runs + 1).round().astype(int)
    chosen = []
    done = 0
    for run, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        share = max(1, round(n_select * (hi - lo) / n)) if run < runs - 1 else n_select - done
        share = max(1, min(hi - lo, share))
        points = project(features[lo:hi], projection_dim, seed, device)
        chosen.append(lo + _greedy(points, share, seed + run, method, progress))
        done += share
    return np.concatenate(chosen)


def _greedy(points: torch.Tensor, n_select: int, seed: int, method: str, progress: ProgressFn | None) -> np.ndarray:
    start = int(np.random.default_rng(seed).integers(points.shape[0]))
    if method == "auto":
        method = "dense" if points.device.type == "cuda" else "pruned"
    if method == "dense":
        return greedy_dense(points, n_select, start, progress)
    return greedy_pruned(points, n_select, start, progress)


def _sq_dist_to(points: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """Squared distances from every row to one center, computed the same way everywhere
    so that both implementations compare identical numbers."""
    return (points - center).square().sum(dim=1)


def greedy_dense(points: torch.Tensor, n_select: int, start: int, progress: ProgressFn | None = None) -> np.ndarray:
    """Plain greedy k-center; the selected index stays on the device between steps."""
    selected = torch.empty(n_select, dtype=torch.long, device=points.device)
    selected[0] = start
    norms = points.square().sum(dim=1)
    min_sq = _sq_dist_to(points, points[start])
    for step in range(1, n_select):
        index = torch.argmax(min_sq)
        selected[step] = index
        # One matrix-vector product per step: ||x||^2 + ||c||^2 - 2 x.c, clamped at 0.
        sq = (norms + norms[index] - 2.0 * (points @ points[index])).clamp_(min=0.0)
        min_sq = torch.minimum(min_sq, sq)
        if progress is not None and step % 1024 == 0:
            progress(step, n_select)
    return selected.cpu().numpy()


def greedy_pruned(points: torch.Tensor, n_select: int, start: int, progress: ProgressFn | None = None) -> np.ndarray:
    """Greedy k-center with triangle-inequality pruning (same selection as dense)."""
    n, d = points.shape
    centers = torch.empty(n_select, d, dtype=points.dtype, device=points.device)
    selected = np.empty(n_select, dtype=np.int64)
    selected[0] = start
    centers[0] = points[start]
    min_sq = _sq_dist_to(points, centers[0])
    owner = torch.zeros(n, dtype=torch.long, device=points.device)  # nearest center of each point
    for step in range(1, n_select):
        index = int(torch.argmax(min_sq))
        selected[step] = index
        center = points[index]
        centers[step] = center
        # Squared center-to-center distances; a point x may get closer only when
        # d(c, c_x)^2 < 4 d(x, c_x)^2.
        center_sq = _sq_dist_to(centers[:step], center)
        candidates = torch.nonzero(center_sq[owner] < 4.0 * min_sq).squeeze(1)
        if candidates.numel():
            new_sq = _sq_dist_to(points[candidates], center)
            closer = new_sq < min_sq[candidates]
            moved = candidates[closer]
            min_sq[moved] = new_sq[closer]
            owner[moved] = step
        if progress is not None and step % 1024 == 0:
            progress(step, n_select)
    return selected


def covering_radius(points: torch.Tensor, selected: np.ndarray | torch.Tensor) -> float:
    """Largest distance from any point to its nearest selected point (in the same space)."""
    chosen = points[torch.as_tensor(selected, dtype=torch.long, device=points.device)]
    worst = torch.zeros((), device=points.device)
    for start in range(0, points.shape[0], 8192):
        # Direct differences, not the GEMM identity: a selected point is at distance exactly 0.
        block = torch.cdist(points[start:start + 8192], chosen, compute_mode="donot_use_mm_for_euclid_dist")
        worst = torch.maximum(worst, block.min(dim=1).values.max())
    return float(worst)
