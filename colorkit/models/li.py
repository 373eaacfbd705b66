"""Li et al.: interactive colorization with dual local self-attention (DLSA) and DUpsampling.

"Interactive image colorization method via dual local self-attention" (Li, Bao, Qiang) colorizes a
gray image from a few 2 x 2 color hints with a 4-stage hierarchical transformer (after Swin) whose
blocks attend inside three kinds of local windows (their Fig. 2 and 5): image windows (WSA),
shifted image windows (SWSA) and feature-space windows, groups of tokens of similar brightness
(FWSA). The 1/32 output is brought back to full resolution by DUpsampling after a 3 x 3 "local
stabilizing" conv:

    X_0 = I_g (+) I_hint                          [L; hint ab; mask]        (B, 4, H, W)     (eq. 4)
    patch embedding, P_1 = 4                      conv 4x4 / 4 + LN        (B, H/4, W/4, C)
    stage s = 1..4: depth_s x DLSA block                                    (B, H/P_s, W/P_s, C_s)
        z'   = WSA(LN(z)) + z                                                                (eq. 6)
        z''  = SWSA(LN(z')) + z'                                                             (eq. 7)
        z''' = FWSA(LN(z'')) + z''                                                           (eq. 8)
        z    = MLP(LN(z''')) + z'''                                                          (eq. 9)
      then patch merging (2 x 2 neighbours concatenated: C_{s+1} = 4 C_s, no 1x1 reduction)
    final norm (ours: BatchNorm, see below)                                 (B, C_4, H/32, W/32)
    local stabilizing layer                       conv 3x3 at 1/32          (B, C_4, H/32, W/32)
    DUpsampling                                   1x1 conv to 2 * 32^2, rearrange           (B, 2, H, W)
    I_pred = I_g (+) I_ab                                                                    (eq. 5)

Attention inside every window is eq. 10, softmax(Q K^T / sqrt(d) + B) V, with Swin's relative
position bias B for WSA and SWSA (`colorkit.attention.SwinWindowAttention`, Swin's parameter names)
and no bias in FWSA, whose windows are not spatial. FWSA's windows come from balanced binary
clustering (eq. 11-12, `colorkit.clustering`) of the tokens by N(t), the mean lightness of the
token's P_s x P_s patch of the input (brightness similarity), or by cosine similarity of the token
features (the paper's Table 3, Model 5); each cluster holds one SWSA window's worth of tokens, and
the outputs go back to their original token order.

Channel widths (what the paper leaves inconsistent). The paper's text has C = 3 P^2 channels at
every stage (48 -> 192 -> 768 -> 3072, the raw pixels under a patch) because patch merging keeps all
4 C channels. Read literally, with Swin-T's depths (2, 2, 6, 2), that model costs 38.5 GMACs and has
542 M parameters at 224 x 224 (measured with `complexity`), far from its Table 1 (Ours-T: 1.01
GFLOPs, fewer parameters than iColoriT). We keep the paper's structure, a linear patch embedding
to C_1 and widths that grow 4x per stage (no reduction), and pick C_1 so that the compute matches
its Table 1:
    T: C_1 = 8,  widths 8, 32, 128, 512,  depths (2, 2, 6, 2),  heads (2, 4, 8, 16)   (Swin-T depths)
    S: C_1 = 12, widths 12, 48, 192, 768, depths (2, 2, 18, 2), heads (3, 6, 12, 24)  (Swin-S depths, heads)
Head dimensions are 4, 8, 16, 32 in both. Measured at 224: T 1.14 GMACs and 16.0 M parameters
(1.03 GMACs and 13.7 M without the stabilizer; DUpsampling's projection is 0.05 of it), S 4.28
GMACs and 44.1 M. T's compute is 77 %
below iColoriT-S's 4.95 GFLOPs (the paper: "80 %"); its parameters are 27 % below ViT-S's 22 M
(the paper: "40 %").

The norm before the stabilizer (the paper names none; Swin ends its encoder in a LayerNorm). With
Swin's LayerNorm there, our course runs collapsed: within 20 steps the encoder's output became the
same vector for every image (its spread over a batch fell from 0.57 to 0.02), the prediction one
constant color, and 10 hints moved it by 0.000 ab units (issue 15; `tests/test_li.py` trains the
model to paint a flat image in its hints' color, which it could not do). A per-token norm lets the
stage-4 blocks write one large constant into every token and normalise the image away. A BatchNorm
over the batch cannot be satisfied that way, so it is the default (`final_norm="batch"`);
`final_norm="layer"` is Swin's, and what checkpoints saved before it hold.

The course's hint path (`hint_path`, not in the paper; issue 15). At the course's 64 x 64 and few
CPU minutes the paper's network stayed below painting the mean hint color everywhere: its 2 x 2
stage-4 tokens leave no full-resolution route from a hint to its pixels. `HintPath` adds one, and
with hint_path "spread" the model starts from the hints spread by distance (`models.spread_hints`)
and learns a correction; X_0 then carries that prior as two more channels, so the transformer and
the path read the guess they correct. "none" (the default, and the `full` preset) is the paper's network.

Training (sec. 4.3): 224 x 224, 10 random 2 x 2 hints per image carrying the mean true ab of their
patch, Huber loss with delta = 1 on ab in Lab units (eq. 13), AdamW lr 5e-4 with a cosine schedule.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from colorkit.attention import MultiHeadAttention, SwinWindowAttention, shifted_window_attention
from colorkit.clustering import (balanced_binary_clustering, cluster_padding_mask, cluster_windows,
                                 token_brightness, uncluster_windows)
from colorkit.data import geometric_hint_counts, sample_hints
from colorkit.models import Colorizer, global_hint, hint_inputs, hint_prior, pad_to_multiple, register

__all__ = ["ARCHS", "FINAL_NORMS", "FeatureWindowAttention", "DLSABlock", "PatchMerging", "DualLocalAttentionColorizer",
           "complexity", "make_li_step", "TRAIN_HINTS"]

TRAIN_HINTS = 10                   # sec. 4.3: "10 random points are selected", each 2 x 2 pixels
PATCH = 4                          # P_1
# T and S (sec. 4.3: "follows the configurations of Swin-S and Swin-T"); widths: see the docstring
ARCHS: dict[str, dict[str, Any]] = {
    "T": {"embed_dim": 8, "depths": [2, 2, 6, 2], "heads": [2, 4, 8, 16]},
    "S": {"embed_dim": 12, "depths": [2, 2, 18, 2], "heads": [3, 6, 12, 24]},
}
STABILIZERS = ("conv", "linear", "attention", "none")
HINT_PATHS = ("none", "local", "global", "fill", "spread")
FINAL_NORMS = ("batch", "layer")
SIMILARITIES = ("brightness", "cosine")


class FeatureWindowAttention(nn.Module):
    """FWSA (eq. 8, 11-12): multi-head attention inside clusters of `window^2` tokens grouped by content.

    forward(x (B, H, W, C), *, brightness (B, H * W) or None, perm=None, window=None) -> (B, H, W, C).
    Clusters come from `balanced_binary_clustering` of the tokens (by `brightness`, N(t) of eq. 12,
    or by the cosine of the features); attention runs inside each cluster, without a position bias;
    a short last cluster (H * W not a multiple of the cluster size) is padded and its padding masked.
    The parameters are a plain `qkv` / `proj` pair, like the spatial windows' minus the bias table.
    """

    def __init__(self, dim: int, heads: int, window: int, *, similarity: str = "brightness"):
        super().__init__()
        if similarity not in SIMILARITIES:
            raise ValueError(f"FeatureWindowAttention: similarity must be one of {SIMILARITIES}, got {similarity!r}")
        self.window, self.similarity = window, similarity
        self.attn = MultiHeadAttention(dim, heads)

    def clusters(self, x: Tensor, brightness: Tensor | None, window: int | None = None) -> Tensor:
        """The permutation (B, H * W) listing tokens cluster by cluster (clusters of window^2 tokens)."""
        b, h, w, c = x.shape
        m = min(window or self.window, h, w)                             # the SWSA window (clamped like it)
        tokens = x.reshape(b, h * w, c)
        return balanced_binary_clustering(tokens, m * m, brightness=brightness if self.similarity == "brightness" else None,
                                          similarity=self.similarity)   # eq. 11-12

    def forward(self, x: Tensor, *, brightness: Tensor | None = None, perm: Tensor | None = None,
                window: int | None = None) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"FeatureWindowAttention: x must be (B, H, W, C), got {tuple(x.shape)}")
        if self.similarity == "brightness" and brightness is None:
            raise ValueError("FeatureWindowAttention: brightness similarity needs brightness (B, H * W)")
        b, h, w, c = x.shape
        m = min(window or self.window, h, w)
        size = m * m
        if perm is None:
            perm = self.clusters(x, brightness, window)                  # (B, N)
        windows = cluster_windows(x.reshape(b, h * w, c), perm, size)    # (B * G, m^2, C)
        mask = None
        if (h * w) % size:
            real = cluster_padding_mask(h * w, size, device=x.device)    # (G, m^2): padded keys are False
            mask = real.repeat(b, 1)[:, None, None, :]                   # (B * G, 1, 1, m^2)
        out = self.attn(windows, mask=mask)                              # attention inside each cluster
        return uncluster_windows(out, perm, size).reshape(b, h, w, c)    # original token order


class MLP(nn.Sequential):
    """Two fully connected layers C -> r C -> C with GELU between (sec. 3.3, r = 4); Swin's names fc1, fc2."""

    def __init__(self, dim: int, ratio: float = 4.0):
        hidden = int(dim * ratio)
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)


class DLSABlock(nn.Module):
    """One dual local self-attention block: WSA, SWSA, FWSA and an MLP, each pre-LN with a residual (eq. 6-9)."""

    def __init__(self, dim: int, heads: int, window: int, *, similarity: str = "brightness", mlp_ratio: float = 4.0):
        super().__init__()
        self.window = window
        self.norm1, self.wsa = nn.LayerNorm(dim), SwinWindowAttention(dim, heads, window)
        self.norm2, self.swsa = nn.LayerNorm(dim), SwinWindowAttention(dim, heads, window)
        self.norm3, self.fwsa = nn.LayerNorm(dim), FeatureWindowAttention(dim, heads, window, similarity=similarity)
        self.norm4, self.mlp = nn.LayerNorm(dim), MLP(dim, mlp_ratio)

    def forward(self, z: Tensor, *, brightness: Tensor | None = None, perm: Tensor | None = None) -> Tensor:
        """z (B, H, W, C) -> (B, H, W, C); brightness (B, H * W) is N(t) for FWSA, `perm` its
        clusters when already known (brightness clusters are the same for every block of a stage)."""
        z = shifted_window_attention(self.norm1(z), self.wsa, 0) + z                      # eq. 6
        z = shifted_window_attention(self.norm2(z), self.swsa, self.window // 2) + z      # eq. 7
        z = self.fwsa(self.norm3(z), brightness=brightness, perm=perm) + z                # eq. 8
        return self.mlp(self.norm4(z)) + z                                                # eq. 9


class PatchMerging(nn.Module):
    """2 x 2 neighbouring tokens concatenated: (B, H, W, C) -> (B, H/2, W/2, 4C), then LN (Fig. 4).

    Swin then reduces 4C to 2C with a 1x1 (linear) layer; Li et al. drop it to keep the channels
    for the upsampling. `reduce=True` keeps it (their Table 3, Model 4), with Swin's names.
    """

    def __init__(self, dim: int, *, reduce: bool = False):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False) if reduce else None
        self.out_dim = 2 * dim if reduce else 4 * dim

    def forward(self, x: Tensor) -> Tensor:
        x0, x1 = x[:, 0::2, 0::2], x[:, 1::2, 0::2]                      # Swin's order of the four
        x2, x3 = x[:, 0::2, 1::2], x[:, 1::2, 1::2]
        x = self.norm(torch.cat([x0, x1, x2, x3], dim=-1))               # (B, H/2, W/2, 4C)
        return x if self.reduction is None else self.reduction(x)        # (B, H/2, W/2, 2C) with reduce


class HintPath(nn.Module):
    """The course's full-resolution hint path (not in the paper; issue 15): ab = ab_dup + r.

    At 64 x 64 the encoder ends in 2 x 2 tokens and DUpsampling rebuilds each 32 x 32 block of ab
    linearly from one token: nothing reaches the output at full resolution, so a 2 x 2 hint has to
    survive four stages of merging to move its own pixels. This path gives the output a short route
    from the input. A few 3 x 3 convs with dilations 1, 2, 4, 8 (receptive field 31 px) read
    [L; hint ab; mask] at full resolution, DUpsampling's ab, and with `use_global` each image's mean
    hint ab broadcast everywhere plus a has-hints flag (a global hint, as Zhang et al. 2017 feed
    global color statistics to their network), and add a residual r to DUpsampling's ab. The last
    conv starts at zero, so an untrained path leaves the paper's model unchanged. With `fill`
    ("mean" or "spread", `models.hint_prior`) the output also adds a classical guess from the hints
    alone, and the model (whose DUpsampling then starts at zero too) learns a correction to it:
    hint_path "spread", the course preset, is the one `benchmarks/hint_ablation.py` chose.

    forward(x0 (B, 4, H, W) the normalised input of eq. 4, or (B, 6, H, W) with the prior's ab / 110
    as its last two channels; ab (B, 2, H, W) in Lab units) -> (B, 2, H, W).
    """

    def __init__(self, width: int = 8, *, use_global: bool = True, fill: str | None = None):
        super().__init__()
        self.use_global, self.fill = use_global, fill
        inputs = (6 if fill else 4) + 2 + (3 if use_global else 0)      # X_0 (with the prior), ab, global
        layers: list[nn.Module] = [nn.Conv2d(inputs, width, 3, padding=1), nn.GELU()]
        for dilation in (2, 4, 8):
            layers += [nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation), nn.GELU()]
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(width, 2, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x0: Tensor, ab: Tensor) -> Tensor:
        parts = [x0, ab / 110.0]                                          # (B, 6, H, W)
        if self.use_global:
            parts.append(global_hint(x0).expand(-1, -1, *x0.shape[-2:]))   # (B, 9, H, W)
        out = ab + self.out(self.body(torch.cat(parts, dim=1)))          # residual in Lab units
        return out + x0[:, 4:6] * 110.0 if self.fill else out            # + the prior, X_0's last 2 channels


class _WindowStabilizer(nn.Module):
    """The attention stabilizer (Table 3, Model 3): one window self-attention at 1/32."""

    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.attn = SwinWindowAttention(dim, heads, window)

    def forward(self, x: Tensor) -> Tensor:                              # (B, C, h, w)
        return shifted_window_attention(x.permute(0, 2, 3, 1), self.attn, 0).permute(0, 3, 1, 2)


def _stabilizer(kind: str, dim: int, heads: int, window: int) -> nn.Module:
    if kind == "conv":
        return nn.Conv2d(dim, dim, 3, padding=1)                         # receptive field 3 (sec. 3.1)
    if kind == "linear":
        return nn.Conv2d(dim, dim, 1)
    if kind == "attention":
        return _WindowStabilizer(dim, heads, window)
    return nn.Identity()


@register("li")
class DualLocalAttentionColorizer(Colorizer):
    """Li et al.'s hierarchical DLSA transformer: L + hints -> ab (B, 2, H, W).

    forward(L, *, hint_ab=None, hint_mask=None, return_clusters=False); no hints = automatic
    colorization. Any H, W: padded by edge replication to a multiple of 32, cropped back.
    `arch` "T" or "S" (ARCHS); `embed_dim`, `depths`, `heads` override it. `window` is M (Swin: 7 at
    224; 4 suits 64 x 64 images, whose stage-1 map is 16 x 16). Ablations (Table 3): `stabilizer`
    "conv" (ours), "linear", "attention" or "none"; `merge_reduction` (Swin's 1x1 reduction in
    patch merging); `similarity` "brightness" or "cosine" (FWSA clustering). `final_norm` "batch"
    (ours, the default: see the module's docstring) or "layer" (Swin's).
    """

    takes_hints = True

    def __init__(self, arch: str = "T", image_size: int = 224, window: int = 7, embed_dim: int | None = None,
                 depths: Sequence[int] | None = None, heads: Sequence[int] | None = None,
                 stabilizer: str = "conv", merge_reduction: bool = False, similarity: str = "brightness",
                 mlp_ratio: float = 4.0, final_norm: str = "batch", hint_path: str = "none", hint_path_width: int = 8):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"li: arch must be one of {sorted(ARCHS)}, got {arch!r}")
        if stabilizer not in STABILIZERS:
            raise ValueError(f"li: stabilizer must be one of {STABILIZERS}, got {stabilizer!r}")
        if similarity not in SIMILARITIES:
            raise ValueError(f"li: similarity must be one of {SIMILARITIES}, got {similarity!r}")
        if final_norm not in FINAL_NORMS:
            raise ValueError(f"li: final_norm must be one of {FINAL_NORMS}, got {final_norm!r}")
        if hint_path not in HINT_PATHS:
            raise ValueError(f"li: hint_path must be one of {HINT_PATHS}, got {hint_path!r}")
        base = ARCHS[arch]
        embed_dim = base["embed_dim"] if embed_dim is None else embed_dim
        depths = list(base["depths"] if depths is None else depths)
        heads = list(base["heads"] if heads is None else heads)
        if len(depths) != 4 or len(heads) != 4:
            raise ValueError(f"li: depths and heads list the 4 stages, got depths={depths}, heads={heads}")
        self.image_size, self.window, self.similarity = image_size, window, similarity
        # X_0 has 4 channels: L, hint ab and the hint mask (eq. 4 folds the mask into ab = 0 off the
        # hints, which cannot tell a gray hint from none), so a patch has 4 P_1^2 = 64 values
        self.prior = {"fill": "mean", "spread": "spread"}.get(hint_path)   # the course's prior (HintPath)
        # with a prior, X_0 also carries it (2 more channels): the network reads the guess it corrects
        self.patch_embed = nn.Conv2d(6 if self.prior else 4, embed_dim, PATCH, stride=PATCH)  # (B, C_1, H/4, W/4)
        self.patch_norm = nn.LayerNorm(embed_dim)
        # E_pos (sec. 3.3), learned for image_size and interpolated for other sizes
        side = image_size // PATCH
        self.absolute_pos = nn.Parameter(torch.zeros(1, side, side, embed_dim))
        nn.init.trunc_normal_(self.absolute_pos, std=0.02)
        self.widths: list[int] = []
        self.stages, self.merges = nn.ModuleList(), nn.ModuleList()
        dim = embed_dim
        for s in range(4):
            if dim % heads[s]:
                raise ValueError(f"li: stage {s + 1} width {dim} is not divisible by its {heads[s]} heads")
            self.widths.append(dim)
            self.stages.append(nn.ModuleList(DLSABlock(dim, heads[s], window, similarity=similarity, mlp_ratio=mlp_ratio)
                                             for _ in range(depths[s])))
            if s < 3:
                merge = PatchMerging(dim, reduce=merge_reduction)
                self.merges.append(merge)
                dim = merge.out_dim
        self.final_norm = final_norm                                     # over the batch (ours) or per token (Swin)
        self.norm = nn.BatchNorm2d(dim) if final_norm == "batch" else nn.LayerNorm(dim)
        self.stabilizer = _stabilizer(stabilizer, dim, heads[3], window)
        self.scale = PATCH * 2 ** 3                                      # 32: the output stride
        self.dupsample = nn.Conv2d(dim, 2 * self.scale ** 2, 1)          # DUpsampling's projection W
        nn.init.zeros_(self.dupsample.bias)
        self.hint_path = (HintPath(hint_path_width, use_global=hint_path in ("global", "fill", "spread"),
                                   fill={"fill": "mean", "spread": "spread"}.get(hint_path))
                          if hint_path != "none" else None)              # the course's addition (HintPath)
        self.apply(self._init_linear)
        if hint_path in ("fill", "spread"):
            nn.init.zeros_(self.dupsample.weight)                        # an untrained model returns its prior

    @staticmethod
    def _init_linear(module: nn.Module) -> None:
        # Swin's initialisation: truncated normal, std 0.02, for linear layers
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def _inputs(self, L: Tensor, hint_ab: Tensor | None, hint_mask: Tensor | None) -> Tensor:
        # X_0 = I_g (+) I_hint: L, the hint ab (zero off the hints) and the mask, normalised    (eq. 4)
        x0 = hint_inputs(L, hint_ab, hint_mask, model="li")                      # (B, 4, H, W)
        if self.prior is None:
            return x0
        return torch.cat([x0, hint_prior(self.prior, x0) / 110.0], dim=1)        # + the prior: (B, 6, H, W)

    def _position(self, h: int, w: int) -> Tensor:
        pos = self.absolute_pos
        if pos.shape[1:3] != (h, w):
            pos = F.interpolate(pos.permute(0, 3, 1, 2), size=(h, w), mode="bicubic",
                                align_corners=False).permute(0, 2, 3, 1)
        return pos

    def encode(self, L: Tensor, hint_ab: Tensor | None = None, hint_mask: Tensor | None = None,
               *, return_clusters: bool = False, inputs: Tensor | None = None):
        """The hierarchical encoder: X_4 (B, C_4, H'/32, W'/32) of the input padded to H', W'
        (multiples of 32); with `return_clusters`, also {stage: (the stage's FWSA permutation (B, N_s),
        cluster size)} for pictures (brightness similarity only: cosine clusters change block by block).
        `inputs`: X_0 when the caller has built it already (`forward`)."""
        if inputs is None:
            inputs = self._inputs(L, hint_ab, hint_mask)                         # (B, 4 or 6, H, W)
        x0 = pad_to_multiple(inputs, self.scale)                                 # (B, 4 or 6, H', W')
        lightness = x0[:, :1] * 100.0 + 50.0                                     # L of the padded image
        x = self.patch_embed(x0).permute(0, 2, 3, 1)                             # (B, H'/4, W'/4, C_1)
        x = self.patch_norm(x) + self._position(*x.shape[1:3])                   # + E_pos
        clusters = {}
        for s, blocks in enumerate(self.stages):
            patch = PATCH * 2 ** s                                               # P_s = 4, 8, 16, 32
            brightness = token_brightness(lightness, patch)                      # N(t) of eq. 12: (B, N_s)
            perm = None
            if self.similarity == "brightness" and len(blocks):
                # N(t) does not change inside a stage: cluster once, every FWSA of the stage uses it
                perm = blocks[0].fwsa.clusters(x, brightness)                    # (B, N_s)
                clusters[s + 1] = (perm, min(self.window, *x.shape[1:3]) ** 2)
            for block in blocks:
                x = block(x, brightness=brightness, perm=perm)                   # (B, H'/P_s, W'/P_s, C_s)
            if s < 3:
                x = self.merges[s](x)                                            # (B, H'/2P_s, W'/2P_s, C_s+1)
        if self.final_norm == "batch":
            x = self.norm(x.permute(0, 3, 1, 2))                                 # (B, C_4, H'/32, W'/32)
        else:
            x = self.norm(x).permute(0, 3, 1, 2)                                 # (B, C_4, H'/32, W'/32)
        return (x, clusters) if return_clusters else x

    def forward(self, L: Tensor, *, hint_ab: Tensor | None = None, hint_mask: Tensor | None = None,
                return_clusters: bool = False):
        """ab (B, 2, H, W) in Lab units; with `return_clusters`, also the FWSA clusters (`encode`)."""
        h, w = L.shape[-2:]
        x0 = self._inputs(L, hint_ab, hint_mask)                                 # (B, 4, H, W); 6 with a prior
        encoded = self.encode(L, return_clusters=return_clusters, inputs=x0)
        x, clusters = encoded if return_clusters else (encoded, None)
        x = self.stabilizer(x)                                                   # local stabilizing layer
        # DUpsampling: a learned linear reconstruction of each token's 32 x 32 ab block, rearranged
        ab = F.pixel_shuffle(self.dupsample(x), self.scale)                      # (B, 2, H', W')
        # in Lab units directly: a fixed output gain (x 110) would multiply Adam's step on the
        # projection by it, and the predictions would jump by tens of Lab units per step
        ab = ab[..., :h, :w]                                                     # I_ab; I_pred = L (+) I_ab (eq. 5)
        if self.hint_path is not None:                                           # the course's full-resolution path
            ab = self.hint_path(x0, ab)                                          # (B, 2, H, W)
        return (ab, clusters) if return_clusters else ab


def legacy_config(config: dict, state: dict) -> dict:
    """A checkpoint saved before the final norm became a BatchNorm ends its encoder in Swin's
    LayerNorm: its "norm" has a weight and bias but no running statistics. It is rebuilt as such."""
    if (config.get("name") == "li" and "final_norm" not in config and "norm.weight" in state
            and "norm.running_mean" not in state):
        return {**config, "final_norm": "layer"}
    return config


# ---------------------------------------------------------------------------------------------
# Complexity (Table 1-2) and the training step (sec. 3.5, 4.3)
# ---------------------------------------------------------------------------------------------

def complexity(model: nn.Module, size: int = 224) -> dict[str, float]:
    """Parameters and multiply-accumulates of one forward pass on a size x size image (with hints).

    Counted by torch's FlopCounterMode (matmuls, convs and attention; FLOPs = 2 MACs). Swin's and
    the paper's "GFLOPs" follow fvcore, which counts one multiply-add as one FLOP: compare `gmacs`.
    """
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device
    L = torch.full((1, 1, size, size), 50.0, device=device)
    hints = sample_hints(torch.zeros(1, 2, size, size, device=device), TRAIN_HINTS, seed=0)
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(L, hint_ab=hints["hint_ab"], hint_mask=hints["hint_mask"])
    model.train(was_training)
    return {"parameters": sum(p.numel() for p in model.parameters()),
            "gmacs": counter.get_total_flops() / 2e9}


def huber_loss(pred_ab: Tensor, true_ab: Tensor, delta: float = 1.0) -> Tensor:
    """Eq. 13: 1/2 d^2 where |d| <= delta, else delta (|d| - delta / 2), on ab in Lab units, averaged."""
    return F.huber_loss(pred_ab, true_ab, delta=delta)


def make_li_step(*, hints: int | Sequence[int] = TRAIN_HINTS, hint_patch: int = 2, delta: float = 1.0,
                 hint_p: float | None = None, max_hints: int = 200):
    """The training step: `hints` random hint_patch x hint_patch hints per image (an int, the paper's
    10, or a (low, high) range drawn uniformly per image), then the Huber loss (eq. 13). With
    `hint_p`, the count is geometric instead (P(k) = (1 - p)^k p, at most `max_hints`; mean
    (1 - p) / p), as Zhang et al. 2017 train: the course's recipe (`benchmarks/hint_ablation.py`).

    Hints come from the engine's seeded torch RNG, so a resumed run draws the same hints.
    """
    if isinstance(hints, int):
        low = high = hints
    else:
        low, high = (int(v) for v in hints)
    if not 0 <= low <= high:
        raise ValueError(f"li: hints must be an int >= 0 or a range (low, high) with 0 <= low <= high, got {hints!r}")
    if hint_p is not None and not 0 < hint_p <= 1:
        raise ValueError(f"li: hint_p must be in (0, 1], got {hint_p!r}")

    def step(ctx, batch) -> dict[str, Tensor]:
        L, ab = batch["L"], batch["ab"]                                  # (B, 1, H, W), (B, 2, H, W)
        if hint_p is not None:
            counts = geometric_hint_counts(L.shape[0], p=hint_p, max_hints=max_hints).tolist()
        else:
            counts = torch.randint(low, high + 1, (L.shape[0],)) if high > low else low
        sampled = sample_hints(ab, counts, patch=hint_patch)             # the mean true ab of each patch
        pred = ctx.models["model"](L, hint_ab=sampled["hint_ab"], hint_mask=sampled["hint_mask"])
        loss = huber_loss(pred, ab, delta)                               # eq. 13
        ctx.update("model", loss, name="loss")
        return {"loss": loss}

    return step


DualLocalAttentionColorizer.training_step = staticmethod(make_li_step())
