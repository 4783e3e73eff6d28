"""From patch distances to an anomaly map and an image score (method.md section 3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .search import BankIndex


def gaussian_kernel(sigma: float, device: torch.device) -> torch.Tensor:
    """1-D Gaussian, truncated at 4 sigma like scipy.ndimage.gaussian_filter."""
    radius = max(1, int(4.0 * sigma + 0.5))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, H, W) maps with reflected borders."""
    if sigma <= 0:
        return maps
    kernel = gaussian_kernel(sigma, maps.device)
    radius = kernel.numel() // 2
    x = maps[:, None]
    pad_h = min(radius, x.shape[2] - 1)
    pad_w = min(radius, x.shape[3] - 1)
    if pad_h < radius or pad_w < radius:  # tiny maps: reflection needs pad < size
        x = F.pad(x, (pad_w, pad_w, pad_h, pad_h), mode="replicate")
        x = F.pad(x, (radius - pad_w, radius - pad_w, radius - pad_h, radius - pad_h), mode="replicate")
    else:
        x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    return x[:, 0]


def anomaly_maps(patch_scores: torch.Tensor, out_hw: tuple[int, int], sigma: float) -> torch.Tensor:
    """(B, h, w) patch distances -> (B, H, W) map: bilinear upsampling, Gaussian blur."""
    up = F.interpolate(patch_scores[:, None], size=out_hw, mode="bilinear", align_corners=False)[:, 0]
    return gaussian_blur(up, sigma)


def reweighted_scores(features: torch.Tensor, patch_dist: torch.Tensor, patch_index: torch.Tensor,
                      index: BankIndex, neighbours: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Image scores with the paper's reweighting (Eq. 7), and the raw maxima s*.

    features (B, P, D), patch_dist/patch_index (B, P). For each image: p* is the worst
    patch, m* its nearest bank vector, N_b(m*) the b nearest bank vectors *of m*
    (m* itself first). w = 1 - exp(||p*-m*||) / sum_{m in N_b(m*)} exp(||p*-m||),
    computed as a softmax with the maximum subtracted so it cannot overflow.
    """
    s_star, worst = patch_dist.max(dim=1)
    if neighbours <= 1 or index.bank.shape[0] < 2:
        return s_star.clone(), s_star
    batch = torch.arange(features.shape[0], device=features.device)
    worst_patch = features[batch, worst]  # (B, D)
    m_star = patch_index[batch, worst]  # (B,)
    support = index.neighbours_of_bank(m_star, neighbours)  # (B, b), m* first
    dist = torch.linalg.vector_norm(worst_patch[:, None, :] - index.bank[support], dim=2)
    weight = 1.0 - torch.softmax(dist, dim=1)[:, 0]
    return weight * s_star, s_star
