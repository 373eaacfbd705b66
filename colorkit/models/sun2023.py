"""Sun et al. (2023), step 1: the coarse colorizer, an axial-attention Transformer over a 512-color palette.

Sun et al. colorize a 64 x 64 image with the Colorization Transformer of Kumar et al. (2021,
"ColTran"): every pixel's color is one of 512 palette entries (3 bits per RGB channel,
`colorkit.color.rgb_to_palette`), and the model is autoregressive in raster order,

    p(y | x) = prod_{i, j} p(y_ij | y_<ij, x),     x the gray image, y the palette image,

so sampling it gives a different, plausible colorization each time (their Fig. 8). Every layer
is the row or column self-attention block of eq. 5 (`colorkit.attention.AxialBlock`):

    grayscale encoder   z = Enc(x)                       row + column blocks, unmasked
    outer decoder       o = Outer(shift_down(E y), z)    row blocks + masked column blocks
    inner decoder       h = Inner(shift_right(E y), o)   masked row blocks
    decoder head        p(y_ij | y_<ij, x) = softmax(W h_ij)
    auxiliary head      p~(y_ij | x) = softmax(W~ z_ij)  all pixels at once, no autoregression

Why this is causal: shift_down puts row i-1's colors at row i, so the outer decoder's row i
mixes (unmasked along the row, masked down the column) only rows < i. shift_right puts pixel
(i, j-1) at (i, j), so the inner decoder's masked row attention at (i, j) sees only (i, < j).
Together h_ij depends on exactly the pixels before (i, j) in raster order (and all of x).

How the decoders are conditioned (ColTran sec. 4.1, `colorkit.attention.AxialBlock`):
    outer decoder   cLN from z pooled over the image, cAtt and cMLP from z at each pixel
    inner decoder   cLN from z pooled over the image, cMLP from [z; o] at each pixel
                    (no cAtt, as ColTran's inner decoder)
The pooled context is z alone in both, as in ColTran: z depends only on the gray image, while a
mean over o would mix in rows below i, which have seen colors not yet drawn, and break the raster
order above. Per-pixel [z; o] is safe: o_ij depends on rows < i only.

Loss (eq. 7-8): L_c = -[lambda log P_c + (1 - lambda) log P~_c], lambda = 0.99, reported in bits
per dimension: the mean over pixels of -log2 p. We count one dimension per pixel (one 512-way
symbol = 3 channels x 3 bits), so a uniform guess costs log2(512) = 9 bits/dim; ColTran counts
3 dimensions per pixel, which divides our numbers by 3.

Sampling (`sample`) draws pixel by pixel with a temperature; `cached=True` runs the outer decoder
once per row and the inner decoder on the current row only, and gives the same samples as the
naive loop that reruns the whole decoder on the whole canvas for each of the H * W pixels.
`predict_parallel` is the auxiliary head's argmax: one pass, no sampling.

What the model's colorization is (`forward`, so `colorkit.colorize` and `evaluate`) is the `decode`
of its config: "greedy" (the default: the autoregressive decoder, taking the most probable color
at each pixel in raster order, i.e. `sample` at temperature 0), "sample" (the decoder's draw at
`temperature`, seeded by `sample_seed`, so one call gives one fixed, reproducible coloring) or
"parallel" (the auxiliary head, the fast option: one pass instead of H * W decoder steps, which
cost, for the course model on 2 CPU cores, 3.5 s for one 64 x 64 image and 1.1 s per image in a batch of 12).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from colorkit.attention import AxialBlock
from colorkit.color import PALETTE_SIZE, palette_to_rgb, rgb_to_lab, rgb_to_palette
from colorkit.models import Colorizer, register

GRAY_LEVELS = 256  # L is embedded as one of 256 gray levels, as ColTran embeds the 8-bit gray image
DECODES = ("greedy", "sample", "parallel")   # how forward() colors: the decoder (argmax or a draw), or the aux head


def shift_down(x: Tensor) -> Tensor:
    """(B, H, W, C): row i takes row i-1's values, row 0 is zeros (nothing has been generated yet)."""
    return F.pad(x, (0, 0, 0, 0, 1, 0))[:, :-1]


def shift_right(x: Tensor) -> Tensor:
    """(B, H, W, C): pixel (i, j) takes (i, j-1)'s values, column 0 is zeros."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]


def bits_per_dim(logits: Tensor, target: Tensor) -> Tensor:
    """Mean negative log2-likelihood per pixel: logits (B, 512, H, W), target (B, H, W) long -> scalar."""
    # class dim last: for the heads' (B, H, W, 512) outputs seen as (B, 512, H, W) this is free, and
    # log_softmax over contiguous rows is several times faster than over dim 1
    logits = logits.movedim(1, -1).reshape(-1, logits.shape[1]).float()   # (B * H * W, 512)
    # -log p in nats, averaged over pixels, / ln 2 -> bits                    (eq. 8)
    return F.cross_entropy(logits, target.reshape(-1)) / math.log(2)


@register("sun2023")
class ColorTransformer(Colorizer):
    """The coarse colorizer: L (B, 1, H, W) -> a distribution over palette images (B, H, W).

    dim: channels of every block; heads: attention heads; encoder_depth: (row, column) block pairs
    of the grayscale encoder; outer_depth: (row, masked column) pairs of the outer decoder;
    inner_depth: masked row blocks of the inner decoder; mlp_ratio: MLP width / dim;
    relative_bias: per-axis relative position bias in every block; image_size: the side colorize()
    resizes to, and the longest row/column the model accepts; decoder_weight: lambda of eq. 7;
    decode, temperature, sample_seed: how `forward` colors an image (see the module docstring).
    """

    def __init__(self, dim: int = 32, heads: int = 2, encoder_depth: int = 1, outer_depth: int = 1,
                 inner_depth: int = 1, mlp_ratio: float = 2, relative_bias: bool = True, image_size: int = 64,
                 decoder_weight: float = 0.99, decode: str = "greedy", temperature: float = 1.0, sample_seed: int = 0):
        super().__init__()
        if not 0.0 <= decoder_weight <= 1.0:
            raise ValueError(f"sun2023: decoder_weight (lambda of eq. 7) must be in [0, 1], got {decoder_weight}")
        if decode not in DECODES:
            raise ValueError(f"sun2023: decode must be one of {DECODES}, got {decode!r}")
        if temperature < 0:
            raise ValueError(f"sun2023: temperature must be >= 0, got {temperature}")
        self.image_size, self.decoder_weight = image_size, decoder_weight
        self.decode, self.temperature, self.sample_seed = decode, temperature, sample_seed

        def block(axis: str, causal: bool = False, context_dim: int | None = None, attention: bool = False) -> AxialBlock:
            return AxialBlock(dim, heads, axis, mlp_ratio=mlp_ratio, relative_bias=relative_bias, max_len=image_size,
                              causal=causal, context_dim=context_dim, pooled_dim=dim if context_dim else None,
                              conditional_attention=attention)

        # grayscale encoder: gray level -> dim, then unmasked row and column attention
        self.gray_embed = nn.Embedding(GRAY_LEVELS, dim)
        # absolute positions, one learned vector per row and per column (the relative bias, when on,
        # adds offsets inside each attention; without it these are the model's only sense of place)
        self.row_embed = nn.Parameter(torch.randn(image_size, dim) * 0.02)
        self.column_embed = nn.Parameter(torch.randn(image_size, dim) * 0.02)
        self.encoder = nn.ModuleList(block(axis) for _ in range(encoder_depth) for axis in ("row", "column"))
        self.encoder_norm = nn.LayerNorm(dim)
        # one color embedding E, used by both decoders
        self.color_embed = nn.Embedding(PALETTE_SIZE, dim)
        # outer decoder: unmasked row + masked column attention; cLN (pooled z), cAtt and cMLP (z)
        self.outer = nn.ModuleList(block(axis, causal=(axis == "column"), context_dim=dim, attention=True)
                                   for _ in range(outer_depth) for axis in ("row", "column"))
        # inner decoder: masked row attention; cLN (pooled z) and cMLP ([z; o] per pixel)
        self.inner = nn.ModuleList(block("row", causal=True, context_dim=2 * dim) for _ in range(inner_depth))
        self.decoder_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, PALETTE_SIZE))
        self.aux_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, PALETTE_SIZE))
        for head in (self.decoder_head, self.aux_head):   # start at the uniform guess: 9 bits/dim
            nn.init.zeros_(head[1].weight)
            nn.init.zeros_(head[1].bias)

    # --- the three networks ----------------------------------------------------------------------

    def _check_L(self, L: Tensor) -> None:
        if not isinstance(L, Tensor) or L.dim() != 4 or L.shape[1] != 1:
            raise ValueError(f"sun2023: L must be (B, 1, H, W), got "
                             f"{tuple(L.shape) if isinstance(L, Tensor) else type(L).__name__}")
        if max(L.shape[-2:]) > self.image_size:
            raise ValueError(f"sun2023: image {tuple(L.shape[-2:])} is larger than image_size={self.image_size}; "
                             f"resize it to {self.image_size} x {self.image_size} or build a bigger model")

    def _check_index(self, L: Tensor, palette_index: Tensor) -> None:
        if palette_index.shape != (L.shape[0], *L.shape[-2:]) or palette_index.dtype != torch.long:
            raise ValueError(f"sun2023: palette_index must be long (B, H, W) = {(L.shape[0], *L.shape[-2:])} "
                             f"matching L, got {palette_index.dtype} {tuple(palette_index.shape)}")

    def encode(self, L: Tensor) -> Tensor:
        """Grayscale encoder: L (B, 1, H, W) in [0, 100] -> z (B, H, W, dim)."""
        self._check_L(L)
        level = (L[:, 0] * ((GRAY_LEVELS - 1) / 100)).round().clamp(0, GRAY_LEVELS - 1).long()  # (B, H, W)
        height, width = level.shape[-2:]
        z = self.gray_embed(level) + self.row_embed[:height, None] + self.column_embed[:width]  # (B, H, W, C)
        for layer in self.encoder:
            z = layer(z)  # eq. 5 along rows, then columns
        return self.encoder_norm(z)

    def outer_decoder(self, z: Tensor, palette_index: Tensor) -> Tensor:
        """z (B, H, W, C), colors (B, H, W) -> o (B, H, W, C); row i of o depends on rows < i only."""
        # row i sees the colors of row i - 1: the one shift that makes the outer decoder causal
        o = shift_down(self.color_embed(palette_index)) + z  # (B, H, W, C)
        for layer in self.outer:
            # row layers: unmasked (all of the row above); column layers: masked (rows above only)
            o = layer(o, context=z, pooled=z)
        return o

    def inner_decoder(self, o: Tensor, palette_index: Tensor, z: Tensor, pooled: Tensor | None = None) -> Tensor:
        """o, z (B, H, W, C), colors (B, H, W) -> h (B, H, W, C); h_ij depends on (i, < j), o_i, z_i only.

        Works on any number of rows and any prefix of columns (all rows are independent): then z
        is cut like o, and `pooled` is the whole image's z (the cLN's context; default z).
        """
        # pixel (i, j) sees the color of (i, j - 1): the shift that makes the inner decoder causal
        h = shift_right(self.color_embed(palette_index)) + o  # (B, H, W, C)
        context = torch.cat([z, o], dim=-1)                   # (B, H, W, 2 C): ColTran's cMLP context
        for layer in self.inner:
            # masked row attention: (i, j) sees (i, <= j) of the shifted row
            h = layer(h, context=context, pooled=z if pooled is None else pooled)
        return h

    # --- the distributions -----------------------------------------------------------------------

    def logits(self, L: Tensor, palette_index: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher forcing: L (B, 1, H, W), true colors (B, H, W) -> (decoder, auxiliary) logits, each (B, 512, H, W).

        The decoder's logits at (i, j) are p(y_ij | y_<ij, x); the auxiliary ones p~(y_ij | x).
        """
        self._check_L(L)
        self._check_index(L, palette_index)
        z = self.encode(L)
        h = self.inner_decoder(self.outer_decoder(z, palette_index), palette_index, z)
        dec = self.decoder_head(h).permute(0, 3, 1, 2)           # (B, 512, H, W)
        aux = self.aux_head(z).permute(0, 3, 1, 2)               # (B, 512, H, W)
        return dec, aux

    def loss(self, L: Tensor, palette_index: Tensor) -> dict[str, Tensor]:
        """Eq. 7-8 in bits/dim: {"loss": lambda * bpd_decoder + (1 - lambda) * bpd_aux, "bpd_decoder", "bpd_aux"}."""
        return coarse_loss(*self.logits(L, palette_index), palette_index, self.decoder_weight)

    def forward(self, L: Tensor, *, hint_ab: Tensor | None = None, hint_mask: Tensor | None = None,
                palette_index: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor]:
        """L (B, 1, H, W) -> ab (B, 2, H, W): the Lab ab of `colors(L)`, the palette colors `decode` gives.

        With `palette_index` (B, H, W) it returns `logits(L, palette_index)` instead: the training
        step goes through forward so that DistributedDataParallel sees the call.
        """
        if hint_ab is not None or hint_mask is not None:
            raise ValueError("sun2023 takes no hints")
        if palette_index is not None:
            return self.logits(L, palette_index)
        rgb = palette_to_rgb(self.colors(L), dtype=L.dtype if L.is_floating_point() else torch.float32)
        return rgb_to_lab(rgb)[:, 1:]                            # (B, 2, H, W)

    @torch.no_grad()
    def colors(self, L: Tensor, decode: str | None = None) -> Tensor:
        """The model's coloring as palette indices (B, H, W), by `decode` (None: the config's)."""
        decode = self.decode if decode is None else decode
        if decode == "parallel":
            return self.predict_parallel(L)
        if decode == "greedy":           # T = 0 ignores the uniforms; a private generator leaves the global RNG alone
            return self.sample(L, temperature=0.0, generator=torch.Generator().manual_seed(0))
        if decode == "sample":
            return self.sample(L, temperature=self.temperature, generator=torch.Generator().manual_seed(self.sample_seed))
        raise ValueError(f"sun2023: decode must be one of {DECODES}, got {decode!r}")

    @torch.no_grad()
    def predict_parallel(self, L: Tensor) -> Tensor:
        """The fast prediction: argmax of the auxiliary head, every pixel at once -> (B, H, W) palette index."""
        return self.aux_head(self.encode(L)).argmax(dim=-1)

    # --- sampling --------------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, L: Tensor, *, temperature: float = 1.0, generator: torch.Generator | None = None,
               cached: bool = True, rows: int | None = None) -> Tensor:
        """Draw colors pixel by pixel in raster order from p(y_ij | y_<ij, x) -> (B, H, W) palette index.

        temperature: logits / T before the softmax (T < 1 sharper, T = 0 the argmax).
        generator: one uniform per pixel is drawn up front from it, (B, H, W), and pixel (i, j)
        takes the palette entry where the cumulative probability first exceeds its uniform; so
        the same generator seed gives the same samples whichever path computes the probabilities.
        cached=False: the naive loop, the full decoder on the whole canvas for every pixel
        (H * W decoder passes). cached=True: the outer decoder once per row, then the inner
        decoder on that row's prefix (i, <= j) only for each pixel.
        Both compute the same probabilities up to float rounding (float32: logits agree to about
        1e-5, so a draw could in principle flip when its uniform falls within that of a class
        boundary; in float64 that chance is negligible, and the tests compare there).
        rows: stop after this many rows (the rest stays 0), for timing the naive loop.
        The encoder runs once in both.
        """
        if temperature < 0:
            raise ValueError(f"sun2023.sample: temperature must be >= 0, got {temperature}")
        self._check_L(L)
        b, _, height, width = L.shape
        rows = height if rows is None else min(rows, height)
        uniforms = torch.rand(b, height, width, generator=generator, device=generator.device if generator else "cpu")
        uniforms = uniforms.to(L.device)
        canvas = torch.zeros(b, height, width, dtype=torch.long, device=L.device)
        z = self.encode(L)                                               # (B, H, W, C)
        for i in range(rows):
            if cached:
                # row i of the outer decoder needs rows < i, all drawn by now: once per row. (Rows >= i
                # are still 0 and are not seen; running on the whole canvas keeps the arithmetic
                # identical to the naive loop's.)
                o_row = self.outer_decoder(z, canvas)[:, i:i + 1]                          # (B, 1, W, C)
            for j in range(width):
                if cached:
                    # (i, j) of the inner decoder needs (i, <= j) of the canvas (< j after the shift)
                    h = self.inner_decoder(o_row[:, :, :j + 1], canvas[:, i:i + 1, :j + 1],
                                           z[:, i:i + 1, :j + 1], pooled=z)[:, 0, j]           # (B, C)
                else:
                    h = self.inner_decoder(self.outer_decoder(z, canvas), canvas, z)[:, i, j]    # (B, C)
                logits = self.decoder_head(h)                            # (B, 512)
                canvas[:, i, j] = draw(logits, uniforms[:, i, j], temperature)
        return canvas


def draw(logits: Tensor, uniform: Tensor, temperature: float) -> Tensor:
    """Inverse-CDF sampling: logits (B, K), uniform (B,) in [0, 1) -> (B,) indices from softmax(logits / T)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    cdf = (logits / temperature).softmax(dim=-1).cumsum(dim=-1)           # (B, K)
    index = torch.searchsorted(cdf, uniform[:, None].to(cdf.dtype).contiguous(), right=True)[:, 0]
    return index.clamp(max=logits.shape[-1] - 1)                          # guards cdf[-1] < 1 by rounding


def coarse_loss(dec_logits: Tensor, aux_logits: Tensor, target: Tensor, decoder_weight: float = 0.99) -> dict[str, Tensor]:
    """Eq. 7: lambda * NLL(decoder) + (1 - lambda) * NLL(auxiliary), each in bits per dimension (pixel)."""
    bpd_decoder = bits_per_dim(dec_logits, target)
    bpd_aux = bits_per_dim(aux_logits, target)
    # L_c = -[lambda log P_c + (1 - lambda) log P~_c]                         (eq. 7)
    total = decoder_weight * bpd_decoder + (1 - decoder_weight) * bpd_aux
    return {"loss": total, "bpd_decoder": bpd_decoder, "bpd_aux": bpd_aux}


def coarse_batch(batch: dict[str, Tensor], image_size: int) -> tuple[Tensor, Tensor]:
    """A training batch -> (L (B, 1, S, S), palette index (B, S, S)) at the model's size S.

    The target is batch["rgb"] quantized to the palette; images of another size are first
    area-downsampled to S x S (Sun et al. downsample 512 x 512 images to 64 x 64), and L is then
    recomputed from the downsampled RGB so that L and the target describe the same pixels.
    """
    rgb = batch["rgb"]
    if rgb.shape[-2:] != (image_size, image_size):
        rgb = F.interpolate(rgb, size=(image_size, image_size), mode="area")
        L = rgb_to_lab(rgb)[:, :1]
    else:
        L = batch["L"] if "L" in batch else rgb_to_lab(rgb)[:, :1]
    return L, rgb_to_palette(rgb)


def sun2023_step(ctx, batch) -> dict[str, Tensor]:
    """One RMSProp/Adam step on eq. 7 with teacher forcing; logs the total and both bits/dim."""
    unwrapped = ctx.unwrapped["model"]
    L, target = coarse_batch(batch, unwrapped.image_size)
    dec_logits, aux_logits = ctx.models["model"](L, palette_index=target)   # through forward: DDP-safe
    losses = coarse_loss(dec_logits, aux_logits, target, unwrapped.decoder_weight)
    ctx.update("model", losses["loss"], name="loss")
    return losses


ColorTransformer.training_step = staticmethod(sun2023_step)
