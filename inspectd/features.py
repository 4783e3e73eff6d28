"""Patch features (method.md section 1): backbone layers, 3x3 local aggregation, one
vector per position of the shallowest requested layer's grid."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import scipy.sparse as sp
import torch.nn.functional as F
from torch import nn

from .backbone import Trunk
from .precision import autocast

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
    """The reference PatchCore aggregation as a few small grouped convolutions.

    Reference: per layer, unfold each 3x3 neighbourhood (zero padding) into a
    channel-major C*9 vector and adaptive-average-pool it to `embed_dim`; resize every
    layer onto the first layer's grid (bilinear); stack the layers and pool the
    L*embed_dim vector to `embed_dim`. All of it is linear in the features, so per
    layer the two poolings fold into one (embed_dim x C*9) matrix, which is a 3x3
    convolution. Each output only averages a short run of the C*9 values, so the
    convolution is block diagonal over channels: a grouped convolution (for
    wide_resnet50_2 at 1024-d, depthwise on layer2 and two channels per output on
    layer3), computing exactly the same sums. Pooling over channels and bilinear
    resizing commute (one acts per position, the other per channel).
    """

    def __init__(self, channels: Sequence[int], embed_dim: int, device: torch.device):
        self.embed_dim = embed_dim
        merge = pooling_matrix(len(channels) * embed_dim, embed_dim)
        self.layer_convs: list[_GroupedConv | None] = []
        for index, c in enumerate(channels):
            block = (merge[:, index * embed_dim:(index + 1) * embed_dim] @ pooling_matrix(c * 9, embed_dim)).toarray()
            self.layer_convs.append(_GroupedConv.of(block.reshape(embed_dim, c, 3, 3), device))

    def __call__(self, layer_maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """Layer maps (B, C_l, h_l, w_l) -> features (B, embed_dim, H0, W0), float32."""
        b, _, *grid = layer_maps[0].shape
        # Channels-last storage: the caller wants (B, H0, W0, D) rows, so no copy is left to make.
        total = layer_maps[0].new_zeros((b, *grid, self.embed_dim), dtype=torch.float32).permute(0, 3, 1, 2)
        for fmap, conv in zip(layer_maps, self.layer_convs):
            if conv is None:  # this layer feeds none of the outputs
                continue
            out = F.conv2d(fmap.float(), conv.weight, padding=1, groups=conv.groups)
            if tuple(out.shape[-2:]) != tuple(grid):
                out = F.interpolate(out, size=grid, mode="bilinear", align_corners=False)
            total[:, conv.rows] += out
        return total


@dataclass(frozen=True)
class _GroupedConv:
    """The rows of one layer's 3x3 aggregation matrix that are not zero, as a grouped convolution."""

    rows: slice
    groups: int
    weight: torch.Tensor  # (rows, C / groups, 3, 3)

    @classmethod
    def of(cls, kernel: np.ndarray, device: torch.device) -> "_GroupedConv | None":
        """From the dense (E, C, 3, 3) kernel, with the most groups its zeros allow."""
        used = np.flatnonzero(np.abs(kernel).sum(axis=(1, 2, 3)))
        if used.size == 0:
            return None
        rows = slice(int(used[0]), int(used[-1]) + 1)
        kernel = kernel[rows]
        groups = _most_groups(np.abs(kernel).sum(axis=(2, 3)) > 0)
        n_out, n_in = kernel.shape[0] // groups, kernel.shape[1] // groups
        weight = np.concatenate([kernel[g * n_out:(g + 1) * n_out, g * n_in:(g + 1) * n_in] for g in range(groups)])
        return cls(rows, groups, torch.from_numpy(weight.astype(np.float32)).to(device))


def _most_groups(used: np.ndarray) -> int:
    """The largest G such that the (rows x channels) pattern `used` is block diagonal
    with G equal blocks (1 always is)."""
    n_rows, n_channels = used.shape
    for groups in range(math.gcd(n_rows, n_channels), 1, -1):
        if n_rows % groups or n_channels % groups:
            continue
        blocks = used.reshape(groups, n_rows // groups, groups, n_channels // groups).any(axis=(1, 3))
        if not (blocks & ~np.eye(groups, dtype=bool)).any():
            return groups
    return 1


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
    def backbone(self, batch: torch.Tensor, precision: str = "fp32") -> list[torch.Tensor]:
        """Run the trunk in `precision`. Reduced precision runs under autocast in
        channels-last layout (what the bf16/fp16 matrix kernels want); the maps come
        back in that dtype and are aggregated in fp32."""
        if precision == "fp32":
            return self.trunk(batch)
        with autocast(precision, batch.device):
            return self.trunk(batch.contiguous(memory_format=torch.channels_last))

    @torch.inference_mode()
    def aggregate(self, layer_maps: list[torch.Tensor]) -> torch.Tensor:
        """Layer maps -> (B, h, w, D) float32 patch features."""
        if self.aggregation == "official":
            if self._official is None:
                channels = [m.shape[1] for m in layer_maps]
                self._official = OfficialAggregator(channels, self.embed_dim, layer_maps[0].device)
            merged = self._official(layer_maps)
        else:
            merged = aggregate_concat([m.float() for m in layer_maps])
        return merged.permute(0, 2, 3, 1).contiguous()

    @torch.inference_mode()
    def forward(self, batch: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
        return self.aggregate(self.backbone(batch, precision))

    def feature_dim(self) -> int:
        if self.aggregation == "official":
            return self.embed_dim
        probe = self.trunk(torch.zeros(1, 3, 64, 64, device=self.device))
        return sum(m.shape[1] for m in probe)
