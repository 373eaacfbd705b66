"""Levin, Lischinski and Weiss (2004), "Colorization using optimization": classical hint propagation.

The premise: neighbouring pixels with similar intensities should have similar colors. With Y the
intensity (here L / 100, so Y lies in [0, 1] as in the paper) and U one chroma channel (a or b),
the paper minimises

    J(U) = sum_r ( U(r) - sum_{s in N(r)} w_rs U(s) )^2                          (eq. 1)

subject to U(r_i) = u_i on the pixels r_i a user colored, where N(r) are the pixels of the
(2 window + 1)^2 square around r (r itself left out) and the affinity

    w_rs  proportional to  exp( -(Y(r) - Y(s))^2 / (2 sigma_r^2) ),              (eq. 2)
    sum_{s in N(r)} w_rs = 1,

with sigma_r^2 the variance of Y over the window around r (r included). Rows sum to 1, so each
term of eq. 1 asks a pixel to be the weighted average of its neighbours, and weights are small
across an intensity edge: color flows along regions, not across them.

sigma_r^2, as the authors' released code computes it (`levin_affinity`):
    sigma_r^2 = max( variance_scale * var_r,                 variance_scale = 0.3: their
                                                             exp(-(Y(r) - Y(s))^2 / (0.6 var_r))
                     min_s (Y(r) - Y(s))^2 / (2 ln 100),     the most similar neighbour keeps
                                                             a weight >= 0.01 (no row vanishes)
                     eps )                                    near-flat regions still propagate
variance_scale = 1 is the paper's text. It matters: the weights see only (Y(r) - Y(s))^2 / var_r,
so even an ideal step edge is soft, and at 1 a pixel next to it gives a neighbour across
exp(-9/4) = 0.105 of the weight of one on its own side (5.5e-4 at 0.3). On a flat two-level
24 x 40 image with one 2 x 2 hint on each side, the pixels 4 or more columns from the edge miss
their own hint's color by up to 26 ab units at 1 and by under 1 at 0.3.

J is quadratic and the constraints are linear, so the minimiser solves a sparse linear system.
With A = I - W (W the N x N matrix of the w_rs, N = H W pixels) and the pixels split into free f
and hinted c (hint values u), eq. 1 is || A_f U_f + A_c u ||^2 with A_f, A_c the columns of A for
free and hinted pixels. Which r the sum of eq. 1 runs over is a choice (`residuals`):

    "unhinted" (default; what the authors' released code and most reimplementations solve): the
        terms of the pixels without a hint. There are as many terms as unknowns, so all of them
        can be 0: every free pixel is exactly the w-average of its neighbours,
            A_ff U_f = -A_fc u                                                   (square, 9 per row)
        a maximum principle holds (each free value is a convex combination of others, so every
        result lies between the smallest and the largest hint), and it factorises fast.
    "all" (eq. 1 as printed, every r): the hinted pixels' terms too; the normal equations
            (A_f^T A_f) U_f = -A_f^T A_c u                                       (SPD, 25 per row)
        are fourth order (Laplacian-squared like: smoother, thin-plate-like extrapolation, can
        overshoot the hints) and take about 3x longer (0.8 s against 0.25-0.3 s at 224 x 224).

The defaults (variance_scale 0.3, residuals "unhinted", eps 1e-4) are the authors' code and gave
the best PSNR-against-hints curve of the four combinations on both course validation sets (96
images of 64 x 64, 2 x 2 hints from `evaluate.fixed_hints`; at 10 hints: photos 26.6 dB against
25.7-26.2, ToyWorld 23.4 against 19.8-22.2), though single images can go either way. The matrix
is factorised once (SuperLU) and reused for the a and the b channel. Images without any hint come
back gray (ab = 0).

`levin_colorize` is the non-learned reference of notebook 07: a learned model that cannot
beat it at ten hints has not learned to propagate hints.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
from torch import Tensor

__all__ = ["levin_colorize", "levin_affinity", "DEFAULT_EPS", "DEFAULT_VARIANCE_SCALE"]

# Floor of sigma_r^2 on the Y = L / 100 scale: (1 L unit)^2. In a perfectly flat window every
# weight is exp(0) = 1 whatever sigma is; the floor matters where Y is almost flat (sensor noise,
# 8-bit quantisation, about 0.4 L units): without it sigma shrinks with the noise and a 0.5-unit
# wobble would block color like a real edge.
DEFAULT_EPS = 1e-4

# sigma_r^2 = variance_scale * (window variance): 0.3 is the authors' code (2 sigma_r^2 = 0.6 var),
# 1 the paper's text; see the module docstring for why it matters at edges.
DEFAULT_VARIANCE_SCALE = 0.3

RESIDUALS = ("unhinted", "all")


def _to_numpy(x, name: str) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    if isinstance(x, np.ndarray):
        return np.asarray(x, dtype=np.float64)
    raise TypeError(f"levin_colorize: {name} must be a torch.Tensor or a numpy array, got {type(x).__name__}")


def _check_inputs(L, hint_ab, hint_mask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> L (B, H, W), hint_ab (B, 2, H, W), hinted (B, H, W) bool, as float64/bool numpy arrays."""
    lum, ab, mask = _to_numpy(L, "L"), _to_numpy(hint_ab, "hint_ab"), _to_numpy(hint_mask, "hint_mask")
    if lum.ndim == 2:                                     # (H, W)
        lum = lum[None]
    elif lum.ndim == 3 and lum.shape[0] == 1:             # (1, H, W)
        pass
    elif lum.ndim == 4 and lum.shape[1] == 1:             # (B, 1, H, W)
        lum = lum[:, 0]
    else:
        raise ValueError(f"levin_colorize: L must be shaped (H, W) or (B, 1, H, W), got {tuple(lum.shape)}")
    if ab.ndim == 3 and ab.shape[0] == 2:                 # (2, H, W)
        ab = ab[None]
    if ab.ndim != 4 or ab.shape[1] != 2:
        raise ValueError(f"levin_colorize: hint_ab must be shaped (B, 2, H, W), got {tuple(ab.shape)}")
    if mask.ndim == 2:                                    # (H, W)
        mask = mask[None]
    if mask.ndim == 4 and mask.shape[1] == 1:             # (B, 1, H, W)
        mask = mask[:, 0]
    elif not (mask.ndim == 3 and mask.shape[0] == 1):     # (1, H, W)
        raise ValueError(f"levin_colorize: hint_mask must be shaped (B, 1, H, W), got {tuple(mask.shape)}")
    size = lum.shape[-2:]
    for name, arr in (("hint_ab", ab), ("hint_mask", mask)):
        if arr.shape[-2:] != size:
            raise ValueError(f"levin_colorize: {name} has spatial size {tuple(arr.shape[-2:])}, "
                             f"L has {tuple(size)}; they must match")
    batches = {lum.shape[0], ab.shape[0], mask.shape[0]} - {1}
    if len(batches) > 1:
        raise ValueError(f"levin_colorize: batch sizes differ: L {lum.shape[0]}, hint_ab {ab.shape[0]}, "
                         f"hint_mask {mask.shape[0]} (each must be the same or 1)")
    b = batches.pop() if batches else 1
    if not np.isfinite(lum).all():
        raise ValueError("levin_colorize: L has NaN or infinite values")
    if not np.isin(mask, (0.0, 1.0)).all():
        raise ValueError("levin_colorize: hint_mask must hold only 0 and 1")
    hinted = mask > 0.5
    if not np.isfinite(np.where(hinted[:, None], ab, 0.0)).all():
        raise ValueError("levin_colorize: hint_ab has NaN or infinite values on hinted pixels")
    expand = lambda a: np.broadcast_to(a, (b, *a.shape[1:]))  # noqa: E731  (batch 1 -> B)
    return expand(lum), expand(ab), expand(hinted)


def levin_affinity(Y: np.ndarray, *, window: int = 1, eps: float = DEFAULT_EPS,
                   variance_scale: float = DEFAULT_VARIANCE_SCALE) -> sp.csr_matrix:
    """W, the (H W) x (H W) sparse matrix of the affinities w_rs of eq. 2, rows summing to 1.

    Y: (H, W) intensity (the paper's scale: [0, 1]). Pixel r = (y, x) is row y * W + x; its
    neighbours N(r) are the other pixels of the (2 window + 1)^2 square around it that lie inside
    the image, and

        sigma_r^2 = max( variance_scale * var(Y over N(r) and r),
                         min_{s in N(r)} (Y(r) - Y(s))^2 / (2 ln 100),       (nearest neighbour keeps w >= 0.01)
                         eps )

    Built one window offset at a time (at most (2 window + 1)^2 array operations, no loop over pixels).
    """
    Y = np.asarray(Y, dtype=np.float64)
    h, w = Y.shape
    offsets = [(dy, dx) for dy in range(-window, window + 1) for dx in range(-window, window + 1)]
    centre = offsets.index((0, 0))
    padded = np.pad(Y, window, constant_values=np.nan)               # NaN = outside the image
    # the window around every pixel, one slice per offset                      (K, H, W)
    shifted = np.stack([padded[window + dy:window + dy + h, window + dx:window + dx + w] for dy, dx in offsets])
    inside = ~np.isnan(shifted)
    count = inside.sum(axis=0)                                                # (H, W), >= 1 (r itself)
    mean = np.where(inside, shifted, 0.0).sum(axis=0) / count
    var = (np.where(inside, shifted - mean, 0.0) ** 2).sum(axis=0) / count
    diff2 = np.where(inside, shifted - Y, np.inf) ** 2                        # (Y(r) - Y(s))^2, inf outside
    diff2[centre] = np.inf                                                    # s ranges over N(r), r excluded
    nearest = diff2.min(axis=0)                                               # inf only for a 1 x 1 image
    # sigma_r^2: the window variance (scaled), floored so that the most similar neighbour keeps a
    # weight of at least 0.01 and so that near-flat regions still propagate (eps)
    sigma2 = np.maximum(np.maximum(variance_scale * var, np.where(np.isfinite(nearest), nearest, 0.0)
                                   / (2.0 * np.log(100.0))), eps)
    # w_rs ~ exp(-(Y(r) - Y(s))^2 / (2 sigma_r^2))                              (eq. 2)
    weights = np.exp(-diff2 / (2.0 * sigma2))                                 # (K, H, W), 0 where diff2 = inf
    total = weights.sum(axis=0)
    # rows normalised to sum 1 (a 1 x 1 image has no neighbours: its row stays 0)
    weights = weights / np.where(total > 0, total, 1.0)

    rows = np.broadcast_to(np.arange(h * w).reshape(h, w), weights.shape)
    cols = rows + np.array([dy * w + dx for dy, dx in offsets]).reshape(-1, 1, 1)
    keep = weights > 0
    return sp.csr_matrix((weights[keep], (rows[keep], cols[keep])), shape=(h * w, h * w))


def _solve_one(Y: np.ndarray, ab: np.ndarray, hinted: np.ndarray, *, window: int, eps: float,
               variance_scale: float, residuals: str) -> np.ndarray:
    """One image: Y (H, W), ab (2, H, W), hinted (H, W) bool -> ab (2, H, W) minimising eq. 1."""
    h, w = Y.shape
    hinted = hinted.reshape(-1)
    u = ab.reshape(2, -1)[:, hinted].T                                       # (n_hints, 2) the fixed values
    out = np.zeros((h * w, 2))
    out[hinted] = u
    free = np.flatnonzero(~hinted)
    if free.size == 0:
        return out.T.reshape(2, h, w)
    W = levin_affinity(Y, window=window, eps=eps, variance_scale=variance_scale)
    A = (sp.identity(h * w, format="csr") - W).tocsc()                        # (N, N), A U = residuals of eq. 1
    A_f, A_c = A[:, free], A[:, np.flatnonzero(hinted)]
    if residuals == "all":
        # d/dU_f || A_f U_f + A_c u ||^2 = 0  ->  (A_f^T A_f) U_f = -A_f^T A_c u     (eq. 1, every r)
        lhs = (A_f.T @ A_f).tocsc()
        rhs = -(A_f.T @ (A_c @ u))
    else:
        # rows of the free pixels only: U(r) - sum_s w_rs U(s) = 0 for every unhinted r
        lhs = A_f[free].tocsc()
        rhs = -(A_c[free] @ u)
    # One factorisation for both chroma channels. Both matrices have a symmetric pattern and a
    # dominant diagonal (SPD, or rows of 1 - sum w = 0), so SuperLU's symmetric mode (a minimum
    # degree ordering of A + A^T, diagonal pivots) is stable and avoids the fill that row
    # pivoting causes (5x faster at 224 x 224 with 50 hints).
    lu = spla.splu(lhs, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.1, options={"SymmetricMode": True})
    out[free] = lu.solve(np.ascontiguousarray(rhs))
    out[hinted] = u                                                            # exactly the hints
    return out.T.reshape(2, h, w)


def levin_colorize(L, hint_ab, hint_mask, *, window: int = 1, eps: float = DEFAULT_EPS,
                   variance_scale: float = DEFAULT_VARIANCE_SCALE, residuals: str = "unhinted") -> Tensor:
    """Propagate ab hints over a gray image by Levin et al.'s optimisation (eq. 1-2 above).

    L: (H, W) or (B, 1, H, W), CIE L in [0, 100]; hint_ab: (B, 2, H, W) ab in Lab units (read only
    where hinted); hint_mask: (B, 1, H, W), 1 where a hint was given, else 0. Torch tensors or numpy
    arrays; a batch of 1 in any of them is shared by the others. `window`: N(r) is the
    (2 window + 1)^2 square around r. `eps`: floor of sigma_r^2 on the Y = L / 100 scale.
    `variance_scale`: sigma_r^2 = variance_scale * window variance (0.3: the authors' code; 1: the
    paper's text).
    `residuals`: "unhinted" (the authors' code: eq. 1 summed over the pixels without a hint) or "all"
    (eq. 1 as printed, every pixel), see the module docstring.

    Returns ab (B, 2, H, W) float32 on L's device (CPU for numpy input): the hints exactly on hinted
    pixels, the minimiser of J elsewhere, and zeros (gray) for an image without hints. Each image
    is solved on the CPU with scipy (a 224 x 224 image in about 0.3 s with the defaults).
    """
    if not (isinstance(window, (int, np.integer)) and window >= 1):
        raise ValueError(f"levin_colorize: window must be an int >= 1, got {window!r}")
    if not eps > 0:
        raise ValueError(f"levin_colorize: eps must be > 0 (it floors sigma_r^2), got {eps!r}")
    if not variance_scale > 0:
        raise ValueError(f"levin_colorize: variance_scale must be > 0, got {variance_scale!r}")
    if residuals not in RESIDUALS:
        raise ValueError(f"levin_colorize: residuals must be one of {RESIDUALS}, got {residuals!r}")
    lum, ab, hinted = _check_inputs(L, hint_ab, hint_mask)
    b, h, w = hinted.shape
    out = np.zeros((b, 2, h, w))
    for i in range(b):
        if hinted[i].any():                                                    # no hints: gray, ab = 0
            out[i] = _solve_one(lum[i] / 100.0, ab[i], hinted[i], window=window, eps=eps,
                                variance_scale=variance_scale, residuals=residuals)
    device = L.device if isinstance(L, Tensor) else "cpu"
    return torch.from_numpy(out).to(device=device, dtype=torch.float32)
