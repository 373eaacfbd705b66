"""Saliency for the salient loss of Jiang et al. (eq. 6): which pixels belong to the foreground.

Jiang et al. weigh the colors of the foreground more:

    L_sal(x, y) = 1 / (C H W) || phi(x) . x - phi(y) . y ||                              (eq. 6)

where phi(.) is "the foreground object binary map generated from PFANet" (Zhao and Wu 2019, a
trained salient object detector). PFANet's weights are not something this course can download,
so the source of phi is pluggable (`saliency_source`). phi must read color: the salient loss
compares phi of the prediction with phi of the truth, which share their lightness exactly, so a
detector of L alone gives phi(x) = phi(y) and eq. 6 loses its object-level meaning.

- path=None, method="frequency-tuned" (the default): Achanta et al. (2009), "Frequency-tuned
  salient region detection", a classical, training-free detector of color contrast:

      S(x) = || I_mu - I_g(x) ||_2                                      (I in Lab, I_mu its mean over the
                                                                          image, I_g a Gaussian-blurred copy)
      O(x) = 1 if S(x) > 2 mean(S) else 0                               (object map: Achanta's threshold)

  A region whose color differs from the image's average color stands out; a gray prediction of a
  red object on green grass has no such region, its truth does.
- path=None, method="spectral-residual": Hou and Zhang (2007), "Saliency detection: a spectral
  residual approach", a classical, training-free detector computed here in torch:

      A(f) = log |FFT(I)(f)|,  P(f) = angle FFT(I)(f)                  (log amplitude and phase)
      R(f) = A(f) - (h_3 * A)(f)                                        (spectral residual, h_3 the 3x3 mean)
      S(x) = g * | IFFT( exp(R(f) + i P(f)) ) |^2                       (saliency, g a Gaussian)
      O(x) = 1 if S(x) > 3 mean(S) else 0                               (object map: Hou & Zhang's threshold)

  The idea: the log spectra of natural images look alike (roughly 1/f), so what sticks out of
  a smooth, locally averaged log spectrum is what is unusual about this image.
- path=FILE: a PFANet-like network saved as TorchScript (torch.jit.save; any suffix but .pt2) or
  as a torch.export program (torch.export.save, suffix .pt2; recent torch releases, 2.13 here,
  warn that TorchScript is deprecated), rgb (B, 3, H, W) in [0, 1] -> saliency logits or
  probabilities (B, 1, H, W), thresholded at probability 0.5.

Both are frozen: no parameters train, no gradient flows (the map only says which pixels to weigh).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from colorkit.color import rgb_to_lab

__all__ = [
    "spectral_residual_saliency",
    "foreground_map",
    "SaliencySource",
    "saliency_source",
    "SPECTRAL_RESIDUAL_NAME",
    "FREQUENCY_TUNED_NAME",
    "FOREGROUND_FACTOR",
    "FT_FOREGROUND_FACTOR",
    "frequency_tuned_saliency",
]

SPECTRAL_RESIDUAL_NAME = "spectral residual (Hou & Zhang 2007), classical stand-in for PFANet (reads lightness only)"
FREQUENCY_TUNED_NAME = "frequency-tuned saliency (Achanta et al. 2009) in Lab, classical stand-in for PFANet"
FOREGROUND_FACTOR = 3.0   # Hou & Zhang: an object is where the saliency exceeds 3x its image mean
FT_FOREGROUND_FACTOR = 2.0   # Achanta et al.: the adaptive threshold, 2x the image's mean saliency
METHODS = ("frequency-tuned", "spectral-residual")
MODEL_OUTPUTS = ("auto", "logits", "probabilities")


def _check_image(image, where: str, channels: tuple[int, ...]) -> None:
    if not isinstance(image, Tensor):
        raise TypeError(f"{where}: image must be a torch.Tensor, got {type(image).__name__}")
    if image.dim() != 4 or image.shape[1] not in channels:
        want = " or ".join(f"(B, {c}, H, W)" for c in channels)
        raise ValueError(f"{where}: image must be shaped {want}, got {tuple(image.shape)}")
    if not image.is_floating_point():
        raise TypeError(f"{where}: image must be a float tensor (divide uint8 images by 255), got {image.dtype}")


def _lightness(image: Tensor) -> Tensor:
    """(B, 3, H, W) sRGB in [0, 1] -> L / 100; (B, 1, H, W) is taken as L / 100 (or gray) already."""
    if image.shape[1] == 3:
        return rgb_to_lab(image.clamp(0, 1))[:, :1] / 100.0                 # (B, 1, H, W)
    return image


def _gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of x (B, 1, h, w), radius 3 sigma, zeros outside (as MATLAB's imfilter)."""
    if sigma <= 0:
        return x
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-t ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    x = F.conv2d(x, kernel.view(1, 1, 1, -1), padding=(0, radius))       # along W
    return F.conv2d(x, kernel.view(1, 1, -1, 1), padding=(radius, 0))    # along H


def _normalise(s: Tensor) -> Tensor:
    """Min-max per image to [0, 1]; a constant map becomes 0 (nothing stands out)."""
    lo = s.amin(dim=(1, 2, 3), keepdim=True)
    hi = s.amax(dim=(1, 2, 3), keepdim=True)
    span = hi - lo
    return torch.where(span > 0, (s - lo) / span.clamp_min(torch.finfo(s.dtype).tiny), torch.zeros_like(s))


@torch.no_grad()
def spectral_residual_saliency(image: Tensor, *, size: int = 64, blur_sigma: float = 2.5) -> Tensor:
    """Hou & Zhang's spectral residual saliency of image (B, 1 | 3, H, W) -> (B, 1, H, W) in [0, 1].

    image: sRGB in [0, 1] (reduced to its lightness L / 100) or one channel, L / 100 or gray in
    [0, 1]. The image is resized (bilinear, antialiased) so that its longer side is `size` pixels
    (Hou & Zhang work at 64: the spectral residual looks for object-sized, not texture-sized,
    novelty), `blur_sigma` is the Gaussian's sigma in those pixels (2.5 at 64, as in the authors'
    MATLAB code), and the map comes back at (H, W) (bilinear), normalised per image to min 0,
    max 1 (a constant image gives zeros). No gradient; float64 input stays float64, else float32.
    """
    _check_image(image, "spectral_residual_saliency", (1, 3))
    if not (isinstance(size, int) and size >= 1):
        raise ValueError(f"spectral_residual_saliency: size must be an int >= 1, got {size!r}")
    dtype = torch.float64 if image.dtype == torch.float64 else torch.float32
    gray = _lightness(image.to(dtype))                                       # (B, 1, H, W)
    h, w = gray.shape[-2:]
    scale = size / max(h, w)
    small_hw = (max(1, round(h * scale)), max(1, round(w * scale)))
    small = F.interpolate(gray, size=small_hw, mode="bilinear", align_corners=False,
                          antialias=scale < 1)                              # (B, 1, h', w')
    # a flat image has nothing salient (its spectrum beyond DC is rounding noise with random phases)
    flat = (small.amax(dim=(1, 2, 3)) - small.amin(dim=(1, 2, 3)) <= 1e-6).view(-1, 1, 1, 1)
    spectrum = torch.fft.fft2(small)                                         # complex (B, 1, h', w')
    # A(f) = log |FFT(I)|, P(f) = its phase (the floor keeps log finite where |FFT| = 0)
    log_amplitude = torch.log(spectrum.abs().clamp_min(1e-12))
    phase = torch.angle(spectrum)
    # R(f) = A(f) - h_3 * A(f): the spectrum is periodic, so the 3x3 mean wraps around
    local_mean = F.avg_pool2d(F.pad(log_amplitude, (1, 1, 1, 1), mode="circular"), 3, stride=1)
    residual = log_amplitude - local_mean
    # S(x) = g * |IFFT(exp(R + i P))|^2
    saliency = torch.fft.ifft2(torch.polar(torch.exp(residual), phase)).abs() ** 2   # (B, 1, h', w')
    saliency = _gaussian_blur(saliency, blur_sigma)
    saliency = F.interpolate(saliency, size=(h, w), mode="bilinear", align_corners=False)   # (B, 1, H, W)
    return _normalise(saliency.masked_fill(flat, 0.0))


@torch.no_grad()
def frequency_tuned_saliency(image: Tensor, *, size: int = 64, blur_sigma: float = 1.0) -> Tensor:
    """Achanta et al.'s frequency-tuned saliency of sRGB image (B, 3, H, W) in [0, 1] -> (B, 1, H, W) in [0, 1].

    The image is resized so that its longer side is `size` pixels (bilinear, antialiased), converted
    to Lab, blurred by a Gaussian of `blur_sigma` pixels (Achanta's 5 x 5 binomial is about sigma 1),
    and S(x) = || mean Lab of the image - blurred Lab(x) ||; the map comes back at (H, W), normalised
    per image to min 0, max 1 (a single-color image gives zeros). No gradient.
    """
    _check_image(image, "frequency_tuned_saliency", (3,))
    if not (isinstance(size, int) and size >= 1):
        raise ValueError(f"frequency_tuned_saliency: size must be an int >= 1, got {size!r}")
    dtype = torch.float64 if image.dtype == torch.float64 else torch.float32
    h, w = image.shape[-2:]
    scale = size / max(h, w)
    small_hw = (max(1, round(h * scale)), max(1, round(w * scale)))
    small = F.interpolate(image.to(dtype).clamp(0, 1), size=small_hw, mode="bilinear", align_corners=False,
                          antialias=scale < 1)                              # (B, 3, h', w')
    lab = rgb_to_lab(small)                                                  # (B, 3, h', w')
    mean = lab.mean(dim=(2, 3), keepdim=True)                                # I_mu: (B, 3, 1, 1)
    b, _, hs, ws = lab.shape
    planes = lab.reshape(b * 3, 1, hs, ws)                                   # each channel blurred on its own
    if blur_sigma > 0:             # repeat the border first: zeros outside would make every border look salient
        r = max(1, math.ceil(3 * blur_sigma))                                # _gaussian_blur's radius
        planes = _gaussian_blur(F.pad(planes, (r, r, r, r), mode="replicate"), blur_sigma)[..., r:r + hs, r:r + ws]
    saliency = (planes.reshape(b, 3, hs, ws) - mean).norm(dim=1, keepdim=True)   # (B, 1, h', w')
    saliency = F.interpolate(saliency, size=(h, w), mode="bilinear", align_corners=False)   # (B, 1, H, W)
    return _normalise(saliency)


@torch.no_grad()
def foreground_map(saliency: Tensor, *, threshold: float | None = None, factor: float = FOREGROUND_FACTOR) -> Tensor:
    """The binary foreground map phi of eq. 6 from a saliency map (B, 1, H, W): float, 1 = foreground.

    threshold None: the object-map rule, foreground where the saliency exceeds `factor` times the
    image's mean saliency (per image, so it does not depend on how the map is scaled): 3 for Hou &
    Zhang's spectral residual, FT_FOREGROUND_FACTOR (2) for Achanta et al.'s frequency-tuned map.
    A number: foreground where saliency > threshold (0.5 for probabilities).
    """
    _check_image(saliency, "foreground_map", (1,))
    if threshold is None:
        cut = factor * saliency.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    else:
        cut = float(threshold)
    return (saliency > cut).to(saliency.dtype)


def _load_frozen(path: Path):
    """A saved network, frozen: torch.export program for .pt2, TorchScript otherwise."""
    exported = path.suffix == ".pt2"
    try:
        with warnings.catch_warnings():                       # recent torch flags torch.jit as deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            if exported:
                model = torch.export.load(str(path)).module()
            else:
                model = torch.jit.load(str(path), map_location="cpu")
    except Exception as error:                                               # torch raises RuntimeError and others
        how = ("torch.export.save(torch.export.export(model.eval(), (example,)), path)" if exported
               else "torch.jit.save(torch.jit.script(model.eval()), path)")
        kind = "torch.export (.pt2)" if exported else "TorchScript"
        raise ValueError(f"saliency_source: {path} is not a loadable {kind} file (save it with {how}): "
                         f"{error}") from error
    if not exported:
        model.eval()                                  # (an exported program keeps the mode it was exported in)
    for p in model.parameters():                      # (ScriptModules lack requires_grad_)
        p.requires_grad_(False)
    return model


class SaliencySource:
    """phi for the salient loss: rgb (B, 3, H, W) in [0, 1] -> binary foreground map (B, 1, H, W).

    path=None: `method` "frequency-tuned" (default; `frequency_tuned_saliency` in Lab + `foreground_map`,
    2x mean) or "spectral-residual" (`spectral_residual_saliency` of the lightness, 3x mean).
    path: a TorchScript file (torch.jit.save) or a torch.export program (.pt2) of a PFANet-like
    network rgb (B, 3, H, W) -> saliency (B, 1, h, w) (resized to H, W if it differs); `output`
    says whether that is logits or probabilities ("auto": logits when any value lies outside
    [0, 1], so pass it explicitly when a model's logits may all happen to lie in [0, 1]).
    `threshold`: None = the source's rule (2x or 3x the mean for the classical maps, probability 0.5
    for a model), or a number applied to the map of `saliency()`. Frozen: no gradient; not an
    nn.Module, so it never lands in a model's state_dict. `name` says which source it is (for the
    notebook). `saliency(rgb)` gives the continuous map, calling the source the binary phi.
    """

    def __init__(self, path: str | Path | None = None, *, threshold: float | None = None, size: int = 64,
                 blur_sigma: float | None = None, output: str = "auto", method: str = "frequency-tuned"):
        if output not in MODEL_OUTPUTS:
            raise ValueError(f"SaliencySource: output must be one of {MODEL_OUTPUTS}, got {output!r}")
        if method not in METHODS:
            raise ValueError(f"SaliencySource: method must be one of {METHODS}, got {method!r}")
        self.path = None if path is None else Path(path)
        self.method = method
        # each method's own blur: 1 px for Achanta's 5 x 5 kernel, 2.5 px for Hou & Zhang's at 64
        blur_sigma = (1.0 if method == "frequency-tuned" else 2.5) if blur_sigma is None else blur_sigma
        self.size, self.blur_sigma, self.output = size, blur_sigma, output
        self.model, self._device = None, torch.device("cpu")
        self.factor = FT_FOREGROUND_FACTOR if method == "frequency-tuned" else FOREGROUND_FACTOR
        if self.path is None:
            self.name = FREQUENCY_TUNED_NAME if method == "frequency-tuned" else SPECTRAL_RESIDUAL_NAME
            self.threshold = threshold
            return
        if not self.path.is_file():
            raise FileNotFoundError(
                f"saliency_source: no saliency model file at {self.path}; expected a TorchScript file "
                f"(torch.jit.save) or a torch.export program (.pt2) of a PFANet-like network "
                f"rgb (B, 3, H, W) -> saliency (B, 1, H, W), or path=None for the spectral residual")
        self.model = _load_frozen(self.path)
        kind = "torch.export" if self.path.suffix == ".pt2" else "TorchScript"
        self.name = f"{kind} saliency model {self.path.name} (PFANet-like)"
        self.threshold = 0.5 if threshold is None else threshold

    def __repr__(self) -> str:
        return f"SaliencySource({self.name!r}, threshold={self.threshold!r})"

    @torch.no_grad()
    def saliency(self, rgb: Tensor) -> Tensor:
        """rgb (B, 3, H, W) in [0, 1] -> saliency (B, 1, H, W) in [0, 1] (probabilities for a model)."""
        _check_image(rgb, "SaliencySource", (3,))
        if self.model is None and self.method == "frequency-tuned":
            return frequency_tuned_saliency(rgb, size=self.size, blur_sigma=self.blur_sigma)
        if self.model is None:
            return spectral_residual_saliency(rgb, size=self.size, blur_sigma=self.blur_sigma)
        if self._device != rgb.device:                                       # follow the images' device
            self.model, self._device = self.model.to(rgb.device), rgb.device
        out = self.model(rgb.float())
        if not isinstance(out, Tensor):
            raise ValueError(f"SaliencySource: {self.path.name} returned {type(out).__name__}, "
                             f"expected a tensor (B, 1, H, W)")
        if out.dim() == 3:                                                   # (B, H, W)
            out = out.unsqueeze(1)
        if out.dim() != 4 or out.shape[0] != rgb.shape[0] or out.shape[1] != 1:
            raise ValueError(f"SaliencySource: {self.path.name} returned shape {tuple(out.shape)} for input "
                             f"{tuple(rgb.shape)}, expected saliency (B, 1, H, W)")
        out = out.float()
        is_logits = self.output == "logits" or (self.output == "auto" and bool((out < 0).any() or (out > 1).any()))
        prob = out.sigmoid() if is_logits else out
        if prob.shape[-2:] != rgb.shape[-2:]:
            prob = F.interpolate(prob, size=rgb.shape[-2:], mode="bilinear", align_corners=False)
        return prob.clamp(0, 1)

    def __call__(self, rgb: Tensor) -> Tensor:
        """rgb (B, 3, H, W) in [0, 1] -> phi, the binary foreground map (B, 1, H, W), float {0, 1}."""
        return foreground_map(self.saliency(rgb), threshold=self.threshold, factor=self.factor)


def saliency_source(path: str | Path | None = None, **options) -> SaliencySource:
    """The phi of eq. 6: `SaliencySource(path, **options)`; path=None is the frequency-tuned map in Lab
    (method="spectral-residual" for Hou & Zhang's, which reads lightness only)."""
    return SaliencySource(path, **options)
