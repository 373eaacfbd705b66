"""The attention family, built up from the equations.

Sun et al. (2023), "The Colorization Based on Self-Attention Mechanism and GAN", write attention as

    a(q, k)    = softmax(q . k / sqrt(d))                                   (eq. 2)
    A(Q, K, V) = softmax(Q K^T / sqrt(d)) V                                 (eq. 3)
    Q_i = X W_i^q,  K_i = X W_i^k,  V_i = X W_i^v,  H_i = A(Q_i, K_i, V_i)
    MSA(X)     = [H_1 ... H_h] W_o                                          (eq. 4)

and use it along image rows and columns (eq. 5, the axial attention of Ho et al. 2019,
"Axial Attention in Multidimensional Transformers"). This file holds those pieces and the
window attention of Swin (Liu et al. 2021) that later models build on:

- `scaled_dot_product_attention`: eq. 3, the plain math, optionally returning the weights.
- `MultiHeadAttention`: eq. 4 over tokens (..., n, dim).
- `AxialAttention` (`RowAttention`, `ColumnAttention`): eq. 4 along one image axis, optionally causal.
- `RelativePositionBias`: a learned score b[j - i] per head added to q . k / sqrt(d) along one axis.
- `AxialBlock`: Sun et al.'s eq. 5 Transformer layer (LN, MSA along a row or column, residual;
  LN, MLP, residual), unmasked or masked, optionally conditioned on a context (ColTran's decoder).
- `WindowAttention`: eq. 4 inside non-overlapping M x M windows (`window_partition`, `window_reverse`).
- `SelfAttention2d`: SAGAN's self-attention over all positions of a feature map (Zhang et al. 2019),
  y = gamma * o + x with gamma starting at 0, optionally with spectral norm (Narkhede et al.).
- `LuongAttention` (multiplicative: h_t^T W_a hbar_s, or the "dot" form h_t^T hbar_s) and
  `BahdanauAttention` (additive: v^T tanh(W_1 h_t + W_2 hbar_s)): encoder-decoder attention of a
  query over source positions, returning (context, weights); `AttentionVector`: Luong's
  tanh(W_c [c_t; h_t]). Lakhani (sec. 3.5) uses them over an image's fused features.
- `SqueezeExcitation` (Hu et al. 2018), `CBAM` (Woo et al. 2018) and `SMSA`, the stacked multi-scale
  attention of Jiang et al. (SMSANet, eq. 1-4: spatial maps at scales H/2^k weighted by learned
  lambda_k in (0, 1), a channel map, F' = F + F * A_s * A_n): channel and spatial attention on
  convolutional feature maps (B, C, H, W), the same shape out; Jiang et al.'s ablation compares them.
- `attention_flops`, `attention_matrix_elements`: what each kind costs, analytically.
- `SwinWindowAttention`: Swin's window attention with a relative position bias (Li et al. eq. 10),
  parameter names as Swin's so its weights load; `shifted_window_attention` runs it as WSA
  (shift 0) or SWSA (cyclic shift with `shifted_window_mask`, padding for any H, W).

Conventions
- Tokens are (..., n, C); images given to attention are channels-last, (B, H, W, C). A feature
  map laid out (B, C, H, W) becomes one with `x.permute(0, 2, 3, 1)`.
- Boolean masks say who may attend to whom: True = query i may attend to key j, the same
  convention as the boolean `attn_mask` of `torch.nn.functional.scaled_dot_product_attention`.
- Every module has a fast path (`fast=True`, torch's fused kernel) and the plain math
  (`fast=False`, or `return_weights=True`, which needs the weights and so always takes it);
  `tests/test_attention.py` checks that they agree.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "effective_cells",
    "causal_mask",
    "scaled_dot_product_attention",
    "MultiHeadAttention",
    "AxialAttention",
    "RowAttention",
    "ColumnAttention",
    "RelativePositionBias",
    "AxialBlock",
    "window_partition",
    "window_reverse",
    "WindowAttention",
    "SelfAttention2d",
    "LuongAttention",
    "BahdanauAttention",
    "AttentionVector",
    "SqueezeExcitation",
    "CBAM",
    "SMSA",
    "attention_flops",
    "attention_matrix_elements",
    "ATTENTION_KINDS",
    "relative_position_index",
    "SwinWindowAttention",
    "shifted_window_mask",
    "shifted_window_attention",
]


def _check_scores_operand(t: Tensor, scores_shape: tuple[int, ...], where: str, name: str) -> None:
    """A mask (bool, True = may attend) or a bias (float, added to the scores) must broadcast to the scores."""
    want_bool = name == "mask"
    ok_dtype = isinstance(t, Tensor) and (t.dtype == torch.bool if want_bool else t.dtype.is_floating_point)
    if not ok_dtype:
        got = t.dtype if isinstance(t, Tensor) else type(t).__name__
        what = "a boolean tensor (True = may attend)" if want_bool else "a float tensor added to the scores"
        raise TypeError(f"{where}: {name} must be {what}, got {got}")
    try:
        fits = torch.broadcast_shapes(t.shape, scores_shape) == torch.Size(scores_shape)
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(
            f"{where}: {name} of shape {tuple(t.shape)} does not broadcast to the attention "
            f"scores (..., n queries, m keys) = {tuple(scores_shape)}"
        )


def effective_cells(weights: Tensor) -> Tensor:
    """How many positions each query really attends to: exp of the entropy of its weights.

    weights (..., N), each row summing to 1 -> (...,): N for a uniform row (attention that mixes in
    the mean of everything, a pattern it has not learned), 1 for a row on a single position.
    """
    p = weights.float()
    return torch.exp(-(p * p.clamp(min=1e-12).log()).sum(-1))


def causal_mask(n: int, m: int | None = None, *, device: torch.device | str | None = None) -> Tensor:
    """(n, m) boolean mask, True where key j <= query i: every token sees itself and the ones before.

    This is what an autoregressive decoder (Sun et al.'s colorization Transformer, ColTran)
    uses so that a pixel's prediction depends only on pixels already generated. Aligned at the
    top-left like `is_causal=True` in torch; `m` defaults to `n`.
    """
    m = n if m is None else m
    return torch.ones(n, m, dtype=torch.bool, device=device).tril()


def scaled_dot_product_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, *, bias: Tensor | None = None,
    return_weights: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """softmax(Q K^T / sqrt(d) + B) V (Sun et al. eq. 3, with an optional bias B), written out.

    q (..., n, d), k (..., m, d), v (..., m, dv) -> (..., n, dv); leading dims broadcast.
    `mask`: boolean, broadcastable to (..., n, m), True where query i may attend to key j.
    `bias`: float, broadcastable to (..., n, m), added to the scores before the softmax (e.g. a
    relative position bias, `RelativePositionBias`); None is eq. 3 exactly.
    A query row whose keys are all masked gets zero weights and so a zero output (torch's
    fused kernels give the same zeros), never NaN.
    With `return_weights=True` returns (output, weights), weights (..., n, m) with rows summing
    to 1 (or 0 for fully masked rows).
    """
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"scaled_dot_product_attention: q (..., n, d) and k (..., m, d) need the same d, "
                         f"got q {tuple(q.shape)} and k {tuple(k.shape)}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"scaled_dot_product_attention: k (..., m, d) and v (..., m, dv) need the same m, "
                         f"got k {tuple(k.shape)} and v {tuple(v.shape)}")
    d = q.shape[-1]
    # q . k / sqrt(d) for every query-key pair                               (eq. 2)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)  # (..., n, m)
    if bias is not None:
        _check_scores_operand(bias, tuple(scores.shape), "scaled_dot_product_attention", "bias")
        scores = scores + bias  # q . k / sqrt(d) + b, e.g. b = b[j - i] per head
    has_key = None
    if mask is not None:
        _check_scores_operand(mask, tuple(scores.shape), "scaled_dot_product_attention", "mask")
        scores = scores.masked_fill(~mask, float("-inf"))
        # softmax over a row of only -inf is 0/0 = NaN; give such rows finite scores here and
        # zero weights below.
        has_key = mask.any(dim=-1, keepdim=True)  # (..., n, 1)
        scores = scores.masked_fill(~has_key, 0.0)
    weights = scores.softmax(dim=-1)  # (..., n, m)
    if has_key is not None:
        weights = weights.masked_fill(~has_key, 0.0)
    # A(Q, K, V) = softmax(Q K^T / sqrt(d)) V                                 (eq. 3)
    out = weights @ v  # (..., n, dv)
    return (out, weights) if return_weights else out


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention over tokens x (..., n, dim) (Sun et al. eq. 4).

    `qkv` holds W^q, W^k, W^v of every head in one Linear; `proj` is W_o. `dim` is split
    evenly over `heads`, so each head works in dim / heads channels.
    """

    def __init__(self, dim: int, heads: int, *, qkv_bias: bool = True):
        super().__init__()
        if dim <= 0 or heads <= 0 or dim % heads:
            raise ValueError(f"{type(self).__name__}: dim={dim} must be a positive multiple of heads={heads}")
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}"

    def _check_input(self, x: Tensor, layout: str = "(..., n, dim)", min_dims: int = 2, exact: bool = False) -> None:
        bad_rank = isinstance(x, Tensor) and (x.dim() != min_dims if exact else x.dim() < min_dims)
        if not isinstance(x, Tensor) or bad_rank or x.shape[-1] != self.dim:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{type(self).__name__}: x must be {layout} with dim={self.dim}, got {shape}")

    def project_qkv(self, x: Tensor, modulation: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """x (..., n, dim) -> q, k, v, each (..., heads, n, head_dim).

        `modulation` (..., n, 6 * dim): a per-token scale s and shift t for q, k and v together,
        [q; k; v] * (1 + s) + t (ColTran's conditional self-attention; see `AxialBlock`)."""
        # Q_i = X W_i^q, K_i = X W_i^k, V_i = X W_i^v, all heads at once      (eq. 4)
        qkv = self.qkv(x)  # (..., n, 3 * dim)
        if modulation is not None:
            scale, shift = modulation.chunk(2, dim=-1)  # each (..., n, 3 * dim)
            qkv = qkv * (1 + scale) + shift
        qkv = qkv.unflatten(-1, (3, self.heads, self.head_dim))  # (..., n, 3, heads, head_dim)
        qkv = qkv.movedim(-3, 0).transpose(-3, -2)  # (3, ..., heads, n, head_dim)
        q, k, v = qkv.unbind(0)
        return q, k, v

    @staticmethod
    def merge_heads(h: Tensor) -> Tensor:
        """[H_1 ... H_h]: (..., heads, n, head_dim) -> (..., n, heads * head_dim)."""
        return h.transpose(-3, -2).flatten(-2)

    def forward(
        self, x: Tensor, *, mask: Tensor | None = None, bias: Tensor | None = None, fast: bool = True,
        return_weights: bool = False, modulation: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """x (..., n, dim) -> (..., n, dim); with `return_weights`, also weights (..., heads, n, n).

        `mask`: boolean, broadcastable to (..., heads, n, n), True = may attend: an (n, n) mask
        applies to every sequence; a padding mask over keys (B, n) goes in as (B, 1, 1, n).
        `bias`: float, broadcastable to (..., heads, n, n), added to the scores (a relative
        position bias is (heads, n, n)).
        `fast` uses torch's fused kernel; `return_weights` always takes the plain math.
        `modulation`: see `project_qkv`.
        """
        self._check_input(x)
        q, k, v = self.project_qkv(x, modulation)  # each (..., heads, n, head_dim)
        weights = None
        if return_weights or not fast:
            h, weights = scaled_dot_product_attention(q, k, v, mask, bias=bias, return_weights=True)
        else:
            scores_shape = (*q.shape[:-1], k.shape[-2])
            attn_mask = mask
            if mask is not None:
                _check_scores_operand(mask, scores_shape, type(self).__name__, "mask")
            if bias is not None:
                _check_scores_operand(bias, scores_shape, type(self).__name__, "bias")
                # torch's float attn_mask is added to the scores: the bias, with -inf where the
                # boolean mask forbids (a fully forbidden row gives zeros, as the plain math does)
                attn_mask = bias.to(q.dtype) if mask is None else bias.to(q.dtype).masked_fill(~mask, float("-inf"))
            lead = q.shape[:-3]
            if len(lead) > 1 and (attn_mask is None or attn_mask.dim() <= 3):
                # torch's fused CPU kernels want (batch, heads, n, d): fold the leading dims (rows of
                # an image, for axial attention) into one batch dim; 5-D input falls back to the
                # slow math path (about 20x slower for a causal row)
                q, k, v = (t.reshape(-1, *t.shape[-3:]) for t in (q, k, v))
                h = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask).unflatten(0, lead)
            else:
                h = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        # H_i for every head -> [H_1 ... H_h] W_o                              (eq. 4)
        out = self.proj(self.merge_heads(h))  # (..., n, dim)
        return (out, weights) if return_weights else out


class AxialAttention(MultiHeadAttention):
    """Multi-head self-attention along one axis of an image x (..., H, W, C).

    axis="row": every pixel attends to the pixels of its own row; axis="column": of its own
    column. This is the row/column self-attention module of Sun et al. (eq. 5, Fig. 4) and the
    axial attention of Ho et al. (2019); a row layer followed by a column layer lets every pixel
    reach every other one at a cost of O(HW(H + W)) instead of O((HW)^2).
    `causal=True` (masked axial attention, as in ColTran's decoder) lets pixel j see only
    pixels 0..j along the axis.
    """

    def __init__(self, dim: int, heads: int, axis: str = "row", *, qkv_bias: bool = True):
        if axis not in ("row", "column"):
            raise ValueError(f"AxialAttention: axis must be 'row' or 'column', got {axis!r}")
        super().__init__(dim, heads, qkv_bias=qkv_bias)
        self.axis = axis

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, axis={self.axis!r}"

    def forward(
        self, x: Tensor, *, causal: bool = False, bias: Tensor | None = None, fast: bool = True,
        return_weights: bool = False, modulation: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """x (..., H, W, C) -> (..., H, W, C); with `return_weights`, also the weights:
        (..., H, heads, W, W) for rows, (..., W, heads, H, H) for columns.

        `bias`: float scores added along the axis, broadcastable to (heads, W, W) for rows and
        (heads, H, H) for columns (e.g. `RelativePositionBias(heads, max_len)(W)`).
        `modulation` (..., H, W, 6 C): per-pixel scale and shift of q, k, v (`project_qkv`).
        """
        self._check_input(x, "(..., H, W, C)", min_dims=3)
        if self.axis == "column":
            x = x.transpose(-3, -2)  # (..., W, H, C): columns become rows
            modulation = modulation.transpose(-3, -2) if modulation is not None else None
        # every row is now a sequence of tokens; the leading dims are batch   (eq. 5)
        mask = causal_mask(x.shape[-2], device=x.device) if causal else None
        result = super().forward(x, mask=mask, bias=bias, fast=fast, return_weights=return_weights,
                                 modulation=modulation)
        out, weights = result if return_weights else (result, None)
        if self.axis == "column":
            out = out.transpose(-3, -2)  # back to (..., H, W, C)
        return (out, weights) if return_weights else out


class RowAttention(AxialAttention):
    """Self-attention along image rows (Sun et al. eq. 5; Ho et al. 2019): `AxialAttention(axis="row")`."""

    def __init__(self, dim: int, heads: int, *, qkv_bias: bool = True):
        super().__init__(dim, heads, axis="row", qkv_bias=qkv_bias)


class ColumnAttention(AxialAttention):
    """Self-attention along image columns (Sun et al. eq. 5; Ho et al. 2019): `AxialAttention(axis="column")`."""

    def __init__(self, dim: int, heads: int, *, qkv_bias: bool = True):
        super().__init__(dim, heads, axis="column", qkv_bias=qkv_bias)


class RelativePositionBias(nn.Module):
    """A learned attention bias b_h[j - i] per head for one image axis (Shaw et al. 2018; ColTran).

    The table holds 2 * max_len - 1 entries per head, one for each offset j - i in
    [-(max_len - 1), max_len - 1]; calling it with a length n (<= max_len) gives the (heads, n, n)
    bias with bias[h, i, j] = table[h, j - i + max_len - 1], to add to q . k / sqrt(d). Axial
    attention alone is blind to where a pixel sits along its row or column; this tells it.
    Starts at zero: the block begins as plain eq. 5.
    """

    def __init__(self, heads: int, max_len: int):
        super().__init__()
        if heads <= 0 or max_len <= 0:
            raise ValueError(f"RelativePositionBias: heads={heads} and max_len={max_len} must be positive")
        self.heads, self.max_len = heads, max_len
        self.table = nn.Parameter(torch.zeros(heads, 2 * max_len - 1))  # (heads, 2 max_len - 1)

    def extra_repr(self) -> str:
        return f"heads={self.heads}, max_len={self.max_len}"

    def forward(self, n: int, m: int | None = None) -> Tensor:
        """(heads, n, m) bias for n queries and m keys at positions 0..n-1 and 0..m-1 (m defaults to n)."""
        m = n if m is None else m
        if not (0 < n <= self.max_len and 0 < m <= self.max_len):
            raise ValueError(f"RelativePositionBias: lengths n={n}, m={m} must be in 1..max_len={self.max_len}; "
                             f"build the block with a larger max_len for longer rows/columns")
        device = self.table.device
        offset = torch.arange(m, device=device)[None, :] - torch.arange(n, device=device)[:, None]  # (n, m): j - i
        return self.table[:, offset + self.max_len - 1]  # (heads, n, m)


class AxialBlock(nn.Module):
    """One Transformer layer along an image axis: Sun et al. eq. 5, for x (B, H, W, C).

        x' = MSA(LN(x)) + x                  (eq. 5: q, k, v = LN(x) W^qkv, attention along the axis)
        x^ = MLP(LN(x')) + x'                (eq. 5)

    This is the pre-norm arrangement, exactly as eq. 5 writes it: layer norm on the branch input,
    the residual stream itself never normalised. axis="row": each pixel attends within its row;
    "column": within its column. `causal=True` is the masked version (ColTran's decoder): pixel j
    sees only pixels 0..j along the axis. `relative_bias=True` adds `RelativePositionBias(heads,
    max_len)` to the scores; rows/columns may be up to `max_len` long.

    ColTran's conditioning (Kumar et al. 2021, sec. 4.1), each part opt-in, each zero-initialised
    so that a conditioned block starts as the plain one:
    - `pooled_dim`: conditional layer norm (cLN). A context image p (B, H', W', pooled_dim) is
      pooled over space with learned weights, softmax over a (max_len, max_len) table cropped to
      (H', W') (uniform at start: the mean), and a linear map of the pooled vector gives both layer
      norms' scale and shift: LN(x) * (1 + s) + t, the same for every pixel.
    - `context_dim`: conditional MLP (cMLP). A per-pixel context c (B, H, W, context_dim) scales and
      shifts the MLP's output: MLP(.) * (1 + s(c)) + t(c).
    - `conditional_attention` (needs `context_dim`): conditional self-attention (cAtt). c scales and
      shifts q, k and v at every pixel: q = (LN(x) W^q) * (1 + s_q(c)) + t_q(c), and so for k and v.
    ColTran pools the context of the layer norms because a per-pixel scale would be one more
    per-pixel path; what a decoder may see is the caller's business (see `colorkit.models.sun2023`:
    a pooled context must not depend on colors not yet drawn).
    """

    def __init__(self, dim: int, heads: int, axis: str = "row", *, mlp_ratio: float = 4, relative_bias: bool = True,
                 max_len: int = 64, causal: bool = False, context_dim: int | None = None,
                 pooled_dim: int | None = None, conditional_attention: bool = False):
        super().__init__()
        if conditional_attention and context_dim is None:
            raise ValueError("AxialBlock: conditional_attention needs a per-pixel context (context_dim)")
        self.axis, self.causal, self.context_dim, self.pooled_dim = axis, causal, context_dim, pooled_dim
        self.max_len = max_len
        self.attn_norm = nn.LayerNorm(dim, elementwise_affine=pooled_dim is None)
        self.attn = AxialAttention(dim, heads, axis)
        self.bias = RelativePositionBias(heads, max_len) if relative_bias else None
        self.mlp_norm = nn.LayerNorm(dim, elementwise_affine=pooled_dim is None)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.pool_logits = self.ln_condition = self.mlp_condition = self.attn_condition = None
        if pooled_dim is not None:
            self.pool_logits = nn.Parameter(torch.zeros(max_len, max_len))   # learned spatial weights
            self.ln_condition = _zero_linear(pooled_dim, 4 * dim)             # scale, shift of both LNs
        if context_dim is not None:
            self.mlp_condition = _zero_linear(context_dim, 2 * dim)           # scale, shift of the MLP output
            if conditional_attention:
                self.attn_condition = _zero_linear(context_dim, 6 * dim)      # scale, shift of q, k, v

    def extra_repr(self) -> str:
        return (f"axis={self.axis!r}, causal={self.causal}, context_dim={self.context_dim}, "
                f"pooled_dim={self.pooled_dim}, conditional_attention={self.attn_condition is not None}")

    def pool(self, pooled: Tensor) -> Tensor:
        """The cLN's context (B, H', W', pooled_dim) -> its learned weighted spatial mean (B, pooled_dim)."""
        h, w = pooled.shape[1:3]
        weights = self.pool_logits[:h, :w].flatten().softmax(dim=0).view(h, w, 1)  # sums to 1
        return (pooled * weights).sum(dim=(1, 2))

    def forward(self, x: Tensor, *, context: Tensor | None = None, pooled: Tensor | None = None,
                fast: bool = True) -> Tensor:
        """x (B, H, W, C) -> (B, H, W, C); `context` (B, H, W, context_dim) when built with context_dim;
        `pooled` (B, H', W', pooled_dim), any H', W' <= max_len, when built with pooled_dim."""
        if x.dim() != 4:
            raise ValueError(f"AxialBlock: x must be (B, H, W, C), got {tuple(x.shape)}")
        for name, value, dim in (("context", context, self.context_dim), ("pooled", pooled, self.pooled_dim)):
            if (value is None) != (dim is None):
                raise ValueError(f"AxialBlock: built with {name}_dim={dim}, so {name} must be "
                                 f"{'given' if dim else 'None'}")
        if context is not None and (context.shape[:-1] != x.shape[:-1] or context.shape[-1] != self.context_dim):
            raise ValueError(f"AxialBlock: context must be (B, H, W, {self.context_dim}) matching x "
                             f"{tuple(x.shape)}, got {tuple(context.shape)}")
        if pooled is not None and (pooled.dim() != 4 or pooled.shape[0] != x.shape[0] or pooled.shape[-1] != self.pooled_dim
                                   or max(pooled.shape[1:3]) > self.max_len):
            raise ValueError(f"AxialBlock: pooled must be (B, H', W', {self.pooled_dim}) with B = {x.shape[0]} "
                             f"and H', W' <= {self.max_len}, got {tuple(pooled.shape)}")
        length = x.shape[-2] if self.axis == "row" else x.shape[-3]
        bias = self.bias(length) if self.bias is not None else None  # (heads, n, n) or None
        if pooled is not None:
            # cLN: one scale and shift per image from the pooled context      (ColTran sec. 4.1)
            scale1, shift1, scale2, shift2 = self.ln_condition(self.pool(pooled))[:, None, None].chunk(4, dim=-1)  # (B, 1, 1, C)

        h = self.attn_norm(x)
        if pooled is not None:
            h = h * (1 + scale1) + shift1
        # cAtt: q, k, v scaled and shifted per pixel by the context           (ColTran sec. 4.1)
        modulation = self.attn_condition(context) if self.attn_condition is not None else None  # (B, H, W, 6 C)
        # x' = MSA(LN(x)) + x                                                (eq. 5)
        x = x + self.attn(h, causal=self.causal, bias=bias, fast=fast, modulation=modulation)
        h = self.mlp_norm(x)
        if pooled is not None:
            h = h * (1 + scale2) + shift2
        m = self.mlp(h)
        if context is not None:
            # cMLP: the MLP's output scaled and shifted per pixel               (ColTran sec. 4.1)
            scale, shift = self.mlp_condition(context).chunk(2, dim=-1)   # each (B, H, W, C)
            m = m * (1 + scale) + shift
        # x^ = MLP(LN(x')) + x'                                              (eq. 5)
        return x + m


def _zero_linear(c_in: int, c_out: int) -> nn.Linear:
    """A linear map that starts at zero (a conditioning that starts as no conditioning)."""
    layer = nn.Linear(c_in, c_out)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def _check_window_grid(h: int, w: int, window: int, where: str) -> None:
    if not isinstance(window, int) or window <= 0:
        raise ValueError(f"{where}: window must be a positive int, got {window!r}")
    if h % window or w % window:
        raise ValueError(f"{where}: image size {h}x{w} is not a multiple of window={window}; "
                         f"crop or pad the image to a multiple of the window")


def window_partition(x: Tensor, window: int) -> Tensor:
    """Cut x (B, H, W, C) into non-overlapping window x window patches: (B * nW, window * window, C).

    nW = (H / window) * (W / window); windows are ordered image by image, then row-major over
    the window grid, and tokens row-major inside a window (the order Swin uses).
    """
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError(f"window_partition: x must be (B, H, W, C), got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    b, h, w, c = x.shape
    _check_window_grid(h, w, window, "window_partition")
    x = x.reshape(b, h // window, window, w // window, window, c)
    x = x.permute(0, 1, 3, 2, 4, 5)  # (B, H/M, W/M, M, M, C)
    return x.reshape(-1, window * window, c)  # (B * nW, M * M, C)


def window_reverse(windows: Tensor, window: int, h: int, w: int) -> Tensor:
    """Undo `window_partition`: (B * nW, window * window, C) -> (B, H, W, C) for an h x w image."""
    _check_window_grid(h, w, window, "window_reverse")
    n_windows = (h // window) * (w // window)
    if windows.dim() != 3 or windows.shape[1] != window * window or windows.shape[0] % n_windows:
        raise ValueError(f"window_reverse: expected (B * {n_windows}, {window * window}, C) windows of a "
                         f"{h}x{w} image, got {tuple(windows.shape)}")
    b, c = windows.shape[0] // n_windows, windows.shape[-1]
    x = windows.reshape(b, h // window, w // window, window, window, c)
    x = x.permute(0, 1, 3, 2, 4, 5)  # (B, H/M, M, W/M, M, C)
    return x.reshape(b, h, w, c)


class WindowAttention(MultiHeadAttention):
    """Multi-head self-attention inside non-overlapping window x window patches of x (B, H, W, C).

    The window attention of Swin (Liu et al. 2021): each pixel attends only to the M^2 pixels of
    its own window, so the cost is O(HW M^2) instead of O((HW)^2). H and W must be multiples of
    the window. (Shifted windows and relative position bias come later, built on this one.)
    """

    def __init__(self, dim: int, heads: int, window: int, *, qkv_bias: bool = True):
        super().__init__(dim, heads, qkv_bias=qkv_bias)
        if not isinstance(window, int) or window <= 0:
            raise ValueError(f"WindowAttention: window must be a positive int, got {window!r}")
        self.window = window

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, window={self.window}"

    def forward(self, x: Tensor, *, fast: bool = True, return_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """x (B, H, W, C) -> (B, H, W, C); with `return_weights`, also weights (B * nW, heads, M^2, M^2)."""
        self._check_input(x, "(B, H, W, C)", min_dims=4, exact=True)
        h, w = x.shape[1:3]
        windows = window_partition(x, self.window)  # (B * nW, M * M, C)
        result = super().forward(windows, fast=fast, return_weights=return_weights)
        out, weights = result if return_weights else (result, None)
        out = window_reverse(out, self.window, h, w)  # (B, H, W, C)
        return (out, weights) if return_weights else out


class SelfAttention2d(nn.Module):
    """SAGAN self-attention (Zhang et al. 2019, sec. 3) over every position of x (B, C, H, W).

    With N = H * W positions and 1x1 convolutions f, g (C -> C/8) and h (C -> C):

        s_ij     = f(x_i)^T g(x_j)                          (SAGAN eq. 1: no 1/sqrt(d) scaling)
        beta_j,i = exp(s_ij) / sum_i exp(s_ij)              how much output j attends to position i
        o_j      = sum_i beta_j,i h(x_i)                    (SAGAN eq. 2)
        y_j      = gamma * o_j + x_j                        (SAGAN eq. 3)

    gamma is a learned scalar initialised to 0, so the layer starts as the identity and the
    network first relies on its convolutions, then learns how much non-local evidence to add.
    As in the SAGAN paper and the open colorization implementations that follow it (DeOldify),
    `spectral_norm=True` puts spectral normalisation on f, g and h. In the notation of
    `scaled_dot_product_attention`, j is the query (g) and i the key (f) and value (h).
    SAGAN's published code adds a 1x1 output projection after o (and shrinks h to C/2); like
    DeOldify, and as Narkhede et al. describe it, this layer has none: h maps C -> C.
    """

    def __init__(self, channels: int, *, reduction: int = 8, spectral_norm: bool = True):
        super().__init__()
        if channels < reduction or channels % reduction:
            raise ValueError(f"SelfAttention2d: channels ({channels}) must be a positive multiple of reduction ({reduction})")
        norm = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        self.channels, self.reduction, self.spectral_norm = channels, reduction, spectral_norm
        self.key = norm(nn.Conv2d(channels, channels // reduction, 1, bias=False))     # f
        self.query = norm(nn.Conv2d(channels, channels // reduction, 1, bias=False))   # g
        self.value = norm(nn.Conv2d(channels, channels, 1, bias=False))                # h
        self.gamma = nn.Parameter(torch.zeros(1))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}, spectral_norm={self.spectral_norm}"

    def forward(self, x: Tensor, *, fast: bool = True, return_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """x (B, C, H, W) -> y (B, C, H, W); with `return_weights`, also beta (B, N, N), rows = queries j."""
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"SelfAttention2d: expected x shaped (B, {self.channels}, H, W), got {tuple(x.shape)}")
        b, c, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)        # g(x): (B, N, C/8)
        k = self.key(x).flatten(2).transpose(1, 2)          # f(x): (B, N, C/8)
        v = self.value(x).flatten(2).transpose(1, 2)        # h(x): (B, N, C)
        if fast and not return_weights:
            o = F.scaled_dot_product_attention(q, k, v, scale=1.0)            # (B, N, C)
            weights = None
        else:
            scores = q @ k.transpose(1, 2)                  # s_ji = g(x_j) . f(x_i): (B, N, N)   (eq. 1)
            weights = scores.softmax(dim=-1)                # beta_j,i, each row sums to 1
            o = weights @ v                                 # o_j = sum_i beta_j,i h(x_i): (B, N, C)   (eq. 2)
        o = o.transpose(1, 2).reshape(b, c, h, w)           # (B, C, H, W)
        y = self.gamma * o + x                              # (eq. 3)
        return (y, weights) if return_weights else y


ATTENTION_KINDS = ("full", "row", "column", "axial", "window")


def _check_kind(kind: str, h: int, w: int, window: int | None, where: str) -> None:
    if kind not in ATTENTION_KINDS:
        raise ValueError(f"{where}: kind must be one of {ATTENTION_KINDS}, got {kind!r}")
    if kind == "window":
        if window is None:
            raise ValueError(f"{where}: kind='window' needs window=M")
        _check_window_grid(h, w, window, where)


def attention_flops(kind: str, h: int, w: int, dim: int, window: int | None = None, *, projections: bool = False) -> int:
    """Multiply-adds of self-attention over an h x w image with `dim` channels.

    Counts the two matrix products of eq. 3, Q K^T and A V, each n * m * dim for n queries and
    m keys (the softmax and scaling are O(n m) and left out; splitting dim over heads does not
    change the count). With N = h * w pixels:
      full:   one sequence of N tokens                       2 N^2 dim
      row:    h sequences of w tokens                        2 N w dim
      column: w sequences of h tokens                        2 N h dim
      axial:  a row layer then a column layer                2 N (h + w) dim
      window: N / M^2 windows of M^2 tokens (window=M)       2 N M^2 dim
    `projections=True` adds the q, k, v and output Linear layers, 4 N dim^2 per layer (axial
    has two layers).
    """
    _check_kind(kind, h, w, window, "attention_flops")
    n = h * w
    keys_per_query = {"full": n, "row": w, "column": h, "axial": h + w, "window": (window or 0) ** 2}[kind]
    flops = 2 * n * keys_per_query * dim
    if projections:
        layers = 2 if kind == "axial" else 1
        flops += layers * 4 * n * dim * dim
    return flops


def attention_matrix_elements(
    kind: str, h: int, w: int, *, heads: int = 1, batch: int = 1, window: int | None = None
) -> int:
    """Elements of the attention-weight tensor that the plain math holds for one layer.

    full: batch * heads * N^2; row: batch * h * heads * w^2; column: batch * w * heads * h^2;
    axial: the larger of row and column (one layer at a time); window: batch * nW * heads * M^4.
    Multiply by the element size (4 bytes for float32) for memory; fused kernels (`fast=True`)
    avoid storing this tensor.
    """
    _check_kind(kind, h, w, window, "attention_matrix_elements")
    row, column = h * w * w, w * h * h
    per_head = {
        "full": (h * w) ** 2,
        "row": row,
        "column": column,
        "axial": max(row, column),
        "window": h * w * (window or 0) ** 2,
    }[kind]
    return batch * heads * per_head


# ---------------------------------------------------------------------------------------------
# Encoder-decoder attention as Lakhani (sec. 3.5) writes it, after Luong et al. (2015) and
# Bahdanau et al. (2014). Lakhani's three (unnumbered) equations, numbered here in order:
#
#     alpha_ts = exp(score(h_t, hbar_s)) / sum_s' exp(score(h_t, hbar_s'))      (Lakhani 3.5, eq. i)
#     c_t      = sum_s alpha_ts hbar_s                                           (Lakhani 3.5, eq. ii)
#     htilde_t = tanh(W_c [c_t; h_t])                                            (Lakhani 3.5, eq. iii)
#
# (The paper prints score(h_s, hbar_t) in eq. i; Luong's eq. 7, which it copies, has
# score(h_t, hbar_s): query t, source s.) h_t is the query ("decoder") state of output position
# t and hbar_s the source ("encoder") state of position s. The score is Luong's multiplicative
# one (eq. 8: "dot" h_t^T hbar_s, "general" h_t^T W_a hbar_s) or Bahdanau's additive one
# (appendix A.1.2: v_a^T tanh(W_a h_t + U_a hbar_s)).
# ---------------------------------------------------------------------------------------------

def _softmax_over_sources(scores: Tensor, mask: Tensor | None, where: str) -> Tensor:
    """alpha = softmax of scores (..., n, m) over the m sources (eq. i); a row with no allowed source gets zeros."""
    if mask is None:
        return scores.softmax(dim=-1)
    _check_scores_operand(mask, tuple(scores.shape), where, "mask")
    scores = scores.masked_fill(~mask, float("-inf"))
    has_source = mask.any(dim=-1, keepdim=True)                      # (..., n, 1)
    weights = scores.masked_fill(~has_source, 0.0).softmax(dim=-1)   # (..., n, m)
    return weights.masked_fill(~has_source, 0.0)


def _check_query_source(query: Tensor, source: Tensor, values: Tensor | None, q_dim: int, s_dim: int,
                        where: str) -> None:
    for name, t, dim in (("query", query, q_dim), ("source", source, s_dim)):
        if not isinstance(t, Tensor) or t.dim() < 2 or t.shape[-1] != dim:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{where}: {name} must be shaped (..., n, {dim}), got {shape}")
    if values is not None and (not isinstance(values, Tensor) or values.dim() < 2
                               or values.shape[-2] != source.shape[-2]):
        shape = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise ValueError(f"{where}: values must be (..., m, dv) with the source's m = {source.shape[-2]}, got {shape}")


class LuongAttention(nn.Module):
    """Multiplicative attention (Luong et al. 2015, eq. 7-8): query (..., n, d_q), source (..., m, d_s).

        score(h_t, hbar_s) = h_t^T W_a hbar_s     score="general" (W_a: d_q x d_s, learned)
                           = h_t^T hbar_s         score="dot"     (d_q = d_s, no parameters)

    `scaled=True` divides the score by sqrt(d_q), the length of the dot product, as in scaled
    dot-product attention (Vaswani et al. 2017); Luong has no scaling (default False).
    Returns (context (..., n, dv), weights (..., n, m)) with every row of weights summing to 1 over the m source positions; the context
    averages `values` (default: the source itself, eq. ii).
    """

    def __init__(self, query_dim: int, source_dim: int | None = None, *, score: str = "general", scaled: bool = False):
        super().__init__()
        source_dim = query_dim if source_dim is None else source_dim
        if score not in ("general", "dot"):
            raise ValueError(f"LuongAttention: score must be 'general' or 'dot', got {score!r}")
        if query_dim <= 0 or source_dim <= 0:
            raise ValueError(f"LuongAttention: dims must be positive, got query_dim={query_dim}, "
                             f"source_dim={source_dim}")
        if score == "dot" and query_dim != source_dim:
            raise ValueError(f"LuongAttention: score='dot' needs query_dim == source_dim, "
                             f"got {query_dim} and {source_dim}")
        self.query_dim, self.source_dim, self.score, self.scaled = query_dim, source_dim, score, scaled
        # W_a maps a source state into the query's space: h_t^T (W_a hbar_s)
        self.W_a = nn.Linear(source_dim, query_dim, bias=False) if score == "general" else None

    def extra_repr(self) -> str:
        return f"query_dim={self.query_dim}, source_dim={self.source_dim}, score={self.score!r}, scaled={self.scaled}"

    def scores(self, query: Tensor, source: Tensor) -> Tensor:
        """score(h_t, hbar_s) for every pair: (..., n, d_q), (..., m, d_s) -> (..., n, m)      (Luong eq. 8)"""
        keys = self.W_a(source) if self.W_a is not None else source           # (..., m, d_q)
        scores = query @ keys.transpose(-2, -1)                                # (..., n, m)
        return scores / math.sqrt(self.query_dim) if self.scaled else scores

    def forward(self, query: Tensor, source: Tensor, values: Tensor | None = None, *,
                mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(context (..., n, dv), weights (..., n, m)); `mask` boolean (..., n, m), True = may attend."""
        _check_query_source(query, source, values, self.query_dim, self.source_dim, type(self).__name__)
        weights = _softmax_over_sources(self.scores(query, source), mask, type(self).__name__)   # alpha_ts (eq. i)
        context = weights @ (source if values is None else values)                               # c_t (eq. ii)
        return context, weights


class BahdanauAttention(nn.Module):
    """Additive attention (Bahdanau et al. 2014, eq. 5-6 and appendix A.1.2): query (..., n, d_q), source (..., m, d_s).

        score(h_t, hbar_s) = v^T tanh(W_1 h_t + W_2 hbar_s)      (W_1: d_q -> d_a, W_2: d_s -> d_a, v: d_a)

    Returns (context (..., n, dv), weights (..., n, m)), rows of weights summing to 1 over sources.
    Cost: the tanh is taken for every (query, source) pair, so it holds an (..., n, m, d_a)
    tensor, d_a times the memory of the weights; multiplicative attention holds only (..., n, m).
    """

    def __init__(self, query_dim: int, source_dim: int | None = None, attention_dim: int = 32):
        super().__init__()
        source_dim = query_dim if source_dim is None else source_dim
        if min(query_dim, source_dim, attention_dim) <= 0:
            raise ValueError(f"BahdanauAttention: dims must be positive, got query_dim={query_dim}, "
                             f"source_dim={source_dim}, attention_dim={attention_dim}")
        self.query_dim, self.source_dim, self.attention_dim = query_dim, source_dim, attention_dim
        self.W_1 = nn.Linear(query_dim, attention_dim, bias=True)     # the one bias of the sum inside tanh
        self.W_2 = nn.Linear(source_dim, attention_dim, bias=False)
        self.v = nn.Linear(attention_dim, 1, bias=False)

    def extra_repr(self) -> str:
        return f"query_dim={self.query_dim}, source_dim={self.source_dim}, attention_dim={self.attention_dim}"

    def scores(self, query: Tensor, source: Tensor) -> Tensor:
        """v^T tanh(W_1 h_t + W_2 hbar_s) for every pair: -> (..., n, m)             (Bahdanau A.1.2)"""
        q = self.W_1(query).unsqueeze(-2)                    # (..., n, 1, d_a)
        s = self.W_2(source).unsqueeze(-3)                   # (..., 1, m, d_a)
        return self.v(torch.tanh(q + s)).squeeze(-1)         # (..., n, m, d_a) -> (..., n, m)

    def forward(self, query: Tensor, source: Tensor, values: Tensor | None = None, *,
                mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(context (..., n, dv), weights (..., n, m)); `mask` boolean (..., n, m), True = may attend."""
        _check_query_source(query, source, values, self.query_dim, self.source_dim, type(self).__name__)
        weights = _softmax_over_sources(self.scores(query, source), mask, type(self).__name__)   # alpha (Bahdanau eq. 6)
        context = weights @ (source if values is None else values)                               # c (Bahdanau eq. 5)
        return context, weights


class AttentionVector(nn.Module):
    """Luong's attentional hidden state (Luong et al. 2015, eq. 5; Lakhani 3.5, eq. iii):

        htilde_t = tanh(W_c [c_t; h_t])      c_t (..., n, d_c), h_t (..., n, d_h) -> (..., n, out_dim)

    W_c has no bias, as in the equation; `out_dim` defaults to d_h.
    """

    def __init__(self, context_dim: int, query_dim: int, out_dim: int | None = None):
        super().__init__()
        self.context_dim, self.query_dim = context_dim, query_dim
        self.out_dim = query_dim if out_dim is None else out_dim
        self.W_c = nn.Linear(context_dim + query_dim, self.out_dim, bias=False)

    def extra_repr(self) -> str:
        return f"context_dim={self.context_dim}, query_dim={self.query_dim}, out_dim={self.out_dim}"

    def forward(self, context: Tensor, query: Tensor) -> Tensor:
        if context.shape[:-1] != query.shape[:-1] or context.shape[-1] != self.context_dim \
                or query.shape[-1] != self.query_dim:
            raise ValueError(f"AttentionVector: context (..., n, {self.context_dim}) and query "
                             f"(..., n, {self.query_dim}) must match, got {tuple(context.shape)} and {tuple(query.shape)}")
        return torch.tanh(self.W_c(torch.cat([context, query], dim=-1)))       # (..., n, out_dim)   (eq. iii)


# ---------------------------------------------------------------------------------------------
# Channel and spatial attention on convolutional feature maps x (B, C, H, W): SENet (Hu et al.
# 2018), CBAM (Woo et al. 2018) and the stacked multi-scale attention of Jiang et al. (SMSANet),
# the three attention modules of Jiang et al.'s ablation (Table 2). Each maps x to a tensor of
# the same shape, for any H and W.
# ---------------------------------------------------------------------------------------------

def _check_feature_map(x: Tensor, channels: int, where: str) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != channels:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{where}: x must be a feature map (B, {channels}, H, W), got {shape}")


def _check_channels_reduction(channels: int, reduction: int, where: str) -> int:
    """The hidden width of a channel MLP, C / r (at least 1)."""
    if not isinstance(channels, int) or channels <= 0:
        raise ValueError(f"{where}: channels must be a positive int, got {channels!r}")
    if not isinstance(reduction, int) or reduction <= 0:
        raise ValueError(f"{where}: reduction must be a positive int, got {reduction!r}")
    return max(1, channels // reduction)


def _channel_max_mean(x: Tensor) -> Tensor:
    """[max_c x; mean_c x]: the two channel-pooled maps of a feature map, (B, C, H, W) -> (B, 2, H, W)."""
    return torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018, "Squeeze-and-excitation networks", sec. 3):

        z_c = 1/(HW) sum_ij x_c(i, j)                   squeeze: global average pooling     (Hu eq. 2)
        s   = sigma(W_2 ReLU(W_1 z))                    excitation, W_1: C -> C/r, W_2: C/r -> C  (Hu eq. 3)
        y_c = s_c x_c                                   scale each channel                   (Hu eq. 4)

    x (B, C, H, W) -> y (B, C, H, W). The hidden width is C // r (at least 1); both FC layers
    have biases, as in SENet. `forward(x, return_maps=True)` also returns {"s": (B, C, 1, 1)}.
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = _check_channels_reduction(channels, reduction, "SqueezeExcitation")
        self.channels, self.reduction, self.hidden = channels, reduction, hidden
        self.fc1 = nn.Linear(channels, hidden)   # W_1
        self.fc2 = nn.Linear(hidden, channels)   # W_2

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}, hidden={self.hidden}"

    def excitation(self, x: Tensor) -> Tensor:
        """The channel weights s: x (B, C, H, W) -> (B, C, 1, 1) in (0, 1)."""
        _check_feature_map(x, self.channels, type(self).__name__)
        z = x.mean(dim=(2, 3))                                  # (B, C)                     (eq. 2)
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(z))))        # (B, C)                     (eq. 3)
        return s[:, :, None, None]                              # (B, C, 1, 1)

    def forward(self, x: Tensor, *, return_maps: bool = False) -> Tensor | tuple[Tensor, dict]:
        s = self.excitation(x)
        y = s * x                                               # (B, C, H, W)               (eq. 4)
        return (y, {"s": s}) if return_maps else y


class CBAM(nn.Module):
    """Convolutional block attention module (Woo et al. 2018, sec. 3): channel, then spatial attention.

        F'  = M_c(F) * F                                                                (Woo eq. 1)
        F'' = M_s(F') * F'                                                              (Woo eq. 1)
        M_c(F) = sigma(MLP(AvgPool(F)) + MLP(MaxPool(F)))       (B, C, 1, 1)            (Woo eq. 2)
        M_s(F) = sigma(f^{7x7}([AvgPool(F); MaxPool(F)]))       (B, 1, H, W)            (Woo eq. 3)

    In M_c the pooling is over space and the MLP (C -> C/r -> C, ReLU between) is shared by
    both descriptors; in M_s the pooling is over channels, giving two maps that one 7x7
    convolution (padding 3, so any H, W) turns into one. Woo et al.'s released code follows
    that convolution with batch norm; this module has the paper's formula, a convolution with
    a bias and no batch norm. `forward(x, return_maps=True)` also returns
    {"M_c": (B, C, 1, 1), "M_s": (B, 1, H, W)}.
    """

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7):
        super().__init__()
        hidden = _check_channels_reduction(channels, reduction, "CBAM")
        if not isinstance(kernel_size, int) or kernel_size <= 0 or kernel_size % 2 == 0:
            raise ValueError(f"CBAM: kernel_size must be a positive odd int (so the map keeps H x W), "
                             f"got {kernel_size!r}")
        self.channels, self.reduction, self.hidden, self.kernel_size = channels, reduction, hidden, kernel_size
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels))  # W_1 ReLU(W_0 .)
        self.spatial = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)   # f^{7x7}

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, reduction={self.reduction}, hidden={self.hidden}, "
                f"kernel_size={self.kernel_size}")

    def channel_attention(self, x: Tensor) -> Tensor:
        """M_c(F): x (B, C, H, W) -> (B, C, 1, 1) in (0, 1)                                  (eq. 2)"""
        _check_feature_map(x, self.channels, type(self).__name__)
        avg, mx = x.mean(dim=(2, 3)), x.amax(dim=(2, 3))        # each (B, C)
        return torch.sigmoid(self.mlp(avg) + self.mlp(mx))[:, :, None, None]

    def spatial_attention(self, x: Tensor) -> Tensor:
        """M_s(F): x (B, C, H, W) -> (B, 1, H, W) in (0, 1)                                  (eq. 3)"""
        _check_feature_map(x, self.channels, type(self).__name__)
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)  # (B, 2, H, W)
        return torch.sigmoid(self.spatial(pooled))

    def forward(self, x: Tensor, *, return_maps: bool = False) -> Tensor | tuple[Tensor, dict]:
        m_c = self.channel_attention(x)
        x = m_c * x                                             # F' = M_c(F) * F            (eq. 1)
        m_s = self.spatial_attention(x)
        y = m_s * x                                             # F'' = M_s(F') * F'         (eq. 1)
        return (y, {"M_c": m_c, "M_s": m_s}) if return_maps else y


class SMSA(nn.Module):
    """Stacked multi-scale attention (Jiang et al., "Stacked multi-scale attention network for image
    colorization", sec. 2.2, eq. 1-4), on a feature map F (B, C, H, W).

    With n - 1 = `scales` spatial scales k = 1..n-1 and the channel scale k = n:

        V_k = Split(MAP(F))                       (B, 2, ceil(H/2^k), ceil(W/2^k))   k < n   (eq. 1)
        V_n = GAP(F)                              (B, C)                              k = n   (eq. 1)
        A_k = Up(sigma(f_k^{3x3}(V_k)))           (B, 1, H, W)                        k < n   (eq. 2)
        A_n = sigma(W_2 ReLU(W_1 V_n))            (B, C, 1, 1)                        k = n   (eq. 2)
        A_s = lambda_1 A_1 + ... + lambda_{n-1} A_{n-1},  lambda_k in (0, 1)          (B, 1, H, W)  (eq. 3)
        F'  = F + F * A_s * A_n                   (B, C, H, W)                                (eq. 4)

    Choices the paper leaves open, made here:
    - MAP(F) is the pair of channel-pooled maps [max_c F; mean_c F] (as CBAM's spatial branch).
      Split averages them over 2^k x 2^k patches (average pooling, stride 2^k); a patch cut by
      the image border averages the pixels it has, so the grid is ceil(H/2^k) x ceil(W/2^k),
      at least 1 x 1 for any H, W.
    - f_k^{3x3} is one 3x3 convolution 2 -> 1 (padding 1, with a bias) per scale.
    - Up resizes to exactly (H, W): `upsample="bilinear"` (default; smooth maps, no patch seams in
      the features) or "nearest", which repeats each patch's value over the pixels of that patch
      (the exact inverse of Split; the block maps of the paper's Fig. 1).
    - lambda_k = eps + (1 - 2 eps) sigmoid(theta_k) with a free parameter theta_k and eps = 1e-4:
      a sigmoid alone rounds to exactly 1 in float32 once theta > ~17 (and to 0 below ~-104); the
      margin keeps every lambda strictly inside (0, 1) whatever the optimiser does. Initialised to
      lambda_k = 1 / (n - 1) (0.5 when there is one scale), so A_s starts as the mean of the A_k.
    - The channel MLP W_1: C -> C/r, W_2: C/r -> C (hidden width at least 1) has biases, as SENet.

    `forward(F, return_maps=True)` also returns {"A_k": [(B, 1, H, W)] * (n - 1), "A_s": (B, 1, H, W),
    "A_n": (B, C, 1, 1), "lambdas": (n - 1,)} for plots.
    """

    LAMBDA_MARGIN = 1e-4

    def __init__(self, channels: int, scales: int = 3, reduction: int = 16, *, upsample: str = "bilinear"):
        super().__init__()
        hidden = _check_channels_reduction(channels, reduction, "SMSA")
        if not isinstance(scales, int) or scales <= 0:
            raise ValueError(f"SMSA: scales (the number n - 1 of spatial scales) must be a positive int, "
                             f"got {scales!r}")
        if upsample not in ("bilinear", "nearest"):
            raise ValueError(f"SMSA: upsample must be 'bilinear' or 'nearest', got {upsample!r}")
        self.channels, self.scales, self.reduction, self.hidden, self.upsample = (
            channels, scales, reduction, hidden, upsample)
        self.spatial = nn.ModuleList(nn.Conv2d(2, 1, 3, padding=1) for _ in range(scales))   # f_k^{3x3}, k < n
        self.fc1 = nn.Linear(channels, hidden)   # W_1
        self.fc2 = nn.Linear(hidden, channels)   # W_2
        # theta_k with lambda_k(theta_k) = 1 / (n - 1), or 0.5 for a single scale
        eps = self.LAMBDA_MARGIN
        start = (min(0.5, 1.0 / scales) - eps) / (1 - 2 * eps)
        self.lambda_logits = nn.Parameter(torch.full((scales,), math.log(start / (1 - start))))

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, scales={self.scales}, reduction={self.reduction}, "
                f"hidden={self.hidden}, upsample={self.upsample!r}")

    @property
    def lambdas(self) -> Tensor:
        """lambda_1..lambda_{n-1}, each strictly in (0, 1): (n - 1,)                            (eq. 3)"""
        eps = self.LAMBDA_MARGIN
        return eps + (1 - 2 * eps) * torch.sigmoid(self.lambda_logits)

    def split(self, x: Tensor, k: int) -> Tensor:
        """V_k = Split(MAP(F)): x (B, C, H, W) -> (B, 2, ceil(H/2^k), ceil(W/2^k)), k = 1..n-1   (eq. 1)"""
        _check_feature_map(x, self.channels, type(self).__name__)
        if not isinstance(k, int) or not 1 <= k <= self.scales:
            raise ValueError(f"SMSA.split: k must be a spatial scale in 1..{self.scales}, got {k!r}")
        return self._split(_channel_max_mean(x), k)

    @staticmethod
    def _split(pooled: Tensor, k: int) -> Tensor:
        """Split: mean of (B, 2, H, W) over 2^k x 2^k patches -> (B, 2, ceil(H/2^k), ceil(W/2^k))."""
        patch = 2 ** k
        # ceil_mode with no padding: a border patch averages only the pixels inside the image
        return F.avg_pool2d(pooled, patch, stride=patch, ceil_mode=True)

    def _up(self, a: Tensor, k: int, size: tuple[int, int]) -> Tensor:
        """Up: (B, 1, ceil(H/2^k), ceil(W/2^k)) -> (B, 1, H, W)."""
        if self.upsample == "nearest":
            patch = 2 ** k
            return a.repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)[:, :, :size[0], :size[1]]
        return F.interpolate(a, size=size, mode="bilinear", align_corners=False)

    def spatial_maps(self, x: Tensor) -> list[Tensor]:
        """A_1..A_{n-1}, each (B, 1, H, W) in [0, 1]                                            (eq. 2)"""
        _check_feature_map(x, self.channels, type(self).__name__)
        size = (x.shape[2], x.shape[3])
        pooled = _channel_max_mean(x)                                     # MAP(F): (B, 2, H, W), once for all k
        maps = []
        for k, conv in enumerate(self.spatial, start=1):
            v_k = self._split(pooled, k)                                  # (B, 2, ceil(H/2^k), ceil(W/2^k))  (eq. 1)
            maps.append(self._up(torch.sigmoid(conv(v_k)), k, size))      # A_k = Up(sigma(f^{3x3}(V_k)))  (eq. 2)
        return maps

    def channel_map(self, x: Tensor) -> Tensor:
        """A_n = sigma(W_2 ReLU(W_1 GAP(F))): x (B, C, H, W) -> (B, C, 1, 1)                  (eq. 1-2, k = n)"""
        _check_feature_map(x, self.channels, type(self).__name__)
        v_n = x.mean(dim=(2, 3))                                          # GAP(F): (B, C)   (eq. 1)
        return torch.sigmoid(self.fc2(F.relu(self.fc1(v_n))))[:, :, None, None]

    def forward(self, x: Tensor, *, return_maps: bool = False) -> Tensor | tuple[Tensor, dict]:
        _check_feature_map(x, self.channels, type(self).__name__)
        a_k = self.spatial_maps(x)                                        # n - 1 maps (B, 1, H, W)
        lambdas = self.lambdas                                            # (n - 1,)
        # A_s = sum_k lambda_k A_k                                                            (eq. 3)
        a_s = sum(lam * a for lam, a in zip(lambdas, a_k))                # (B, 1, H, W)
        a_n = self.channel_map(x)                                         # (B, C, 1, 1)
        # F' = F + F * A_s * A_n                                                              (eq. 4)
        y = x + x * a_s * a_n                                             # (B, C, H, W)
        if return_maps:
            return y, {"A_k": a_k, "A_s": a_s, "A_n": a_n, "lambdas": lambdas}
        return y


# ---------------------------------------------------------------------------------------------
# Swin window attention with a relative position bias (Liu et al. 2021), as Li et al. use it
# (eq. 6-7 blocks WSA and SWSA, eq. 10 the biased attention). Parameter and buffer names follow
# the Swin reference implementation so that its weights load into `SwinWindowAttention`.
# ---------------------------------------------------------------------------------------------

def relative_position_index(window: int, *, table_window: int | None = None,
                            device: torch.device | str | None = None) -> Tensor:
    """Index into Swin's bias table for every (query i, key j) pair of a window x window patch.

    Tokens are numbered row-major inside the window, token t at (t // window, t % window). With
    M = `table_window` (default `window`) the table has (2M - 1)^2 rows, one per offset
    (dy, dx) = (y_i - y_j, x_i - x_j) in [-(M - 1), M - 1]^2, and

        index[i, j] = (dy + M - 1) * (2M - 1) + (dx + M - 1)          (window^2, window^2) long

    which is Swin's layout (query minus key, rows before columns). A smaller window (window < M,
    a feature map smaller than the window) reads the central (2 window - 1)^2 rows of the same table.
    """
    m = window if table_window is None else table_window
    if not isinstance(window, int) or window <= 0 or not isinstance(m, int) or window > m:
        raise ValueError(f"relative_position_index: need 0 < window <= table_window, got window={window!r}, "
                         f"table_window={table_window!r}")
    ys, xs = torch.meshgrid(torch.arange(window, device=device), torch.arange(window, device=device), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()                                  # (window^2,) each
    dy = ys[:, None] - ys[None, :]                                        # (window^2, window^2): y_i - y_j
    dx = xs[:, None] - xs[None, :]
    return (dy + m - 1) * (2 * m - 1) + (dx + m - 1)


class SwinWindowAttention(MultiHeadAttention):
    """Multi-head attention over windows of tokens with Swin's relative position bias (Li et al. eq. 10):

        Attention(Q, K, V) = softmax(Q K^T / sqrt(d) + B) V,   B[h, i, j] = table[index[i, j], h]   (eq. 10)

    windows (B * nW, M * M, C) -> (B * nW, M * M, C), M = `window`. Names and shapes are Swin's,
    so a Swin `WindowAttention` state dict loads with `strict=True`:
    `qkv` (Linear dim -> 3 dim), `proj` (Linear dim -> dim), `relative_position_bias_table`
    ((2M - 1)^2, heads) and the buffer `relative_position_index` (M^2, M^2) long (saved in the
    state dict, as in Swin). The table starts as Swin's: truncated normal, std 0.02.

    `mask` (nW, n, n) boolean, True = may attend, one per window position; the B * nW windows
    are ordered image by image (as `window_partition` makes them), so window w uses mask[w % nW].
    Windows of m * m tokens with m < M are accepted too (a feature map smaller than the window,
    see `shifted_window_attention`): their bias reads the central (2m - 1)^2 rows of the table.
    """

    def __init__(self, dim: int, heads: int, window: int, *, qkv_bias: bool = True):
        super().__init__(dim, heads, qkv_bias=qkv_bias)
        if not isinstance(window, int) or window <= 0:
            raise ValueError(f"SwinWindowAttention: window must be a positive int, got {window!r}")
        self.window = window
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window))  # (M^2, M^2)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, window={self.window}"

    def relative_position_bias(self, window: int | None = None) -> Tensor:
        """B of eq. 10 for a window x window patch (default M): (heads, window^2, window^2)."""
        window = self.window if window is None else window
        if window == self.window:
            index = self.relative_position_index
        else:
            index = relative_position_index(window, table_window=self.window,
                                            device=self.relative_position_bias_table.device)
        n = window * window
        bias = self.relative_position_bias_table[index.reshape(-1)]          # (n * n, heads)
        return bias.reshape(n, n, self.heads).permute(2, 0, 1)               # (heads, n, n)

    def forward(
        self, windows: Tensor, mask: Tensor | None = None, *, fast: bool = True, return_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """windows (B * nW, n, C), n = m^2 with m <= M -> (B * nW, n, C); with `return_weights`,
        also the weights (B * nW, heads, n, n)."""
        self._check_input(windows, "(B * nW, M * M, C)", min_dims=3, exact=True)
        n = windows.shape[1]
        m = math.isqrt(n)
        if m * m != n or m > self.window:
            raise ValueError(f"SwinWindowAttention: windows must hold m * m tokens with m <= window={self.window} "
                             f"(M * M = {self.window ** 2}), got {n} tokens")
        bias = self.relative_position_bias(m)                                # (heads, n, n)
        full_mask = None
        if mask is not None:
            if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.dim() != 3 or mask.shape[1:] != (n, n):
                got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
                raise ValueError(f"SwinWindowAttention: mask must be a boolean (nW, {n}, {n}) tensor "
                                 f"(True = may attend), got {got}")
            if windows.shape[0] % mask.shape[0]:
                raise ValueError(f"SwinWindowAttention: {windows.shape[0]} windows are not a whole number of "
                                 f"images of nW={mask.shape[0]} windows (the mask's first dim)")
            # window w of the batch is window w % nW of its image: (B * nW, 1, n, n), broadcast over heads
            full_mask = mask.repeat(windows.shape[0] // mask.shape[0], 1, 1)[:, None]
        # softmax(Q K^T / sqrt(d) + B) V, masked, per window                  (eq. 10)
        return super().forward(windows, mask=full_mask, bias=bias, fast=fast, return_weights=return_weights)


def _check_shift(window: int, shift: int, where: str) -> None:
    if not isinstance(window, int) or window <= 0:
        raise ValueError(f"{where}: window must be a positive int, got {window!r}")
    if not isinstance(shift, int) or not 0 <= shift < window:
        raise ValueError(f"{where}: shift must be an int in 0..window-1 = 0..{window - 1} "
                         f"(window // 2 for SWSA, 0 for WSA), got {shift!r}")


def shifted_window_mask(
    height: int, width: int, window: int, shift: int, *, valid_height: int | None = None,
    valid_width: int | None = None, device: torch.device | str | None = None,
) -> Tensor:
    """Who may attend to whom inside each window of an image rolled by -shift: (nW, M^2, M^2) bool.

    `height` x `width` is the padded image (multiples of M = `window`); its top-left
    `valid_height` x `valid_width` pixels are real, the rest padding (bottom/right). After the
    cyclic shift torch.roll(x, (-shift, -shift)) the last `shift` rows (and columns) hold pixels
    that were at the top (left): Swin labels the rolled image with regions
    [0, H - M), [H - M, H - shift), [H - shift, H) along each axis (9 labels in all) and lets a
    token attend only to tokens of its own region, i.e. tokens that were neighbours before the roll.
    Padding: no token may attend to a padded key; a padded query attends only to itself, so no
    row is empty (its output is cropped away anyway). True = may attend.
    """
    _check_window_grid(height, width, window, "shifted_window_mask")
    _check_shift(window, shift, "shifted_window_mask")
    valid_height = height if valid_height is None else valid_height
    valid_width = width if valid_width is None else valid_width
    if not (0 < valid_height <= height and 0 < valid_width <= width):
        raise ValueError(f"shifted_window_mask: valid size {valid_height}x{valid_width} must be within the "
                         f"padded {height}x{width}")

    def region_labels(size: int) -> Tensor:
        label = torch.zeros(size, dtype=torch.long, device=device)
        if shift > 0:
            label[size - window:size - shift] = 1
            label[size - shift:] = 2
        return label                                                      # (size,)

    labels = region_labels(height)[:, None] * 3 + region_labels(width)[None, :]   # (H, W), 9 regions
    # which rolled pixels are real: pixel (r, c) of the rolled image was (r + shift, c + shift) mod size
    real = torch.zeros(height, width, dtype=torch.bool, device=device)
    real[:valid_height, :valid_width] = True
    real = torch.roll(real, shifts=(-shift, -shift), dims=(0, 1))
    labels = window_partition(labels[None, :, :, None], window)[..., 0]  # (nW, M^2)
    real = window_partition(real[None, :, :, None], window)[..., 0]      # (nW, M^2)
    mask = (labels[:, :, None] == labels[:, None, :]) & real[:, None, :]  # (nW, M^2, M^2)
    return mask | torch.eye(window * window, dtype=torch.bool, device=device)


def shifted_window_attention(
    x: Tensor, attn: SwinWindowAttention, shift: int, *, fast: bool = True, return_weights: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """(S)WSA of Li et al. eq. 6-7 on x (B, H, W, C) with `attn`'s window M: (B, H, W, C) out.

    shift = 0 is WSA, shift = M // 2 SWSA (Swin's shifted windows): roll by -shift, partition
    into M x M windows, attend inside each with the region mask (`shifted_window_mask`), reverse,
    roll back by +shift.
    - Small maps (Swin's rule): if min(H, W) <= M the window is clamped to m = min(H, W) and no
      shift is made (a window already spans the short side). The clamped window keeps `attn`'s
      parameters: its bias reads the central (2m - 1)^2 rows of the table.
    - H, W not multiples of the window: x is zero-padded at the bottom and right to multiples,
      the padded tokens are masked out as keys (padded queries see only themselves) and the
      output is cropped back to H x W. Real tokens therefore attend to real tokens only.
    With `return_weights`, also the weights (B * nW, heads, m^2, m^2) of the padded, rolled windows.
    """
    if not isinstance(attn, SwinWindowAttention):
        raise TypeError(f"shifted_window_attention: attn must be a SwinWindowAttention, got {type(attn).__name__}")
    attn._check_input(x, "(B, H, W, C)", min_dims=4, exact=True)
    window = attn.window
    _check_shift(window, shift, "shifted_window_attention")
    b, h, w, c = x.shape
    if min(h, w) <= window:
        window, shift = min(h, w), 0                                      # Swin: no shift, window clamped
    pad_h, pad_w = -h % window, -w % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))                          # (B, Hp, Wp, C), zeros bottom/right
    hp, wp = h + pad_h, w + pad_w
    mask = None
    if shift or pad_h or pad_w:
        mask = shifted_window_mask(hp, wp, window, shift, valid_height=h, valid_width=w, device=x.device)
    if shift:
        x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))           # cyclic shift
    windows = window_partition(x, window)                                 # (B * nW, m^2, C)
    result = attn(windows, mask, fast=fast, return_weights=return_weights)
    out, weights = result if return_weights else (result, None)
    out = window_reverse(out, window, hp, wp)                             # (B, Hp, Wp, C)
    if shift:
        out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))         # undo the shift
    out = out[:, :h, :w]                                                  # (B, H, W, C)
    return (out, weights) if return_weights else out
