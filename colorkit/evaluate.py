"""The shared validation split and the evaluation every notebook reports on it.

One split per dataset, the same images for every notebook and model, whatever the notebook's
SEED: ToyWorld's validation scenes, the package photos' validation photos (photos no model trains
on), or a folder of the user's own validation images. `evaluate` colorizes them and reports the
papers' common metrics beside the gray image (ab = 0), the floor any colorizer must clear.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from colorkit import data, metrics
from colorkit.color import lab_to_rgb
from colorkit.runs import resolve_device

VALIDATION_SEED = 0  # fixed: every notebook sees the same validation images


def validation_set(data_name: str | os.PathLike, size: int = 64, count: int = 96) -> Dataset:
    """`count` fixed validation images of `size` for DATA = "toyworld", "photos" or a folder."""
    name = str(data_name)
    if name == "photos":
        sources = len(data.photo_sources("val"))
        photos = data.PackagePhotos("val", size=size, crops_per_photo=math.ceil(count / sources),
                                    seed=VALIDATION_SEED, flip=False)
        # interleave photos so that any prefix of the split covers every validation photo
        order = [p * photos.crops_per_photo + c for c in range(photos.crops_per_photo) for p in range(sources)]
        return Subset(photos, order[:count])
    return data.open_dataset(name, split="val", size=size, length=count, seed=VALIDATION_SEED)


@torch.no_grad()
def colorize_batch(model: torch.nn.Module, rgb: torch.Tensor, *, batch_size: int = 32) -> torch.Tensor:
    """The model's colorization of the images' lightness: RGB (N, 3, H, W) -> RGB (N, 3, H, W), on the CPU."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        for chunk in rgb.split(batch_size):
            L = data.lab_batch(chunk.to(device).float())["L"]
            out.append(lab_to_rgb(torch.cat([L, model(L).float()], dim=1)).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset: Dataset, *, batch_size: int = 32,
             device: str | torch.device | None = None) -> dict[str, Any]:
    """Colorize every validation image from its L; PSNR, SSIM and colorfulness, with the gray reference.

    Returns {"psnr", "ssim", "colorfulness", "gray_psnr", "gray_ssim", "true_colorfulness", "images"}.
    """
    device = resolve_device("auto") if device is None else torch.device(device)
    was_training = model.training
    home = next(model.parameters()).device
    model.eval().to(device)
    sums: dict[str, float] = {}
    count = 0
    for batch in data.make_loader(dataset, batch_size, shuffle=False):
        rgb = batch["rgb"].to(device)
        lab = data.lab_batch(rgb)
        ab = model(lab["L"])                                                     # (B, 2, H, W)
        pred = lab_to_rgb(torch.cat([lab["L"], ab.float()], dim=1))
        gray = lab_to_rgb(torch.cat([lab["L"], torch.zeros_like(ab, dtype=torch.float32)], dim=1))
        n = rgb.shape[0]
        for key, value in (("psnr", metrics.psnr(pred, rgb)), ("ssim", metrics.ssim(pred, rgb)),
                           ("colorfulness", metrics.colorfulness(pred)),
                           ("gray_psnr", metrics.psnr(gray, rgb)), ("gray_ssim", metrics.ssim(gray, rgb)),
                           ("true_colorfulness", metrics.colorfulness(rgb))):
            sums[key] = sums.get(key, 0.0) + value * n
        count += n
    model.train(was_training).to(home)
    if count == 0:
        raise ValueError("evaluate() got an empty validation set")
    return {**{k: v / count for k, v in sums.items()}, "images": count}
