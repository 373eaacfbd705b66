"""The hint priors (issue 15): the global hint, the hints spread by distance, and the models built on them."""

import pytest
import torch

from colorkit import evaluate, models
from colorkit.data import sample_hints
from colorkit.models import global_hint, hint_inputs, hint_prior, spread_hints


def _hints(b=2, h=13, w=17, count=4, seed=0):
    ab = torch.randn(b, 2, h, w, generator=torch.Generator().manual_seed(seed)) * 30
    return sample_hints(ab, count, patch=2, seed=seed)


def test_global_hint_is_the_mean_hint_color_and_a_flag():
    hints = _hints()
    L = torch.full((2, 1, 13, 17), 50.0)
    x0 = hint_inputs(L, hints["hint_ab"], hints["hint_mask"], model="test")
    g = global_hint(x0)                                                     # (B, 3, 1, 1)
    fill = evaluate.mean_hint_color(L, hints["hint_ab"], hints["hint_mask"])
    torch.testing.assert_close(g[:, :2] * 110, fill[..., :1, :1], rtol=1e-5, atol=1e-4)
    assert g[:, 2].flatten().tolist() == [1.0, 1.0]
    empty = global_hint(hint_inputs(L, None, None, model="test"))
    assert empty.abs().max() == 0


def test_spread_hints_matches_a_naive_weighted_mean():
    hints = _hints(b=1, h=9, w=11, count=3)
    ab, mask = hints["hint_ab"], hints["hint_mask"]
    sigma = 2.5
    got = spread_hints(ab, mask, sigma=sigma)
    # naive: every pixel's Gaussian-weighted mean of the hint pixels, plus the mean hint color with weight 0.05
    ys, xs = torch.nonzero(mask[0, 0], as_tuple=True)
    colors = ab[0][:, ys, xs]                                                # (2, K)
    mean = colors.mean(dim=1)
    radius = int(3 * sigma)
    want = torch.zeros(2, 9, 11)
    for y in range(9):
        for x in range(11):
            dy, dx = (ys - y).float(), (xs - x).float()
            inside = (dy.abs() <= radius) & (dx.abs() <= radius)             # the kernel's support
            wgt = torch.exp(-(dy ** 2 + dx ** 2) / (2 * sigma ** 2)) * inside
            want[:, y, x] = ((colors * wgt).sum(dim=1) + 0.05 * mean) / (wgt.sum() + 0.05)
    torch.testing.assert_close(got[0], want, rtol=1e-4, atol=1e-4)


def test_spread_hints_keeps_a_lone_hint_color_everywhere_and_gray_without_hints():
    ab, mask = torch.zeros(1, 2, 20, 30), torch.zeros(1, 1, 20, 30)
    ab[0, :, 5:7, 5:7] = torch.tensor([25.0, -40.0])[:, None, None]
    mask[0, 0, 5:7, 5:7] = 1
    spread = spread_hints(ab, mask)
    torch.testing.assert_close(spread, torch.tensor([25.0, -40.0]).view(1, 2, 1, 1).expand(1, 2, 20, 30))
    assert spread_hints(ab, mask * 0).abs().max() == 0
    # two hints: each pixel leans to the nearer one
    ab[0, :, 15:17, 25:27] = torch.tensor([-30.0, 10.0])[:, None, None]
    mask[0, 0, 15:17, 25:27] = 1
    spread = spread_hints(ab, mask)
    assert spread[0, 0, 5, 5] > 20 and spread[0, 0, 16, 26] < -25


def test_hint_prior_names_its_kinds():
    x0 = hint_inputs(torch.full((1, 1, 8, 8), 50.0), None, None, model="test")
    assert hint_prior(None, x0) is None
    with pytest.raises(ValueError, match="hint_prior must be one of"):
        hint_prior("median", x0)


@pytest.mark.parametrize("config", [
    {"name": "li", "arch": "T", "image_size": 32, "window": 4, "depths": [1, 1, 1, 1], "hint_path": "spread"},
    {"name": "li", "arch": "T", "image_size": 32, "window": 4, "depths": [1, 1, 1, 1], "hint_path": "fill"},
    {"name": "zhang2017", "width": 4, "image_size": 32, "global_hints": True, "prior": "spread"},
])
def test_an_untrained_model_on_a_prior_returns_the_prior_and_odd_sizes_work(config):
    torch.manual_seed(0)
    net = models.build(config).eval()
    hints = _hints(b=2, h=37, w=23, count=5)
    L = torch.rand(2, 1, 37, 23) * 100
    with torch.no_grad():
        out = net(L, hint_ab=hints["hint_ab"], hint_mask=hints["hint_mask"])
    x0 = hint_inputs(L, hints["hint_ab"], hints["hint_mask"], model="test")
    prior = hint_prior("mean" if config.get("hint_path") == "fill" else "spread", x0)
    assert out.shape == (2, 2, 37, 23)
    torch.testing.assert_close(out, prior, rtol=1e-5, atol=1e-4)             # the residual starts at zero


def test_zhangs_global_hints_start_at_zero_and_then_carry_the_mean_hint_color():
    torch.manual_seed(0)
    net = models.build({"name": "zhang2017", "width": 4, "image_size": 32, "global_hints": True}).eval()
    hints = _hints(b=2, h=32, w=32, count=3)
    L = torch.rand(2, 1, 32, 32) * 100
    with torch.no_grad():
        with_global = net(L, hint_ab=hints["hint_ab"], hint_mask=hints["hint_mask"])
        branch, net.global_net = net.global_net, None
        without = net(L, hint_ab=hints["hint_ab"], hint_mask=hints["hint_mask"])
        net.global_net = branch
        torch.testing.assert_close(with_global, without)                     # the last conv starts at zero
        torch.nn.init.normal_(branch[-1].weight)
        x0 = hint_inputs(L, hints["hint_ab"], hints["hint_mask"], model="test")
        features = torch.randn(2, 32, 4, 4)                                  # conv4's output at 1/8
        added = net._global(features, x0) - features                         # one offset per image and channel
    torch.testing.assert_close(added, branch(global_hint(x0)).expand_as(features))
    assert (added[0] - added[1]).abs().mean() > 1e-3                          # images with other hints, other offsets


def test_bad_hint_options_are_named():
    with pytest.raises(ValueError, match="hint_path must be one of"):
        models.build({"name": "li", "image_size": 32, "hint_path": "cnn"})
    with pytest.raises(ValueError, match="prior must be one of"):
        models.build({"name": "zhang2017", "width": 4, "prior": "levin"})
