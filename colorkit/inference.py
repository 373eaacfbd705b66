"""Using a trained model: `load` a checkpoint, `colorize` any image, with or without hints.

    model = colorkit.load("runs/00_welcome/baseline/checkpoint.pt")
    rgb = colorkit.colorize(model, gray_uint8_array)                       # (H, W, 3) uint8
    rgb = colorkit.colorize(hint_model, image, hints=[(10, 20, (255, 0, 0))])
    colorkit.inference.parse_hint("10,20,#ff0000")                         # (10, 20, (255, 0, 0))

The model predicts ab at its own size; the output keeps the input's lightness at full resolution
(ab is upsampled and joined with the input's own L), so no detail of the input is lost.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from colorkit import pretrained
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


def _user_files(config: dict[str, Any], cls: type, path, files: Mapping[str, Any] | None) -> dict[str, Any]:
    """The config with every external file (`cls.external_files`) replaced by the one the caller
    names (`files`, else $COLORKIT_<KEY>); a checkpoint's own path is never used."""
    config = dict(config)
    for key in getattr(cls, "external_files", ()):
        if config.get(key) is None:
            continue
        env = f"COLORKIT_{key.upper()}"
        chosen = (files or {}).get(key) or os.environ.get(env)
        if not chosen:
            raise ValueError(
                f"{path}: model {config.get('name')!r} needs an external network file ({key}; the checkpoint names "
                f"{config[key]!r}). colorkit.load never opens a file that a checkpoint names, since such a file "
                f"(TorchScript) can run code: check the file yourself, then pass "
                f"colorkit.load(..., files={{{key!r}: PATH}}) or set {env}=PATH")
        config[key] = str(chosen)
    return config


def load(path: str | os.PathLike, *, name: str | None = None, ema: bool = True,
         device: str | torch.device = "cpu", files: Mapping[str, str | os.PathLike] | None = None) -> Colorizer:
    """Rebuild a model and its weights from a training checkpoint (no notebook needed).

    `name` picks a model when the checkpoint holds several (a GAN's generator and critic); by
    default the only one, else the one called "generator" or "model". EMA weights are used when the
    checkpoint has them and `ema` is true: they are the ones the papers sample from.

    Safe with a checkpoint from anywhere: it is read with torch.load(weights_only=True) (tensors and
    plain values only), and no other file it names is opened. A model that uses a network of your
    own from a file (Lakhani's `global_path`) gets that file from `files={"global_path": PATH}` or
    $COLORKIT_GLOBAL_PATH, never from the checkpoint. A checkpoint whose weights do not fit its
    model, or hold NaN or inf, is an error naming the checkpoint and the first bad tensor.
    """
    from colorkit.models import _REGISTRY, legacy_config, registered
    from colorkit.train import first_nonfinite, load_checkpoint, state_fit_problem

    checkpoint = load_checkpoint(path)
    models = checkpoint["models"]
    if name is None:
        name = checkpoint_model_name(models, path)
    if name not in models:
        raise ValueError(f"{path} has no model {name!r}; it holds {sorted(models)}")
    config = models[name].get("config")
    if not config:
        raise ValueError(f"{path}: model {name!r} was saved without a config, so it cannot be rebuilt")
    registered()                                        # every model file imported
    config = legacy_config(config, models[name].get("state") or {})
    cls = _REGISTRY.get(config.get("name"))
    if cls is None:
        raise ValueError(f"{path}: model {name!r} is {config.get('name')!r}, which this colorkit does not know; "
                         f"known models: {', '.join(sorted(_REGISTRY))}")
    config = _user_files(config, cls, path, files)
    try:
        with pretrained.from_checkpoint():       # pretrained networks inside take their weights from the checkpoint
            model = build(config)
    except Exception as err:   # a config of wrong types or values: the model's own check, or deeper
        raise ValueError(f"{path}: cannot build model {name!r} from its config: {type(err).__name__}: {err}") from None
    state = checkpoint["ema"].get(name) if ema else None
    which = "EMA weights" if state is not None else "weights"
    state = state if state is not None else models[name]["state"]
    problem = state_fit_problem(model, state) or first_nonfinite({name: state})
    if problem:
        raise ValueError(f"{path}: the {which} of model {name!r} ({config['name']}) cannot be used: {problem}")
    model.load_state_dict(state)
    return model.to(device).eval()


def _check_image(image) -> np.ndarray:
    """uint8 or float array, (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) -> the same data as (H, W, C),
    checked (a float image holds finite values in [0, 1]) but not converted: `colorize` converts it
    band by band, so a large image is never held as float in full."""
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got shape {array.shape}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"image is empty: shape {array.shape}")
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise ValueError(f"a float image must hold finite values in [0, 1], got [{np.nanmin(array)}, {np.nanmax(array)}]")
    elif array.dtype != np.uint8:
        raise TypeError(f"image must be uint8 or float, got {array.dtype}")
    return array


def _band_to_rgb(band: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """Rows of a checked image (rows, W, C) -> sRGB float (3, rows, W) in [0, 1]: gray repeated
    (R = G = B), transparency composited onto white (as the data loader does; never black)."""
    pixels = torch.from_numpy(np.require(band, requirements=["C", "W"])).to(device).permute(2, 0, 1)   # (C, rows, W)
    pixels = pixels.float() / 255.0 if band.dtype == np.uint8 else pixels.float()
    if pixels.shape[0] == 4:
        color, alpha = pixels[:3], pixels[3:]
        pixels = color * alpha + (1.0 - alpha)                # over white
    return pixels.expand(3, -1, -1) if pixels.shape[0] == 1 else pixels


def _to_float_image(image) -> np.ndarray:
    """A checked image as float32 (H, W, 3) in [0, 1], alpha composited onto white; for small images
    (the widget's), since it holds the whole image as float."""
    return _band_to_rgb(_check_image(image)).permute(1, 2, 0).numpy()


def parse_hints(items: Iterable[Any] | str) -> list[Hint]:
    """Hints as "Y,X,#RRGGBB" strings or (y, x, color) items, color (r, g, b) or "#rrggbb"
    -> [(y, x, (r, g, b)), ...]: the forms `colorize`, the hint widget and the command line take.
    Lists work as items too (papermill parameters are JSON). Rows and columns are integers (not
    floats, not bools)."""
    if isinstance(items, str):
        items = [items]                      # one hint is a list of one
    hints = []
    for index, item in enumerate(items):
        if isinstance(item, str):
            try:
                hints.append(parse_hint(item))
            except ValueError as err:
                raise ValueError(f"hint {index}: {err}") from None
            continue
        try:
            y, x, color = item
        except (TypeError, ValueError):
            raise ValueError(f"hint {index}: a hint is 'Y,X,#RRGGBB' or (y, x, color), got {item!r}") from None
        if not (_is_int(y) and _is_int(x)):
            raise ValueError(f"hint {index}: row and column must be integers, got {item!r}")
        try:
            hints.append((int(y), int(x), parse_color(color)))
        except ValueError as err:
            raise ValueError(f"hint {index} {item!r}: {err}") from None
    return hints


BAND_PIXELS = 1 << 18     # pixels of the output computed at once (262,144: a 512 x 512 image in one go)


def _bilinear_rows(ab_cols: torch.Tensor, rows: torch.Tensor, height: int) -> torch.Tensor:
    """Rows `rows` of F.interpolate(ab, (height, W), bilinear, align_corners=False), from ab already
    interpolated along its width, ab_cols (2, s, W): the same source rows and weights torch uses
    (source y = (y + 0.5) s / height - 0.5, clamped at 0), so bands join without a seam."""
    s = ab_cols.shape[1]
    src = ((rows.to(ab_cols.dtype) + 0.5) * (s / height) - 0.5).clamp(min=0)
    y0 = src.floor().long().clamp(max=s - 1)
    y1 = (y0 + 1).clamp(max=s - 1)
    t = (src - y0).view(1, -1, 1)                                             # (1, rows, 1)
    return ab_cols[:, y0] * (1 - t) + ab_cols[:, y1] * t                      # (2, rows, W)


@torch.no_grad()
def colorize(model: Colorizer, image, hints: Sequence[Any] | None = None, *, hint_patch: int = 2,
             band_pixels: int = BAND_PIXELS) -> np.ndarray:
    """Colorize `image` (uint8 or float in [0, 1], gray, RGB or RGBA, any size) -> RGB uint8 (H, W, 3).

    RGB input is reduced to its lightness first; transparency is composited onto white. `hints`
    are (y, x, color) in input pixel coordinates, color (r, g, b) with 8-bit integers or "#rrggbb",
    or "Y,X,#RRGGBB" strings (the command line's form); each becomes a `hint_patch` x `hint_patch`
    patch of the color's ab at the model's resolution.

    The model sees the image at its own size (`model.image_size`); its ab is upsampled and joined
    with the input's own L at full resolution. Memory is bounded: the full-resolution L (float32, 4
    bytes per pixel) and the output (uint8, 3 bytes per pixel) are held whole, everything else is
    computed in bands of `band_pixels` pixels (about 250 bytes each while converting, so about 65 MB
    at the default). Measured on a 6000 x 6000 gray image: 310 MB above the input (7-8 bytes per
    pixel plus the band), 2.8 s on 2 CPU cores; a whole-image conversion took 4.7 GB.
    """
    pixels = _check_image(image)
    h, w, _ = pixels.shape
    device = next(model.parameters()).device
    rows_per_band = max(1, int(band_pixels) // w)
    bands = [(r, min(r + rows_per_band, h)) for r in range(0, h, rows_per_band)]

    L = torch.empty(1, 1, h, w)                                            # full-resolution lightness, on the CPU
    for r0, r1 in bands:
        L[0, :, r0:r1] = rgb_to_lab(_band_to_rgb(pixels[r0:r1], device))[:1].cpu()
    size = model.image_size
    L_small = F.interpolate(L, size=(size, size), mode="bilinear", align_corners=False, antialias=True).to(device)

    hint_kwargs = {}
    if hints:
        if not model.takes_hints:
            raise ValueError(f"{type(model).__name__} takes no hints; colorize it without hints")
        hint_ab = torch.zeros(1, 2, size, size, device=device)
        hint_mask = torch.zeros(1, 1, size, size, device=device)
        for y, x, color in parse_hints(hints):
            if not (0 <= y < h and 0 <= x < w):
                raise ValueError(f"hint at (y={y}, x={x}) is outside the {h} x {w} image")
            ab = rgb_to_lab(torch.tensor(color, dtype=torch.float32, device=device).view(3, 1, 1) / 255)[1:, 0, 0]
            # the patch centred on the hint's position at the model's resolution
            ys = min(max(round((y + 0.5) * size / h - hint_patch / 2), 0), size - hint_patch)
            xs = min(max(round((x + 0.5) * size / w - hint_patch / 2), 0), size - hint_patch)
            hint_ab[0, :, ys:ys + hint_patch, xs:xs + hint_patch] = ab.view(2, 1, 1)
            hint_mask[0, :, ys:ys + hint_patch, xs:xs + hint_patch] = 1
        hint_kwargs = {"hint_ab": hint_ab, "hint_mask": hint_mask}

    was_training = model.training
    ab_small = model.eval()(L_small, **hint_kwargs).float()                    # (1, 2, size, size)
    model.train(was_training)
    # bilinear upsampling to (h, w), separably: along the width once (2, size, w), then per band of rows
    ab_cols = F.interpolate(ab_small, size=(size, w), mode="bilinear", align_corners=False)[0]
    out = np.empty((h, w, 3), np.uint8)
    for r0, r1 in bands:
        ab = _bilinear_rows(ab_cols, torch.arange(r0, r1, device=device), h)          # (2, rows, w)
        rgb = lab_to_rgb(torch.cat([L[0, :, r0:r1].to(device), ab], dim=0))           # (3, rows, w)
        out[r0:r1] = (rgb.permute(1, 2, 0) * 255 + 0.5).to(torch.uint8).cpu().numpy()
    return out


# --- image files ---------------------------------------------------------------------------------

class ImageTooLargeError(ValueError):
    """An image file over PIL's pixel limit (PIL.Image.MAX_IMAGE_PIXELS): not opened at all."""


def _bit_depth(im) -> int:
    """Bits per sample of a PIL image in mode "I": the file's own (TIFF BitsPerSample; 16 for PNG, the
    only way PNG reaches mode I), else 16 when every value fits in 16 bits, else 32."""
    tags = getattr(im, "tag_v2", None)
    if tags is not None and 258 in tags:
        bits = tags[258]
        return int(bits[0] if isinstance(bits, tuple) else bits)
    if im.format == "PNG":
        return 16
    return 16 if im.getextrema()[1] <= 65535 else 32


def _scaled_gray(im, path) -> np.ndarray:
    """A 16-bit, 32-bit or float gray image -> float32 (H, W) in [0, 1], scaled by its true range:
    I;16 by 65535, I by its bit depth, F as it is when in [0, 1] (else 8- or 16-bit values by 255 or 65535)."""
    values = np.asarray(im)
    if im.mode.startswith("I;16"):
        return (values.astype(np.float32) / 65535.0)
    values = values.astype(np.float64)
    if im.mode == "I":
        top = 2.0 ** _bit_depth(im) - 1
    else:                                                   # "F"
        if not np.isfinite(values).all():
            raise ValueError(f"{path}: a float image with NaN or infinite values")
        high = values.max(initial=0.0)
        top = 1.0 if high <= 1 else 255.0 if high <= 255 else 65535.0 if high <= 65535 else None
        if top is None:
            raise ValueError(f"{path}: float values up to {high:g}; colorkit reads float images in [0, 1] "
                             "(or 8- or 16-bit values stored as floats)")
    low, high = values.min(initial=0.0), values.max(initial=0.0)
    if low < 0 or high > top:
        raise ValueError(f"{path}: {im.mode} values in [{low:g}, {high:g}] do not fit its {top:g} range")
    return (values / top).astype(np.float32)


def read_image(path: str | os.PathLike | bytes) -> np.ndarray:
    """An image file (a path, or its bytes: an upload) -> an array `colorize` takes, as displayed:
    uint8 (H, W) or (H, W, 3), or float32 (H, W) in [0, 1] for 16-bit, 32-bit and float gray files.

    EXIF orientation is applied (hints are given on what a person sees); transparency is composited
    onto white; palette, CMYK and other modes become RGB; 16-bit and float gray keep their precision,
    scaled by their true bit depth (never clipped). Over PIL's pixel limit (PIL.Image.MAX_IMAGE_PIXELS,
    about 89 M pixels): ImageTooLargeError, before anything is decoded.
    """
    import warnings

    from PIL import Image, ImageOps

    from colorkit.data import _to_rgb

    if isinstance(path, (bytes, bytearray)):
        source, path = io.BytesIO(path), "the uploaded file"
    else:
        source = path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"input image {path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(source)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        found = re.search(r"\((\d+) pixels\)", str(err))
        count = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        raise ImageTooLargeError(f"{path} has {count}, over the limit of {Image.MAX_IMAGE_PIXELS:,} that colorkit "
                                 "opens (PIL.Image.MAX_IMAGE_PIXELS): downscale it first, or raise that limit "
                                 "if you trust the file") from None
    except OSError as err:
        raise ValueError(f"cannot read {path} as an image: {err}") from None
    with im:
        try:
            im = ImageOps.exif_transpose(im)                # a new image, oriented as displayed
            if im.mode in ("L", "RGB"):
                return np.asarray(im).copy()
            if im.mode == "1":
                return np.asarray(im.convert("L")).copy()
            if im.mode.startswith("I;16") or im.mode in ("I", "F"):
                return _scaled_gray(im, path)
            return np.asarray(_to_rgb(im)).copy()           # alpha onto white, palette, CMYK, ... -> RGB
        except OSError as err:                              # truncated or corrupt data, found while decoding
            raise ValueError(f"cannot read {path} as an image: {err}") from None


def save_image(rgb: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an RGB uint8 image atomically: to a temporary file beside `path`, then renamed over it,
    so an interrupted save never leaves a truncated file (and the input survives when it is `path`).
    The format follows the extension; an unknown extension is an error before anything is written."""
    from PIL import Image

    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise ValueError(f"cannot write {path}: unknown image extension {path.suffix!r} (use .png, .jpg, .tif, ...)")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        Image.fromarray(rgb).save(tmp, format=fmt)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
