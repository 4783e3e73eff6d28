"""Patch features (method.md section 1): backbone layers, 3x3 local aggregation, one
vector per position of the shallowest requested layer's grid."""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch
import scipy.sparse as sp
import torch.nn.functional as F
from torch import nn

from .backbone import Trunk

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def pooling_matrix(n_in: int, n_out: int) -> sp.csr_matrix:
    """The linear map of torch's adaptive_avg_pool1d from n_in to n_out values."""
    rows, cols, vals = [], [], []
    for i in range(n_out):
        start, end = (i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)
        rows += [i] * (end - start)
        cols += range(start, end)
        vals += [1.0 / (end - start)] * (end - start)
    return sp.csr_matrix((vals, (rows, cols)), shape=(n_out, n_in), dtype=np.float64)


class OfficialAggregator:
    """The reference PatchCore aggregation, computed without materialising the unfold.

    Reference: per layer, unfold each 3x3 neighbourhood (zero padding) into a
    channel-major C*9 vector and adaptive-average-pool it to `embed_dim`; resize every
    layer onto the first layer's grid (bilinear); stack the layers and pool the
    L*embed_dim vector to `embed_dim`. All of it is linear in the features, so per
    layer the two poolings fold into one sparse (embed_dim x C*9) matrix, split by the
    9 neighbourhood offsets: out = sum_k shift_k(M_k @ f). Pooling over channels and
    bilinear resizing commute (one acts per position, the other per channel).
    """

    def __init__(self, channels: Sequence[int], embed_dim: int, device: torch.device):
        self.embed_dim = embed_dim
        merge = pooling_matrix(len(channels) * embed_dim, embed_dim)
        self.offset_maps: list[list[torch.Tensor]] = []
        for index, c in enumerate(channels):
            block = merge[:, index * embed_dim:(index + 1) * embed_dim] @ pooling_matrix(c * 9, embed_dim)
            block = block.tocsc()
            self.offset_maps.append([_to_torch_csr(block[:, k::9], device) for k in range(9)])

    def __call__(self, layer_maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """Layer maps (B, C_l, h_l, w_l) -> features (B, embed_dim, H0, W0)."""
        grid = layer_maps[0].shape[-2:]
        total = None
        for fmap, offsets in zip(layer_maps, self.offset_maps):
            b, c, h, w = fmap.shape
            flat = fmap.permute(1, 0, 2, 3).reshape(c, b * h * w)
            out = torch.zeros(self.embed_dim, b, h, w, device=fmap.device, dtype=fmap.dtype)
            for k, matrix in enumerate(offsets):
                dy, dx = k // 3 - 1, k % 3 - 1
                y = (matrix @ flat).view(self.embed_dim, b, h, w)
                # unfold takes input position (i+dy, j+dx) into output position (i, j)
                out[:, :, max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)] += \
                    y[:, :, max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)]
            out = out.permute(1, 0, 2, 3)
            if (h, w) != tuple(grid):
                out = F.interpolate(out, size=grid, mode="bilinear", align_corners=False)
            total = out if total is None else total + out
        return total


def _to_torch_csr(matrix: sp.spmatrix, device: torch.device) -> torch.Tensor:
    csr = matrix.tocsr()
    with warnings.catch_warnings():  # torch marks sparse CSR as beta; matmul with it is stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(torch.from_numpy(csr.indptr.astype(np.int64)),
                                       torch.from_numpy(csr.indices.astype(np.int64)),
                                       torch.from_numpy(csr.data.astype(np.float32)), size=csr.shape,
                                       check_invariants=True).to(device)


def aggregate_concat(layer_maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """3x3 average pooling per layer, resized onto the first layer's grid, concatenated."""
    grid = layer_maps[0].shape[-2:]
    maps = []
    for fmap in layer_maps:
        pooled = F.avg_pool2d(fmap, kernel_size=3, stride=1, padding=1)
        if pooled.shape[-2:] != grid:
            pooled = F.interpolate(pooled, size=grid, mode="bilinear", align_corners=False)
        maps.append(pooled)
    return torch.cat(maps, dim=1)


class PatchFeatureExtractor(nn.Module):
    """Images (B, H, W, 3) float RGB in [0, 1] -> patch features (B, h, w, D) float32."""

    def __init__(self, trunk: Trunk, aggregation: str, embed_dim: int):
        super().__init__()
        if aggregation not in ("official", "concat"):
            raise ValueError(f"unknown aggregation {aggregation!r}")
        self.trunk = trunk
        self.aggregation = aggregation
        self.embed_dim = embed_dim
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self._official: OfficialAggregator | None = None

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def to_tensor(self, images: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
        """Stack HxWx3 float arrays into a normalised (B, 3, H, W) tensor on the device."""
        batch = torch.from_numpy(np.ascontiguousarray(np.stack(images), dtype=np.float32))
        batch = batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        return (batch - self.mean) / self.std

    @torch.inference_mode()
    def backbone(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """Run the trunk; half precision on CUDA (the features are aggregated in fp32)."""
        if batch.device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.float16):
                maps = self.trunk(batch.contiguous(memory_format=torch.channels_last))
            return [m.float() for m in maps]
        return self.trunk(batch)

    @torch.inference_mode()
    def aggregate(self, layer_maps: list[torch.Tensor]) -> torch.Tensor:
        if self.aggregation == "official":
            if self._official is None:
                channels = [m.shape[1] for m in layer_maps]
                self._official = OfficialAggregator(channels, self.embed_dim, layer_maps[0].device)
            merged = self._official(layer_maps)
        else:
            merged = aggregate_concat(layer_maps)
        return merged.permute(0, 2, 3, 1).contiguous()

    @torch.inference_mode()
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.aggregate(self.backbone(batch))

    def feature_dim(self) -> int:
        if self.aggregation == "official":
            return self.embed_dim
        probe = self.trunk(torch.zeros(1, 3, 64, 64, device=self.device))
        return sum(m.shape[1] for m in probe)
