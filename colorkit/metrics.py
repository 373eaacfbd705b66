"""Evaluation metrics for colorization, in torch: the numbers each paper reports, computed one way.

Images are float tensors in [0, 1], shaped (B, C, H, W) (RGB has C = 3; gray C = 1). A single
image (C, H, W) is treated as a batch of one. Every per-image metric is computed per image and
then averaged over the batch; pass ``reduction="none"`` to get the per-image values instead.

| metric | defined as | checked against |
| --- | --- | --- |
| `psnr` | 10 log10(range^2 / MSE), MSE over all pixels and channels of one image | skimage |
| `ssim` | Wang et al. 2004 with skimage's defaults (7x7 box window, sample covariance) | skimage |
| `patch_error_variance` | variance over ViT patches of the per-patch MSE (0-255 scale) | numpy |
| `boundary_psnr` | PSNR over pixels within `width` of a seam between patches | numpy |
| `frechet_distance` | Frechet distance between Gaussians fitted to two feature sets | scipy |
| `colorfulness` | Hasler & Suesstrunk 2003 | numpy |
| `diversity` | mean pairwise ab distance between samples of one gray image | numpy |

`frechet_score` wraps `frechet_distance` with a feature extractor. FID uses Inception v3's pooled
features, whose weights do not ship with the course; the default extractor is
`PretrainedPoolFeatures`, the pooled 1280-d features of the ImageNet-trained EfficientNet-Lite0
(`colorkit.pretrained`) at 224 px: a Frechet distance on other ImageNet features, named as such
in every result and not comparable with published FIDs. `TorchScriptFeatures` loads a real
Inception network from a local file when you have one; `RandomConvFeatures` is a seeded,
untrained CNN kept for tests and comparison.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from colorkit.color import rgb_to_lab

__all__ = [
    "paired_bootstrap",
    "psnr",
    "ssim",
    "patch_error_variance",
    "boundary_psnr",
    "patch_boundary_mask",
    "frechet_distance",
    "frechet_score",
    "PretrainedPoolFeatures",
    "RandomConvFeatures",
    "TorchScriptFeatures",
    "colorfulness",
    "diversity",
]


# ----------------------------------------------------------------------------------------------
# input checks shared by the per-image metrics


def _as_batch(x: Tensor, name: str) -> Tensor:
    """(C, H, W) -> (1, C, H, W); (B, C, H, W) unchanged; ints and other ranks are errors."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor shaped (B, C, H, W), got {type(x).__name__}")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise ValueError(f"{name} must be shaped (B, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a float tensor in [0, 1] (for uint8 divide by 255 first), got {x.dtype}")
    # half and bfloat16 lose too much in the squared errors; float64 stays float64
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _pair(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    pred, target = _as_batch(pred, "pred"), _as_batch(target, "target")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got pred {tuple(pred.shape)} "
                         f"and target {tuple(target.shape)}")
    return pred, target.to(dtype=pred.dtype, device=pred.device)


def _reduce(per_image: Tensor, reduction: str) -> float | Tensor:
    """'mean' -> Python float over the batch; 'none' -> the per-image tensor (B,)."""
    if reduction == "mean":
        return float(per_image.detach().cpu().double().mean())
    if reduction == "none":
        return per_image
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def _psnr_from_mse(mse: Tensor, data_range: float, max_db: float | None) -> Tensor:
    # PSNR = 10 log10(MAX^2 / MSE)                                        (paper 5, eq. 15)
    # MSE = 0 gives +inf (what skimage returns) without a divide-by-zero warning.
    out = 10 * torch.log10(data_range**2 / mse)
    if max_db is not None:
        out = out.clamp(max=max_db)
    return out


# ----------------------------------------------------------------------------------------------
# PSNR and SSIM


def psnr(pred: Tensor, target: Tensor, data_range: float = 1.0, *, reduction: str = "mean",
         max_db: float | None = None) -> float | Tensor:
    """Peak signal-to-noise ratio in dB, per image, averaged over the batch.

    MSE is taken over all pixels and channels of one image (paper 5, eqs. 14-15), so the result
    equals ``skimage.metrics.peak_signal_noise_ratio(target, pred, data_range=1)`` per image.
    Identical images have MSE = 0 and PSNR = +inf, as in skimage; one such image makes the batch
    mean +inf. Pass ``max_db`` (e.g. 100) to cap each image's value, which keeps a mean finite.
    """
    pred, target = _pair(pred, target)
    mse = (pred - target).pow(2).mean(dim=(1, 2, 3))  # (B,)
    return _reduce(_psnr_from_mse(mse, data_range, max_db), reduction)


def ssim(pred: Tensor, target: Tensor, data_range: float = 1.0, *, win_size: int = 7,
         k1: float = 0.01, k2: float = 0.03, reduction: str = "mean") -> float | Tensor:
    """Structural similarity (Wang et al. 2004) per image, averaged over the batch.

    Matches ``skimage.metrics.structural_similarity(target, pred, channel_axis=-1,
    data_range=data_range)`` with its defaults: a uniform `win_size` x `win_size` window,
    sample (N - 1) covariances, K1 = 0.01, K2 = 0.03, the SSIM map averaged over the region
    where the window fits entirely (skimage crops (win_size - 1) / 2 pixels per side), then
    averaged over channels. Works for any channel count, gray (B, 1, H, W) included.
    """
    pred, target = _pair(pred, target)
    b, c, h, w = pred.shape
    if win_size % 2 != 1 or win_size < 3:
        raise ValueError(f"win_size must be odd and >= 3, got {win_size}")
    if h < win_size or w < win_size:
        raise ValueError(f"ssim needs images at least {win_size}x{win_size}, got H x W = {h} x {w}")
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    n = win_size * win_size
    cov_norm = n / (n - 1)  # sample covariance, as skimage's use_sample_covariance=True

    def local_mean(x: Tensor) -> Tensor:
        # a box filter without padding: exactly the windows skimage keeps after cropping
        return F.avg_pool2d(x, kernel_size=win_size, stride=1)  # (B, C, H - win + 1, W - win + 1)

    x, y = target, pred
    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x = cov_norm * (local_mean(x * x) - mu_x * mu_x)
    var_y = cov_norm * (local_mean(y * y) - mu_y * mu_y)
    cov_xy = cov_norm * (local_mean(x * y) - mu_x * mu_y)
    # SSIM = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2))
    #                                                                     (paper 5, eq. 16)
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / (
        (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    per_image = ssim_map.mean(dim=(2, 3)).mean(dim=1)  # mean per channel, then over channels: (B,)
    return _reduce(per_image, reduction)


# ----------------------------------------------------------------------------------------------
# patch metrics for ViT-style models (paper 5, sec. 4.2 and 4.5; iColoriT, Yun et al. 2023)


def _crop_to_patches(x: Tensor, patch: int) -> Tensor:
    """Drop the ragged bottom rows / right columns that do not fill a whole patch."""
    if patch < 1:
        raise ValueError(f"patch must be >= 1, got {patch}")
    h, w = x.shape[-2:]
    if h < patch or w < patch:
        raise ValueError(f"images must be at least one patch ({patch}x{patch}), got H x W = {h} x {w}")
    return x[..., : h - h % patch, : w - w % patch]


def patch_error_variance(pred: Tensor, target: Tensor, patch: int = 16, *, scale: float = 255.0,
                         reduction: str = "mean") -> float | Tensor:
    """PEV: the variance, over the non-overlapping `patch` x `patch` patches of one image, of each
    patch's MSE; averaged over the batch. Lower means the error is spread evenly (paper 5, 4.2).

    Our choices, which the paper leaves open:
      - errors on the 0-255 scale (``scale=255``): the MSE of a patch is
        mean over its pixels and RGB channels of (255 (pred - target))^2;
      - population variance (divide by the number of patches, like ``np.var``);
      - patches tile the image from the top-left corner; rows / columns beyond the last whole
        patch (when H or W is not a multiple of `patch`) are ignored.
    The paper reports PEV of 37-42 for models at about 31 dB PSNR; at that PSNR the mean patch
    MSE on this scale is already about 50, so the paper's scale or normalisation likely differs.
    Compare PEV between models measured here, not with the paper's absolute numbers.
    """
    pred, target = _pair(pred, target)
    err = (scale * (_crop_to_patches(pred, patch) - _crop_to_patches(target, patch))).pow(2)
    b, c, h, w = err.shape
    # (B, C, H, W) -> (B, C, H/p, p, W/p, p) -> MSE per patch (B, H/p, W/p)
    patch_mse = err.view(b, c, h // patch, patch, w // patch, patch).mean(dim=(1, 3, 5))
    per_image = patch_mse.flatten(1).var(dim=1, unbiased=False)  # (B,)
    return _reduce(per_image, reduction)


def patch_boundary_mask(size: tuple[int, int], patch: int = 16, width: int = 1, *,
                        image_border: bool = False, device: torch.device | str | None = None) -> Tensor:
    """Boolean (H, W) mask of the pixels `boundary_psnr` scores, for an image of `size` = (H, W)
    already cropped to whole patches. With ``image_border=False`` only seams between two patches count: a pixel is
    on the mask when it lies within `width` rows or columns of an edge that it shares with a
    neighbouring patch. ``image_border=True`` also keeps each patch's outer ring on the image edge.
    """
    if not 1 <= width <= patch // 2:
        raise ValueError(f"width must be in [1, patch // 2] = [1, {patch // 2}], got {width}")

    def near_seam(n: int) -> Tensor:
        idx = torch.arange(n, device=device)
        pos = idx % patch  # position inside the patch
        first = pos < width  # first `width` rows of a patch: a seam above, unless at the top
        last = pos >= patch - width  # last `width` rows: a seam below, unless at the bottom
        if not image_border:
            first = first & (idx >= patch)
            last = last & (idx < n - patch)
        return first | last

    return near_seam(size[0])[:, None] | near_seam(size[1])[None, :]  # (H, W)


def boundary_psnr(pred: Tensor, target: Tensor, patch: int = 16, width: int = 1, *,
                  data_range: float = 1.0, image_border: bool = False, reduction: str = "mean",
                  max_db: float | None = None) -> float | Tensor:
    """B-PSNR: PSNR over the pixels on the boundaries of the ViT patches, where patch artifacts
    (seams, blocky color) show (paper 5, table 3; iColoriT, Yun et al. 2023).

    Our choices: patches of `patch` x `patch` pixels tile the image from the top-left; a pixel
    counts when it is within `width` pixels of a seam shared by two patches, i.e. in the first or
    last `width` rows / columns of its patch, excluding the image's own outer edge (pass
    ``image_border=True`` to include it). Rows / columns beyond the last whole patch are ignored.
    MSE runs over those pixels and all channels of one image; PSNR per image as in `psnr`,
    then averaged over the batch.
    """
    pred, target = _pair(pred, target)
    pred, target = _crop_to_patches(pred, patch), _crop_to_patches(target, patch)
    h, w = pred.shape[-2:]
    mask = patch_boundary_mask((h, w), patch, width, image_border=image_border, device=pred.device)
    if not bool(mask.any()):
        raise ValueError(f"an image of {h} x {w} pixels holds a single {patch}x{patch} patch, so it has no "
                         "seams between patches; use a larger image or image_border=True")
    sq_err = (pred - target).pow(2)  # (B, C, H, W)
    mse = sq_err[:, :, mask].mean(dim=(1, 2))  # (B, C, n_boundary) -> (B,)
    return _reduce(_psnr_from_mse(mse, data_range, max_db), reduction)


# ----------------------------------------------------------------------------------------------
# Frechet distance and feature extractors


def _features_2d(x, name: str) -> Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x)
    if t.dim() != 2:
        raise ValueError(f"{name} must be features shaped (N, D), got shape {tuple(t.shape)}")
    if t.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 samples to fit a covariance, got N = {t.shape[0]}")
    return t.detach().to(device="cpu", dtype=torch.float64)


def _sqrt_psd(s: Tensor) -> Tensor:
    """Symmetric square root of a symmetric PSD matrix; tiny negative eigenvalues clamp to 0."""
    evals, evecs = torch.linalg.eigh(s)
    return (evecs * evals.clamp(min=0).sqrt()) @ evecs.T


def frechet_distance(feats_a, feats_b) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N_a, D) and (N_b, D).

        d^2 = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))        (Dowson & Landau 1982)

    with sample (N - 1) covariances, as FID uses. Takes torch tensors or numpy arrays; runs in
    float64 on the CPU. Tr (S_a S_b)^(1/2) is computed without a general matrix square root:
    S_a S_b is similar to M = S_a^(1/2) S_b S_a^(1/2), which is symmetric PSD, so the trace is
    the sum of sqrt(eigenvalues of M), eigenvalues clamped at 0. This stays real and stable when
    the covariances are rank-deficient (N < D), where a general sqrtm drifts into complex noise.
    """
    a, b = _features_2d(feats_a, "feats_a"), _features_2d(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must share D, got feats_a {tuple(a.shape)} and feats_b {tuple(b.shape)}")
    mu_a, mu_b = a.mean(dim=0), b.mean(dim=0)  # (D,)
    s_a, s_b = torch.cov(a.T), torch.cov(b.T)  # (D, D), divided by N - 1
    sqrt_a = _sqrt_psd(s_a)
    m = sqrt_a @ s_b @ sqrt_a
    m = (m + m.T) / 2  # symmetric up to rounding; make it exactly so for eigvalsh
    tr_sqrt = torch.linalg.eigvalsh(m).clamp(min=0).sqrt().sum()
    d2 = (mu_a - mu_b).pow(2).sum() + torch.trace(s_a) + torch.trace(s_b) - 2 * tr_sqrt
    return float(d2)


class RandomConvFeatures(nn.Module):
    """A fixed, seeded, untrained CNN: a stand-in for Inception when no pretrained weights exist.

    Three conv 3x3 + ReLU + 2x2 average-pool stages on the image resized to `size` x `size`,
    then the global mean and standard deviation of the last feature map, concatenated: (N, dim).
    Weights come from a private torch.Generator seeded with `seed`, so they are identical on
    every run and machine. Its distances rank color distributions sensibly (they react to hue
    and saturation shifts) but are NOT comparable with published FID numbers; `name` says so.
    """

    def __init__(self, dim: int = 256, seed: int = 0, size: int = 64):
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"dim must be an even number >= 2 (mean and std halves), got {dim}")
        self.dim, self.seed, self.size = dim, seed, size
        self.name = f"random-conv-{dim} (seed {seed}, untrained stand-in for Inception)"
        widths = [3, 32, 64, dim // 2]
        self.convs = nn.ModuleList(nn.Conv2d(cin, cout, 3, padding=1) for cin, cout in zip(widths, widths[1:]))
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for conv in self.convs:
                fan_in = conv.in_channels * 9
                # He initialisation keeps activations O(1) through ReLUs
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * math.sqrt(2 / fan_in))
                conv.bias.copy_(0.1 * torch.randn(conv.bias.shape, generator=gen))
        self.requires_grad_(False)
        self.eval()

    def forward(self, images: Tensor) -> Tensor:
        x = _as_batch(images, "images")  # (N, 3, H, W) in [0, 1]
        if x.shape[1] != 3:
            raise ValueError(f"{self.name} expects RGB images (N, 3, H, W), got shape {tuple(x.shape)}")
        x = F.interpolate(x.float(), size=(self.size, self.size), mode="bilinear", antialias=True,
                          align_corners=False)
        x = 2 * x - 1  # centre the pixel values
        for conv in self.convs:
            x = F.avg_pool2d(F.relu(conv(x)), 2)  # (N, C_k, size / 2^k, size / 2^k)
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)  # (N, dim)


class PretrainedPoolFeatures(nn.Module):
    """Pooled features of a `colorkit.pretrained` network: images (N, 3, H, W) in [0, 1] -> (N, D).

    Default: EfficientNet-Lite0's global-average-pooled 1280-d vector at 224 x 224, the role
    Inception v3's pool3 (2048-d at 299) plays in FID. `name` says which features, so a result is
    never mistaken for an Inception FID.
    """

    def __init__(self, network: str = "efficientnet-lite0", size: int = 224):
        super().__init__()
        from colorkit import pretrained

        self.net = pretrained.features(network, layers=("pool",), size=size)
        self.dim = self.net.dims["pool"]
        self.name = (f"{network} pooled features ({self.dim}-d, ImageNet) at {size} px: "
                     "a Frechet distance on these, not Inception's FID")

    def forward(self, images: Tensor) -> Tensor:
        x = _as_batch(images, "images")
        if x.shape[1] != 3:
            raise ValueError(f"{self.name} expects RGB images (N, 3, H, W), got shape {tuple(x.shape)}")
        with torch.no_grad():
            return self.net(x.float())["pool"]                                # (N, D)


class TorchScriptFeatures:
    """Features from a local file holding a network, e.g. an Inception-v3 pool3 feature network.

    A ``.pt2`` file is loaded as a `torch.export` program (export it with a dynamic batch
    dimension); anything else as TorchScript (``torch.jit.script(model).save(path)``; torch now
    marks TorchScript deprecated, so it may warn). The network is called on images (N, 3, H, W)
    in [0, 1], resized to `size` x `size` first when `size` is given (299 for Inception); any
    normalisation it needs must live inside it. Outputs (N, D), or (N, D, 1, 1) which is
    flattened. `name` is ``"torchscript:<file name>"`` (``"export:<file name>"`` for .pt2).
    """

    def __init__(self, path: str | Path, *, size: int | None = None, device: torch.device | str = "cpu"):
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"no feature extractor file at {str(path)!r}; save one with "
                                    "torch.jit.script(model).save(path) or torch.export.save(program, "
                                    "'name.pt2'), or use RandomConvFeatures()")
        self.path, self.size, self.device = path, size, torch.device(device)
        if path.suffix == ".pt2":
            self.module = torch.export.load(str(path)).module().to(self.device)
            self.name = f"export:{path.name}"
        else:
            self.module = torch.jit.load(str(path), map_location=self.device).eval()
            self.name = f"torchscript:{path.name}"

    def __call__(self, images: Tensor) -> Tensor:
        x = _as_batch(images, "images").to(self.device)
        if self.size is not None:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True,
                              align_corners=False)
        with torch.no_grad():
            out = self.module(x)
        if out.dim() == 4 and out.shape[2:] == (1, 1):
            out = out.flatten(1)
        if out.dim() != 2 or out.shape[0] != x.shape[0]:
            raise ValueError(f"{self.name} returned shape {tuple(out.shape)} for {x.shape[0]} images; "
                             "expected (N, D)")
        return out


def _extract(images: Tensor | Iterable[Tensor], extractor, batch_size: int) -> Tensor:
    """Run `extractor` over a tensor (N, 3, H, W) in chunks, or over an iterable of batches."""
    batches = images.split(batch_size) if isinstance(images, Tensor) else images
    feats = []
    with torch.no_grad():
        for batch in batches:
            feats.append(extractor(batch).detach().cpu().double())
    if not feats:
        raise ValueError("no images given to the feature extractor")
    return torch.cat(feats)  # (N, D)


_DEFAULT_EXTRACTOR: list = []


def _default_extractor() -> "PretrainedPoolFeatures":
    """One PretrainedPoolFeatures per process (building it reads an 18.8 MB weights file)."""
    if not _DEFAULT_EXTRACTOR:
        _DEFAULT_EXTRACTOR.append(PretrainedPoolFeatures())
    return _DEFAULT_EXTRACTOR[0]


def frechet_score(images_a: Tensor | Iterable[Tensor], images_b: Tensor | Iterable[Tensor],
                  extractor=None, *, batch_size: int = 64) -> dict:
    """Frechet distance between the features of two image sets (FID when the extractor is Inception).

    `images_*` are tensors (N, 3, H, W) in [0, 1] or iterables of such batches. `extractor` is
    any callable images -> (N, D) with a `.name`; default `PretrainedPoolFeatures()` (EfficientNet-Lite0). Returns
    ``{"value": float, "extractor": name, "n_a": int, "n_b": int}``. With fewer images than
    feature dimensions the covariances are rank-deficient: the value is defined but noisy.
    """
    if extractor is None:
        extractor = _default_extractor()
    name = getattr(extractor, "name", None)
    if not name:
        raise ValueError("the extractor needs a `.name` attribute so that results say which features they used")
    fa = _extract(images_a, extractor, batch_size)
    fb = _extract(images_b, extractor, batch_size)
    return {"value": frechet_distance(fa, fb), "extractor": name, "n_a": len(fa), "n_b": len(fb)}


# ----------------------------------------------------------------------------------------------
# colorfulness and diversity


def colorfulness(rgb: Tensor, *, reduction: str = "mean") -> float | Tensor:
    """Colorfulness of Hasler & Suesstrunk (2003), per image, averaged over the batch.

    On the 0-255 scale, with opponent channels rg = R - G and yb = (R + G) / 2 - B:
        M = sqrt(std_rg^2 + std_yb^2) + 0.3 sqrt(mean_rg^2 + mean_yb^2)
    (population std over the image's pixels). A gray image scores 0; the paper's scale runs to
    about 110 for extremely colorful images.
    """
    x = _as_batch(rgb, "rgb")
    if x.shape[1] != 3:
        raise ValueError(f"colorfulness needs RGB images (B, 3, H, W), got shape {tuple(x.shape)}")
    r, g, b = (255 * x).unbind(dim=1)  # each (B, H, W)
    rg = (r - g).flatten(1)
    yb = (0.5 * (r + g) - b).flatten(1)  # (B, H*W)
    std = (rg.var(dim=1, unbiased=False) + yb.var(dim=1, unbiased=False)).sqrt()
    mean = (rg.mean(dim=1).pow(2) + yb.mean(dim=1).pow(2)).sqrt()
    return _reduce(std + 0.3 * mean, reduction)


def diversity(samples: Tensor, mask: Tensor | None = None, num_classes: int | None = None) -> dict:
    """How different several colorizations of the same gray image are: mean pairwise ab distance.

    `samples` is RGB in [0, 1], (S, B, 3, H, W) or (S, 3, H, W) for S >= 2 samples. Per pixel,
    the Euclidean ab distance (CIE Lab, via `colorkit.color.rgb_to_lab`) is averaged over all
    S (S - 1) / 2 pairs of samples; "overall" averages that over all pixels (and images).

    With a class mask (B, H, W) or (H, W), long, "per_class" maps each class id to the same
    average over that class's pixels only: the classes present, or every id in
    range(num_classes) when `num_classes` is given (absent ones map to nan).
    Returns ``{"overall": float, "per_class": {id: float}}`` (per_class empty without a mask).
    """
    if not isinstance(samples, Tensor):
        raise TypeError(f"samples must be a torch.Tensor, got {type(samples).__name__}")
    if samples.dim() == 4:
        samples = samples.unsqueeze(1)  # (S, 3, H, W) -> (S, 1, 3, H, W)
    if samples.dim() != 5 or samples.shape[2] != 3 or samples.shape[0] < 2:
        raise ValueError("samples must be RGB shaped (S, B, 3, H, W) or (S, 3, H, W) with S >= 2, "
                         f"got shape {tuple(samples.shape)}")
    s, b, _, h, w = samples.shape
    ab = rgb_to_lab(samples.float())[:, :, 1:3]  # (S, B, 2, H, W)

    # sum over pairs i < j of ||ab_i - ab_j||, one i at a time: memory (S - 1) B H W, not S^2
    pair_sum = ab.new_zeros(b, h, w)
    for i in range(s - 1):
        pair_sum += (ab[i + 1:] - ab[i]).norm(dim=2).sum(dim=0)  # (S-1-i, B, H, W) -> (B, H, W)
    per_pixel = pair_sum / (s * (s - 1) / 2)  # (B, H, W)
    per_pixel = per_pixel.detach().cpu().double()  # reductions in float64 (not on every device)
    result = {"overall": float(per_pixel.mean()), "per_class": {}}
    if mask is None:
        return result

    if not isinstance(mask, Tensor) or mask.dtype == torch.bool or mask.is_floating_point():
        raise TypeError(f"mask must be an integer (long) tensor of class ids, got "
                        f"{getattr(mask, 'dtype', type(mask).__name__)}")
    if mask.dim() == 2 and mask.shape == (h, w):
        mask = mask.expand(b, h, w)  # one mask for every image
    if mask.shape != (b, h, w):
        raise ValueError(f"mask must be shaped (B, H, W) = {(b, h, w)} or (H, W) = {(h, w)} to match samples "
                         f"{tuple(samples.shape)}, got {tuple(mask.shape)}")
    ids = mask.reshape(-1).long().cpu()
    if bool((ids < 0).any()):
        raise ValueError(f"mask holds negative class ids (min {int(ids.min())})")
    n = int(ids.max()) + 1
    if num_classes is not None:
        if n > num_classes:
            raise ValueError(f"mask holds class id {n - 1}, but num_classes = {num_classes}")
        n = num_classes
    # per-class mean = sum of per-pixel values of that class / its pixel count
    sums = torch.bincount(ids, weights=per_pixel.reshape(-1), minlength=n)
    counts = torch.bincount(ids, minlength=n)
    for c in range(n):
        if counts[c] > 0:
            result["per_class"][c] = float(sums[c] / counts[c])
        elif num_classes is not None:
            result["per_class"][c] = float("nan")
    return result


# ----------------------------------------------------------------------------------------------
# How sure is a difference?


def paired_bootstrap(a, b, *, samples: int = 2000, level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """The mean of a - b over paired per-image scores, with a percentile bootstrap interval.

    `a` and `b` hold one score per image for two methods on the same images (e.g.
    `evaluate.hint_psnr_per_image`). Images are resampled with replacement `samples` times; the
    interval holds the middle `level` of the resampled means. It measures how much the comparison
    depends on which validation images were drawn, not how much a second training seed would move
    it. Returns {"mean", "low", "high", "n"}; "excludes_zero" says whether the interval lies on one
    side of 0.
    """
    a = torch.as_tensor(a, dtype=torch.float64).flatten()
    b = torch.as_tensor(b, dtype=torch.float64).flatten()
    if a.shape != b.shape or a.numel() < 2:
        raise ValueError(f"paired_bootstrap needs two equal-length score lists of at least 2 images, "
                         f"got {a.numel()} and {b.numel()}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    diff = a - b                                                              # (N,)
    picks = torch.randint(0, diff.numel(), (samples, diff.numel()), generator=torch.Generator().manual_seed(seed))
    means = diff[picks].mean(dim=1)                                           # (samples,)
    low, high = torch.quantile(means, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)).tolist()
    return {"mean": float(diff.mean()), "low": low, "high": high, "n": diff.numel(),
            "excludes_zero": bool(low > 0 or high < 0)}
