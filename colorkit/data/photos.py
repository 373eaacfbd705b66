"""Package photos (the color photographs that ship inside scikit-image, scikit-learn and matplotlib)
and the course photo corpus, as deterministic random crops. Part of `colorkit.data`."""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from colorkit.data.rng import _PHOTO_STREAM, _hw, _uniforms


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
