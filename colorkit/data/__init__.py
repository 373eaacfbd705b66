"""Data for colorization without the internet: ToyWorld scenes, the photo corpus, image folders, hints.

Five sources of RGB images, all returning the same sample format, a dict with
``"rgb"``: float tensor (3, H, W) in [0, 1] (plus source-specific keys):

- `ToyWorld` / `toyworld_batch`: procedural cartoon scenes with a per-pixel class mask. Some
  classes always have the same color (sky, grass, sun, ...), others get a random hue per object
  (balloons, clothes, cars), so a colorization model can be right about the first kind and can
  only guess the second: the ill-posedness the papers discuss, made measurable.
- `CorpusPhotos` (DATA="photos"): crops of the course photo corpus, a few hundred free-licensed
  photographs from Debian and PyPI packages (`colorkit.corpus`), split into train/val by photo.
- `PackagePhotos` (DATA="package-photos"): crops of the ten color photographs shipped inside
  scikit-image, scikit-learn and matplotlib, split into train/val by source photo.
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

Modules (everything is importable from `colorkit.data` itself):

- `colorkit.data.rng`: the size argument (`_hw`) and counter-based randomness (hash uniforms).
- `colorkit.data.toyworld`: ToyWorld procedural scenes (`ToyWorld`, `toyworld_batch`, the class tables).
- `colorkit.data.photos`: package photos and the course photo corpus (`PackagePhotos`, `CorpusPhotos`).
- `colorkit.data.folders`: folders of user images (`walk_files`, `FolderReport`, `ImageFolder`).
- `colorkit.data.batches`: Lab batches and seeded loaders (`lab_batch`, `make_loader`).
- `colorkit.data.hints`: hints for user-guided colorization (`sample_hints`, `geometric_hint_counts`).
- `colorkit.data.cache`: the resized uint8 cache of an image folder (`prepare_cache`, `CachedImages`).
- `colorkit.data.device`: a dataset held on the training device (`DeviceCache`, TrainConfig.device_cache).
- `colorkit.data.datasets`: the notebooks' DATA parameter (`open_dataset`, `folder_split`, `DATA_NAMES`).
"""

from __future__ import annotations

# Every public name of the submodules, and the private ones that other modules and tests use
# (_to_rgb, _load_photo_pil, _photo_path, _seed_worker, _cache_one, _cache_state). These are the same
# objects as in the submodules; to monkeypatch a function that other code calls, patch it in the
# submodule that calls it (e.g. colorkit.data.cache._cache_one for prepare_cache).
from colorkit.data.toyworld import (
    AMBIGUOUS_CLASSES, FIXED_CLASSES, FIXED_COLORS, OUTLINE, SCENE_TYPES, TOYWORLD_CLASSES, ToyWorld, toyworld_batch,
)
from colorkit.data.photos import (
    PHOTO_SOURCES, CorpusPhoto, CorpusPhotos, PackagePhotos, PhotoSource, _load_photo_pil, _photo_path, _to_rgb,
    load_package_photo, photo_sources,
)
from colorkit.data.folders import (
    CORRUPT, GRAYSCALE, IMAGE_EXTENSIONS, LOAD_FAILED, NOT_A_FILE, TOO_SMALL, UNREADABLE_FOLDER, FolderReport,
    ImageFolder, walk_files,
)
from colorkit.data.batches import _seed_worker, lab_batch, make_loader
from colorkit.data.hints import geometric_hint_counts, sample_hints
from colorkit.data.cache import (
    CACHE_FORMAT, CACHE_INDEX, CACHE_PARTIAL, CACHE_VERSION, CachedImages, _cache_one, _cache_state, prepare_cache,
)
from colorkit.data.device import DeviceCache
from colorkit.data.datasets import DATA_NAMES, VAL_FRACTION_DENOMINATOR, folder_split, open_dataset

__all__ = [
    "TOYWORLD_CLASSES", "FIXED_CLASSES", "AMBIGUOUS_CLASSES", "FIXED_COLORS", "OUTLINE",
    "SCENE_TYPES", "toyworld_batch", "ToyWorld",
    "PHOTO_SOURCES", "PhotoSource", "photo_sources", "load_package_photo", "PackagePhotos", "CorpusPhotos",
    "IMAGE_EXTENSIONS", "FolderReport", "ImageFolder",
    "lab_batch", "make_loader", "sample_hints", "geometric_hint_counts",
]
__all__ += ["CACHE_INDEX", "prepare_cache", "CachedImages", "DeviceCache"]
