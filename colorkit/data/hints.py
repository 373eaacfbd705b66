"""Hints for user-guided colorization (Zhang et al. 2017, "Real-Time User-Guided Image Colorization").
Part of `colorkit.data`."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

# Zhang et al. simulate a user's clicks in training: the number of hints is geometric (p = 1/8),
# each hint's position is uniform or drawn from a 2-D Gaussian centred in the image (sigma = H/4,
# W/4), and a hint reveals the mean ab of a small patch. The network gets the hints as ab channels
# (zero elsewhere) plus a binary mask channel saying where a hint was given.


def _hint_generator(generator: torch.Generator | None, seed: int | None) -> torch.Generator | None:
    if generator is not None and seed is not None:
        raise ValueError("pass either generator or seed, not both")
    return torch.Generator().manual_seed(int(seed)) if seed is not None else generator


def geometric_hint_counts(batch: int, *, p: float = 1 / 8, max_hints: int | None = None,
                          generator: torch.Generator | None = None, seed: int | None = None) -> Tensor:
    """Hint counts (batch,) long, K ~ Geometric(p) on {0, 1, 2, ...}: P(K = k) = (1 - p)^k p.

    The mean is (1 - p) / p = 7 for p = 1/8; some images get no hint (automatic colorization).
    """
    if not 0 < p <= 1:
        raise ValueError(f"p must be in (0, 1], got {p}")
    u = torch.rand(batch, generator=_hint_generator(generator, seed), dtype=torch.float64)
    # Inverse CDF: K = floor(log(1 - U) / log(1 - p))
    k = torch.floor(torch.log1p(-u) / math.log1p(-p)) if p < 1 else torch.zeros_like(u)
    k = k.long()
    return k.clamp(max=max_hints) if max_hints is not None else k


def sample_hints(ab: Tensor, n: int | Sequence[int] | Tensor, *, patch: int = 2, mode: str = "uniform",
                 sigma: float = 0.25, generator: torch.Generator | None = None,
                 seed: int | None = None) -> dict[str, Tensor]:
    """Sample `n` ab hints per image (an int, or one count per image).

    ab: (B, 2, H, W). Each hint is a patch x patch square lying fully inside the image, placed
    uniformly (`mode="uniform"`) or around the centre (`mode="center"`: patch centre ~
    N((H/2, W/2), diag((sigma H)^2, (sigma W)^2)), clamped into the image). It carries the mean
    ab over its patch. Where hints overlap, the later one wins.

    Returns {"hint_ab": (B, 2, H, W), zero without a hint; "hint_mask": (B, 1, H, W), 1 on hinted
    pixels; "positions": (B, N, 2) long top-left (y, x) of each hint, -1 past an image's count;
    "counts": (B,) long}. N = max count.

    Reproducibility: the same seed (or a generator in the same state), batch size, image size and
    counts give identical hints. Hints are drawn hint-major, so with the same seed the first k
    hints do not depend on the counts: the hints for n = 5 are the first 5 of those for n = 20.
    """
    if not isinstance(ab, Tensor) or ab.dim() != 4 or ab.shape[1] != 2:
        shape = tuple(ab.shape) if isinstance(ab, Tensor) else type(ab).__name__
        raise ValueError(f"sample_hints expects ab shaped (B, 2, H, W), got {shape}")
    if mode not in ("uniform", "center"):
        raise ValueError(f"mode must be 'uniform' or 'center', got {mode!r}")
    b, _, h, w = ab.shape
    if not 1 <= patch <= min(h, w):
        raise ValueError(f"patch must be between 1 and min(H, W) = {min(h, w)}, got {patch}")
    counts = torch.as_tensor(n, dtype=torch.long).flatten().cpu()
    if counts.numel() == 1:
        counts = counts.expand(b).clone()
    if counts.numel() != b or (counts < 0).any():
        raise ValueError(f"n must be an int >= 0 or {b} counts >= 0 (one per image), got {n!r}")
    n_max = int(counts.max()) if b else 0
    gen = _hint_generator(generator, seed)
    if n_max == 0:
        return {"hint_ab": torch.zeros_like(ab), "hint_mask": torch.zeros_like(ab[:, :1]),
                "positions": torch.zeros(b, 0, 2, dtype=torch.long, device=ab.device), "counts": counts.to(ab.device)}

    # Hint-major draws: hint k of image j uses uniforms number 2 (k B + j) and 2 (k B + j) + 1.
    u = torch.rand(n_max, b, 2, generator=gen, dtype=torch.float64).permute(1, 0, 2)  # (B, N, 2)
    span = torch.tensor([h - patch + 1, w - patch + 1], dtype=torch.float64)    # valid top-left range
    if mode == "uniform":
        top_left = torch.floor(u * span)
    else:
        # Box-Muller: two uniforms -> two independent standard normals (u in [0, 1) so 1 - u > 0).
        radius = torch.sqrt(-2 * torch.log1p(-u[..., 0]))
        angle = 2 * math.pi * u[..., 1]
        z = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=-1)  # (B, N, 2)
        dims = torch.tensor([h, w], dtype=torch.float64)
        centre = dims / 2 + sigma * dims * z
        top_left = torch.round(centre - patch / 2)
    top_left = torch.minimum(top_left.clamp(min=0), span - 1).long()            # (B, N, 2)
    valid = torch.arange(n_max).view(1, -1) < counts.view(-1, 1)                # (B, N)
    top_left = top_left.to(ab.device)
    valid = valid.to(ab.device)

    # Mean ab of every patch x patch window, indexed by its top-left corner.
    means = F.avg_pool2d(ab, patch, stride=1)                                   # (B, 2, H-p+1, W-p+1)
    flat_tl = top_left[..., 0] * means.shape[-1] + top_left[..., 1]            # (B, N)
    hint_values = torch.gather(means.flatten(2), 2, flat_tl.unsqueeze(1).expand(b, 2, n_max))  # (B, 2, N)

    # Which hint owns each pixel: the largest hint number covering it ("later wins"), -1 for none.
    dy, dx = torch.meshgrid(torch.arange(patch, device=ab.device), torch.arange(patch, device=ab.device),
                            indexing="ij")
    pix = (top_left[..., 0, None] + dy.flatten()) * w + top_left[..., 1, None] + dx.flatten()  # (B, N, p*p)
    hint_id = torch.arange(n_max, device=ab.device).view(1, -1, 1).expand_as(pix)
    hint_id = torch.where(valid.unsqueeze(-1), hint_id, torch.full_like(hint_id, -1))
    owner = torch.full((b, h * w), -1, dtype=torch.long, device=ab.device)
    owner.scatter_reduce_(1, pix.reshape(b, -1), hint_id.reshape(b, -1), reduce="amax")  # (B, H*W)

    hinted = owner >= 0
    hint_ab = torch.gather(hint_values, 2, owner.clamp(min=0).unsqueeze(1).expand(b, 2, h * w))
    hint_ab = hint_ab * hinted.unsqueeze(1)
    positions = torch.where(valid.unsqueeze(-1), top_left, torch.full_like(top_left, -1))
    return {
        "hint_ab": hint_ab.view(b, 2, h, w),                                    # (B, 2, H, W)
        "hint_mask": hinted.view(b, 1, h, w).to(ab.dtype),                      # (B, 1, H, W)
        "positions": positions,                                                 # (B, N, 2)
        "counts": counts.to(ab.device),                                        # (B,)
    }
