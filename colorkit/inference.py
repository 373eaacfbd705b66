"""Using a trained model: `load` a checkpoint, `colorize` any image, with or without hints.

    model = colorkit.load("runs/00_welcome/baseline/checkpoint.pt")
    rgb = colorkit.colorize(model, gray_uint8_array)                       # (H, W, 3) uint8
    rgb = colorkit.colorize(hint_model, image, hints=[(10, 20, (255, 0, 0))])
    colorkit.inference.parse_hint("10,20,#ff0000")                         # (10, 20, (255, 0, 0))

The model predicts ab at its own size; the output keeps the input's lightness at full resolution
(ab is upsampled and joined with the input's own L), so no detail of the input is lost.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from colorkit.color import lab_to_rgb, rgb_to_lab
from colorkit.models import Colorizer, build

Hint = tuple[int, int, tuple[int, int, int]]


def parse_color(color: Any) -> tuple[int, int, int]:
    """'#ff8800' (the '#' optional) or (r, g, b) with integers in 0..255 -> (255, 136, 0)."""
    if isinstance(color, str):
        match = re.fullmatch(r"\s*#?([0-9a-fA-F]{6})\s*", color)
        if match is None:
            raise ValueError(f"a color is '#rrggbb' or (r, g, b), got {color!r}")
        digits = match.group(1)
        return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)
    try:
        values = tuple(color)
    except TypeError:
        raise ValueError(f"a color is '#rrggbb' or (r, g, b), got {color!r}") from None
    if len(values) != 3 or not all(_is_int(v) and 0 <= v <= 255 for v in values):
        raise ValueError(f"a color is '#rrggbb' or (r, g, b) with integers in 0..255, got {color!r}")
    return int(values[0]), int(values[1]), int(values[2])


def parse_hint(text: str) -> Hint:
    """'12,40,#ff8800' -> (12, 40, (255, 136, 0)): row Y, column X, color; the command line's --hint."""
    parts = text.split(",") if isinstance(text, str) else []
    try:
        if len(parts) != 3:
            raise ValueError
        return int(parts[0]), int(parts[1]), parse_color(parts[2])
    except ValueError:
        raise ValueError(f"a hint is Y,X,#RRGGBB (e.g. 12,40,#ff8800), got {text!r}") from None


def _is_int(value: Any) -> bool:
    # numpy integers count; bools and integral floats do not (a position or a color is a count)
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def checkpoint_model_name(models: Mapping[str, Any], path: str | os.PathLike) -> str:
    """The model `load` rebuilds from a checkpoint's {name: {"config", "state"}} when not told which:
    the only one with a config, else the one called "generator" or "model"."""
    candidates = [n for n in models if models[n].get("config")]
    name = candidates[0] if len(candidates) == 1 else next((n for n in ("generator", "model") if n in models), None)
    if name is None:
        raise ValueError(f"{path} holds models {sorted(models)}; say which with name=")
    return name


def load(path: str | os.PathLike, *, name: str | None = None, ema: bool = True,
         device: str | torch.device = "cpu") -> Colorizer:
    """Rebuild a model and its weights from a training checkpoint (no notebook needed).

    `name` picks a model when the checkpoint holds several (a GAN's generator and critic); by
    default the only one, else the one called "generator" or "model". EMA weights are used when the
    checkpoint has them and `ema` is true: they are the ones the papers sample from.
    """
    from colorkit.train import load_checkpoint

    checkpoint = load_checkpoint(path)
    models = checkpoint["models"]
    if name is None:
        name = checkpoint_model_name(models, path)
    if name not in models:
        raise ValueError(f"{path} has no model {name!r}; it holds {sorted(models)}")
    if not models[name].get("config"):
        raise ValueError(f"{path}: model {name!r} was saved without a config, so it cannot be rebuilt")
    model = build(models[name]["config"])
    state = checkpoint.get("ema", {}).get(name) if ema else None
    model.load_state_dict(state if state is not None else models[name]["state"])
    return model.to(device).eval()


def _to_float_image(image) -> np.ndarray:
    """uint8 or float array, (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) -> float32 (H, W, C) in [0, 1]."""
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got shape {array.shape}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"image is empty: shape {array.shape}")
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    elif np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise ValueError(f"a float image must hold finite values in [0, 1], got [{np.nanmin(array)}, {np.nanmax(array)}]")
    else:
        raise TypeError(f"image must be uint8 or float, got {array.dtype}")
    return array[..., :3]                                    # alpha dropped


@torch.no_grad()
def colorize(model: Colorizer, image, hints: Sequence[Hint] | None = None, *, hint_patch: int = 2) -> np.ndarray:
    """Colorize `image` (uint8 or float in [0, 1], gray or RGB, any size) -> RGB uint8 (H, W, 3).

    RGB input is reduced to its lightness first. `hints` are (y, x, (r, g, b)) in input pixel
    coordinates with 8-bit colors; each becomes a `hint_patch` x `hint_patch` patch of the color's
    ab at the model's resolution.
    """
    pixels = _to_float_image(image)
    h, w, c = pixels.shape
    device = next(model.parameters()).device
    rgb = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).to(device)   # (C, H, W)
    if c == 1:
        rgb = rgb.expand(3, h, w)                            # a gray value is an sRGB gray: R = G = B
    L = rgb_to_lab(rgb)[:1]                                  # (1, H, W), full resolution
    size = model.image_size
    L_small = F.interpolate(L[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)

    hint_kwargs = {}
    if hints:
        if not model.takes_hints:
            raise ValueError(f"{type(model).__name__} takes no hints; colorize it without hints")
        hint_ab = torch.zeros(1, 2, size, size, device=device)
        hint_mask = torch.zeros(1, 1, size, size, device=device)
        for y, x, color in hints:
            if not (0 <= y < h and 0 <= x < w):
                raise ValueError(f"hint at (y={y}, x={x}) is outside the {h} x {w} image")
            if len(color) != 3 or not all(0 <= v <= 255 for v in color):
                raise ValueError(f"hint color must be (r, g, b) with values in 0..255, got {color}")
            ab = rgb_to_lab(torch.tensor(color, dtype=torch.float32, device=device).view(3, 1, 1) / 255)[1:, 0, 0]
            # the patch centred on the hint's position at the model's resolution
            ys = min(max(round((y + 0.5) * size / h - hint_patch / 2), 0), size - hint_patch)
            xs = min(max(round((x + 0.5) * size / w - hint_patch / 2), 0), size - hint_patch)
            hint_ab[0, :, ys:ys + hint_patch, xs:xs + hint_patch] = ab.view(2, 1, 1)
            hint_mask[0, :, ys:ys + hint_patch, xs:xs + hint_patch] = 1
        hint_kwargs = {"hint_ab": hint_ab, "hint_mask": hint_mask}

    was_training = model.training
    ab_small = model.eval()(L_small, **hint_kwargs).float()                   # (1, 2, size, size)
    model.train(was_training)
    ab = F.interpolate(ab_small, size=(h, w), mode="bilinear", align_corners=False)[0]   # (2, H, W)
    out = lab_to_rgb(torch.cat([L, ab], dim=0))                               # (3, H, W)
    return (out.permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)
