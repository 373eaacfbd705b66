"""Levin et al. (2004) colorization by optimization: hints kept, flat regions filled, edges respected,
agreement with a dense least-squares solve of eq. 1 built with plain loops, and input checks."""

import time

import numpy as np
import pytest
import torch

from colorkit.levin import levin_affinity, levin_colorize

RESIDUALS = ["unhinted", "all"]


def random_case(b=2, h=12, w=15, hints=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    L = torch.rand(b, 1, h, w, generator=g) * 100
    hint_ab = torch.rand(b, 2, h, w, generator=g) * 160 - 80
    hint_mask = torch.zeros(b, 1, h, w)
    for i in range(b):
        idx = torch.randperm(h * w, generator=g)[:hints]
        hint_mask[i, 0].view(-1)[idx] = 1.0
    return L, hint_ab, hint_mask


# --- a naive reference: eq. 2 one pixel at a time, eq. 1 as a dense least-squares problem --------

def naive_affinity(Y, window, eps, variance_scale=0.3):
    """W (N, N) from eq. 2 with explicit loops over pixels and their windows; sigma_r^2 as the
    authors' code: max(variance_scale * window variance, nearest (Y(r) - Y(s))^2 / (2 ln 100), eps)."""
    h, w = Y.shape
    W = np.zeros((h * w, h * w))
    for y in range(h):
        for x in range(w):
            window_pixels = [(yy, xx) for yy in range(y - window, y + window + 1)
                             for xx in range(x - window, x + window + 1) if 0 <= yy < h and 0 <= xx < w]
            values = np.array([Y[p] for p in window_pixels])  # the window, r included
            nearest = min((Y[y, x] - Y[p]) ** 2 for p in window_pixels if p != (y, x))
            sigma2 = max(variance_scale * values.var(), nearest / (2 * np.log(100)), eps)
            for yy, xx in window_pixels:
                if (yy, xx) != (y, x):
                    W[y * w + x, yy * w + xx] = np.exp(-(Y[y, x] - Y[yy, xx]) ** 2 / (2 * sigma2))
            W[y * w + x] /= W[y * w + x].sum()
    return W


def dense_least_squares(L, ab, hinted, *, window, eps, variance_scale, residuals):
    """argmin_U sum_r (U(r) - sum_s w_rs U(s))^2 with U fixed on hinted pixels, by np.linalg.lstsq.

    residuals "all": every r in the sum (eq. 1 as printed); "unhinted": only the unhinted r."""
    h, w = L.shape
    A = np.eye(h * w) - naive_affinity(L / 100.0, window, eps, variance_scale)
    hinted = hinted.reshape(-1)
    rows = slice(None) if residuals == "all" else ~hinted
    out = np.zeros((2, h * w))
    for ch in range(2):
        u = ab[ch].reshape(-1)[hinted]
        # || A[rows, free] U_f + A[rows, hinted] u ||^2 -> min
        sol, *_ = np.linalg.lstsq(A[rows][:, ~hinted], -A[rows][:, hinted] @ u, rcond=None)
        out[ch, ~hinted] = sol
        out[ch, hinted] = u
    return out.reshape(2, h, w)


def test_affinity_matches_the_naive_loop():
    rng = np.random.default_rng(0)
    Y = rng.random((6, 7))
    Y[:, :3] = 0.4                                            # a flat part, where the eps floor acts
    Y[4, 5] = 0.95                                            # a lone bright pixel: the nearest-neighbour floor
    for window, eps, scale in [(1, 1e-4, 0.3), (2, 1e-2, 0.3), (1, 1e-8, 1.0), (2, 1e-6, 0.05)]:
        W = levin_affinity(Y, window=window, eps=eps, variance_scale=scale).toarray()
        np.testing.assert_allclose(W, naive_affinity(Y, window, eps, scale), atol=1e-12)
        np.testing.assert_allclose(W.sum(axis=1), 1.0, atol=1e-12)        # rows normalised


@pytest.mark.parametrize("residuals", RESIDUALS)
@pytest.mark.parametrize("window, eps, scale", [(1, 1e-4, 0.3), (2, 1e-3, 1.0)])
def test_agrees_with_a_dense_least_squares_solve_on_6x7(residuals, window, eps, scale):
    rng = np.random.default_rng(1)
    L = rng.random((6, 7)) * 100
    L[:, 4:] = 20.0                                           # an edge and a flat region
    ab = rng.random((2, 6, 7)) * 100 - 50
    hinted = np.zeros((6, 7), dtype=bool)
    hinted[1, 1] = hinted[4, 5] = hinted[2, 6] = True
    got = levin_colorize(L, ab[None], hinted[None, None].astype(float), window=window, eps=eps,
                         variance_scale=scale, residuals=residuals)
    ref = dense_least_squares(L, ab, hinted, window=window, eps=eps, variance_scale=scale, residuals=residuals)
    assert got.shape == (1, 2, 6, 7) and got.dtype == torch.float32
    np.testing.assert_allclose(got[0].numpy(), ref, atol=1e-3)


@pytest.mark.parametrize("residuals", RESIDUALS)
def test_hinted_pixels_equal_their_hints_exactly(residuals):
    L, hint_ab, hint_mask = random_case()
    ab = levin_colorize(L, hint_ab, hint_mask, residuals=residuals)
    hinted = hint_mask.expand_as(hint_ab).bool()
    assert torch.equal(ab[hinted], hint_ab[hinted])


@pytest.mark.parametrize("residuals", RESIDUALS)
def test_constant_image_with_one_hint_takes_its_color_everywhere(residuals):
    L = torch.full((1, 1, 20, 24), 55.0)
    hint_ab = torch.zeros(1, 2, 20, 24)
    hint_mask = torch.zeros(1, 1, 20, 24)
    hint_ab[0, :, 7, 9] = torch.tensor([35.0, -60.0])
    hint_mask[0, 0, 7, 9] = 1.0
    ab = levin_colorize(L, hint_ab, hint_mask, residuals=residuals)
    torch.testing.assert_close(ab, torch.tensor([35.0, -60.0]).view(1, 2, 1, 1).expand(1, 2, 20, 24),
                               atol=1e-3, rtol=0)


def two_regions(variance_scale=0.3, residuals="unhinted", far=4):
    """L 30 | 70 with a sharp vertical edge at x = 16, one 2 x 2 hint (as `sample_hints` gives) on each
    side -> the largest ab error against each side's own hint, over pixels >= `far` columns from the edge."""
    h, w = 24, 32
    L = torch.full((1, 1, h, w), 30.0)
    L[..., w // 2:] = 70.0
    hint_ab = torch.zeros(1, 2, h, w)
    hint_mask = torch.zeros(1, 1, h, w)
    left, right = torch.tensor([40.0, -20.0]).view(2, 1, 1), torch.tensor([-30.0, 50.0]).view(2, 1, 1)
    hint_ab[0, :, 5:7, 3:5], hint_mask[0, 0, 5:7, 3:5] = left, 1.0
    hint_ab[0, :, 18:20, 27:29], hint_mask[0, 0, 18:20, 27:29] = right, 1.0
    ab = levin_colorize(L, hint_ab, hint_mask, variance_scale=variance_scale, residuals=residuals)[0]
    return float((ab[:, :, :w // 2 - far] - left).abs().max()), float((ab[:, :, w // 2 + far:] - right).abs().max())


@pytest.mark.parametrize("residuals", RESIDUALS)
def test_two_flat_regions_split_by_an_edge_keep_their_own_hint(residuals):
    err_left, err_right = two_regions(residuals=residuals)
    assert err_left < 1.0 and err_right < 1.0


def test_the_papers_literal_sigma_lets_color_leak_across_the_edge():
    """Why variance_scale defaults to the authors' 0.3: with sigma_r^2 = the window variance (1), a
    pixel next to a step edge still gives a neighbour across exp(-9/4) ~ 0.1 of a same-side weight."""
    assert min(two_regions(variance_scale=1.0)) > 10.0


def test_unhinted_residuals_stay_between_the_hints():
    """The authors' system makes every free pixel a convex combination of others: no overshoot."""
    L, hint_ab, hint_mask = random_case(b=1, h=20, w=20, hints=5, seed=3)
    ab = levin_colorize(L, hint_ab, hint_mask, residuals="unhinted")
    for ch in range(2):
        values = hint_ab[0, ch][hint_mask[0, 0].bool()]
        assert values.min() - 1e-3 <= ab[0, ch].min() and ab[0, ch].max() <= values.max() + 1e-3


def test_no_hints_gives_gray_per_image():
    L, hint_ab, hint_mask = random_case(b=3)
    hint_mask[1] = 0.0                                        # the middle image gets no hint
    ab = levin_colorize(L, hint_ab, hint_mask)
    assert ab.shape == (3, 2, 12, 15)
    assert torch.equal(ab[1], torch.zeros(2, 12, 15))
    assert ab[0].abs().sum() > 0 and ab[2].abs().sum() > 0
    torch.testing.assert_close(levin_colorize(L[:1], hint_ab[:1], torch.zeros(1, 1, 12, 15)),
                               torch.zeros(1, 2, 12, 15))


def test_batch_is_independent_and_broadcasts():
    L, hint_ab, hint_mask = random_case(b=3)
    together = levin_colorize(L, hint_ab, hint_mask)
    for i in range(3):
        torch.testing.assert_close(together[i:i + 1], levin_colorize(L[i:i + 1], hint_ab[i:i + 1], hint_mask[i:i + 1]))
    # one gray image, three hint sets (a hint-count curve): L of batch 1 is shared
    shared = levin_colorize(L[0, 0], hint_ab, hint_mask)
    torch.testing.assert_close(shared[1], levin_colorize(L[:1], hint_ab[1:2], hint_mask[1:2])[0])


def test_numpy_inputs_and_unbatched_L():
    L, hint_ab, hint_mask = random_case(b=1)
    ref = levin_colorize(L, hint_ab, hint_mask)
    got = levin_colorize(L[0, 0].numpy(), hint_ab.numpy(), hint_mask.numpy().astype(bool))
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32 and got.device.type == "cpu"
    torch.testing.assert_close(got, ref)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_returns_on_the_inputs_device():
    L, hint_ab, hint_mask = random_case(b=1)
    ab = levin_colorize(L.cuda(), hint_ab.cuda(), hint_mask.cuda())
    assert ab.device.type == "cuda"
    torch.testing.assert_close(ab.cpu(), levin_colorize(L, hint_ab, hint_mask))


@pytest.mark.parametrize("args, name", [
    ((torch.rand(1, 3, 8, 8), torch.zeros(1, 2, 8, 8), torch.zeros(1, 1, 8, 8)), "L"),
    ((torch.rand(8), torch.zeros(1, 2, 8, 8), torch.zeros(1, 1, 8, 8)), "L"),
    ((torch.rand(1, 1, 8, 8), torch.zeros(1, 3, 8, 8), torch.zeros(1, 1, 8, 8)), "hint_ab"),
    ((torch.rand(1, 1, 8, 8), torch.zeros(1, 2, 8, 9), torch.zeros(1, 1, 8, 8)), "hint_ab"),
    ((torch.rand(1, 1, 8, 8), torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 8)), "hint_mask"),
    ((torch.rand(1, 1, 8, 8), torch.zeros(1, 2, 8, 8), torch.zeros(1, 1, 7, 8)), "hint_mask"),
    ((torch.rand(1, 1, 8, 8), torch.zeros(1, 2, 8, 8), torch.full((1, 1, 8, 8), 0.5)), "hint_mask"),
    ((torch.rand(2, 1, 8, 8), torch.zeros(3, 2, 8, 8), torch.zeros(3, 1, 8, 8)), "batch sizes"),
    ((torch.full((1, 1, 8, 8), float("nan")), torch.zeros(1, 2, 8, 8), torch.zeros(1, 1, 8, 8)), "L"),
])
def test_bad_inputs_raise_naming_the_argument(args, name):
    with pytest.raises(ValueError, match=name):
        levin_colorize(*args)


@pytest.mark.parametrize("kw, name", [({"window": 0}, "window"), ({"eps": 0.0}, "eps"),
                                      ({"variance_scale": 0.0}, "variance_scale"),
                                      ({"residuals": "some"}, "residuals")])
def test_bad_options_raise(kw, name):
    L, hint_ab, hint_mask = random_case(b=1)
    with pytest.raises(ValueError, match=name):
        levin_colorize(L, hint_ab, hint_mask, **kw)


def test_construction_is_vectorised():
    """A loop over pixels would take seconds here; the sparse build and solve take a fraction."""
    L, hint_ab, hint_mask = random_case(b=1, h=160, w=160, hints=20)
    start = time.perf_counter()
    levin_colorize(L, hint_ab, hint_mask)
    assert time.perf_counter() - start < 5.0
