"""Color science for colorization, in torch: sRGB <-> CIE Lab, quantized ab bins, the 512-color palette.

Layout: color channels sit in dim -3, so a single image is (3, H, W) and a batch (B, 3, H, W);
any leading dims work. sRGB is float in [0, 1]; Lab has L in [0, 100] and a, b roughly in
[-128, 128]. Everything is differentiable and keeps the input's device and dtype.

The constants follow scikit-image (`skimage.color.rgb2lab`, D65 white, 2 degree observer), so
the two agree to float32 precision; `tests/test_color.py` checks all 2^24 8-bit colors.
"""

from __future__ import annotations

import functools
import math
from typing import Iterable

import torch
from torch import Tensor

# sRGB (linear) -> CIE XYZ, from the sRGB specification (the matrix scikit-image uses).
XYZ_FROM_RGB = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
D65_WHITE = (0.95047, 1.0, 1.08883)  # reference white, 2 degree observer

_EPSILON = 0.008856  # (6/29)^3: below it the cube root is replaced by a line
_KAPPA = 7.787       # slope of that line, 1 / (3 (6/29)^2)


def _check_channels(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor shaped (..., 3, H, W), got {type(x).__name__}")
    if x.dim() < 3 or x.shape[-3] != 3:
        raise ValueError(f"{name} must be shaped (..., 3, H, W) with 3 channels in dim -3, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a float tensor (for uint8 images divide by 255 first), got {x.dtype}")


def _matrix(rows, like: Tensor) -> Tensor:
    return torch.tensor(rows, dtype=torch.float64).to(device=like.device, dtype=like.dtype)


def _apply_matrix(m: Tensor, x: Tensor) -> Tensor:
    # (3, 3) x (..., 3, H, W) -> (..., 3, H, W)
    return torch.einsum("ij,...jhw->...ihw", m, x)


def _white(like: Tensor) -> Tensor:
    return torch.tensor(D65_WHITE, dtype=like.dtype, device=like.device).view(3, 1, 1)


def srgb_to_linear(rgb: Tensor) -> Tensor:
    """Undo the sRGB transfer curve (IEC 61966-2-1)."""
    curved = ((rgb.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4  # clamp keeps pow's gradient finite
    return torch.where(rgb > 0.04045, curved, rgb / 12.92)


def linear_to_srgb(lin: Tensor) -> Tensor:
    """Apply the sRGB transfer curve; negative linear values map to negative sRGB (clip later)."""
    curved = 1.055 * lin.clamp(min=0.0031308) ** (1 / 2.4) - 0.055
    return torch.where(lin > 0.0031308, curved, lin * 12.92)


def rgb_to_lab(rgb: Tensor) -> Tensor:
    """sRGB in [0, 1], (..., 3, H, W) -> CIE Lab (D65), L in [0, 100]."""
    _check_channels(rgb, "rgb")
    xyz = _apply_matrix(_matrix(XYZ_FROM_RGB, rgb), srgb_to_linear(rgb))
    t = xyz / _white(xyz)
    # f(t) = t^(1/3) above epsilon, a line below it (keeps the slope finite at 0)
    f = torch.where(t > _EPSILON, t.clamp(min=_EPSILON) ** (1 / 3), _KAPPA * t + 16 / 116)
    fx, fy, fz = f.unbind(dim=-3)
    L = 116 * fy - 16
    a = 500 * (fx - fy)
    b = 200 * (fy - fz)
    return torch.stack([L, a, b], dim=-3)


def _lab_to_unclipped_rgb(lab: Tensor) -> Tensor:
    L, a, b = lab.unbind(dim=-3)
    fy = (L + 16) / 116
    fx = fy + a / 500
    fz = (fy - b / 200).clamp(min=0)  # scikit-image clips negative Z here
    # |f| <= 100 keeps f^3 finite in float32 for absurd inputs (|a| ~ 1e16); real colors have f < 2
    f = torch.stack([fx, fy, fz], dim=-3).clamp(-100, 100)
    # inverse of f: t = f^3 above 6/29, the inverse line below
    t = torch.where(f > 0.2068966, f**3, (f - 16 / 116) / _KAPPA)
    xyz = t * _white(t)
    # invert in float64, then cast: the matrix is then exact to the working dtype's precision
    rgb_from_xyz = torch.linalg.inv(torch.tensor(XYZ_FROM_RGB, dtype=torch.float64))
    lin = _apply_matrix(rgb_from_xyz.to(device=lab.device, dtype=lab.dtype), xyz)
    return linear_to_srgb(lin)


def lab_to_rgb(lab: Tensor) -> Tensor:
    """CIE Lab (D65), (..., 3, H, W) -> sRGB clipped to [0, 1]; never NaN or inf for finite input.

    Out-of-gamut Lab (negative XYZ, extreme ab) is clipped, as scikit-image does: Z < 0 is set to 0
    and the final sRGB is clipped to [0, 1].
    """
    _check_channels(lab, "lab")
    return _lab_to_unclipped_rgb(lab).clamp(0, 1)


def in_gamut(lab: Tensor, tol: float = 1e-3) -> Tensor:
    """True where a Lab color (..., 3, H, W) is a displayable sRGB color (within `tol`); shape (..., H, W)."""
    _check_channels(lab, "lab")
    rgb = _lab_to_unclipped_rgb(lab)
    z_ok = (lab[..., 0, :, :] + 16) / 116 - lab[..., 2, :, :] / 200 >= 0   # Z would be clipped otherwise
    return ((rgb >= -tol) & (rgb <= 1 + tol)).all(dim=-3) & z_ok


def lightness_to_gray(L: Tensor) -> Tensor:
    """Lightness (..., 1, H, W) in [0, 100] -> neutral sRGB gray (..., 3, H, W) with R = G = B of that L."""
    if L.dim() < 3 or L.shape[-3] != 1:
        raise ValueError(f"L must be shaped (..., 1, H, W), got {tuple(L.shape)}")
    fy = (L + 16) / 116
    y = torch.where(fy > 0.2068966, fy**3, (fy - 16 / 116) / _KAPPA)  # relative luminance Y
    return linear_to_srgb(y).clamp(0, 1).expand(*L.shape[:-3], 3, *L.shape[-2:]).contiguous()


def rgb_to_gray(rgb: Tensor) -> Tensor:
    """The image as a colorization model sees it: the same Lab lightness as a neutral gray, (..., 3, H, W)."""
    return lightness_to_gray(rgb_to_lab(rgb)[..., :1, :, :])


def lab_from_parts(L: Tensor, ab: Tensor) -> Tensor:
    """Join lightness (..., 1, H, W) and ab (..., 2, H, W) into Lab (..., 3, H, W), with a clear error on mismatch."""
    if L.shape[-3] != 1 or ab.shape[-3] != 2 or L.shape[-2:] != ab.shape[-2:]:
        raise ValueError(f"expected L (..., 1, H, W) and ab (..., 2, H, W) of the same H, W; got {tuple(L.shape)} and {tuple(ab.shape)}")
    return torch.cat([L, ab], dim=-3)


# ---------------------------------------------------------------------------------------------
# Quantized ab: the classification view of colorization (Zhang et al. 2016)
# ---------------------------------------------------------------------------------------------
#
# Rule. The ab plane is cut into square cells of side GRID = 10 centred on multiples of 10. A cell
# is a bin when at least one of the 2^24 8-bit sRGB colors has its (a, b) rounded to that cell's
# centre. This is the sRGB gamut seen from above (projected over every L), quantized. It gives
# Q = AB_BIN_COUNT bins; `gamut_ab_bins()` recomputes them and a test checks the stored table.
#
# Zhang et al. report Q = 313 bins, derived from the ab values that occur in ImageNet. Their set is
# larger than ours (313 > 261), so it must count as in gamut at least 52 cells that no 8-bit sRGB
# color rounds into: a looser membership test (the file they ship is named pts_in_hull, which
# suggests a hull around observed values). Ours is exactly the cells that 8-bit sRGB colors reach
# and needs no dataset; the rebalancing weights below give the rare bins their due.

GRID = 10

# Stored result of gamut_ab_bins(): for each a centre (multiples of 10), the first and last
# b centre that is a bin. Every row is one contiguous run (checked by the test that recomputes it).
_AB_GAMUT_ROWS: dict[int, tuple[int, int]] = {
    -90: (80, 80),
    -80: (40, 80),
    -70: (20, 90),
    -60: (0, 90),
    -50: (-20, 90),
    -40: (-30, 90),
    -30: (-40, 90),
    -20: (-40, 90),
    -10: (-50, 90),
    0: (-60, 90),
    10: (-70, 80),
    20: (-70, 80),
    30: (-80, 80),
    40: (-90, 80),
    50: (-90, 70),
    60: (-100, 70),
    70: (-110, 70),
    80: (-110, 70),
    90: (-90, 0),
    100: (-70, -50),
}
AB_BIN_COUNT = sum((b1 - b0) // GRID + 1 for b0, b1 in _AB_GAMUT_ROWS.values())  # Q = 261


def gamut_ab_bins(levels: int = 256, chunk: int = 1 << 20) -> Tensor:
    """Recompute the in-gamut ab bins from all `levels`^3 sRGB colors; returns (Q, 2) float32 centres.

    With levels=256 this converts all 2^24 8-bit colors (a few seconds on a CPU). The result is
    stored in this module; this function exists so a test and a curious student can re-derive it.
    """
    values = torch.arange(levels, dtype=torch.float32) / (levels - 1)
    total = levels**3
    seen = torch.zeros(27 * 2 + 1, 27 * 2 + 1, dtype=torch.bool)  # cells for a, b in [-270, 270]
    for start in range(0, total, chunk):
        idx = torch.arange(start, min(start + chunk, total))
        rgb = torch.stack([values[idx // levels**2], values[(idx // levels) % levels], values[idx % levels]])
        ab = rgb_to_lab(rgb.view(3, -1, 1))[1:].view(2, -1)
        cell = torch.round(ab / GRID).long() + 27
        seen[cell[0], cell[1]] = True
    ia, ib = seen.nonzero(as_tuple=True)
    return torch.stack([(ia - 27) * GRID, (ib - 27) * GRID], dim=1).float()



@functools.lru_cache(maxsize=None)
def _ab_bins_cpu() -> Tensor:
    centres = [(a, b) for a, (b0, b1) in sorted(_AB_GAMUT_ROWS.items()) for b in range(b0, b1 + 1, GRID)]
    return torch.tensor(centres, dtype=torch.float32)


def ab_bins(device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """The Q in-gamut bin centres, (Q, 2) as (a, b), sorted by a then b."""
    return _ab_bins_cpu().to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=None)
def _grid_lookup_cpu() -> tuple[Tensor, int]:
    """Cell (a, b) on the grid -> bin index, -1 for cells outside the gamut."""
    centres = _ab_bins_cpu().long() // GRID
    offset = int(centres.abs().max()) + 1
    lut = torch.full((2 * offset + 1, 2 * offset + 1), -1, dtype=torch.long)
    lut[centres[:, 0] + offset, centres[:, 1] + offset] = torch.arange(len(centres))
    return lut, offset


def _ab_last(ab: Tensor) -> Tensor:
    # (..., 2, H, W) -> (..., H, W, 2)
    if ab.dim() < 3 or ab.shape[-3] != 2:
        raise ValueError(f"ab must be shaped (..., 2, H, W), got {tuple(ab.shape)}")
    return ab.movedim(-3, -1)


def _squared_distances(ab_points: Tensor, centres: Tensor) -> Tensor:
    # (N, 2), (Q, 2) -> (N, Q); |x|^2 - 2 x.c + |c|^2, clamped against rounding below zero
    d2 = (ab_points**2).sum(-1, keepdim=True) - 2 * ab_points @ centres.T + (centres**2).sum(-1)
    return d2.clamp(min=0)


def ab_to_bin(ab: Tensor) -> Tensor:
    """Nearest-bin encoding: ab (..., 2, H, W) -> bin indices (..., H, W), long.

    A value whose rounded grid cell is a bin belongs to that bin (its centre is the nearest grid
    point, hence the nearest bin). Only values outside the gamut need a search over all centres.
    """
    points = _ab_last(ab)
    if torch.isnan(points).any():
        raise ValueError(f"ab_to_bin got NaN ab values ({int(torch.isnan(points).any(-1).sum())} pixels of shape {tuple(ab.shape)})")
    lut, offset = _grid_lookup_cpu()
    lut = lut.to(ab.device)
    cell = torch.round(points.detach() / GRID).long().clamp(-offset, offset) + offset
    index = lut[cell[..., 0], cell[..., 1]]
    outside = index < 0
    if outside.any():
        centres = ab_bins(ab.device, torch.float32)
        d2 = _squared_distances(points[outside].float(), centres)
        index[outside] = d2.argmin(dim=-1)
    return index


def bin_to_ab(index: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Bin indices (..., H, W) -> bin centres (..., 2, H, W)."""
    return ab_bins(index.device, dtype)[index].movedim(-1, -3)


def soft_encode(ab: Tensor, k: int = 5, sigma: float = 5.0, chunk: int = 1 << 16) -> Tensor:
    """Soft encoding (Zhang et al. 2016, sec. 2.1): Gaussian weights on the k nearest bins.

    ab (..., 2, H, W) -> a distribution over bins (..., Q, H, W) that sums to 1 per pixel;
    weight of bin q is exp(-|ab - c_q|^2 / (2 sigma^2)) on the k nearest bins, 0 elsewhere.
    """
    points = _ab_last(ab)                                  # (..., H, W, 2)
    centres = ab_bins(ab.device, ab.dtype)
    flat = points.reshape(-1, 2)                           # (N, 2)
    out = torch.zeros(flat.shape[0], len(centres), device=ab.device, dtype=ab.dtype)  # (N, Q)
    for start in range(0, flat.shape[0], chunk):
        d2 = _squared_distances(flat[start:start + chunk], centres)
        near_d2, near = d2.topk(k, dim=-1, largest=False)  # (n, k)
        # subtract the nearest distance before exp: same normalised weights, no underflow far out of gamut
        w = torch.exp(-(near_d2 - near_d2[:, :1]) / (2 * sigma**2))
        out[start:start + chunk].scatter_(1, near, w / w.sum(-1, keepdim=True))
    return out.view(*points.shape[:-1], len(centres)).movedim(-1, -3)


def annealed_mean(probs: Tensor, T: float = 0.38, *, dim: int = -3) -> Tensor:
    """Annealed-mean decoding (Zhang et al. 2016, eq. 5): re-temper the distribution, take its mean.

    probs (..., Q, H, W) over bins -> ab (..., 2, H, W). f_T(z) = exp(log z / T) / sum exp(log z / T).
    T = 1 gives the mean (desaturated), T -> 0 the mode (vivid but patchy); T = 0 is the exact mode.
    """
    if T < 0:
        raise ValueError(f"temperature T must be >= 0, got {T}")
    q = probs.shape[dim]
    centres = ab_bins(probs.device, probs.dtype)
    if q != len(centres):
        raise ValueError(f"probs has {q} bins in dim {dim}, but there are Q={len(centres)} ab bins")
    if T == 0:
        weights = torch.nn.functional.one_hot(probs.argmax(dim=dim), q).movedim(-1, dim).to(probs.dtype)
    else:
        weights = torch.softmax(torch.log(probs.clamp(min=1e-12)) / T, dim=dim)
    # sum_q w_q c_q: (..., Q, H, W) x (Q, 2) -> (..., 2, H, W)
    return torch.tensordot(weights.movedim(dim, -1), centres, dims=1).movedim(-1, dim)


def ab_prior(ab_batches: Iterable[Tensor] | Tensor) -> Tensor:
    """Empirical distribution of nearest bins over a dataset: an iterable of ab batches (..., 2, H, W) -> (Q,)."""
    if isinstance(ab_batches, Tensor):
        ab_batches = [ab_batches]
    counts = torch.zeros(len(_ab_bins_cpu()), dtype=torch.float64)
    for ab in ab_batches:
        counts += torch.bincount(ab_to_bin(ab).flatten().cpu(), minlength=len(counts)).double()
    if counts.sum() == 0:
        raise ValueError("ab_prior got no pixels: the dataset is empty")
    return (counts / counts.sum()).float()


def rebalance_weights(prior: Tensor, gamma: float = 0.5, sigma: float = 5.0) -> Tensor:
    """Class-rebalancing weights (Zhang et al. 2016, eq. 3-4).

    The prior p (Q,) is smoothed with a Gaussian of `sigma` over the ab plane (a normalised
    weighted average of neighbouring bins, so gamut edges are not thinned), mixed with the
    uniform distribution, w ~ ((1 - gamma) p_smooth + gamma / Q)^-1, and normalised so that the
    expected weight under p_smooth is 1 (sum_q p_smooth_q w_q = 1).
    """
    centres = ab_bins(prior.device, torch.float64)
    if prior.shape != (len(centres),):
        raise ValueError(f"prior must have shape ({len(centres)},), got {tuple(prior.shape)}")
    p = prior.double() / prior.sum()
    kernel = torch.exp(-_squared_distances(centres, centres) / (2 * sigma**2))  # (Q, Q)
    # each bin's smoothed value is a weighted average of its neighbours: a uniform prior stays uniform
    smooth = (kernel / kernel.sum(1, keepdim=True)) @ p
    smooth = smooth / smooth.sum()
    w = 1.0 / ((1 - gamma) * smooth + gamma / len(centres))
    w = w / (smooth * w).sum()
    return w.to(prior.dtype if prior.is_floating_point() else torch.float32)


# ---------------------------------------------------------------------------------------------
# The 3-bit-per-channel palette (Sun et al.; ColTran's coarse colors): 8 x 8 x 8 = 512 classes
# ---------------------------------------------------------------------------------------------
PALETTE_BITS = 3
PALETTE_LEVELS = 2**PALETTE_BITS   # 8 levels per channel
PALETTE_SIZE = PALETTE_LEVELS**3   # 512 colors


def rgb_to_palette(rgb: Tensor) -> Tensor:
    """sRGB in [0, 1], (..., 3, H, W) -> palette index (..., H, W) in [0, 512): r * 64 + g * 8 + b.

    Each channel keeps its top 3 bits, as an 8-bit value >> 5 would: level = floor(x * 8), 1.0 -> 7.
    """
    _check_channels(rgb, "rgb")
    level = (rgb * PALETTE_LEVELS).floor().clamp(0, PALETTE_LEVELS - 1).long()
    r, g, b = level.unbind(dim=-3)
    return (r * PALETTE_LEVELS + g) * PALETTE_LEVELS + b


def palette_to_rgb(index: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Palette index (..., H, W) -> sRGB (..., 3, H, W) at the centre of each level's interval.

    Centres, (level + 0.5) / 8, not lower edges: the centre halves the worst-case error (1/16
    instead of 1/8) and does not darken every image by half a level on average.
    """
    if index.dtype.is_floating_point or index.dtype == torch.bool:
        raise TypeError(f"palette index must be an integer tensor, got {index.dtype}")
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= PALETTE_SIZE):
        raise ValueError(f"palette index must be in [0, {PALETTE_SIZE}), got values in [{int(index.min())}, {int(index.max())}]")
    r = index // PALETTE_LEVELS**2
    g = (index // PALETTE_LEVELS) % PALETTE_LEVELS
    b = index % PALETTE_LEVELS
    return (torch.stack([r, g, b], dim=-3).to(dtype) + 0.5) / PALETTE_LEVELS


def palette_colors(dtype: torch.dtype = torch.float32) -> Tensor:
    """All 512 palette colors as (512, 3) sRGB."""
    return palette_to_rgb(torch.arange(PALETTE_SIZE).view(PALETTE_SIZE, 1, 1), dtype).view(PALETTE_SIZE, 3)
