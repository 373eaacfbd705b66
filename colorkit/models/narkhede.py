"""Narkhede et al.: a self-attention GAN colorizer with a spectral-norm U-Net, trained in stages.

"Image Colorization using Self attention GAN" (Narkhede, Mahajan, Pacharane) builds on SAGAN
(Zhang et al. 2019) and, in practice, on the open DeOldify recipe:

    generator G (sec. 2.1): a U-Net (Ronneberger et al. 2015) with spectral normalisation
        (Miyato et al. 2018) and SAGAN self-attention   L (B, 1, H, W) -> ab (B, 2, H, W)
    critic D (sec. 2.1): "just a binary classifier" of color images, here a spectral-norm patch
        critic with self-attention                      Lab (B, 3, H, W) -> logits (B, 1, h, w)

Training (sec. 2.2), four phases, each a `colorkit.train.Trainer` run of `phase(...)`:

    1. "generator": pretrain G alone with a perceptual / feature loss (Johnson et al. 2016):
       squared distances of a frozen network's feature maps (Johnson's eq. 2), plus a pixel L1 on ab
       (ours) (colorkit.losses.FeatureLoss)
    2. "critic":    pretrain D alone as a binary classifier, real images vs G's (G frozen)
    3. "gan":       both, with the two time-scale update rule (Heusel et al. 2017): D's learning
       rate `ttur` times G's, Adam betas (0, 0.9) as in SAGAN; G's loss is the feature loss plus
       `adv_weight` times the adversarial loss; a snapshot of G every K steps
    4. optionally repeat 2-3 (the paper: brighter colors, less consistent output)

The paper observes that after an inflection point the GAN phase stops helping and the images
oscillate between good and distorted colors, so the result is a *chosen* snapshot, not the last
one: `choose_snapshot` picks it by a validation rule (see there), not by eye.

Design choices the paper leaves open (ours):
- G predicts ab in Lab, joined with the input L (as every model in the course): the gray image's
  detail is kept exactly, and the loss is about color only. tanh * 110 covers the sRGB gamut.
- Where the self-attention goes: in the decoder at 1/8 resolution (`attention_scale=8`), where
  DeOldify's U-Net places it; in D after the layer that reaches 1/8. Attention over all N
  positions costs N^2, which at 1/8 of 256 x 256 is 1024^2 per image: affordable; at full
  resolution it would be 65536^2.
- Spectral norm on every convolution of G and D (the paper: "modified to incorporate spectral
  normalization") except G's 1x1 output head, which only scales what tanh receives; batch norm in G's encoder (ResNet-like, as DeOldify's), none in its decoder
  (spectral norm is its normaliser there) or in D.
- D sees the whole Lab image, unconditional (the paper's D(x) of a color image x).
- GAN losses: the binary cross-entropies the paper describes (D outputs "the probability of
  image belonging to training data"), non-saturating for G, averaged over D's patches.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from colorkit.attention import SelfAttention2d
from colorkit.color import lab_to_rgb
from colorkit.losses import FeatureLoss, critic_loss, feature_network, generator_adversarial_loss
from colorkit.models import Colorizer, pad_to_multiple, register

__all__ = ["SAGANUNet", "SACritic", "PHASES", "phase", "phase_config", "pretrain_generator_step",
           "pretrain_critic_step", "make_gan_step", "critic_accuracy", "SnapshotValidator",
           "choose_snapshot", "AB_SCALE", "GAN_BETAS"]

AB_SCALE = 110.0
GAN_BETAS = (0.0, 0.9)            # SAGAN's Adam betas, which TTUR training goes with
PHASES = ("generator", "critic", "gan")


def _sn(module: nn.Module, on: bool) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(module) if on else module


def _check_L(L: Tensor, where: str) -> None:
    if not isinstance(L, Tensor) or L.dim() != 4 or L.shape[1] != 1:
        shape = tuple(L.shape) if isinstance(L, Tensor) else type(L).__name__
        raise ValueError(f"{where}: L must be shaped (B, 1, H, W) in [0, 100], got {shape}")


# ---------------------------------------------------------------------------------------------
# The generator: a U-Net with spectral norm and self-attention (sec. 2.1)
# ---------------------------------------------------------------------------------------------

class EncoderBlock(nn.Module):
    """Two 3x3 convolutions (the first with `stride`), each spectral-normed, batch norm, ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int, spectral_norm: bool):
        super().__init__()
        self.body = nn.Sequential(
            _sn(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), spectral_norm),
            nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            _sn(nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), spectral_norm),
            nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class DecoderBlock(nn.Module):
    """Upsample x2 and convolve (C_in -> C_out), join the encoder's skip of that resolution,
    convolve again (2 C_out -> C_out); then SAGAN self-attention if `attention`."""

    def __init__(self, c_in: int, c_out: int, spectral_norm: bool, attention: bool):
        super().__init__()
        self.up = nn.Sequential(_sn(nn.Conv2d(c_in, c_out, 3, padding=1), spectral_norm), nn.ReLU(inplace=True))
        self.merge = nn.Sequential(_sn(nn.Conv2d(2 * c_out, c_out, 3, padding=1), spectral_norm), nn.ReLU(inplace=True))
        self.attention = SelfAttention2d(c_out, spectral_norm=spectral_norm) if attention else None

    def forward(self, x: Tensor, skip: Tensor, *, return_weights: bool = False):
        x = self.up(F.interpolate(x, scale_factor=2.0, mode="nearest"))        # (B, C_out, 2h, 2w)
        x = self.merge(torch.cat([x, skip], dim=1))                           # (B, 2 C_out, 2h, 2w) -> (B, C_out, 2h, 2w)
        weights = None
        if self.attention is not None:
            x, weights = self.attention(x, return_weights=True) if return_weights else (self.attention(x), None)
        return (x, weights) if return_weights else x


@register("narkhede")
class SAGANUNet(Colorizer):
    """The generator G: L (B, 1, H, W) -> ab (B, 2, H, W), a spectral-norm U-Net with self-attention.

    Encoder: a stem at full resolution (width C), then `depth` stride-2 blocks doubling the width
    (capped at 8C): C, 2C, 4C, 8C, 8C at 1, 1/2, 1/4, 1/8, 1/16 for depth 4. Decoder: `depth`
    blocks back up, each joined with the encoder's features of its resolution (the U-Net skips);
    SAGAN self-attention after the decoder block at 1/`attention_scale` (None: no attention, the
    ablation). Head: a 1x1 convolution, tanh * 110. Any H, W: padded (replicate) to a multiple of
    2^depth, cropped back.

    The critic's settings live here too, so one config describes the GAN: `training_models()`
    gives {"generator": self, "critic": SACritic(critic_width, critic_layers, ...)}.
    """

    def __init__(self, width: int = 32, depth: int = 4, attention_scale: int | None = 8, image_size: int = 64,
                 spectral_norm: bool = True, critic_width: int = 32, critic_layers: int = 3,
                 critic_attention_scale: int | None = 8):
        super().__init__()
        if width < 8 or depth < 1:
            raise ValueError(f"narkhede: need width >= 8 and depth >= 1, got width={width}, depth={depth}")
        scales = [2**i for i in range(1, depth)]
        if attention_scale is not None and attention_scale not in scales:
            raise ValueError(f"narkhede: attention_scale must be one of the decoder's scales {scales} "
                             f"(or None for no attention), got {attention_scale}")
        self.depth, self.image_size, self.attention_scale = depth, image_size, attention_scale
        self.critic_kwargs = {"width": critic_width, "n_layers": critic_layers,
                              "attention_scale": critic_attention_scale, "spectral_norm": spectral_norm}
        widths = [width * min(2**i, 8) for i in range(depth + 1)]             # C, 2C, 4C, 8C, 8C
        if attention_scale is not None and widths[int(math.log2(attention_scale))] % 8:
            raise ValueError(f"narkhede: the attention layer at 1/{attention_scale} has "
                             f"{widths[int(math.log2(attention_scale))]} channels (from width={width}); SAGAN's "
                             "query/key projections need a multiple of 8: choose width as a multiple of 8")
        self.stem = EncoderBlock(1, widths[0], stride=1, spectral_norm=spectral_norm)
        self.down = nn.ModuleList(EncoderBlock(widths[i], widths[i + 1], 2, spectral_norm) for i in range(depth))
        # decoder block i turns 1/2^(i+1) into 1/2^i
        self.up = nn.ModuleList(DecoderBlock(widths[i + 1], widths[i], spectral_norm, attention=2**i == attention_scale)
                                for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], 2, 1)

    def training_models(self) -> dict[str, nn.Module]:
        return {"generator": self, "critic": SACritic(**self.critic_kwargs)}

    def forward(self, L: Tensor, *, hint_ab: Tensor | None = None, hint_mask: Tensor | None = None,
                return_attention: bool = False):
        """ab (B, 2, H, W); with `return_attention`, (ab, weights (B, N, N) or None, (h, w) of the attended grid)."""
        if hint_ab is not None or hint_mask is not None:
            raise ValueError("narkhede takes no hints")
        _check_L(L, "narkhede")
        h, w = L.shape[-2:]
        x = pad_to_multiple(L / 50.0 - 1.0, 2**self.depth)                   # [0, 100] -> [-1, 1], (B, 1, H', W')
        x = self.stem(x)                                                      # (B, C, H, W)
        skips = [x]
        for block in self.down:
            x = block(x)                                                      # (B, 2C, H/2, W/2) each (capped at 8C)
            skips.append(x)
        weights, grid = None, None
        for block, skip in zip(self.up, reversed(skips[:-1])):
            if block.attention is not None and return_attention:
                x, weights = block(x, skip, return_weights=True)              # weights (B, N, N), N = (H/8)(W/8)
                grid = tuple(x.shape[-2:])
            else:
                x = block(x, skip)                                            # (B, C_i, 2h, 2w)
        ab = torch.tanh(self.head(x))[..., :h, :w] * AB_SCALE                 # (B, 2, H, W)
        return (ab, weights, grid) if return_attention else ab


# ---------------------------------------------------------------------------------------------
# The critic (sec. 2.1): a binary classifier of color images
# ---------------------------------------------------------------------------------------------

class SACritic(nn.Module):
    """D: Lab image (L (B, 1, H, W), ab (B, 2, H, W)) -> logits (B, 1, H/2^n, W/2^n), one per patch.

    `n_layers` 4x4 stride-2 convolutions (widths C, 2C, 4C, ... capped at 8C), LeakyReLU(0.2),
    SAGAN self-attention after the one that reaches 1/`attention_scale`, and a 3x3 convolution
    to one logit per position. Spectral norm on every convolution. D(x) = sigmoid(logit) is the
    probability that the patch comes from a real color image; `critic_accuracy` averages a
    whole image's logits into one decision.
    """

    def __init__(self, width: int = 32, n_layers: int = 3, attention_scale: int | None = 8, spectral_norm: bool = True):
        super().__init__()
        scales = [2**i for i in range(1, n_layers + 1)]
        if attention_scale is not None and attention_scale not in scales:
            raise ValueError(f"SACritic: attention_scale must be one of {scales} or None, got {attention_scale}")
        self.config = {"name": "narkhede_critic", "width": width, "n_layers": n_layers,
                       "attention_scale": attention_scale, "spectral_norm": spectral_norm}
        if attention_scale is not None and (width * min(attention_scale // 2, 8)) % 8:
            raise ValueError(f"SACritic: the attention layer at 1/{attention_scale} has {width * min(attention_scale // 2, 8)} "
                             f"channels (from width={width}); SAGAN's projections need a multiple of 8")
        layers: list[nn.Module] = []
        c_in = 3
        for i in range(1, n_layers + 1):
            c_out = width * min(2 ** (i - 1), 8)
            layers += [_sn(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), spectral_norm), nn.LeakyReLU(0.2)]
            if 2**i == attention_scale:
                layers.append(SelfAttention2d(c_out, spectral_norm=spectral_norm))
            c_in = c_out
        layers.append(_sn(nn.Conv2d(c_in, 1, 3, padding=1), spectral_norm))
        self.net = nn.Sequential(*layers)

    def forward(self, L: Tensor, ab: Tensor) -> Tensor:
        if L.dim() != 4 or L.shape[1] != 1 or ab.dim() != 4 or ab.shape[1] != 2 or L.shape[-2:] != ab.shape[-2:] \
                or L.shape[0] != ab.shape[0]:
            raise ValueError(f"SACritic: L must be (B, 1, H, W) and ab (B, 2, H, W) of the same B, H, W; "
                             f"got {tuple(L.shape)} and {tuple(ab.shape)}")
        x = torch.cat([L / 50.0 - 1.0, ab / AB_SCALE], dim=1)                 # (B, 3, H, W), ~[-1, 1]
        return self.net(x)                                                    # (B, 1, H/2^n, W/2^n)


# ---------------------------------------------------------------------------------------------
# The training phases (sec. 2.2)
# ---------------------------------------------------------------------------------------------

def _feature_loss(ctx, feature_loss: FeatureLoss | None) -> FeatureLoss:
    """The step's feature loss on the run's device: the given one, or the default stand-in."""
    if feature_loss is None:
        if "_narkhede_feature_loss" not in ctx.__dict__:
            ctx._narkhede_feature_loss = FeatureLoss(feature_network())
        feature_loss = ctx._narkhede_feature_loss
    return feature_loss.to(ctx.device)


def _generator_loss_parts(feature_loss: FeatureLoss, L: Tensor, ab_pred: Tensor, batch) -> tuple[Tensor, dict]:
    """Perceptual loss of a prediction: L1 on ab / 110 + squared feature distances of the RGB images."""
    pred_rgb = lab_to_rgb(torch.cat([L, ab_pred.float()], dim=1))             # (B, 3, H, W), differentiable
    return feature_loss(pred_rgb, batch["rgb"].float(), ab_pred.float() / AB_SCALE, batch["ab"] / AB_SCALE)


def pretrain_generator_step(feature_loss: FeatureLoss | None = None):
    """Phase 1: G alone, perceptual loss (Johnson et al.): the models {"generator"}."""

    def step(ctx, batch) -> dict[str, Tensor]:
        ab_pred = ctx.models["generator"](batch["L"])                         # (B, 2, H, W)
        loss, parts = _generator_loss_parts(_feature_loss(ctx, feature_loss), batch["L"], ab_pred, batch)
        ctx.update("generator", loss, name="loss_g")
        return {"loss_g": loss, "loss_pixel": parts["pixel"], "loss_feature": parts["feature"]}

    return step


def _frozen_fake(ctx, L: Tensor) -> Tensor:
    """G's colors with G frozen: eval mode (batch norm and spectral norm statistics stay put), no gradient."""
    G = ctx.models["generator"]
    was_training = G.training
    G.eval()
    try:
        with torch.no_grad():
            return G(L)
    finally:
        G.train(was_training)


def pretrain_critic_step(ctx, batch) -> dict[str, Tensor]:
    """Phase 2: D alone as a binary classifier of real vs generated images; G is frozen."""
    D, L = ctx.models["critic"], batch["L"]
    fake = _frozen_fake(ctx, L)                                               # (B, 2, H, W)
    loss_real, loss_fake = critic_loss(D(L, batch["ab"]), D(L, fake))
    loss_d = loss_real + loss_fake
    ctx.update("critic", loss_d, name="loss_d")
    return {"loss_d": loss_d, "loss_d_real": loss_real, "loss_d_fake": loss_fake}


def make_gan_step(feature_loss: FeatureLoss | None = None, adv_weight: float = 0.1):
    """Phase 3: one D update, then one G update (TTUR: the two optimizers' learning rates differ).

        D: min  -log D(L, ab) - log(1 - D(L, G(L)))
        G: min  FeatureLoss(G(L), ab) + adv_weight * (-log D(L, G(L)))
    """

    def step(ctx, batch) -> dict[str, Tensor]:
        G, D, L = ctx.models["generator"], ctx.models["critic"], batch["L"]
        fake = G(L)                                                           # (B, 2, H, W)
        # the critic's update; fake is detached, so it never reaches G
        loss_real, loss_fake = critic_loss(D(L, batch["ab"]), D(L, fake.detach()))
        loss_d = loss_real + loss_fake
        ctx.update("critic", loss_d, name="loss_d")
        # the generator's update through the updated critic; only G's optimizer steps
        loss_adv = generator_adversarial_loss(D(L, fake))
        loss_perceptual, parts = _generator_loss_parts(_feature_loss(ctx, feature_loss), L, fake, batch)
        loss_g = loss_perceptual + adv_weight * loss_adv
        ctx.update("generator", loss_g, name="loss_g")
        return {"loss_d": loss_d, "loss_d_real": loss_real, "loss_d_fake": loss_fake, "loss_g": loss_g,
                "loss_g_adv": loss_adv, "loss_pixel": parts["pixel"], "loss_feature": parts["feature"]}

    return step


def phase(name: str, generator: SAGANUNet, critic: SACritic, *, feature_loss: FeatureLoss | None = None,
          adv_weight: float = 0.1, ttur: float = 4.0, lr: float = 2e-4,
          ) -> tuple[dict[str, nn.Module], Any, dict[str, dict[str, Any]]]:
    """(models, step_fn, optimizers) for a Trainer running phase `name` of PHASES.

    Models that no optimizer names are frozen by the engine, so phase 1 trains G only, phase 2 D
    only (G still generates, in eval mode), phase 3 both: G at `lr`, D at `ttur * lr` (TTUR),
    both Adam with betas (0, 0.9). The learning rates of phases 1 and 2 come from the TrainConfig.
    """
    if name == "generator":
        return {"generator": generator}, pretrain_generator_step(feature_loss), {"generator": {"models": ["generator"]}}
    if name == "critic":
        return {"generator": generator, "critic": critic}, pretrain_critic_step, {"critic": {"models": ["critic"]}}
    if name == "gan":
        optimizers = {"generator": {"models": ["generator"], "optimizer": "adam", "lr": lr, "betas": GAN_BETAS},
                      "critic": {"models": ["critic"], "optimizer": "adam", "lr": ttur * lr, "betas": GAN_BETAS}}
        return {"generator": generator, "critic": critic}, make_gan_step(feature_loss, adv_weight), optimizers
    raise ValueError(f"unknown phase {name!r}; the phases are {PHASES}")


def phase_config(cfg: Mapping[str, Any], name: str, **overrides: Any) -> dict[str, Any]:
    """The TrainConfig fields of phase `name` from a narkhede preset: its "train" with the phase's
    changes ("phases" entry) and `overrides` (None values ignored) on top."""
    if name not in PHASES:
        raise ValueError(f"unknown phase {name!r}; the phases are {PHASES}")
    fields = {**cfg["train"], **cfg.get("phases", {}).get(name, {})}
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return fields


# the engine's generic step for this model: the GAN phase ("generator" and "critic")
SAGANUNet.training_step = staticmethod(make_gan_step())


# ---------------------------------------------------------------------------------------------
# Evaluation and checkpoint choice
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def critic_accuracy(critic: SACritic, generator: SAGANUNet, rgb: Tensor, *, batch_size: int = 32) -> dict[str, float]:
    """How well D tells real from G's images: each image's mean logit > 0 means "real".

    Returns {"real": fraction of real images called real, "fake": fraction of G's called fake,
    "accuracy": the mean of both}.
    """
    from colorkit.data import lab_batch

    device = next(critic.parameters()).device
    modes = critic.training, generator.training
    critic.eval(), generator.eval()
    right_real = right_fake = 0
    try:
        for chunk in rgb.split(batch_size):
            lab = lab_batch(chunk.to(device).float())
            fake = generator(lab["L"])
            right_real += int((critic(lab["L"], lab["ab"]).mean(dim=(1, 2, 3)) > 0).sum())
            right_fake += int((critic(lab["L"], fake).mean(dim=(1, 2, 3)) <= 0).sum())
    finally:
        critic.train(modes[0]), generator.train(modes[1])
    n = rgb.shape[0]
    return {"real": right_real / n, "fake": right_fake / n, "accuracy": (right_real + right_fake) / (2 * n)}


class SnapshotValidator:
    """A Trainer `val_fn` for the GAN phase: measure G on fixed validation images and keep a snapshot.

    Every call (every `val_every` steps) writes `folder/step_XXXXXXX.pt`, a checkpoint holding G
    alone that `colorkit.load` reads, and returns PSNR, SSIM and colorfulness of G's colorizations
    of `rgb` (N, 3, H, W), colorized `batch_size` at a time. `snapshot(G, 0)` does the same for the
    pretrained generator, so "no GAN phase at all" is a candidate too. `choose_snapshot` then picks.
    """

    def __init__(self, rgb: Tensor, folder: str | os.PathLike, *, batch_size: int = 32):
        self.rgb, self.folder, self.batch_size = rgb.float(), Path(folder), batch_size
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, step: int) -> Path:
        return self.folder / f"step_{step:07d}.pt"

    @torch.no_grad()
    def snapshot(self, generator: nn.Module, step: int, train_config: Mapping[str, Any] | None = None) -> dict[str, float]:
        """Save `generator` as the snapshot of `step` and return its validation metrics."""
        from colorkit import metrics
        from colorkit.evaluate import colorize_batch
        from colorkit.train import save_model

        pred = colorize_batch(generator, self.rgb, batch_size=self.batch_size)    # (N, 3, H, W) on the CPU
        save_model(generator, self.path(step), name="generator", step=step, train_config=train_config)
        return {"psnr": metrics.psnr(pred, self.rgb), "ssim": metrics.ssim(pred, self.rgb),
                "colorfulness": metrics.colorfulness(pred)}

    def __call__(self, ctx) -> dict[str, float]:
        # the plain generator (in eval mode, EMA weights swapped in when there is an EMA)
        return self.snapshot(ctx.unwrapped["generator"], ctx.step, ctx.config.to_dict())


def choose_snapshot(records: Sequence[Mapping[str, Any]], *, reference_psnr: float, gray_psnr: float,
                    true_colorfulness: float, keep: float = 0.5) -> dict[str, Any]:
    """Pick the GAN phase's snapshot by a validation rule, not by eye.

    records: {"step", "psnr", "colorfulness", ...} per snapshot, all on the same validation images;
    reference_psnr: the pretrained generator's PSNR on them; gray_psnr: the gray image's (ab = 0).

    The rule, in two parts:
    1. *Admissible*: PSNR >= reference - (1 - keep) * (reference - gray). The GAN phase may trade
       fidelity for color, but must keep at least `keep` (half) of the PSNR that pretraining gained
       over doing nothing. The distorted colors the paper sees after the inflection point are
       wrong colors, and wrong colors cost PSNR, so this bar rejects them; it is relative to the
       gap over gray, so it means the same on any dataset.
    2. Among admissible snapshots, the one whose colorfulness is closest to the real images'
       (`true_colorfulness`): a regression-pretrained generator is desaturated (notebook 02), the
       GAN phase is there to fix that, and overshooting into garish colors is as wrong as staying
       brown. Colorfulness alone would reward any loud colors; PSNR alone the brown ones.
    With no admissible snapshot: the highest PSNR. Ties go to the earlier step. Returns the chosen
    record with "admissible" (steps), "psnr_bar" and "rule" added.
    """
    if not records:
        raise ValueError("choose_snapshot: no snapshot records")
    if not 0.0 <= keep <= 1.0:
        raise ValueError(f"choose_snapshot: keep must be in [0, 1], got {keep}")
    for r in records:
        missing = [k for k in ("step", "psnr", "colorfulness") if k not in r]
        if missing:
            raise ValueError(f"choose_snapshot: record {dict(r)} lacks {missing}")
    bar = reference_psnr - (1.0 - keep) * max(0.0, reference_psnr - gray_psnr)
    ordered = sorted(records, key=lambda r: r["step"])
    admissible = [r for r in ordered if r["psnr"] >= bar]
    if admissible:
        best = min(admissible, key=lambda r: abs(r["colorfulness"] - true_colorfulness))
        rule = f"PSNR >= {bar:.2f} dB, then colorfulness closest to the real images' {true_colorfulness:.1f}"
    else:
        best = max(ordered, key=lambda r: r["psnr"])
        rule = f"no snapshot reaches {bar:.2f} dB: the highest PSNR"
    return {**best, "admissible": [r["step"] for r in admissible], "psnr_bar": bar, "rule": rule}
