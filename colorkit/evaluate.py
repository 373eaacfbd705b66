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
    """`count` fixed validation images of `size` for DATA = "toyworld", "photos" (= "corpus"),
    "package-photos", a fetched dataset or a folder."""
    name = str(data_name)
    if name in ("photos", "corpus", "package-photos"):
        kind = data.PackagePhotos if name == "package-photos" else data.CorpusPhotos
        sources = len(kind("val", size=size, crops_per_photo=1).sources)
        photos = kind("val", size=size, crops_per_photo=math.ceil(count / sources), seed=VALIDATION_SEED, flip=False)
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
             device: str | torch.device | None = None, per_image: bool = False) -> dict[str, Any]:
    """Colorize every validation image from its L; PSNR, SSIM and colorfulness, with the gray reference.

    Returns {"psnr", "ssim", "colorfulness", "gray_psnr", "gray_ssim", "true_colorfulness", "images"}:
    means over the images. With `per_image`, also "per_image": {same keys: (N,) float64 tensor, one
    score per image in the dataset's order}, for `metrics.paired_bootstrap` between two models.
    """
    device = resolve_device("auto") if device is None else torch.device(device)
    was_training = model.training
    home = next(model.parameters()).device
    model.eval().to(device)
    scores: dict[str, list[torch.Tensor]] = {}
    for batch in data.make_loader(dataset, batch_size, shuffle=False):
        rgb = batch["rgb"].to(device)
        lab = data.lab_batch(rgb)
        ab = model(lab["L"])                                                     # (B, 2, H, W)
        pred = lab_to_rgb(torch.cat([lab["L"], ab.float()], dim=1))
        gray = lab_to_rgb(torch.cat([lab["L"], torch.zeros_like(ab, dtype=torch.float32)], dim=1))
        for key, value in (("psnr", metrics.psnr(pred, rgb, reduction="none")),
                           ("ssim", metrics.ssim(pred, rgb, reduction="none")),
                           ("colorfulness", metrics.colorfulness(pred, reduction="none")),
                           ("gray_psnr", metrics.psnr(gray, rgb, reduction="none")),
                           ("gray_ssim", metrics.ssim(gray, rgb, reduction="none")),
                           ("true_colorfulness", metrics.colorfulness(rgb, reduction="none"))):
            scores.setdefault(key, []).append(value.detach().double().cpu().flatten())   # (B,)
    model.train(was_training).to(home)
    if not scores:
        raise ValueError("evaluate() got an empty validation set")
    scores = {k: torch.cat(v) for k, v in scores.items()}                       # (N,) each
    result = {**{k: v.mean().item() for k, v in scores.items()}, "images": len(scores["psnr"])}
    return {**result, "per_image": scores} if per_image else result


# ---------------------------------------------------------------------------------------------
# Hints: the same seeded hints for every method, and PSNR against their number
# ---------------------------------------------------------------------------------------------

HINT_SEED = 1  # fixed: notebook 07 gives every method the same hints


def fixed_hints(rgb: torch.Tensor, count: int, *, patch: int = 2, seed: int = HINT_SEED) -> dict[str, torch.Tensor]:
    """`count` hints per image of rgb (N, 3, H, W), uniformly placed, each the mean true ab of its
    patch x patch square. Hint-major and seeded: the hints for 5 are the first 5 of those for 50."""
    lab = data.lab_batch(rgb.float())
    hints = data.sample_hints(lab["ab"], count, patch=patch, mode="uniform", seed=seed)
    return {"L": lab["L"], "hint_ab": hints["hint_ab"], "hint_mask": hints["hint_mask"]}


def mean_hint_color(L: torch.Tensor, hint_ab: torch.Tensor, hint_mask: torch.Tensor) -> torch.Tensor:
    """The simplest reference: each image's mean hint ab painted everywhere (gray without hints)."""
    weight = hint_mask.sum(dim=(2, 3), keepdim=True)                                   # (B, 1, 1, 1)
    mean = (hint_ab * hint_mask).sum(dim=(2, 3), keepdim=True) / weight.clamp(min=1)   # (B, 2, 1, 1)
    return mean.expand(-1, -1, *L.shape[-2:]) * (weight > 0)


def spread_hint_color(L: torch.Tensor, hint_ab: torch.Tensor, hint_mask: torch.Tensor) -> torch.Tensor:
    """The hints spread by distance (`models.spread_hints`): the prior the course's hint models start from."""
    from colorkit.models import spread_hints
    return spread_hints(hint_ab, hint_mask)


def _hint_model_predictor(model: torch.nn.Module):
    """A hint-taking model as a function of (L, hint_ab, hint_mask) on the CPU, run on the model's device."""
    model.eval()
    device = next(model.parameters()).device

    def predict(L, hint_ab, hint_mask):
        return model(L.to(device), hint_ab=hint_ab.to(device), hint_mask=hint_mask.to(device)).float().cpu()

    return predict


@torch.no_grad()
def _hint_predictions(predict, rgb: torch.Tensor, count: int, *, patch: int, seed: int, batch_size: int):
    """(predicted RGB, true RGB) chunk by chunk for predict(L, hint_ab, hint_mask) -> ab with `count` fixed hints."""
    if isinstance(predict, torch.nn.Module):
        predict = _hint_model_predictor(predict)
    rgb = rgb.float().cpu()
    inputs = fixed_hints(rgb, int(count), patch=patch, seed=seed)           # for all images at once: no batch dependence
    for i in range(0, rgb.shape[0], batch_size):
        part = {k: v[i:i + batch_size] for k, v in inputs.items()}
        ab = predict(part["L"], part["hint_ab"], part["hint_mask"])
        yield lab_to_rgb(torch.cat([part["L"], ab.float().cpu()], dim=1)), rgb[i:i + batch_size]


def _hint_scores(predict, rgb: torch.Tensor, count: int, scores: dict, *, patch: int, seed: int,
                 batch_size: int) -> dict[str, float]:
    """Means over the images of each score(pred RGB, true RGB) for predict(L, hint_ab, hint_mask) -> ab
    with `count` fixed hints, computed chunk by chunk (each score is a per-image mean)."""
    sums = dict.fromkeys(scores, 0.0)
    for pred, true in _hint_predictions(predict, rgb, count, patch=patch, seed=seed, batch_size=batch_size):
        for name, score in scores.items():
            sums[name] += score(pred, true) * pred.shape[0]
    return {name: total / rgb.shape[0] for name, total in sums.items()}


def hint_psnr_per_image(predict, rgb: torch.Tensor, count: int, *, patch: int = 2, seed: int = HINT_SEED,
                        batch_size: int = 32) -> torch.Tensor:
    """PSNR (RGB, dB) of each image, (N,), for predict(L, hint_ab, hint_mask) -> ab with `count` fixed
    hints: the paired samples that `metrics.paired_bootstrap` compares two methods on."""
    return torch.cat([metrics.psnr(pred, true, reduction="none")
                      for pred, true in _hint_predictions(predict, rgb, count, patch=patch, seed=seed,
                                                          batch_size=batch_size)])


def psnr_vs_hints(predict, rgb: torch.Tensor, counts, *, patch: int = 2, seed: int = HINT_SEED,
                  batch_size: int = 32) -> dict[int, float]:
    """PSNR (RGB, dB, mean over images) of predict(L, hint_ab, hint_mask) -> ab for each hint count.

    `predict` is a hint-taking model (called with keywords) or any function of the three tensors, e.g.
    `mean_hint_color` or `colorkit.levin.levin_colorize`; every method gets the same `fixed_hints`.
    """
    return {int(count): _hint_scores(predict, rgb, count, {"psnr": metrics.psnr}, patch=patch, seed=seed,
                                     batch_size=batch_size)["psnr"] for count in counts}


def hint_metrics(predict, rgb: torch.Tensor, count: int, *, patch: int = 2, seed: int = HINT_SEED,
                 batch_size: int = 32, error_patch: int = 16) -> dict[str, float]:
    """PSNR, SSIM, PEV and boundary PSNR of predict(L, hint_ab, hint_mask) -> ab with `count` fixed hints.

    The metrics of Li et al.'s Tables 1 and 3, means over the images; PEV and B-PSNR on a grid of
    `error_patch` x `error_patch` patches (`metrics.patch_error_variance`, `metrics.boundary_psnr`).
    """
    scores = {"psnr": metrics.psnr, "ssim": metrics.ssim,
              "pev": lambda pred, true: metrics.patch_error_variance(pred, true, error_patch),
              "b_psnr": lambda pred, true: metrics.boundary_psnr(pred, true, error_patch)}
    return _hint_scores(predict, rgb, count, scores, patch=patch, seed=seed, batch_size=batch_size)
