"""Batched, on-device augmentation of uint8 views: random resized crop + rotation (one affine warp via
grid_sample) and brightness / contrast jitter. Random numbers come from a CPU generator, so the same seed
gives the same augmentations on any device."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def augment(images: torch.Tensor, gen: torch.Generator, scale: tuple[float, float] = (0.7, 1.0),
            rotate_deg: float = 10.0, jitter: float = 0.2) -> torch.Tensor:
    """images: uint8 (B, S, S) on any device -> float (B, 1, S, S) in [0, 1]."""
    B = images.shape[0]
    x = images.float().div_(255.0).unsqueeze(1)
    u = torch.rand(B, 6, generator=gen)  # all per-sample randomness in one draw
    side = torch.sqrt(scale[0] + (scale[1] - scale[0]) * u[:, 0])  # crop side as a fraction of the image
    angle = (2 * u[:, 1] - 1) * math.radians(rotate_deg)
    tx, ty = (2 * u[:, 2] - 1) * (1 - side), (2 * u[:, 3] - 1) * (1 - side)
    cos, sin = torch.cos(angle) * side, torch.sin(angle) * side
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    contrast = (1 + (2 * u[:, 4] - 1) * jitter).to(x.device).view(B, 1, 1, 1)
    bright = ((2 * u[:, 5] - 1) * jitter / 2).to(x.device).view(B, 1, 1, 1)
    mean = x.mean((2, 3), keepdim=True)
    return ((x - mean) * contrast + mean + bright).clamp_(0, 1)
