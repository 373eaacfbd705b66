"""Batches: RGB -> Lab (`lab_batch`) and seeded loaders (`make_loader`). Part of `colorkit.data`."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset


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
