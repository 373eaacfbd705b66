"""The course's colorization models, one file per paper, built from plain config dicts.

    model = build({"name": "baseline", "width": 32})     # any registered name
    model.config                                           # the same dict: checkpoints store it

Every model is a `Colorizer`: it takes lightness L (B, 1, H, W) in [0, 100] (and, for
interactive models, ab hints with their mask) and returns ab (B, 2, H, W) in Lab units, so
`colorkit.colorize` and the evaluation code treat all of them alike.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

HINT_AB_SCALE = 110.0   # ab / 110 in the hint input (Zhang et al.)
_REGISTRY: dict[str, type["Colorizer"]] = {}


class Colorizer(nn.Module):
    """Base class: L (B, 1, H, W) in [0, 100] -> ab (B, 2, H, W).

    Subclasses set `takes_hints` (whether forward uses hint_ab / hint_mask) and `image_size` (the
    side `colorize` resizes an image to before predicting; ab is upsampled back afterwards), and
    point `training_step` at the paper's per-step function for `colorkit.train.Trainer`
    (`step(ctx, batch) -> losses`, the model under the name "model").
    """

    takes_hints: bool = False
    image_size: int = 64
    # config keys that name a file the model opens when built (a network of the user's own):
    # `colorkit.load` never takes them from a checkpoint, only from its caller
    external_files: tuple[str, ...] = ()
    config: dict[str, Any]

    def forward(self, L: Tensor, *, hint_ab: Tensor | None = None, hint_mask: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def training_models(self) -> dict[str, nn.Module]:
        """The modules `colorkit.train.Trainer` trains with `training_step`: {"model": self} here;
        a GAN returns its generator (self) and its discriminator."""
        return {"model": self}


def register(name: str) -> Callable[[type[Colorizer]], type[Colorizer]]:
    """Class decorator: make a model buildable as build({"name": name, ...})."""
    def add(cls: type[Colorizer]) -> type[Colorizer]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"a model named {name!r} is already registered ({_REGISTRY[name].__name__})")
        _REGISTRY[name] = cls
        return cls
    return add


def registered() -> list[str]:
    """Names of all registered models."""
    _import_model_files()
    return sorted(_REGISTRY)


def resolved_config(config: dict[str, Any]) -> dict[str, Any]:
    """The full config `build(config)` keeps, every constructor default filled in, without building:
    a checkpoint rebuilds the same model even if defaults change. A bad config is an error naming it."""
    _import_model_files()
    if not isinstance(config, dict) or "name" not in config:
        raise ValueError(f"a model config is a dict with a 'name' key, got {config!r}")
    name = config["name"]
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(sorted(_REGISTRY))}")
    signature = inspect.signature(_REGISTRY[name])
    try:
        bound = signature.bind(**{k: v for k, v in config.items() if k != "name"})
    except TypeError as err:
        raise ValueError(f"bad config for model {name!r}: {err}; valid parameters: {', '.join(signature.parameters)}") from None
    bound.apply_defaults()
    return {"name": name, **copy.deepcopy(dict(bound.arguments))}


def legacy_config(config: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    """The config that rebuilds a checkpoint saved by an older colorkit, read from its weights
    (`jiang.legacy_config`: a hint-taking "jiang" is "zhang2017"; `li.legacy_config`: Swin's final
    LayerNorm). A current checkpoint's config comes back unchanged."""
    _import_model_files()
    from colorkit.models import jiang, li
    return li.legacy_config(jiang.legacy_config(config, state), state)


def build(config: dict[str, Any]) -> Colorizer:
    """Build a model from {"name": ..., **constructor arguments}; the model keeps the full config as `.config`."""
    full = resolved_config(config)
    model = _REGISTRY[full["name"]](**{k: v for k, v in full.items() if k != "name"})
    model.config = full
    return model


def training_step(name: str):
    """The per-step training function a registered model declares (`Colorizer.training_step`)."""
    _import_model_files()
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(sorted(_REGISTRY))}")
    step = getattr(_REGISTRY[name], "training_step", None)
    if step is None:
        raise ValueError(f"model {name!r} declares no training_step")
    return step


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Pad x (B, C, H, W) at the bottom and right, repeating the edge, to H and W divisible by
    `multiple`, so any image size passes a network that halves it log2(multiple) times; crop the
    output back with [..., :H, :W]."""
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x


def hint_inputs(L: Tensor, hint_ab: Tensor | None, hint_mask: Tensor | None, *, model: str) -> Tensor:
    """The input of the hint-taking models, [L; hint ab; hint mask] normalised: (B, 4, H, W).

    Zhang et al.'s normalisation, which Jiang et al. and Li et al. (eq. 4) inherit: (L - 50) / 100,
    ab / 110 (zero off the hints) and the mask as it is. No hints (both None) = zeros, automatic
    colorization. Shapes are checked, and errors name `model`.
    """
    if not isinstance(L, Tensor) or L.dim() != 4 or L.shape[1] != 1:
        raise ValueError(f"{model}: L must be shaped (B, 1, H, W), got {tuple(L.shape) if isinstance(L, Tensor) else L!r}")
    b, _, h, w = L.shape
    if (hint_ab is None) != (hint_mask is None):
        raise ValueError(f"{model}: give hint_ab and hint_mask together (or neither, for no hints)")
    if hint_ab is None:
        hint_ab, hint_mask = L.new_zeros(b, 2, h, w), L.new_zeros(b, 1, h, w)
    if hint_ab.shape != (b, 2, h, w) or hint_mask.shape != (b, 1, h, w):
        raise ValueError(f"{model}: hint_ab must be (B, 2, H, W) and hint_mask (B, 1, H, W) like L {tuple(L.shape)}; "
                         f"got {tuple(hint_ab.shape)} and {tuple(hint_mask.shape)}")
    return torch.cat([(L - 50.0) / 100.0, hint_ab * hint_mask / HINT_AB_SCALE, hint_mask], dim=1)


def global_hint(x0: Tensor) -> Tensor:
    """Each image's mean hint color and whether it has hints, from the normalised input of `hint_inputs`:
    (B, 4, H, W) -> (B, 3, 1, 1) = [mean hint ab / 110; has hints] (zeros without hints). A global hint
    derived from the local ones, as Zhang et al. 2017 feed global color statistics to their network."""
    mask = x0[:, 3:4]
    count = mask.sum(dim=(2, 3), keepdim=True)                                  # hint pixels (B, 1, 1, 1)
    mean = (x0[:, 1:3] * mask).sum(dim=(2, 3), keepdim=True) / count.clamp(min=1)   # (B, 2, 1, 1)
    return torch.cat([mean, (count > 0).to(x0.dtype)], dim=1)                   # (B, 3, 1, 1)


def spread_hints(hint_ab: Tensor, hint_mask: Tensor, *, sigma: float | None = None) -> Tensor:
    """The hint colors spread by distance: each pixel's Gaussian-weighted mean of the hint ab (a
    normalised convolution), falling back on the image's mean hint color far from every hint; zeros
    without hints. (B, 2, H, W), (B, 1, H, W) in Lab units -> (B, 2, H, W). `sigma` in pixels
    (default: an eighth of the longer side, so the spread scales with the image).
    """
    h, w = hint_mask.shape[-2:]
    sigma = float(sigma or max(h, w) / 8)
    radius = max(1, min(int(3 * sigma), max(h, w) - 1))
    x = torch.arange(-radius, radius + 1, device=hint_mask.device, dtype=hint_mask.dtype)
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))                                  # peak 1 at the hint

    def blur(t: Tensor) -> Tensor:                                              # separable, zeros outside
        c = t.shape[1]
        t = F.conv2d(t, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, radius), groups=c)
        return F.conv2d(t, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(radius, 0), groups=c)

    stats = global_hint(torch.cat([hint_mask, hint_ab * hint_mask, hint_mask], dim=1))   # (B, 3, 1, 1)
    weight = 0.05                                                               # the mean's weight: it wins
    num = blur(hint_ab * hint_mask) + weight * stats[:, :2]                     # beyond about 2.5 sigma from
    return num / (blur(hint_mask) + weight) * stats[:, 2:]                      # every hint


HINT_PRIORS = (None, "mean", "spread")


def hint_prior(kind: str | None, x0: Tensor) -> Tensor | None:
    """A classical color guess from the hints alone, in Lab units (B, 2, H, W), for a hint model to
    correct: "mean" paints each image's mean hint color everywhere, "spread" spreads the hints by
    distance (`spread_hints`); None: no prior. x0 is the normalised input of `hint_inputs`."""
    if kind is None:
        return None
    if kind == "mean":
        return (global_hint(x0)[:, :2] * HINT_AB_SCALE).expand(-1, -1, *x0.shape[-2:])
    if kind == "spread":
        return spread_hints(x0[:, 1:3] * HINT_AB_SCALE, x0[:, 3:4])
    raise ValueError(f"hint_prior must be one of {HINT_PRIORS}, got {kind!r}")


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _import_model_files() -> None:
    # importing a model file registers its classes
    from colorkit.models import baseline, jiang, lakhani, li, narkhede, sun2023, sun2023_upgrade  # noqa: F401
