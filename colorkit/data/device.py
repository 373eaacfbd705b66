"""A dataset held on the training device: `DeviceCache`. Part of `colorkit.data`.

Small images train so fast on a GPU that decoding, cropping and copying them on the CPU becomes
the bottleneck. `DeviceCache(dataset, device)` reads the dataset once and keeps it on the device,
then builds each batch there by indexing: no worker, no host-to-device copy per step.

It never changes the data. A batch of `cache.batch(indices)` equals the DataLoader's collated batch
of the same indices (tests/test_train.py checks this):
- `CachedImages` keeps its stored uint8 arrays on the device and takes its random crops and flips
  there, from the same hash uniforms as on the CPU, so each epoch still has fresh crops;
- any other dataset whose items do not change from epoch to epoch (ToyWorld, CorpusPhotos,
  ImageFolder without random crops) is read once; float images that are exactly k / 255 (decoded
  8-bit images) are stored as uint8, others as float32.
A dataset with `set_epoch` and random crops other than CachedImages is refused: caching one epoch
would silently freeze its augmentation.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, Subset

from colorkit.data.cache import CachedImages
from colorkit.data.rng import _FOLDER_STREAM, _uniforms


def _base_and_map(dataset: Dataset) -> tuple[Dataset, np.ndarray | None]:
    """(the dataset under any Subsets, the map from outer to base indices or None)."""
    mapping = None
    while isinstance(dataset, Subset):
        inner = np.asarray(dataset.indices, dtype=np.int64)
        mapping = inner if mapping is None else inner[mapping]
        dataset = dataset.dataset
    return dataset, mapping


class DeviceCache:
    """`dataset` read once onto `device`; `batch(indices)` -> the collated batch of those items.

    `max_bytes`: refuse (ValueError naming the size) a cache larger than this; default half of the
    free memory of a CUDA device, no limit elsewhere.
    """

    def __init__(self, dataset: Dataset, device: str | torch.device, *, max_bytes: int | None = None):
        self.device = torch.device(device)
        self.base, self.mapping = _base_and_map(dataset)
        if max_bytes is None and self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            max_bytes = free // 2
        if isinstance(self.base, CachedImages):
            self._init_cached_images(max_bytes)
        else:
            self._init_items(dataset, max_bytes)

    # -- CachedImages: the stored arrays on the device, crops taken there --------------------

    def _init_cached_images(self, max_bytes: int | None) -> None:
        base = self.base
        n = len(base)
        rh, rw = base.stored
        if base.scale < 1:                           # the same resize as CachedImages.__getitem__, once per image
            rh, rw = round(rh * base.scale), round(rw * base.scale)
        self._check_size(n * rh * rw * 3, f"{n} cached images of {rh}x{rw}", max_bytes)
        images = torch.empty((n, rh, rw, 3), dtype=torch.uint8)
        for k, ((_, count), start) in enumerate(zip(base._shards, base._starts)):
            shard = base._shard(k)
            for j in range(count):
                image = np.asarray(shard[j])
                if base.scale < 1:
                    image = np.asarray(Image.fromarray(image).resize((rw, rh), Image.Resampling.BILINEAR,
                                                                     reducing_gap=3.0))
                images[start + j] = torch.from_numpy(np.array(image))
        self.images = images.to(self.device)                                   # (N, RH, RW, 3) uint8
        self.window = (rh, rw)

    def _cached_images_batch(self, idx: np.ndarray) -> dict[str, Any]:
        base = self.base
        (h, w), (rh, rw) = base.size, self.window
        u = _uniforms((base.seed, _FOLDER_STREAM, base.epoch), idx, 3)        # (B, 3): CachedImages' draws
        if base.crop == "random":
            x0 = (u[:, 0] * (rw - w + 1)).astype(np.int64)
            y0 = (u[:, 1] * (rh - h + 1)).astype(np.int64)
        elif base.scale == 1:
            cover = np.asarray([base._cover[i] for i in idx], dtype=np.int64)     # (B, 2): (ch, cw)
            x0 = (cover[:, 1] - w) // 2 - (cover[:, 1] - rw) // 2
            y0 = (cover[:, 0] - h) // 2 - (cover[:, 0] - rh) // 2
        else:
            x0, y0 = np.full(len(idx), (rw - w) // 2), np.full(len(idx), (rh - h) // 2)
        flip = base.flip & (u[:, 2] < 0.5)
        cols = x0[:, None] + np.arange(w)[None, :]                              # (B, W)
        cols = np.where(flip[:, None], cols[:, ::-1], cols)
        rows = y0[:, None] + np.arange(h)[None, :]                              # (B, H)
        to = lambda a: torch.as_tensor(np.ascontiguousarray(a), device=self.device)  # noqa: E731
        i, r, c = to(idx), to(rows), to(cols)
        patch = self.images[i[:, None, None], r[:, :, None], c[:, None, :]]      # (B, H, W, 3) uint8
        rgb = patch.permute(0, 3, 1, 2).float().div_(255.0)                    # (B, 3, H, W)
        return {"rgb": rgb, "path": [base.files[k] for k in idx], "index": torch.as_tensor(idx)}

    # -- any dataset with fixed items: read once --------------------------------------------

    def _init_items(self, dataset: Dataset, max_bytes: int | None) -> None:
        if hasattr(self.base, "set_epoch"):
            raise ValueError(f"device_cache: {type(self.base).__name__} draws new random crops each epoch "
                             "(it has set_epoch), and caching one epoch would freeze them; prepare a "
                             "CachedImages cache (colorkit.data.prepare_cache) or turn device_cache off")
        self.mapping = None                      # only the items of `dataset` (a Subset's), in its own indices
        n = len(dataset)
        first = dataset[0]
        if not isinstance(first, dict):
            raise ValueError(f"device_cache: items of {type(self.base).__name__} must be dicts, got {type(first).__name__}")
        items = [first] + [dataset[i] for i in range(1, n)]
        self.fields: dict[str, Any] = {}
        self.as_uint8: dict[str, bool] = {}
        total = 0
        for key, value in first.items():
            column = [item[key] for item in items]
            if isinstance(value, Tensor):
                stacked = torch.stack(column)                                   # (N, ...)
                exact = stacked.is_floating_point() and bool(
                    ((stacked * 255).round() / 255 == stacked).all() and stacked.min() >= 0 and stacked.max() <= 1)
                self.as_uint8[key] = exact
                stacked = (stacked * 255).round().to(torch.uint8) if exact else stacked
                total += stacked.numel() * stacked.element_size()
                self.fields[key] = stacked
            elif isinstance(value, (int, float, bool)):
                self.fields[key] = torch.as_tensor(column)
            else:
                self.fields[key] = column                                      # strings and the like: kept as lists
        self._check_size(total, f"{n} items of {type(self.base).__name__}", max_bytes)
        self.fields = {k: v.to(self.device) if isinstance(v, Tensor) else v for k, v in self.fields.items()}

    def _items_batch(self, idx: np.ndarray) -> dict[str, Any]:
        i = torch.as_tensor(idx, device=self.device)
        out: dict[str, Any] = {}
        for key, value in self.fields.items():
            if isinstance(value, Tensor):
                out[key] = value[i].float().div_(255.0) if self.as_uint8.get(key) else value[i]
            else:
                out[key] = [value[k] for k in idx]
        return out

    # -- both -----------------------------------------------------------------------------------

    def _check_size(self, nbytes: int, what: str, max_bytes: int | None) -> None:
        self.nbytes = int(nbytes)
        if max_bytes is not None and nbytes > max_bytes:
            raise ValueError(f"device_cache: {what} take {nbytes / 2**30:.2f} GiB, more than the {max_bytes / 2**30:.2f} "
                             f"GiB allowed on {self.device} (half its free memory); turn device_cache off")

    def __len__(self) -> int:
        if isinstance(self.base, CachedImages):
            return len(self.mapping) if self.mapping is not None else len(self.base)
        return len(next(iter(self.fields.values())))

    def batch(self, indices: Sequence[int]) -> dict[str, Any]:
        """The items `indices` (of the dataset given, through any Subset), collated, on the device."""
        idx = np.asarray(indices, dtype=np.int64)
        if self.mapping is not None:
            idx = self.mapping[idx]
        if isinstance(self.base, CachedImages):
            return self._cached_images_batch(idx)
        return self._items_batch(idx)
