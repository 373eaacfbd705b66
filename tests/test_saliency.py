"""Saliency for the salient loss: the spectral residual (an option) finds a bright disc, stays in [0, 1],
keeps any shape and is deterministic; the foreground map; the pluggable source with a TorchScript round
trip; the default frequency-tuned saliency reads color, so phi(prediction) differs from phi(truth)."""

import pytest
import torch
from torch import nn

# torch 2.13 flags torch.jit.script/save as deprecated; the round trip below uses them on purpose
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

from colorkit.saliency import (FOREGROUND_FACTOR, SPECTRAL_RESIDUAL_NAME, SaliencySource, foreground_map,
                               saliency_source, spectral_residual_saliency)


def disc_image(h=64, w=64, cy=32, cx=32, r=8, fg=0.9, bg=0.2, channels=3):
    """A bright disc on a flat background: (1, C, H, W) in [0, 1] and the disc's mask (H, W)."""
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    inside = (y - cy) ** 2 + (x - cx) ** 2 <= r * r
    img = torch.where(inside, fg, bg).float()
    return img.expand(channels, h, w)[None].clone(), inside


def textured(b=2, h=40, w=56, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g)


@pytest.mark.parametrize("h, w, cy, cx, r", [(64, 64, 32, 32, 8), (96, 128, 40, 70, 12), (64, 64, 20, 44, 6)])
def test_a_bright_disc_is_more_salient_inside_than_outside(h, w, cy, cx, r):
    img, inside = disc_image(h, w, cy, cx, r)
    s = spectral_residual_saliency(img)[0, 0]
    assert s[inside].mean() > 5 * s[~inside].mean()
    fg = foreground_map(spectral_residual_saliency(img))[0, 0].bool()
    assert fg[inside].float().mean() > 0.8                   # most of the disc is foreground
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    distance = ((y - cy) ** 2 + (x - cx) ** 2).float().sqrt()
    assert distance[fg].max() <= 2 * r                       # the blur's halo, no farther


def test_rgb_and_its_lightness_give_the_same_map():
    from colorkit.color import rgb_to_lab
    rgb = textured()
    L = rgb_to_lab(rgb)[:, :1] / 100
    torch.testing.assert_close(spectral_residual_saliency(rgb), spectral_residual_saliency(L))


@pytest.mark.parametrize("shape", [(2, 3, 40, 56), (1, 1, 17, 64), (3, 3, 130, 31), (1, 3, 5, 7)])
def test_shape_and_range_for_any_size(shape):
    g = torch.Generator().manual_seed(1)
    img = torch.rand(shape, generator=g)
    s = spectral_residual_saliency(img)
    assert s.shape == (shape[0], 1, *shape[2:]) and s.dtype == torch.float32
    assert s.min() >= 0 and s.max() <= 1
    assert torch.allclose(s.amin(dim=(1, 2, 3)), torch.zeros(shape[0]))       # normalised per image
    assert torch.allclose(s.amax(dim=(1, 2, 3)), torch.ones(shape[0]))


def test_constant_image_has_no_salient_pixels():
    s = spectral_residual_saliency(torch.full((1, 3, 32, 48), 0.5))
    assert torch.equal(s, torch.zeros(1, 1, 32, 48))
    assert foreground_map(s).sum() == 0


def test_deterministic_and_batch_independent():
    img = textured(b=3)
    a, b = spectral_residual_saliency(img), spectral_residual_saliency(img)
    assert torch.equal(a, b)
    torch.testing.assert_close(a[1:2], spectral_residual_saliency(img[1:2]))
    src = saliency_source()
    assert torch.equal(src(img), src(img))


def test_no_gradient_flows():
    img = textured().requires_grad_(True)
    assert not spectral_residual_saliency(img).requires_grad
    assert not saliency_source()(img).requires_grad


def test_foreground_map_rules():
    s = torch.tensor([[0.0, 0.1, 0.2, 0.9], [0.0, 0.0, 0.1, 0.4]]).view(2, 1, 1, 4)
    # default: foreground where s > 3 * the image's mean
    fg = foreground_map(s)
    want = (s > FOREGROUND_FACTOR * s.mean(dim=(1, 2, 3), keepdim=True)).float()
    assert torch.equal(fg, want) and torch.equal(fg, torch.tensor([[0, 0, 0, 0], [0, 0, 0, 1.0]]).view(2, 1, 1, 4))
    # a fixed threshold
    assert torch.equal(foreground_map(s, threshold=0.15), (s > 0.15).float())
    assert set(fg.unique().tolist()) <= {0.0, 1.0} and fg.dtype == s.dtype


def test_the_spectral_residual_source():
    src = saliency_source(method="spectral-residual")
    assert isinstance(src, SaliencySource) and src.name == SPECTRAL_RESIDUAL_NAME
    assert "spectral residual (Hou & Zhang 2007)" in src.name and "PFANet" in src.name
    img = textured(b=2, h=33, w=47)
    phi = src(img)
    assert phi.shape == (2, 1, 33, 47)
    assert torch.equal(phi, foreground_map(spectral_residual_saliency(img)))
    assert set(phi.unique().tolist()) <= {0.0, 1.0}


class TinySaliency(nn.Module):
    """A PFANet stand-in: brightness logits from a 1x1 convolution."""

    def __init__(self, logits: bool = True, half: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)
        with torch.no_grad():
            self.conv.weight.fill_(10.0 / 3)
            self.conv.bias.fill_(-5.0)                         # logit 0 at mean brightness 0.5
        self.logits, self.half = logits, half

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        out = self.conv(rgb)                                  # (B, 1, H, W) logits
        if self.half:
            out = out[..., ::2, ::2]                          # a network that answers at half resolution
        return out if self.logits else torch.sigmoid(out)


@pytest.mark.parametrize("logits", [True, False])
def test_torchscript_round_trip(tmp_path, logits):
    model = TinySaliency(logits=logits)
    path = tmp_path / "tiny_pfanet.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    src = saliency_source(path)
    assert "tiny_pfanet.pt" in src.name and src.threshold == 0.5
    img = textured(b=2, h=20, w=24)
    with torch.no_grad():
        prob = torch.sigmoid(model.conv(img))
    torch.testing.assert_close(src.saliency(img), prob)
    assert torch.equal(src(img), (prob > 0.5).float())
    assert all(not p.requires_grad for p in src.model.parameters())
    assert not src(img.clone().requires_grad_(True)).requires_grad


def test_torch_export_round_trip(tmp_path):
    model = TinySaliency().eval()
    img = textured(b=2, h=20, w=24)
    auto = torch.export.Dim.AUTO
    program = torch.export.export(model, (img,), dynamic_shapes=({0: auto, 2: auto, 3: auto},))
    path = tmp_path / "tiny_pfanet.pt2"
    torch.export.save(program, str(path))
    src = saliency_source(path)
    assert src.name.startswith("torch.export saliency model tiny_pfanet.pt2")
    other = textured(b=3, h=12, w=18, seed=1)                 # another batch and size
    with torch.no_grad():
        prob = torch.sigmoid(model.conv(other))
    torch.testing.assert_close(src.saliency(other), prob)
    assert torch.equal(src(other), (prob > 0.5).float())


def test_torchscript_output_is_resized_to_the_input(tmp_path):
    path = tmp_path / "half.pt"
    torch.jit.save(torch.jit.script(TinySaliency(half=True)), str(path))
    assert saliency_source(path)(textured(b=1, h=20, w=24)).shape == (1, 1, 20, 24)


def test_missing_file_and_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no saliency model file"):
        saliency_source(tmp_path / "pfanet.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torchscript archive")
    with pytest.raises(ValueError, match="not a loadable TorchScript file"):
        saliency_source(junk)
    junk2 = tmp_path / "junk.pt2"
    junk2.write_bytes(b"not an exported program")
    with pytest.raises(ValueError, match=r"not a loadable torch.export \(.pt2\) file"):
        saliency_source(junk2)


class WrongShape(nn.Module):
    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return rgb                                            # (B, 3, H, W): not a saliency map


def test_a_model_with_the_wrong_output_shape_is_refused(tmp_path):
    path = tmp_path / "wrong.pt"
    torch.jit.save(torch.jit.script(WrongShape()), str(path))
    with pytest.raises(ValueError, match="expected saliency"):
        saliency_source(path)(textured())


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="image"):
        spectral_residual_saliency(torch.rand(1, 2, 8, 8))
    with pytest.raises(ValueError, match="image"):
        spectral_residual_saliency(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        saliency_source()(torch.rand(1, 1, 8, 8))             # the source takes RGB
    with pytest.raises(ValueError, match="foreground_map"):
        foreground_map(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="output"):
        SaliencySource(output="scores")


def test_frequency_tuned_saliency_matches_a_naive_implementation():
    """Achanta et al.: || mean Lab - blurred Lab(x) ||, per pixel, computed here with numpy and
    scipy-free loops on an image already at the working size (no resizing)."""
    import math

    import numpy as np

    from colorkit.color import rgb_to_lab
    from colorkit.saliency import frequency_tuned_saliency

    torch.manual_seed(0)
    img = torch.rand(1, 3, 12, 16, dtype=torch.float64)
    got = frequency_tuned_saliency(img, size=16, blur_sigma=1.0)
    lab = rgb_to_lab(img)[0].numpy()                                   # (3, 12, 16)
    radius = math.ceil(3.0)
    t = np.arange(-radius, radius + 1)
    k = np.exp(-t ** 2 / 2.0); k /= k.sum()
    padded = np.pad(lab, ((0, 0), (radius, radius), (radius, radius)), mode="edge")
    blurred = np.zeros_like(lab)
    for y in range(12):
        for x in range(16):
            window = padded[:, y:y + 2 * radius + 1, x:x + 2 * radius + 1]
            blurred[:, y, x] = (window * np.outer(k, k)).sum(axis=(1, 2))
    s = np.linalg.norm(blurred - lab.mean(axis=(1, 2), keepdims=True), axis=0)
    s = (s - s.min()) / (s.max() - s.min())
    np.testing.assert_allclose(got[0, 0].numpy(), s, atol=1e-9)


def test_phi_of_a_wrongly_colored_prediction_differs_from_phi_of_the_truth():
    """Eq. 6 needs phi to read color: a red disk on an isoluminant green background is found by the
    default (frequency-tuned, Lab) source in the truth but not in a gray prediction of the same L,
    while the lightness-only spectral residual cannot tell the two apart."""
    from colorkit.color import lab_to_rgb, rgb_to_lab

    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    disk = ((yy - 30) ** 2 + (xx - 36) ** 2 < 12 ** 2).float()
    lab = torch.stack([torch.full((64, 64), 55.0), 60 * disk - 50 * (1 - disk), 40 * disk + 45 * (1 - disk)])[None]
    truth = lab_to_rgb(lab).clamp(0, 1)
    gray = lab_to_rgb(torch.cat([rgb_to_lab(truth)[:, :1], torch.zeros(1, 2, 64, 64)], 1)).clamp(0, 1)
    phi = saliency_source()
    assert phi.name.startswith("frequency-tuned")
    fg_truth, fg_gray = phi(truth), phi(gray)
    inside = disk.bool()
    assert fg_truth[0, 0][inside].mean() > 0.9 and fg_truth[0, 0][~inside].mean() < 0.05
    assert fg_gray.sum() == 0                                           # nothing stands out in a flat gray image
    lightness_only = saliency_source(method="spectral-residual")
    assert torch.equal(lightness_only(truth), lightness_only(gray))
