"""Lakhani (2020): an encoder-decoder colorizer with global-feature fusion, attention and coordinates.

"Automatic colorization of gray-scale images using deep attention models" builds on Deep
Koalarization (Baldassarre et al. 2017). The method section (sec. 3), piece by piece:

    L (B, 1, H, W) in [0, 100]
      ├─ CoordConv (sec. 1, after Liu et al. 2018): [L; x; y], x and y in [-1, 1]   (B, 3, H, W)
      │   └─ encoder (sec. 3.4): strided 3x3 convolutions, no pooling, BN + ReLU    (B, 4C, H/8, W/8)
      └─ global feature: a frozen classifier's output vector g (sec. 3.1)          (B, D)
    fusion (sec. 3.5): g tiled over the H/8 x W/8 grid, concatenated, 1x1 conv     (B, 4C, H/8, W/8)
    attention (sec. 3.5) over the N = H/8 * W/8 fused feature vectors h_s:
        alpha_ts = exp(score(h_t, h_s)) / sum_s' exp(score(h_t, h_s'))            (eq. i)
        c_t      = sum_s alpha_ts h_s                                             (eq. ii)
        htilde_t = tanh(W_c [c_t; h_t])                                           (eq. iii)
      with Luong's multiplicative score h_t^T W_a h_s or Bahdanau's additive
      v^T tanh(W_1 h_t + W_2 h_s) (colorkit.attention)                           (B, 4C, H/8, W/8)
    decoder (sec. 3.4): 3x3 convolutions and 2x nearest upsampling to full size,
      tanh output scaled to the ab range (sec. 3.1-3.2), Xavier init (sec. 4.1)   (B, 2, H, W)

    trained with the MSE on ab (sec. 4.2):
        C(X, theta) = 1 / (2HW) sum_{k in a,b} sum_i sum_j (X_kij - Xtilde_kij)^2  (eq. iv)
      and Adam, lr 1e-3 (sec. 4.1).

The paper numbers none of its equations; i-iv are their order in sec. 3.5 and 4.2. In eq. i the
paper prints score(h_s, hbar_t); Luong's eq. 7, which it follows, has score(h_t, hbar_s): query t,
source s. Here query and source are the same fused features (every grid cell attends to every
grid cell); `forward(L, return_attention=True)` returns the weights alpha (B, N, N), rows =
query cells t in row-major order over the grid `grid_shape(H, W)`.

Layout (Deep Koalarization, scaled by `width` C; C = 64 is theirs: 224 -> 28 x 28 x 256):
    encoder  C s2, 2C, 2C s2, 4C, 4C s2, 8C, 8C, 4C         (3x3 convs, BN, ReLU)
    fusion   1x1 conv (4C + D) -> 4C, BN, ReLU
    decoder  2C, up, C, C, up, C/2, up, 2 (tanh)           (3x3 convs; BN + ReLU but the last two)

The global feature. The paper uses an ImageNet-trained Inception-ResNet-v2 on the gray image (its
1000-way output before the softmax, as Deep Koalarization). Three sources:
- global_source="pretrained" (the default): an ImageNet-trained network of `colorkit.pretrained`,
  `global_network` ("efficientnet-lite0", offline), on the gray image replicated to 3 channels
  and resized to global_input_size square (224: the network's ImageNet size, and the size at which
  the paper feeds its Inception-ResNet-v2, sec. 3). Its weights live in the model's state dict, so a checkpoint is
  self-contained: `colorkit.load` needs nothing else.
- global_source="scene": `SceneClassifier`, a small CNN over L trained here, the course's earlier
  stand-in: pretrain it briefly with `pretrain_classifier` on the labels the course data has
  (ToyWorld's `scene`, SCENE_TYPES; or, with DATA="package-photos", the photo's `source`,
  global_classes="photos"),
  then `model.load_classifier(classifier)` copies its weights in, frozen.
- global_source="torchscript": your own network from a local file (`global_path`, e.g.
  Inception-ResNet-v2 exported with torch.jit), run like the pretrained one (sRGB in [0, 1];
  any normalisation must live inside the file; the paper feeds Inception-ResNet-v2 224 x 224).
  Its weights stay out of the state dict: a checkpoint records the path, but `colorkit.load` never
  opens a file a checkpoint names (TorchScript can run code): the user names it at load time,
  `colorkit.load(ckpt, files={"global_path": PATH})` or COLORKIT_GLOBAL_PATH=PATH.
Either way the global network is frozen: requires_grad is False and it stays in eval mode even
when the model trains, so its batch-norm statistics never move.

Design choices the paper leaves open (ours, said once here):
- Any input size: the input is padded (replicate) to a multiple of 8 and the output cropped back
  (pad + crop, like the course baseline); every grid cell then holds at least one real pixel, so
  no attention mask is needed. CoordConv channels are computed for the real H x W before padding
  (x = -1 at the left column, +1 at the right; y likewise over the rows).
- ab = 110 tanh(.) instead of the paper's 128 tanh(.): |a|, |b| < 110 holds for every sRGB color,
  and the loss is the MSE on ab / 110, the same units as the baseline's.
- Luong's score is divided by sqrt(4C) (`scaled=True`), as in scaled dot-product attention: at
  initialisation on 64 px ToyWorld images (64 grid cells) a row's largest weight is 0.40 (width 16)
  or 0.61 (width 64) on average unscaled, so each cell starts attending to a few cells only;
  scaled, 0.03 (uniform would be 1/64 = 0.016).
- The last convolution runs at full resolution (Deep Koalarization upsamples the 2-channel ab
  last); batch norm after every convolution except the decoder's last two (sec. 3.3).
- The global vector: "logits" (default: Deep Koalarization takes Inception's output before the
  softmax), "softmax" (of it) or "penultimate" (the pooled features before the last layer).
- global_cache=N keeps the global vectors of up to N images, keyed by the bytes of each image's L
  (and of the frozen weights), so a training set of fixed crops pays the global network once per
  crop, across epochs and across models: the course preset's CPU budget needs it. 0 (default) off.
- fusion=False, attention=None, coords=False is the paper's baseline regression model (sec. 3.4):
  the same encoder-decoder without fusion and attention.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import hashlib
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from colorkit.attention import AttentionVector, BahdanauAttention, LuongAttention
from colorkit.models import Colorizer, pad_to_multiple, register
from colorkit.models.baseline import AB_SCALE, conv_bn_relu

__all__ = ["LakhaniColorizer", "SceneClassifier", "PretrainedClassifier", "TorchScriptClassifier", "GlobalFeatures", "FusionLayer",
           "GridAttention", "coord_channels", "add_coords", "koalarization_encoder", "lakhani_step",
           "classifier_step", "pretrain_classifier", "classifier_accuracy", "resolve_classes",
           "AB_SCALE", "DOWNSAMPLE"]

DOWNSAMPLE = 8                                   # three stride-2 convolutions: H/8 x W/8 grid
ATTENTION_FORMS = ("luong", "bahdanau")
GLOBAL_SOURCES = ("pretrained", "scene", "torchscript")
GLOBAL_FEATURES = ("penultimate", "logits", "softmax")


# ---------------------------------------------------------------------------------------------
# CoordConv (Liu et al. 2018): the pixel's coordinates as two extra input channels
# ---------------------------------------------------------------------------------------------

def coord_channels(batch: int, h: int, w: int, *, device: torch.device | str | None = None,
                   dtype: torch.dtype = torch.float32) -> Tensor:
    """(B, 2, H, W): channel 0 is x, from -1 (left column) to +1 (right column), constant down each
    column; channel 1 is y, from -1 (top row) to +1 (bottom row), constant along each row. A side of
    one pixel gets 0."""
    def ramp(n: int) -> Tensor:
        if n == 1:
            return torch.zeros(1, device=device, dtype=dtype)
        return torch.linspace(-1.0, 1.0, n, device=device, dtype=dtype)

    x = ramp(w).view(1, 1, 1, w).expand(batch, 1, h, w)
    y = ramp(h).view(1, 1, h, 1).expand(batch, 1, h, w)
    return torch.cat([x, y], dim=1)                                         # (B, 2, H, W)


def add_coords(x: Tensor) -> Tensor:
    """[x; x-coordinate; y-coordinate]: (B, C, H, W) -> (B, C + 2, H, W)."""
    b, _, h, w = x.shape
    return torch.cat([x, coord_channels(b, h, w, device=x.device, dtype=x.dtype)], dim=1)


# ---------------------------------------------------------------------------------------------
# The encoder (sec. 3.4; Deep Koalarization's layout)
# ---------------------------------------------------------------------------------------------

def koalarization_encoder(in_channels: int, width: int) -> nn.Sequential:
    """Strided 3x3 convolutions without pooling, each followed by BN and ReLU:
    (B, in, H, W) -> (B, 4 width, H/8, W/8); width = 64 gives 224 x 224 -> 28 x 28 x 256."""
    c = width
    plan = [(in_channels, c, 2), (c, 2 * c, 1), (2 * c, 2 * c, 2), (2 * c, 4 * c, 1),
            (4 * c, 4 * c, 2), (4 * c, 8 * c, 1), (8 * c, 8 * c, 1), (8 * c, 4 * c, 1)]
    return nn.Sequential(*(conv_bn_relu(c_in, c_out, stride) for c_in, c_out, stride in plan))


# ---------------------------------------------------------------------------------------------
# The global feature: a frozen classifier (the stand-in for Inception-ResNet-v2, or your own file)
# ---------------------------------------------------------------------------------------------

def resolve_classes(classes: str | Sequence[str]) -> list[str]:
    """"scene" -> ToyWorld's SCENE_TYPES; "photos" -> the training package photos' names (every
    listed one, installed or not, so a checkpoint means the same on every machine); a list as is."""
    from colorkit.data import PHOTO_SOURCES, SCENE_TYPES

    if isinstance(classes, str):
        if classes == "scene":
            return list(SCENE_TYPES)
        if classes == "photos":
            return [s.name for s in PHOTO_SOURCES if s.split == "train"]
        raise ValueError(f"global_classes must be 'scene', 'photos' or a list of class names, got {classes!r}")
    names = list(classes)
    if len(names) < 2 or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise ValueError(f"global_classes must hold at least two distinct names, got {classes!r}")
    return names


class SceneClassifier(nn.Module):
    """A small CNN over L (B, 1, H, W) in [0, 100] -> logits (B, K) over `classes`; any H, W.

    Three stride-2 3x3 convolutions (width, 2 width, 4 width) with BN and ReLU, one more 3x3
    at 4 width, global average pooling -> the penultimate vector (B, 4 width) -> linear -> logits.
    """

    def __init__(self, classes: str | Sequence[str] = "scene", width: int = 16):
        super().__init__()
        if width < 1:
            raise ValueError(f"SceneClassifier: width must be >= 1, got {width}")
        self.classes, self.width = resolve_classes(classes), width
        self.body = nn.Sequential(conv_bn_relu(1, width, 2), conv_bn_relu(width, 2 * width, 2),
                                  conv_bn_relu(2 * width, 4 * width, 2), conv_bn_relu(4 * width, 4 * width))
        self.head = nn.Linear(4 * width, len(self.classes))

    @property
    def feature_dim(self) -> int:
        return 4 * self.width

    def extra_repr(self) -> str:
        return f"classes={self.classes}, width={self.width}"

    def features(self, L: Tensor) -> Tensor:
        """The penultimate vector: L (B, 1, H, W) -> (B, 4 width)."""
        return self.body(L / 50.0 - 1.0).mean(dim=(2, 3))

    def forward(self, L: Tensor) -> Tensor:
        """L (B, 1, H, W) -> logits (B, K)."""
        return self.head(self.features(L))


class PretrainedClassifier(nn.Module):
    """An ImageNet network of `colorkit.pretrained` on the gray image: L (B, 1, H, W) -> logits (B, 1000).

    L -> neutral sRGB gray (R = G = B) in [0, 1] -> resized to `input_size` square (None: as it is)
    -> the network with its own ImageNet preprocessing. `features(L)` is its pooled penultimate
    vector. Frozen; its weights are in the state dict.
    """

    def __init__(self, network: str = "efficientnet-lite0", input_size: int | None = 224):
        super().__init__()
        from colorkit import pretrained

        self.net = pretrained.features(network, layers=("pool", "logits"), size=input_size)
        self.network, self.input_size = network, input_size
        self.feature_dim, self.output_dim = self.net.dims["pool"], self.net.dims["logits"]

    @property
    def name(self) -> str:
        return self.net.name

    def extra_repr(self) -> str:
        return f"network={self.network!r}, input_size={self.input_size}"

    def _run(self, L: Tensor) -> dict[str, Tensor]:
        from colorkit.color import lightness_to_gray

        return self.net(lightness_to_gray(L.float()))                      # (B, 3, H, W) gray -> {pool, logits}

    def features(self, L: Tensor) -> Tensor:
        return self._run(L)["pool"]                                         # (B, 1280)

    def forward(self, L: Tensor) -> Tensor:
        return self._run(L)["logits"]                                       # (B, 1000)


class TorchScriptClassifier(nn.Module):
    """Your own frozen network from a local TorchScript file, e.g. Inception-ResNet-v2.

    Called on the gray image as RGB: L (B, 1, H, W) -> neutral sRGB gray (B, 3, H, W) in [0, 1]
    (R = G = B), resized to `input_size` square (224, as the paper feeds Inception-ResNet-v2); any normalisation
    the network needs must live inside the file. Output (B, D) or (B, D, 1, 1), D = `output_dim`.
    The loaded network is kept out of `state_dict()` and `parameters()`: a checkpoint stores the
    path, not 55 M frozen weights; it follows the input's device on each call.
    """

    def __init__(self, path: str | Path, output_dim: int, input_size: int = 224):
        super().__init__()
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"global_path: no TorchScript file at {str(path)!r}. Export your network with "
                                    "torch.jit.script(net).save(path) (or torch.jit.trace), or use "
                                    "global_source='scene' (the course's stand-in classifier)")
        try:
            net = torch.jit.load(str(path), map_location="cpu")
        except Exception as err:   # not a zip, a pickle, a truncated file, ...
            raise ValueError(f"global_path: cannot load {str(path)!r} as TorchScript ({type(err).__name__}: {err}); "
                             "save it with torch.jit.script(net).save(path)") from err
        for p in net.parameters():
            p.requires_grad_(False)
        self.__dict__["net"] = net.eval()     # not a registered submodule: out of state_dict and parameters
        self.path, self.output_dim, self.input_size = str(path), output_dim, input_size

    def extra_repr(self) -> str:
        return f"path={self.path!r}, output_dim={self.output_dim}, input_size={self.input_size}"

    def forward(self, L: Tensor) -> Tensor:
        from colorkit.color import lightness_to_gray

        net = self.__dict__["net"]
        first = next(iter(net.parameters()), None)
        if first is not None and first.device != L.device:
            net.to(L.device)
        gray = lightness_to_gray(L.float())                                  # (B, 3, H, W), R = G = B
        gray = F.interpolate(gray, size=(self.input_size, self.input_size), mode="bilinear",
                             align_corners=False, antialias=True)            # (B, 3, 224, 224)
        out = net(gray)
        if out.dim() == 4 and out.shape[2:] == (1, 1):
            out = out.flatten(1)
        if out.dim() != 2 or out.shape != (L.shape[0], self.output_dim):
            raise ValueError(f"{self.path} returned shape {tuple(out.shape)} for {L.shape[0]} images; "
                             f"expected ({L.shape[0]}, {self.output_dim}): set global_dim to its output size")
        return out


_GLOBAL_CACHE: "OrderedDict[tuple[str, bytes], Tensor]" = OrderedDict()   # shared by every GlobalFeatures


class GlobalFeatures(nn.Module):
    """The frozen global prior: L (B, 1, H, W) -> g (B, D), with no gradient and in eval mode always.

    `feature` picks the vector: "logits" (the network's output as it is), "softmax" (of it) or
    "penultimate" (its pooled features; not for a TorchScript file). `cache` > 0 keeps the vectors
    of that many images (least recently used dropped), keyed by a hash of each image's L and of the
    frozen weights: the same image gives the same vector, so the cache changes no result.
    """

    def __init__(self, source: str = "pretrained", feature: str = "logits", *, network: str = "efficientnet-lite0",
                 classes: str | Sequence[str] = "scene", classifier_width: int = 16, path: str | None = None,
                 output_dim: int = 1000, input_size: int | None = 224, cache: int = 0):
        super().__init__()
        if source not in GLOBAL_SOURCES:
            raise ValueError(f"global_source must be one of {GLOBAL_SOURCES}, got {source!r}")
        if feature not in GLOBAL_FEATURES:
            raise ValueError(f"global_feature must be one of {GLOBAL_FEATURES}, got {feature!r}")
        if not isinstance(cache, int) or cache < 0:
            raise ValueError(f"global_cache must be an int >= 0 (images), got {cache!r}")
        self.source, self.feature, self.cache = source, feature, cache
        if source == "pretrained":
            self.classifier: nn.Module = PretrainedClassifier(network, input_size)
            self.dim = self.classifier.feature_dim if feature == "penultimate" else self.classifier.output_dim
        elif source == "scene":
            self.classifier = SceneClassifier(classes, classifier_width)
            self.dim = self.classifier.feature_dim if feature == "penultimate" else len(self.classifier.classes)
        else:
            if path is None:
                raise ValueError("global_source='torchscript' needs global_path, the TorchScript file of your network")
            if feature == "penultimate":
                raise ValueError("global_feature='penultimate' needs global_source 'pretrained' or 'scene'; for a "
                                 "TorchScript file use 'logits' (its output as it is; export it cut before its last "
                                 "layer for an embedding) or 'softmax'")
            self.classifier = TorchScriptClassifier(path, output_dim, 224 if input_size is None else input_size)
            self.dim = output_dim
        self._fingerprint: tuple[int, str] | None = None
        self.freeze()

    def freeze(self) -> None:
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "GlobalFeatures":
        # frozen means frozen: model.train() must not put the classifier's batch norm in training mode
        super().train(False)
        return self

    def extra_repr(self) -> str:
        return f"source={self.source!r}, feature={self.feature!r}, dim={self.dim}, cache={self.cache}"

    def _vectors(self, L: Tensor) -> Tensor:
        if self.feature == "penultimate":
            return self.classifier.features(L)                              # (B, D)
        logits = self.classifier(L)                                          # (B, K)
        return logits.softmax(dim=-1) if self.feature == "softmax" else logits

    def _weights_key(self) -> str:
        """A hash of the frozen weights and of what is read from them, recomputed when a tensor changes."""
        tensors = list(self.state_dict().values())
        version = sum(t._version for t in tensors)
        if self._fingerprint is None or self._fingerprint[0] != version:
            digest = hashlib.blake2b(repr((self.source, self.feature, self.extra_repr(),
                                           getattr(self.classifier, "input_size", None))).encode(), digest_size=16)
            for t in tensors:
                digest.update(t.detach().cpu().contiguous().numpy().tobytes())
            self._fingerprint = (version, digest.hexdigest())
        return self._fingerprint[1]

    @torch.no_grad()
    def forward(self, L: Tensor) -> Tensor:
        if not self.cache:
            return self._vectors(L)
        weights = self._weights_key()
        images = L.detach().float().cpu().contiguous()
        keys = [(weights, hashlib.blake2b(images[i].numpy().tobytes(), digest_size=16).digest())
                for i in range(len(images))]
        missing = [i for i, k in enumerate(keys) if k not in _GLOBAL_CACHE]
        if missing:
            fresh = self._vectors(L[missing]).float().cpu()                 # (M, D): only the new images
            for i, vector in zip(missing, fresh):
                _GLOBAL_CACHE[keys[i]] = vector
        for k in keys:
            _GLOBAL_CACHE.move_to_end(k)
        out = torch.stack([_GLOBAL_CACHE[k] for k in keys])                 # (B, D)
        while len(_GLOBAL_CACHE) > self.cache:
            _GLOBAL_CACHE.popitem(last=False)
        return out.to(device=L.device)


# ---------------------------------------------------------------------------------------------
# Fusion (sec. 3.5; Deep Koalarization) and attention over the fused grid (sec. 3.5)
# ---------------------------------------------------------------------------------------------

class FusionLayer(nn.Module):
    """Encoder features (B, C, h, w) and a global vector (B, D) -> (B, C_out, h, w).

    The vector is replicated at every grid position ("after replicating its feature vector a few
    times"), concatenated with the features, and mixed by a 1x1 convolution with BN and ReLU.
    """

    def __init__(self, channels: int, global_dim: int, out_channels: int | None = None):
        super().__init__()
        self.channels, self.global_dim = channels, global_dim
        out = channels if out_channels is None else out_channels
        self.mix = nn.Sequential(nn.Conv2d(channels + global_dim, out, 1, bias=False), nn.BatchNorm2d(out),
                                 nn.ReLU(inplace=True))

    @staticmethod
    def tile(g: Tensor, h: int, w: int) -> Tensor:
        """(B, D) -> (B, D, h, w): the same vector at every position."""
        return g[:, :, None, None].expand(*g.shape, h, w)

    def concat(self, features: Tensor, g: Tensor) -> Tensor:
        """[features; tiled g]: (B, C, h, w), (B, D) -> (B, C + D, h, w)."""
        if g.dim() != 2 or g.shape[0] != features.shape[0] or g.shape[1] != self.global_dim:
            raise ValueError(f"FusionLayer: global vector must be ({features.shape[0]}, {self.global_dim}), "
                             f"got {tuple(g.shape)}")
        return torch.cat([features, self.tile(g.to(features.dtype), *features.shape[-2:])], dim=1)

    def forward(self, features: Tensor, g: Tensor) -> Tensor:
        return self.mix(self.concat(features, g))                           # (B, C_out, h, w)


class GridAttention(nn.Module):
    """Attention of every grid cell over every grid cell of x (B, C, h, w) (sec. 3.5, eq. i-iii).

    With N = h w tokens h_1..h_N (B, N, C): alpha = softmax over sources of score(h_t, h_s)
    (`form` "luong": h_t^T W_a h_s / sqrt(C); "bahdanau": v^T tanh(W_1 h_t + W_2 h_s)), context
    c_t = sum_s alpha_ts h_s, and the attention vector tanh(W_c [c_t; h_t]) replaces h_t.
    """

    def __init__(self, channels: int, form: str = "luong", attention_dim: int = 32):
        super().__init__()
        if form not in ATTENTION_FORMS:
            raise ValueError(f"attention must be one of {ATTENTION_FORMS} or None, got {form!r}")
        self.form = form
        self.align = (LuongAttention(channels, channels, score="general", scaled=True) if form == "luong"
                      else BahdanauAttention(channels, channels, attention_dim))
        self.vector = AttentionVector(channels, channels)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, C, h, w) -> (attention vectors (B, C, h, w), weights alpha (B, N, N)), N = h w row-major."""
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)                               # h_t = hbar_s: (B, N, C)
        context, weights = self.align(tokens, tokens)                      # c_t (B, N, C), alpha (B, N, N)  (eq. i-ii)
        out = self.vector(context, tokens)                                 # tanh(W_c [c_t; h_t]): (B, N, C)  (eq. iii)
        return out.transpose(1, 2).reshape(b, c, h, w), weights


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------

@register("lakhani")
class LakhaniColorizer(Colorizer):
    """L (B, 1, H, W) in [0, 100] -> ab (B, 2, H, W): encoder, fusion, attention, decoder (see the module docstring).

    width: encoder width C (64 = Deep Koalarization); image_size: the side `colorize` resizes to.
    fusion / attention ("luong", "bahdanau" or None) / coords: the three additions over the
    baseline, each one switchable for the ablations. attention_dim: d_a of Bahdanau's score.
    Global feature (only with fusion): global_source "pretrained" (the ImageNet network
    `global_network`), "scene" (the SceneClassifier stand-in over `global_classes` "scene" /
    "photos" / a list, of width `classifier_width`) or "torchscript" (the file `global_path`,
    output size `global_dim`); the networks see the gray image at `global_input_size` square
    (224; None: as it is); global_feature "logits", "softmax" or "penultimate"; global_cache:
    how many images' vectors to keep (GlobalFeatures).
    Any H, W: padded to a multiple of 8 and cropped back.
    """

    external_files = ("global_path",)    # a TorchScript file can run code: named by the user at load time

    def __init__(self, width: int = 16, image_size: int = 64, fusion: bool = True, attention: str | None = "luong",
                 coords: bool = True, attention_dim: int = 32, global_source: str = "pretrained",
                 global_network: str = "efficientnet-lite0", global_classes: str | list[str] = "scene",
                 global_feature: str = "logits", classifier_width: int = 16, global_path: str | None = None,
                 global_dim: int = 1000, global_input_size: int | None = 224, global_cache: int = 0):
        super().__init__()
        if not isinstance(width, int) or width < 2:
            raise ValueError(f"lakhani: width must be an int >= 2, got {width!r}")
        if attention is not None and attention not in ATTENTION_FORMS:
            raise ValueError(f"lakhani: attention must be one of {ATTENTION_FORMS} or None, got {attention!r}")
        self.image_size, self.width = image_size, width
        self.use_fusion, self.use_coords, self.attention_form = bool(fusion), bool(coords), attention
        c = 4 * width                                                       # channels of the H/8 grid

        self.encoder = koalarization_encoder(3 if coords else 1, width)    # (B, 4C, H/8, W/8)
        self.global_features = (GlobalFeatures(global_source, global_feature, network=global_network,
                                               classes=global_classes, classifier_width=classifier_width,
                                               path=global_path, output_dim=global_dim,
                                               input_size=global_input_size, cache=global_cache)
                                if fusion else None)
        self.fusion = FusionLayer(c, self.global_features.dim) if fusion else None
        self.attention = GridAttention(c, attention, attention_dim) if attention is not None else None
        self.decoder = nn.Sequential(
            conv_bn_relu(c, 2 * width), nn.Upsample(scale_factor=2.0, mode="nearest"),            # (B, 2C, H/4, W/4)
            conv_bn_relu(2 * width, width), conv_bn_relu(width, width),
            nn.Upsample(scale_factor=2.0, mode="nearest"),                                         # (B, C, H/2, W/2)
            nn.Conv2d(width, width // 2, 3, padding=1), nn.ReLU(inplace=True),                    # no BN: last two
            nn.Upsample(scale_factor=2.0, mode="nearest"),                                         # (B, C/2, H, W)
            nn.Conv2d(width // 2, 2, 3, padding=1),                                                # (B, 2, H, W)
        )
        for m in self.decoder.modules():                                   # Xavier init in the decoder (sec. 4.1)
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def classifier(self) -> nn.Module | None:
        """The frozen global network (Pretrained-, Scene- or TorchScriptClassifier), None without fusion."""
        return self.global_features.classifier if self.global_features is not None else None

    def load_classifier(self, classifier: SceneClassifier) -> "LakhaniColorizer":
        """Copy a (pretrained) SceneClassifier's weights into the model's frozen one; it stays frozen.

        Call it before building the Trainer: the Trainer's EMA copies the weights it starts with.
        """
        mine = self.classifier
        if not isinstance(mine, SceneClassifier):
            raise ValueError("load_classifier needs a model with fusion=True and global_source='scene'")
        if not isinstance(classifier, SceneClassifier) or classifier.classes != mine.classes \
                or classifier.width != mine.width:
            got = (f"classes {classifier.classes}, width {classifier.width}" if isinstance(classifier, SceneClassifier)
                   else type(classifier).__name__)
            raise ValueError(f"load_classifier: expected a SceneClassifier with classes {mine.classes} and width "
                             f"{mine.width}, got {got}")
        with torch.no_grad():
            mine.load_state_dict(classifier.state_dict())
        self.global_features.freeze()
        return self

    @staticmethod
    def grid_shape(h: int, w: int) -> tuple[int, int]:
        """The attention grid of an h x w input: (ceil(h / 8), ceil(w / 8)); N = product."""
        return -(-h // DOWNSAMPLE), -(-w // DOWNSAMPLE)

    def _check_input(self, L: Tensor, hint_ab: Tensor | None, hint_mask: Tensor | None) -> None:
        if hint_ab is not None or hint_mask is not None:
            raise ValueError("lakhani takes no hints: it is fully automatic")
        if not isinstance(L, Tensor) or L.dim() != 4 or L.shape[1] != 1:
            shape = tuple(L.shape) if isinstance(L, Tensor) else type(L).__name__
            raise ValueError(f"lakhani: L must be shaped (B, 1, H, W) with lightness in [0, 100], got {shape}")
        if not L.is_floating_point():
            raise ValueError(f"lakhani: L must be a float tensor in [0, 100], got {L.dtype}")
        if L.shape[0] == 0 or L.shape[-2] == 0 or L.shape[-1] == 0:
            raise ValueError(f"lakhani: L is empty: {tuple(L.shape)}")

    def forward(self, L: Tensor, *, hint_ab: Tensor | None = None, hint_mask: Tensor | None = None,
                return_attention: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """L (B, 1, H, W) -> ab (B, 2, H, W).

        With `return_attention`: (ab, alpha (B, N, N)), N = gh * gw for (gh, gw) = grid_shape(H, W); row t
        of alpha is query cell t = (t // gw, t % gw), and alpha[:, t].view(B, gh, gw) is its attention map.
        """
        self._check_input(L, hint_ab, hint_mask)
        if return_attention and self.attention is None:
            raise ValueError("lakhani: return_attention=True needs a model built with attention")
        h, w = L.shape[-2:]
        x = L / 50.0 - 1.0                                                  # [0, 100] -> [-1, 1]
        if self.use_coords:
            x = add_coords(x)                                               # [L; x; y]: (B, 3, H, W)
        x = pad_to_multiple(x, DOWNSAMPLE)                                  # (B, 3, H', W'), H', W' multiples of 8
        feats = self.encoder(x)                                             # (B, 4C, H'/8, W'/8)
        if self.fusion is not None:
            g = self.global_features(L)                                     # (B, D), frozen
            feats = self.fusion(feats, g)                                   # (B, 4C, H'/8, W'/8)
        weights = None
        if self.attention is not None:
            feats, weights = self.attention(feats)                          # (B, 4C, H'/8, W'/8), (B, N, N)
        ab = torch.tanh(self.decoder(feats)) * AB_SCALE                     # (B, 2, H', W')
        ab = ab[..., :h, :w]
        return (ab, weights) if return_attention else ab


def lakhani_step(ctx, batch) -> dict[str, Tensor]:
    """One training step: the paper's MSE on ab (eq. iv), in units of AB_SCALE (as baseline.mse_step)."""
    pred = ctx.models["model"](batch["L"])                                  # (B, 2, H, W)
    # C(X, theta) = 1 / (2HW) sum_k sum_ij (X_kij - Xtilde_kij)^2, averaged over the batch   (eq. iv)
    loss = F.mse_loss(pred / AB_SCALE, batch["ab"] / AB_SCALE)
    ctx.update("model", loss)
    return {"loss": loss}


LakhaniColorizer.training_step = staticmethod(lakhani_step)


# ---------------------------------------------------------------------------------------------
# Pretraining the stand-in classifier
# ---------------------------------------------------------------------------------------------

def _labels(batch: dict[str, Any], key: str, classes: list[str], device: torch.device) -> Tensor:
    """batch[key] as class indices (B,): a long tensor as it is, a list of names looked up in `classes`."""
    if key not in batch:
        raise KeyError(f"the batch has no {key!r} labels (keys: {sorted(batch)}); ToyWorld has 'scene', "
                       "PackagePhotos has 'source'")
    labels = batch[key]
    if isinstance(labels, Tensor):
        if labels.dtype != torch.long or labels.min() < 0 or labels.max() >= len(classes):
            raise ValueError(f"{key!r} labels must be class indices in [0, {len(classes)}), got {labels.tolist()}")
        return labels.to(device)
    unknown = sorted({n for n in labels if n not in classes})
    if unknown:
        raise ValueError(f"{key!r} labels {unknown} are not among the classifier's classes {classes}")
    return torch.tensor([classes.index(n) for n in labels], device=device)


def classifier_step(label_key: str = "scene"):
    """The Trainer step of a SceneClassifier: cross-entropy on batch[label_key]; logs loss and accuracy."""
    def step(ctx, batch) -> dict[str, Tensor]:
        net = ctx.models["model"]
        classes = ctx.unwrapped["model"].classes
        logits = net(batch["L"])                                            # (B, K)
        target = _labels(batch, label_key, classes, logits.device)          # (B,)
        loss = F.cross_entropy(logits.float(), target)
        ctx.update("model", loss)
        return {"loss": loss, "accuracy": (logits.argmax(-1) == target).float().mean()}
    return step


def pretrain_classifier(classifier: SceneClassifier, dataset, *, out_dir: str | Path, steps: int = 150,
                        batch_size: int = 32, lr: float = 1e-3, label_key: str = "scene", resume: bool = True,
                        **train: Any) -> dict[str, Any]:
    """Train `classifier` briefly on (L, label) through the Trainer; returns the Trainer's summary.

    Labels: batch[label_key] ("scene" for ToyWorld, "source" for PackagePhotos (DATA="package-photos")
    with classes="photos").
    Then `model.load_classifier(classifier)` copies it into a LakhaniColorizer, frozen. `train`
    overrides TrainConfig fields (device, warmup_steps, ...); resume=True continues a run in out_dir.
    """
    from colorkit.train import TrainConfig, Trainer

    config = TrainConfig(**{"lr": lr, "optimizer": "adam", "log_every": 10, **train, "steps": steps,
                            "batch_size": batch_size})
    summary = Trainer({"model": classifier}, classifier_step(label_key), dataset, config, out_dir=out_dir,
                      resume=resume).fit()
    classifier.eval()
    return summary


@torch.no_grad()
def classifier_accuracy(classifier: nn.Module, dataset, *, label_key: str = "scene", batch_size: int = 64,
                        limit: int | None = None) -> float:
    """Top-1 accuracy of a SceneClassifier (or a model's `.classifier`) on `dataset` (first `limit` items)."""
    from torch.utils.data import DataLoader, Subset

    from colorkit.data import lab_batch

    if limit is not None:
        dataset = Subset(dataset, range(min(limit, len(dataset))))
    was_training, device = classifier.training, next(classifier.parameters()).device
    classifier.eval()
    correct = total = 0
    for batch in DataLoader(dataset, batch_size=batch_size):
        L = lab_batch(batch["rgb"].to(device))["L"]
        target = _labels(batch, label_key, classifier.classes, device)
        correct += int((classifier(L).argmax(-1) == target).sum())
        total += len(target)
    classifier.train(was_training)
    return correct / max(total, 1)


# ---------------------------------------------------------------------------------------------
# Presets (merged into colorkit.presets by the lead), and the classifier's pretraining settings
# ---------------------------------------------------------------------------------------------
