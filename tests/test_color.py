"""colorkit.color against scikit-image, brute-force references and its own invariants."""

import warnings

import numpy as np
import pytest
import torch
from skimage.color import lab2rgb, rgb2lab

from colorkit import color


def all_8bit_colors(chunk_r: int = 32):
    """Every 8-bit sRGB color, in chunks of chunk_r red levels: float64 (chunk_r*256, 256, 3)."""
    v = np.arange(256) / 255.0
    for r0 in range(0, 256, chunk_r):
        yield np.stack(np.meshgrid(v[r0:r0 + chunk_r], v, v, indexing="ij"), -1).reshape(-1, 256, 3)


def to_chw(x: np.ndarray, dtype=torch.float32) -> torch.Tensor:
    return torch.from_numpy(x).to(dtype).permute(2, 0, 1)


def test_rgb_to_lab_matches_skimage_on_all_8bit_colors():
    worst_lab, worst_roundtrip = 0.0, 0.0
    for rgb in all_8bit_colors():
        x = to_chw(rgb)                                   # float32, as a model would use it
        lab = color.rgb_to_lab(x)
        ref = rgb2lab(rgb)                                # float64 reference
        worst_lab = max(worst_lab, float(np.abs(lab.permute(1, 2, 0).double().numpy() - ref).max()))
        worst_roundtrip = max(worst_roundtrip, float((color.lab_to_rgb(lab) - x).abs().max()))
    assert worst_lab <= 2e-3
    assert worst_roundtrip <= 1e-4


def test_lab_to_rgb_matches_skimage_inside_and_outside_the_gamut():
    g = torch.Generator().manual_seed(0)
    lab = torch.rand(3, 64, 64, generator=g, dtype=torch.float64)
    lab[0] *= 100
    lab[1:] = lab[1:] * 256 - 128                        # many of these are out of gamut
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                  # skimage warns about negative Z
        ref = lab2rgb(lab.permute(1, 2, 0).numpy())
    ours = color.lab_to_rgb(lab.float()).permute(1, 2, 0).double().numpy()
    assert np.abs(ours - ref).max() < 1e-4


def test_lab_to_rgb_never_returns_nan_or_inf_and_has_finite_gradients():
    L = torch.tensor([0.0, 100.0, 0.0, 100.0, 50.0, 50.0, 0.0, 100.0, 50.0, -1e30])
    a = torch.tensor([0.0, 0.0, 500.0, -500.0, 1e4, -1e4, -128.0, 127.0, 1e16, 1e30])
    b = torch.tensor([0.0, 0.0, -500.0, 500.0, -1e4, 1e4, 127.0, -128.0, -1e16, -1e30])
    lab = torch.stack([L, a, b]).view(3, 2, 5).requires_grad_(True)
    rgb = color.lab_to_rgb(lab)
    assert torch.isfinite(rgb).all()
    assert rgb.min() >= 0 and rgb.max() <= 1
    rgb.sum().backward()
    assert torch.isfinite(lab.grad).all()

    extremes = torch.tensor([[0.0, 1.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 0.5, 0.0]]).view(3, 2, 2)
    extremes.requires_grad_(True)
    color.rgb_to_lab(extremes).sum().backward()       # black and white sit on branch points
    assert torch.isfinite(extremes.grad).all()


def test_conversions_are_differentiable_gradcheck():
    g = torch.Generator().manual_seed(1)
    rgb = (0.1 + 0.8 * torch.rand(2, 3, 3, 3, generator=g, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(color.rgb_to_lab, (rgb,))
    lab = color.rgb_to_lab(rgb.detach()).requires_grad_(True)
    assert torch.autograd.gradcheck(color.lab_to_rgb, (lab,))


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batched_leading_dims_dtype_and_device_are_kept(dtype, device):
    rgb = torch.rand(2, 4, 3, 5, 7, dtype=dtype, device=device)
    lab = color.rgb_to_lab(rgb)
    assert lab.shape == rgb.shape and lab.dtype == dtype and lab.device == rgb.device
    one_by_one = torch.stack([torch.stack([color.rgb_to_lab(rgb[i, j]) for j in range(4)]) for i in range(2)])
    assert torch.allclose(lab, one_by_one, atol=1e-4)
    back = color.lab_to_rgb(lab)
    assert back.dtype == dtype and back.device == rgb.device
    assert color.ab_to_bin(lab[:, :, 1:]).device == rgb.device


def test_bad_input_gives_clear_errors():
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, H, W\).*\(4, 8, 8\)"):
        color.rgb_to_lab(torch.rand(4, 8, 8))
    with pytest.raises(TypeError, match="float"):
        color.rgb_to_lab(torch.zeros(3, 2, 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match="ab"):
        color.ab_to_bin(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="NaN"):
        color.ab_to_bin(torch.full((2, 4, 4), float("nan")))


def test_rgb_to_gray_keeps_lightness_and_removes_color():
    rgb = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    gray = color.rgb_to_gray(rgb)
    lab, lab_gray = color.rgb_to_lab(rgb), color.rgb_to_lab(gray)
    assert torch.allclose(lab_gray[:, 0], lab[:, 0], atol=1e-3)
    assert lab_gray[:, 1:].abs().max() < 1e-2
    assert torch.allclose(gray[:, 0], gray[:, 1], atol=1e-6) and torch.allclose(gray[:, 1], gray[:, 2], atol=1e-6)


def test_in_gamut_is_true_exactly_for_displayable_colors():
    rgb = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(9))
    assert color.in_gamut(color.rgb_to_lab(rgb)).all()
    outside = torch.tensor([[50.0, 50.0, 0.0], [0.0, 120.0, -120.0], [0.0, 120.0, 120.0]]).view(3, 1, 3)
    assert color.in_gamut(outside).tolist() == [[True, False, False]]


# --- ab bins -------------------------------------------------------------------------------------

def test_stored_gamut_bins_match_a_fresh_computation():
    fresh = color.gamut_ab_bins()                      # all 2^24 8-bit colors
    assert len(fresh) == color.AB_BIN_COUNT == 261
    assert torch.equal(fresh, color.ab_bins())
    assert (color.ab_bins() % color.GRID == 0).all()


def test_every_8bit_color_rounds_to_its_own_bin():
    # the rule: a color's rounded grid cell is always a bin, so nearest-bin never leaves the cell
    for rgb in all_8bit_colors(chunk_r=64):
        ab = color.rgb_to_lab(to_chw(rgb))[1:]
        index = color.ab_to_bin(ab)
        assert torch.allclose(color.bin_to_ab(index), torch.round(ab / 10) * 10)


def test_nearest_bin_matches_brute_force_including_out_of_gamut():
    g = torch.Generator().manual_seed(3)
    ab = torch.rand(4, 2, 16, 16, generator=g) * 300 - 150
    index = color.ab_to_bin(ab)
    centres = color.ab_bins()
    brute = ((ab.movedim(1, -1)[..., None, :] - centres) ** 2).sum(-1).argmin(-1)
    d_ours = ((ab - color.bin_to_ab(index)) ** 2).sum(1)
    d_brute = ((ab - color.bin_to_ab(brute)) ** 2).sum(1)
    assert torch.allclose(d_ours, d_brute)               # same distance (ties may pick either bin)
    assert index.shape == (4, 16, 16) and index.dtype == torch.long


def test_soft_encoding_is_a_gaussian_over_the_k_nearest_bins():
    g = torch.Generator().manual_seed(4)
    ab = torch.rand(2, 2, 5, 6, generator=g, dtype=torch.float64) * 160 - 80
    soft = color.soft_encode(ab, k=5, sigma=5.0)
    assert soft.shape == (2, color.AB_BIN_COUNT, 5, 6)
    assert torch.allclose(soft.sum(1), torch.ones(2, 5, 6, dtype=torch.float64))
    assert ((soft > 0).sum(1) == 5).all()
    # brute force for one pixel
    p = ab[1, :, 2, 3]
    d2 = ((color.ab_bins(dtype=torch.float64) - p) ** 2).sum(-1)
    near = d2.argsort()[:5]
    w = torch.exp(-d2[near] / (2 * 5.0**2))
    assert torch.allclose(soft[1, near, 2, 3], w / w.sum())
    assert torch.equal(soft.argmax(1), color.ab_to_bin(ab))


def test_annealed_mean_goes_from_mean_to_mode():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, color.AB_BIN_COUNT, 4, 4, generator=g) * 2
    probs = logits.softmax(1)
    centres = color.ab_bins()
    mean = torch.einsum("bqhw,qc->bchw", probs, centres)
    mode = color.bin_to_ab(probs.argmax(1))
    assert torch.allclose(color.annealed_mean(probs, T=1.0), mean, atol=1e-4)
    assert torch.allclose(color.annealed_mean(probs, T=0.0), mode)
    assert torch.allclose(color.annealed_mean(probs, T=1e-3), mode, atol=0.1)
    # lower temperature -> more saturated on average
    sat = [color.annealed_mean(probs, T=t).norm(dim=1).mean() for t in (1.0, 0.38, 1e-3)]
    assert sat[0] < sat[1] < sat[2]


def test_soft_encode_then_annealed_mean_recovers_in_gamut_colors():
    rgb = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    ab = color.rgb_to_lab(rgb)[:, 1:]
    decoded = color.annealed_mean(color.soft_encode(ab), T=0.0)
    assert (decoded - ab).abs().max() <= 5.0 + 1e-4      # within half a grid cell per axis


def test_rebalancing_weights_expectation_one_and_favour_rare_bins():
    rgb = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(7)) * 0.3 + 0.35  # mostly grayish
    prior = color.ab_prior(color.rgb_to_lab(rgb)[:, 1:])
    assert torch.isclose(prior.sum(), torch.tensor(1.0))
    w = color.rebalance_weights(prior, gamma=0.5, sigma=5.0)
    kernel = torch.exp(-((color.ab_bins(dtype=torch.float64)[:, None] - color.ab_bins(dtype=torch.float64)) ** 2).sum(-1) / 50)
    smooth = (kernel / kernel.sum(1, keepdim=True)) @ prior.double()
    smooth = smooth / smooth.sum()
    assert torch.isclose((smooth * w.double()).sum(), torch.tensor(1.0, dtype=torch.float64))
    common, rare = prior.argmax(), smooth.argmin()
    assert w[rare] > w[common]
    uniform = color.rebalance_weights(torch.full((color.AB_BIN_COUNT,), 1.0 / color.AB_BIN_COUNT))
    assert torch.allclose(uniform, torch.ones_like(uniform), atol=1e-5)


# --- the 512-color palette -----------------------------------------------------------------------

def test_palette_matches_the_top_three_bits_of_8bit_values():
    v = torch.arange(256)
    rgb = torch.stack([v, v.flip(0), (v * 7) % 256]).float().view(3, 16, 16) / 255
    index = color.rgb_to_palette(rgb)
    r, g, b = (torch.stack([v, v.flip(0), (v * 7) % 256]) >> 5).view(3, 16, 16)
    assert torch.equal(index, r * 64 + g * 8 + b)


def test_palette_round_trip_and_error_bound():
    index = torch.arange(512).view(1, 16, 32)
    assert torch.equal(color.rgb_to_palette(color.palette_to_rgb(index)), index)
    rgb = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    decoded = color.palette_to_rgb(color.rgb_to_palette(rgb))
    assert (decoded - rgb).abs().max() <= 1 / 16 + 1e-6     # centres: at most half a level away
    assert color.palette_colors().shape == (512, 3)
    with pytest.raises(ValueError, match="512"):
        color.palette_to_rgb(torch.tensor([[512]]))
