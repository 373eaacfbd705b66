"""Balanced binary clustering of tokens for feature-space window attention (Li et al., sec. 3.4).

Li et al.'s FWSA groups tokens by content instead of by position, after Roy et al. (routing
attention) and Yu et al. (BOAT, hierarchical balanced clustering). At each of K levels every group
is cut into two equal halves:

    r_i = s(t_i, c_1) / s(t_i, c_2)                                          (eq. 11)
    s(t, c) = (N(t) - N(c))^2                                                (eq. 12)

sort the r_i ascending, the first half goes with c_1, the second with c_2, and repeat until a group
holds one window's worth of tokens. s is a distance (small = similar), the simplified Levin et al.
weight of eq. 3.

- `balanced_binary_clustering`: the permutation (B, N) that lists the tokens cluster by cluster.
- `invert_permutation`, `gather_tokens`, `scatter_tokens`: into cluster order and back.
- `cluster_windows`, `uncluster_windows`, `cluster_padding_mask`: cluster order as windows
  (B * G, cluster_size, C) for attention inside each cluster, and back to the original order.
- `token_brightness`: N(t) of eq. 12, a token's mean lightness over its P x P patch.

Choices (what the paper leaves open)
- Centres: farthest-point start (c_1 = the token farthest from the group's mean, c_2 = the token
  farthest from c_1), then `iterations` rounds of balanced 2-means (split by eq. 11 at the cut,
  c_1 and c_2 become the means of the two halves); the final split uses the last centres.
- Brightness similarity: N(t) is the token's mean lightness (`brightness`, (B, N)), so
  s(t, c) = (l_t - l_c)^2. Eq. 3's 1 / (2 sigma_t^2), the lightness variance of t's
  neighbourhood, multiplies s(t, c_1) and s(t, c_2) alike and cancels in the ratio of eq. 11: it
  is left out exactly, not approximated. Without `brightness` N(t) is the token's feature vector,
  s = ||f_t - f_c||^2.
- Cosine similarity (the paper's ablation, Model 5): s(t, c) = 1 - cos(t, c), a distance in
  [0, 2] so that eq. 11 and "ascending" keep their meaning (a ratio of cosines can change sign).
- Both distances get + 1e-6 before the ratio, so a token sitting on a centre gives a finite r.
- Ties sort stably: the result depends only on the inputs (deterministic).
- Token counts that are not cluster_size * 2^K: splits are made at cluster granularity. A group of
  n tokens holds g = ceil(n / cluster_size) clusters; its first part gets ceil(g / 2) * cluster_size
  tokens, the second the rest. With N a multiple of cluster_size every cluster is full; otherwise
  only the last cluster (in cluster order) is short, by G * cluster_size - N tokens, and
  `cluster_windows` pads it with zeros (`cluster_padding_mask` says which tokens are real).
- No gradient flows through the assignment (it is a sort); attention on the gathered tokens is
  differentiable as usual.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "balanced_binary_clustering",
    "invert_permutation",
    "gather_tokens",
    "scatter_tokens",
    "cluster_windows",
    "uncluster_windows",
    "cluster_padding_mask",
    "token_brightness",
]

_EPS = 1e-6
SIMILARITIES = ("brightness", "cosine")


def _distance(x: Tensor, c: Tensor, similarity: str) -> Tensor:
    """s(t, c) for tokens x (..., n, D) and centres c (..., D): (..., n), small = similar."""
    if similarity == "cosine":
        return 1.0 - (F.normalize(x, dim=-1) * F.normalize(c, dim=-1).unsqueeze(-2)).sum(-1)
    return (x - c.unsqueeze(-2)).pow(2).sum(-1)                          # (N(t) - N(c))^2 (eq. 12)


def _pick(x: Tensor, index: Tensor) -> Tensor:
    """x (..., n, D), index (...) -> the indexed tokens (..., D)."""
    return x.gather(-2, index[..., None, None].expand(*index.shape, 1, x.shape[-1])).squeeze(-2)


def _split_order(x: Tensor, first: int, similarity: str, iterations: int) -> Tensor:
    """Order (..., n) of the tokens x (..., n, D): the first `first` go with c_1, the rest with c_2."""
    mean = x.mean(-2)                                                     # (..., D)
    c1 = _pick(x, _distance(x, mean, similarity).argmax(-1))              # farthest from the mean
    c2 = _pick(x, _distance(x, c1, similarity).argmax(-1))                # farthest from c_1
    for step in range(iterations + 1):
        # r_i = s(t_i, c_1) / s(t_i, c_2), sorted ascending (eq. 11)
        r = (_distance(x, c1, similarity) + _EPS) / (_distance(x, c2, similarity) + _EPS)  # (..., n)
        order = torch.sort(r, dim=-1, stable=True).indices                # (..., n)
        if step == iterations:
            break
        members = x.gather(-2, order[..., None].expand_as(x))            # (..., n, D) in split order
        c1, c2 = members[..., :first, :].mean(-2), members[..., first:, :].mean(-2)
    return order


def balanced_binary_clustering(
    features: Tensor,
    cluster_size: int,
    *,
    brightness: Tensor | None = None,
    similarity: str = "brightness",
    iterations: int = 2,
) -> Tensor:
    """Permutation (B, N) listing the tokens cluster by cluster (Li et al. eq. 11-12).

    features (B, N, C); brightness (B, N) or None, N(t) of eq. 12 for similarity="brightness"
    (without it the feature vectors are used); similarity "brightness" or "cosine" (cosine uses the
    features). Clusters are consecutive runs of `cluster_size` entries of the result: tokens
    perm[b, g * cluster_size:(g + 1) * cluster_size] form cluster g of batch item b.
    """
    if features.dim() != 3:
        raise ValueError(f"balanced_binary_clustering: features must be (B, N, C), got {tuple(features.shape)}")
    b, n, _ = features.shape
    if not isinstance(cluster_size, int) or cluster_size < 1:
        raise ValueError(f"balanced_binary_clustering: cluster_size must be a positive int, got {cluster_size!r}")
    if similarity not in SIMILARITIES:
        raise ValueError(f"balanced_binary_clustering: similarity must be one of {SIMILARITIES}, got {similarity!r}")
    if not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"balanced_binary_clustering: iterations must be an int >= 0, got {iterations!r}")
    if brightness is not None and similarity == "brightness":
        if brightness.shape != (b, n):
            raise ValueError(f"balanced_binary_clustering: brightness must be (B, N) = {(b, n)}, "
                             f"got {tuple(brightness.shape)}")
        descriptors = brightness.unsqueeze(-1)                            # (B, N, 1): N(t)
    else:
        descriptors = features                                            # (B, N, C)
    descriptors = descriptors.detach()
    if not descriptors.is_floating_point() or descriptors.dtype in (torch.float16, torch.bfloat16):
        descriptors = descriptors.float()

    perm = torch.arange(n, device=features.device).expand(b, n).clone()  # (B, N)
    if n == 0:
        return perm
    segments = [(0, n)]                                                   # (start, length) in perm order
    with torch.no_grad():
        while any(length > cluster_size for _, length in segments):
            next_segments = []
            by_length: dict[int, list[int]] = {}
            for start, length in segments:
                if length > cluster_size:
                    by_length.setdefault(length, []).append(start)
                else:
                    next_segments.append((start, length))
            for length, starts in by_length.items():
                groups = math.ceil(length / cluster_size)
                first = math.ceil(groups / 2) * cluster_size              # tokens that go with c_1
                idx = (torch.tensor(starts, device=perm.device)[:, None]
                       + torch.arange(length, device=perm.device))        # (S, n) positions in perm
                tokens = perm[:, idx]                                     # (B, S, n) token ids
                x = descriptors.gather(                                   # (B, S, n, D)
                    1, tokens.reshape(b, -1, 1).expand(-1, -1, descriptors.shape[-1]),
                ).reshape(*tokens.shape, descriptors.shape[-1])
                order = _split_order(x, first, similarity, iterations)    # (B, S, n)
                perm[:, idx] = tokens.gather(-1, order)
                for start in starts:
                    next_segments += [(start, first), (start + first, length - first)]
            segments = next_segments
    return perm


def _check_perm(x: Tensor, perm: Tensor, where: str) -> None:
    if x.dim() != 3 or perm.shape != x.shape[:2]:
        raise ValueError(f"{where}: tokens must be (B, N, C) and perm (B, N), "
                         f"got {tuple(x.shape)} and {tuple(perm.shape)}")


def invert_permutation(perm: Tensor) -> Tensor:
    """inv (..., N) with inv[perm[i]] = i: the position of each original token in cluster order."""
    positions = torch.arange(perm.shape[-1], device=perm.device).expand_as(perm)
    return torch.empty_like(perm).scatter_(-1, perm, positions)


def gather_tokens(x: Tensor, perm: Tensor) -> Tensor:
    """x (B, N, C) -> x in cluster order (B, N, C): out[:, i] = x[:, perm[:, i]]."""
    _check_perm(x, perm, "gather_tokens")
    return x.gather(1, perm.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def scatter_tokens(y: Tensor, perm: Tensor) -> Tensor:
    """y (B, N, C) in cluster order -> the original token order: the inverse of `gather_tokens`."""
    _check_perm(y, perm, "scatter_tokens")
    return gather_tokens(y, invert_permutation(perm))


def cluster_padding_mask(n: int, cluster_size: int, *, device: torch.device | str | None = None) -> Tensor:
    """(G, cluster_size) bool, True = a real token, G = ceil(N / cluster_size): only the last cluster
    can hold padding. As a key mask for attention inside each cluster: mask[g][None, :]."""
    groups = math.ceil(n / cluster_size)
    return (torch.arange(groups * cluster_size, device=device) < n).reshape(groups, cluster_size)


def cluster_windows(x: Tensor, perm: Tensor, cluster_size: int) -> Tensor:
    """x (B, N, C) -> (B * G, cluster_size, C), one row per cluster, G = ceil(N / cluster_size);
    the last cluster is zero-padded when N is not a multiple of cluster_size."""
    _check_perm(x, perm, "cluster_windows")
    b, n, c = x.shape
    groups = math.ceil(n / cluster_size)
    ordered = gather_tokens(x, perm)                                      # (B, N, C)
    ordered = F.pad(ordered, (0, 0, 0, groups * cluster_size - n))        # (B, G * M, C)
    return ordered.reshape(b * groups, cluster_size, c)


def uncluster_windows(windows: Tensor, perm: Tensor, cluster_size: int) -> Tensor:
    """(B * G, cluster_size, C) -> (B, N, C) in the original token order (padding dropped)."""
    b, n = perm.shape
    groups = math.ceil(n / cluster_size)
    if windows.dim() != 3 or windows.shape[:2] != (b * groups, cluster_size):
        raise ValueError(f"uncluster_windows: windows must be (B * G, cluster_size, C) = "
                         f"({b * groups}, {cluster_size}, C), got {tuple(windows.shape)}")
    ordered = windows.reshape(b, groups * cluster_size, -1)[:, :n]       # (B, N, C) in cluster order
    return scatter_tokens(ordered, perm)


def token_brightness(lightness: Tensor, patch: int) -> Tensor:
    """Mean lightness of each P x P patch, (B, H, W) or (B, 1, H, W) -> (B, H/P * W/P), tokens in
    row-major order (the order of x.flatten(1, 2) for a channels-last (B, H/P, W/P, C) map)."""
    if lightness.dim() == 3:
        lightness = lightness.unsqueeze(1)
    if lightness.dim() != 4 or lightness.shape[1] != 1:
        raise ValueError(f"token_brightness: lightness must be (B, H, W) or (B, 1, H, W), got {tuple(lightness.shape)}")
    h, w = lightness.shape[-2:]
    if h % patch or w % patch:
        raise ValueError(f"token_brightness: H={h}, W={w} must be multiples of patch={patch}")
    return F.avg_pool2d(lightness, patch).flatten(1)                      # (B, N)
