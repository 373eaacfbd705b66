"""ToyWorld: procedural cartoon scenes with a class mask and a scene label. Part of `colorkit.data`."""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from colorkit.data.rng import _TOYWORLD_STREAM, _hw, _uniforms

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
