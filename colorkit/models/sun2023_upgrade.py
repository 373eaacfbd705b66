"""Sun et al. (2023), step 2: the upgrading network, a conditional GAN from coarse to full-resolution color.

Step 1 (colorkit/models/sun2023.py) colorizes at 64 x 64 over a 512-color palette. Step 2 turns that
coarse, 3-bit color into full-resolution color (paper sec. II.D, Fig. 5-6, eq. 9-10):

    gray L (B, 1, H, W), full resolution ─┐
                                          ├─> upgrader G: encoder -> residual middle -> decoder -> ab (B, 2, H, W)
    coarse RGB (B, 3, 64, 64), palette  ──┘   (upsampled to H x W inside the model)

    final image = Lab(L, ab): the full-resolution lightness is kept exactly; G only predicts color.

    D(x, y): a PatchGAN on the coarse color image x = X_LQ (upsampled to H x W) and the full-resolution
    color image y = (L, ab), one logit per patch: it judges whether y is a real upgrade of x.

Training pairs as in the paper's sec. III.A: the coarse input X_LQ is the real image itself, area-
downsampled to 64 x 64 and quantized to the palette (`coarse_from_rgb`); the target Y is the real ab.

    D maximises  E[log D(x, y)] + E[log(1 - D(x, G(x)))],  x ~ X_LQ, y ~ Y           (eq. 9)
    G minimises  L_GAN + lambda_r * MSE(y, G(x)),  lambda_r = 10                   (eq. 10)

with the non-saturating L_GAN = -E[log D(x, G(x))] (Goodfellow et al. 2014) and Adam, betas
(0, 0.9), lr 2e-4 for both networks (paper sec. III): `UPGRADE_OPTIMIZERS`.

Design choices the paper leaves open (ours, said once here):
- G predicts ab, not RGB: joining it with the input L keeps every detail of the gray image, and
  the MSE is taken on ab / 110 (the same units as the output's tanh, and as the baseline's MSE).
  On RGB the loss would also have to pass through lab_to_rgb's gamut clipping, whose gradient is 0
  for out-of-gamut colors, and L's error is 0 by construction anyway.
- `residual=True` (default): G starts as "full L + upsampled coarse ab" (its last layer is zero-
  initialised) and learns a correction in tanh's pre-activation space:
      ab = 110 tanh(atanh(ab_coarse_up / 110) + head(features)).
- Instance norm in G (the paper cites Ulyanov et al.), spectral norm in D (optional; it goes with
  Adam betas (0, 0.9), the SAGAN recipe), additive skips from encoder to decoder so sharp edges of
  L reach the output at full resolution.

`colorkit.colorize(upgrader, image)` does not work on its own: the upgrader needs the coarse color
from step 1. Sun et al.'s method is the two steps together: `SunPipeline` ("sun2023_pipeline")
holds both networks, and `save_pipeline(path, coarse, upgrader)` writes it as one self-contained
checkpoint that `colorkit.load`, `colorkit.colorize` and the command line use at any image size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from colorkit.color import lab_to_rgb, palette_to_rgb, rgb_to_lab, rgb_to_palette
from colorkit.losses import critic_loss, generator_adversarial_loss
from colorkit.models import Colorizer, pad_to_multiple, register

__all__ = ["SunUpgrader", "PatchDiscriminator", "SunPipeline", "save_pipeline", "coarse_from_rgb", "upgrade_step",
           "make_upgrade_step", "upgrade_metrics", "UPGRADE_OPTIMIZERS", "AB_SCALE", "LAMBDA_R"]

AB_SCALE = 110.0      # ab = tanh(.) * AB_SCALE, as the baseline: covers the sRGB gamut (|a|, |b| < 110)
LAMBDA_R = 10.0       # eq. 10's weight on the MSE term (paper sec. III)
# Paper sec. III: "ADAM algorithm of beta_1 = 0, beta_2 = 0.9, the regular learning rate is 2e-4"
UPGRADE_OPTIMIZERS: dict[str, dict[str, Any]] = {
    "generator": {"models": ["generator"], "optimizer": "adam", "lr": 2e-4, "betas": (0.0, 0.9)},
    "discriminator": {"models": ["discriminator"], "optimizer": "adam", "lr": 2e-4, "betas": (0.0, 0.9)},
}


# ---------------------------------------------------------------------------------------------
# The coarse input X_LQ
# ---------------------------------------------------------------------------------------------

def _check_rgb(rgb: Tensor, name: str) -> None:
    if not isinstance(rgb, Tensor) or rgb.dim() != 4 or rgb.shape[1] != 3:
        shape = tuple(rgb.shape) if isinstance(rgb, Tensor) else type(rgb).__name__
        raise ValueError(f"sun2023_upgrade: {name} must be an RGB batch shaped (B, 3, H, W), got {shape}")
    if not rgb.is_floating_point():
        raise TypeError(f"sun2023_upgrade: {name} must be float RGB in [0, 1], got {rgb.dtype}")


def coarse_from_rgb(rgb: Tensor, size: int | tuple[int, int] = 64) -> Tensor:
    """The paper's "color-down-sampling image" X_LQ: RGB (B, 3, H, W) -> (B, 3, size, size).

    Area-downsample (each coarse pixel is the mean of its block), then quantize to the 512-color
    palette (3 bits per channel) and decode to the level centres: at most 512 distinct colors.
    """
    _check_rgb(rgb, "rgb")
    small = F.interpolate(rgb.float(), size=size if isinstance(size, tuple) else (size, size), mode="area")
    return palette_to_rgb(rgb_to_palette(small.clamp(0, 1)))                     # (B, 3, size, size)


# ---------------------------------------------------------------------------------------------
# The upgrading network G (Fig. 5): encoder, middle residual layers, decoder
# ---------------------------------------------------------------------------------------------

def conv_in_relu(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2,
                                   padding_mode="reflect", bias=False),
                         nn.InstanceNorm2d(c_out, affine=True), nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    """x + IN(conv(ReLU(IN(conv(x))))) (He et al. 2016; the middle layers of Fig. 5)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv_in_relu(channels, channels),
                                  nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect", bias=False),
                                  nn.InstanceNorm2d(channels, affine=True))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


@register("sun2023_upgrader")
class SunUpgrader(Colorizer):
    """Full-res L (B, 1, H, W) + coarse RGB (B, 3, h, w) -> full-res ab (B, 2, H, W).

    Encoder: a 7x7 stem at full resolution (width C), then `n_down` stride-2 3x3 convolutions
    doubling the width (C -> 2C -> 4C at H/4 for n_down = 2). Middle: `n_res` residual blocks at
    the bottom width. Decoder: `n_down` x (nearest 2x upsampling, 3x3 conv halving the width, plus
    the encoder's features of that resolution), then a 3x3 head to ab. Instance norm and ReLU
    after every convolution except the head. Any H, W work (padded to a multiple of 2^n_down).

    `training_models()` gives the Trainer {"generator": self, "discriminator": a fresh
    PatchDiscriminator(disc_width, disc_layers, disc_spectral_norm)}.

    The coarse image may have any size (64 x 64 in the paper): the model converts it to Lab and
    upsamples it to H x W (`upsample`: "bilinear" or "bicubic"). `image_size` is the full
    resolution it is trained at; `coarse_size` the side of X_LQ that `upgrade_step` builds.
    """

    def __init__(self, width: int = 16, n_down: int = 2, n_res: int = 3, image_size: int = 128,
                 coarse_size: int = 64, upsample: str = "bilinear", residual: bool = True,
                 disc_width: int = 32, disc_layers: int = 2, disc_spectral_norm: bool = True):
        super().__init__()
        # the discriminator's settings live in the generator's config, so one dict describes the GAN
        self.disc_kwargs = {"width": disc_width, "n_layers": disc_layers, "spectral_norm": disc_spectral_norm}
        if upsample not in ("bilinear", "bicubic"):
            raise ValueError(f"upsample must be 'bilinear' or 'bicubic', got {upsample!r}")
        if n_down < 0 or n_res < 0 or width < 1:
            raise ValueError(f"need width >= 1, n_down >= 0, n_res >= 0; got {width}, {n_down}, {n_res}")
        self.image_size, self.coarse_size = image_size, coarse_size
        self.n_down, self.upsample, self.residual = n_down, upsample, residual
        widths = [width * 2**i for i in range(n_down + 1)]                  # e.g. 16, 32, 64
        # input: L, and the upsampled coarse Lab (its L too: quantisation shifts it off the true L)
        self.stem = conv_in_relu(1 + 3, widths[0], kernel=7)
        self.down = nn.ModuleList(conv_in_relu(widths[i], widths[i + 1], stride=2) for i in range(n_down))
        self.middle = nn.Sequential(*(ResidualBlock(widths[-1]) for _ in range(n_res)))
        self.up = nn.ModuleList(conv_in_relu(widths[i + 1], widths[i]) for i in reversed(range(n_down)))
        self.head = nn.Conv2d(widths[0], 2, 3, padding=1, padding_mode="reflect")
        if residual:               # start as "L + upsampled coarse ab": no correction yet
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def training_models(self) -> dict[str, nn.Module]:
        """The two networks `upgrade_step` trains: this generator and a new discriminator."""
        return {"generator": self, "discriminator": PatchDiscriminator(**self.disc_kwargs)}

    def coarse_lab(self, coarse_rgb: Tensor, size: tuple[int, int]) -> Tensor:
        """Coarse RGB (B, 3, h, w) -> its Lab upsampled to `size`: (B, 3, H, W)."""
        # in float32 even under bf16 autocast: the color conversion and atanh need the precision
        with torch.autocast(coarse_rgb.device.type, enabled=False):
            lab = rgb_to_lab(coarse_rgb.float().clamp(0, 1))                # (B, 3, h, w)
            if tuple(lab.shape[-2:]) == tuple(size):
                return lab
            return F.interpolate(lab, size=size, mode=self.upsample, align_corners=False)   # (B, 3, H, W)

    def upgrade(self, L: Tensor, coarse_rgb: Tensor) -> Tensor:
        """L (B, 1, H, W) in [0, 100], coarse RGB (B, 3, h, w) in [0, 1] -> ab (B, 2, H, W) in Lab units."""
        if not isinstance(L, Tensor) or L.dim() != 4 or L.shape[1] != 1:
            raise ValueError(f"sun2023_upgrader: L must be shaped (B, 1, H, W), got "
                             f"{tuple(L.shape) if isinstance(L, Tensor) else type(L).__name__}")
        _check_rgb(coarse_rgb, "coarse_rgb")
        if coarse_rgb.shape[0] != L.shape[0]:
            raise ValueError(f"sun2023_upgrader: L has batch {L.shape[0]} but coarse_rgb has {coarse_rgb.shape[0]}")
        h, w = L.shape[-2:]
        coarse = self.coarse_lab(coarse_rgb, (h, w))                         # (B, 3, H, W)
        x = torch.cat([L / 50.0 - 1.0, coarse[:, :1] / 50.0 - 1.0, coarse[:, 1:] / AB_SCALE], dim=1)  # (B, 4, H, W)
        x = pad_to_multiple(x, 2**self.n_down)                              # H', W' multiples of 2^n_down
        # encoder
        x = self.stem(x)                                                    # (B, C, H, W)
        skips = [x]
        for stage in self.down:
            x = stage(x)                                                    # (B, 2C, H/2, W/2) each
            skips.append(x)
        # middle residual layers
        x = self.middle(x)                                                  # (B, 2^n C, H/2^n, W/2^n)
        # decoder, with the encoder's features of each resolution added back
        for stage, skip in zip(self.up, reversed(skips[:-1])):
            x = stage(F.interpolate(x, scale_factor=2.0, mode="nearest")) + skip   # (B, C/2, 2H, 2W) each
        delta = self.head(x)[..., :h, :w]                                   # (B, 2, H, W)
        if self.residual:
            # ab = 110 tanh(atanh(ab_coarse / 110) + delta): delta = 0 gives back the coarse ab
            base = torch.atanh((coarse[:, 1:] / AB_SCALE).clamp(-0.99, 0.99))
            return torch.tanh(base + delta) * AB_SCALE
        return torch.tanh(delta) * AB_SCALE

    def forward(self, L: Tensor, *, coarse_rgb: Tensor | None = None, hint_ab: Tensor | None = None,
                hint_mask: Tensor | None = None) -> Tensor:
        """`upgrade(L, coarse_rgb)`; a keyword so the engine (and DDP) can call the module itself."""
        if hint_ab is not None or hint_mask is not None:
            raise ValueError("sun2023_upgrader takes no hints")
        if coarse_rgb is None:
            raise ValueError("sun2023_upgrader needs the coarse color: call upgrader(L, coarse_rgb=...) with the "
                             "64x64 palette RGB of step 1 (e.g. palette_to_rgb of a sun2023 sample); for "
                             "colorkit.colorize use both steps: sun2023_upgrade.save_pipeline(path, coarse, upgrader)")
        return self.upgrade(L, coarse_rgb)


# ---------------------------------------------------------------------------------------------
# Both steps as one model
# ---------------------------------------------------------------------------------------------

@register("sun2023_pipeline")
class SunPipeline(Colorizer):
    """Sun et al.'s colorization, step 1 then step 2: L (B, 1, H, W) -> ab (B, 2, H, W) at any H, W.

        L at 64 x 64 (area) -> step 1, the coarse colorizer: palette colors by its `decode`
        (the autoregressive decoder by default; see colorkit.models.sun2023) -> coarse RGB (B, 3, 64, 64)
        -> step 2, the upgrader, with the full-resolution L -> ab (B, 2, H, W)

    `coarse` and `upgrader` are the two models' configs (`.config`); `image_size` (what
    `colorkit.colorize` resizes to) is the upgrader's. Not trained as one: build it from the two
    trained models with `from_parts`, or save it with `save_pipeline`.
    """

    def __init__(self, coarse: dict[str, Any], upgrader: dict[str, Any]):
        super().__init__()
        from colorkit.models import build

        if not isinstance(coarse, dict) or coarse.get("name") != "sun2023":
            raise ValueError(f"sun2023_pipeline: coarse must be a sun2023 config, got {coarse!r:.120}")
        if not isinstance(upgrader, dict) or upgrader.get("name") != "sun2023_upgrader":
            raise ValueError(f"sun2023_pipeline: upgrader must be a sun2023_upgrader config, got {upgrader!r:.120}")
        self.coarse, self.upgrader = build(coarse), build(upgrader)
        self.image_size = self.upgrader.image_size

    @classmethod
    def from_parts(cls, coarse: Colorizer, upgrader: SunUpgrader) -> SunPipeline:
        """The pipeline of two trained models (their weights copied; both stay usable on their own)."""
        from colorkit.models import build

        pipeline = build({"name": "sun2023_pipeline", "coarse": coarse.config, "upgrader": upgrader.config})
        pipeline.coarse.load_state_dict(coarse.state_dict())
        pipeline.upgrader.load_state_dict(upgrader.state_dict())
        return pipeline.to(next(coarse.parameters()).device).eval()

    def coarse_colors(self, L: Tensor) -> Tensor:
        """Step 1 on the full-resolution L (B, 1, H, W): the coarse image as RGB (B, 3, 64, 64)."""
        size = self.coarse.image_size
        L_small = F.interpolate(L.float(), size=(size, size), mode="area")             # (B, 1, 64, 64)
        return palette_to_rgb(self.coarse.colors(L_small))                             # (B, 3, 64, 64)

    def forward(self, L: Tensor, *, hint_ab: Tensor | None = None, hint_mask: Tensor | None = None) -> Tensor:
        if hint_ab is not None or hint_mask is not None:
            raise ValueError("sun2023_pipeline takes no hints")
        if not isinstance(L, Tensor) or L.dim() != 4 or L.shape[1] != 1:
            raise ValueError(f"sun2023_pipeline: L must be shaped (B, 1, H, W), got "
                             f"{tuple(L.shape) if isinstance(L, Tensor) else type(L).__name__}")
        return self.upgrader.upgrade(L, self.coarse_colors(L))                        # (B, 2, H, W)


def save_pipeline(path: str | Path, coarse: Colorizer, upgrader: SunUpgrader) -> Path:
    """Write both trained networks as one self-contained checkpoint (no path to another file)."""
    from colorkit.train import save_model

    return save_model(SunPipeline.from_parts(coarse, upgrader), path)


# ---------------------------------------------------------------------------------------------
# The discriminator D (Fig. 6): a conditional PatchGAN
# ---------------------------------------------------------------------------------------------

class PatchDiscriminator(nn.Module):
    """D(x, y) -> logits (B, 1, H', W'), one per overlapping patch (Isola et al. 2017, PatchGAN).

    x: the condition of eq. 9, x ~ X_LQ, the coarse color image as Lab (B, 3, H, W), upsampled to
    y's size (`SunUpgrader.coarse_lab`); y: the full-resolution color image as Lab (B, 3, H, W).
    D sees both, normalised inside, so it can penalise an output that ignores the coarse colors.
    Layers: 4x4 convolutions, `n_layers` with stride 2 (width C, 2C, 4C, ... capped at 8C), one
    with stride 1, then a stride-1 convolution to one logit, LeakyReLU(0.2) between. pix2pix's
    70 x 70 discriminator is n_layers = 3; the default n_layers = 2 sees 34 x 34 patches, the same
    fraction of a 128 x 128 image as 70 x 70 of pix2pix's 256 x 256 (about a quarter of the side);
    n_layers = 4 sees 142 x 142, that fraction of 512 x 512 (the `full` preset). Spectral norm on every
    convolution (`spectral_norm=True`) or instance norm on the middle ones (False).
    """

    def __init__(self, width: int = 32, n_layers: int = 2, spectral_norm: bool = True):
        super().__init__()
        self.config = {"name": "sun2023_patch_discriminator", "width": width, "n_layers": n_layers,
                       "spectral_norm": spectral_norm, "condition": "coarse Lab"}
        norm = (lambda conv: nn.utils.parametrizations.spectral_norm(conv)) if spectral_norm else (lambda conv: conv)
        widths = [width * min(2**i, 8) for i in range(n_layers + 1)]        # C, 2C, 4C, ...
        # input: x (coarse Lab, 3 channels) and y (Lab, 3 channels)
        layers: list[nn.Module] = [norm(nn.Conv2d(3 + 3, widths[0], 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
        for i in range(1, n_layers + 1):
            stride = 2 if i < n_layers else 1                               # the last of these keeps the size
            layers.append(norm(nn.Conv2d(widths[i - 1], widths[i], 4, stride=stride, padding=1)))
            if not spectral_norm:
                layers.append(nn.InstanceNorm2d(widths[i], affine=True))
            layers.append(nn.LeakyReLU(0.2))
        layers.append(norm(nn.Conv2d(widths[-1], 1, 4, stride=1, padding=1)))
        self.net = nn.Sequential(*layers)

    @property
    def receptive_field(self) -> int:
        """The side of the input patch one output logit sees (70 for pix2pix's n_layers = 3)."""
        field = 1
        for m in reversed([m for m in self.net.modules() if isinstance(m, nn.Conv2d)]):
            field = (field - 1) * m.stride[0] + m.kernel_size[0]
        return field

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != 3 or y.dim() != 4 or y.shape[1] != 3 or x.shape[-2:] != y.shape[-2:] \
                or x.shape[0] != y.shape[0]:
            raise ValueError(f"PatchDiscriminator: x (the coarse image) and y (the color image) must both be Lab "
                             f"(B, 3, H, W) of the same B, H, W; got {tuple(x.shape)} and {tuple(y.shape)}")
        smallest = 3 * 2 ** self.config["n_layers"]       # n stride-2 layers, then two 4x4 stride-1 ones
        if min(x.shape[-2:]) < smallest:
            raise ValueError(f"PatchDiscriminator with n_layers={self.config['n_layers']} needs images of at least "
                             f"{smallest} x {smallest} px, got {tuple(x.shape[-2:])}")
        scale = x.new_tensor([50.0, AB_SCALE, AB_SCALE]).view(1, 3, 1, 1)
        shift = x.new_tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
        z = torch.cat([x / scale - shift, y / scale - shift], dim=1)        # (B, 6, H, W), Lab in ~[-1, 1]
        return self.net(z)                                                  # (B, 1, H/2^n - 2, W/2^n - 2)


# ---------------------------------------------------------------------------------------------
# Training: eq. 9-10
# ---------------------------------------------------------------------------------------------

def make_upgrade_step(lambda_r: float = LAMBDA_R):
    """A step function for colorkit.train.Trainer with models/optimizers "generator", "discriminator"."""

    def upgrade_step(ctx, batch) -> dict[str, Tensor]:
        """One GAN step: a D update (eq. 9), then a G update (eq. 10). Batch: "rgb", "L", "ab"."""
        G, D = ctx.models["generator"], ctx.models["discriminator"]
        coarse_size = getattr(ctx.unwrapped["generator"], "coarse_size", 64)
        L, ab = batch["L"], batch["ab"]                                     # (B, 1, H, W), (B, 2, H, W)
        with torch.no_grad():
            coarse = coarse_from_rgb(batch["rgb"], coarse_size)             # X_LQ: (B, 3, 64, 64) RGB
            x = ctx.unwrapped["generator"].coarse_lab(coarse, tuple(L.shape[-2:]))   # x ~ X_LQ as Lab: (B, 3, H, W)
        fake = G(L, coarse_rgb=coarse)                                      # G(x): (B, 2, H, W)
        y_real, y_fake = torch.cat([L, ab], dim=1), torch.cat([L, fake], dim=1)    # Lab (B, 3, H, W) each

        # D: max log D(x, y) + log(1 - D(x, G(x)))   (eq. 9), as minimising the two cross-entropies;
        # fake is detached, so this update's gradient never reaches G
        # -log sigmoid(D(x, y)) and -log(1 - sigmoid(D(x, G(x)))), on logits (B, 1, H', W') each
        loss_d_real, loss_d_fake = critic_loss(D(x, y_real), D(x, y_fake.detach()))
        loss_d = loss_d_real + loss_d_fake
        ctx.update("discriminator", loss_d, name="loss_d")

        # G: L_GAN + lambda_r MSE   (eq. 10), non-saturating L_GAN = -log D(x, G(x)), through the updated D;
        # D's weights get gradients here too, but only the generator's optimizer steps
        loss_g_gan = generator_adversarial_loss(D(x, y_fake))
        loss_mse = F.mse_loss(fake / AB_SCALE, ab / AB_SCALE)               # on ab / 110: see the module docstring
        loss_g = loss_g_gan + lambda_r * loss_mse
        ctx.update("generator", loss_g, name="loss_g")
        return {"loss_d": loss_d, "loss_d_real": loss_d_real, "loss_d_fake": loss_d_fake,
                "loss_g": loss_g, "loss_g_gan": loss_g_gan, "loss_mse": loss_mse}

    return upgrade_step


upgrade_step = make_upgrade_step()


# The course's step for this model; note it needs two models, "generator" and "discriminator".
SunUpgrader.training_step = staticmethod(upgrade_step)


# ---------------------------------------------------------------------------------------------
# Evaluation: the paper's Tables I and II
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def upgrade_metrics(upgrader: SunUpgrader, rgb_full: Tensor, coarse_rgb: Tensor | None = None, *,
                    reduction: str = "mean") -> dict[str, dict[str, float | Tensor]]:
    """SSIM and PSNR against the full-resolution originals `rgb_full` (B, 3, H, W) (Tables I / II).

    coarse_rgb: the coarse color to upgrade; default the palette-quantized downsampled original
    (Table I, "low quality images"); pass step 1's colorization for Table II. Rows:
    - "before_upgrading": the coarse image, nearest-neighbour upsampled to H x W;
    - "bicubic": the coarse RGB, bicubic upsampled (the paper's "interpolation and up-sampling");
    - "full_L_coarse_ab": no learning: the full-res L joined with the coarse ab upsampled as the
      upgrader's input is (what the residual upgrader starts from);
    - "upgraded": Lab(L, upgrader(L, coarse)).
    `reduction="none"` gives each row's scores per image, (B,) tensors in the batch's order (for
    `metrics.paired_bootstrap` between two rows); "mean" (default) their means as floats.
    """
    from colorkit.metrics import psnr, ssim

    _check_rgb(rgb_full, "rgb_full")
    rgb_full = rgb_full.float()
    size = tuple(rgb_full.shape[-2:])
    coarse = coarse_from_rgb(rgb_full, upgrader.coarse_size) if coarse_rgb is None else coarse_rgb.float()
    _check_rgb(coarse, "coarse_rgb")
    device = next(upgrader.parameters()).device
    L = rgb_to_lab(rgb_full)[:, :1]                                        # (B, 1, H, W)
    training = upgrader.training
    upgrader.eval()
    try:
        ab = upgrader(L.to(device), coarse_rgb=coarse.to(device)).cpu().float()
    finally:
        upgrader.train(training)
    images = {
        "before_upgrading": F.interpolate(coarse, size=size, mode="nearest"),
        "bicubic": F.interpolate(coarse, size=size, mode="bicubic", align_corners=False).clamp(0, 1),
        "full_L_coarse_ab": lab_to_rgb(torch.cat([L, upgrader.coarse_lab(coarse, size)[:, 1:]], dim=1)),
        "upgraded": lab_to_rgb(torch.cat([L, ab], dim=1)),
    }
    return {row: {"ssim": ssim(img, rgb_full, reduction=reduction),
                  "psnr": psnr(img, rgb_full, max_db=100.0, reduction=reduction)} for row, img in images.items()}
