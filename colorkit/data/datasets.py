"""The notebooks' DATA parameter: `open_dataset` and the per-file split of a plain folder
(`folder_split`). Part of `colorkit.data`."""

from __future__ import annotations

import math
import os
import zlib
from pathlib import Path
from typing import Sequence

import torch
from torch.utils.data import Dataset

from colorkit.data.cache import CachedImages, _cache_state
from colorkit.data.folders import ImageFolder
from colorkit.data.photos import CorpusPhotos, PackagePhotos
from colorkit.data.toyworld import ToyWorld

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
