"""SqueezeExcitation, CBAM and SMSA (Jiang et al. eq. 1-4) against naive references written from the equations."""

import math

import pytest
import torch
import torch.nn.functional as F

from colorkit.attention import CBAM, SMSA, SqueezeExcitation

ATOL = 1e-5
ODD_SIZES = [(1, 1), (3, 5), (7, 4), (9, 13), (17, 6)]


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


def feature_map(gen, b=2, c=16, h=9, w=13):
    return torch.randn(b, c, h, w, generator=gen)


def randomize(module, gen, scale=0.5):
    """Nonzero, non-default parameters so that the references check every term."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=gen))
    return module


@torch.no_grad()
def naive_mlp(z, fc1, fc2):
    """W_2 ReLU(W_1 z + b_1) + b_2 for one vector z (C,), element by element."""
    hidden = [max(0.0, float(sum(fc1.weight[j, i] * z[i] for i in range(len(z))) + fc1.bias[j]))
              for j in range(fc1.out_features)]
    return torch.tensor([float(sum(fc2.weight[i, j] * hidden[j] for j in range(len(hidden))) + fc2.bias[i])
                         for i in range(fc2.out_features)])


@torch.no_grad()
def naive_conv_same(maps, weight, bias):
    """A (2, h, w) -> (h, w) zero-padded 'same' cross-correlation with one k x k kernel (2, k, k), by loops."""
    _, h, w = maps.shape
    k = weight.shape[-1]
    r = k // 2
    out = torch.zeros(h, w)
    for i in range(h):
        for j in range(w):
            acc = float(bias)
            for c in range(maps.shape[0]):
                for di in range(k):
                    for dj in range(k):
                        y, x = i + di - r, j + dj - r
                        if 0 <= y < h and 0 <= x < w:
                            acc += float(weight[c, di, dj] * maps[c, y, x])
            out[i, j] = acc
    return out


# --- shapes, interface ------------------------------------------------------------------------

@pytest.mark.parametrize("h,w", ODD_SIZES)
@pytest.mark.parametrize("make", [lambda: SqueezeExcitation(16, 4), lambda: CBAM(16, 4), lambda: SMSA(16, 3, 4),
                                  lambda: SMSA(16, 3, 4, upsample="nearest")])
def test_output_shape_equals_input_for_any_size(gen, make, h, w):
    x = feature_map(gen, h=h, w=w)
    assert make()(x).shape == x.shape


def test_extra_repr_and_bad_arguments(gen):
    assert "reduction=4" in repr(SqueezeExcitation(16, 4))
    assert "kernel_size=7" in repr(CBAM(16))
    assert "scales=3" in repr(SMSA(16)) and "upsample='bilinear'" in repr(SMSA(16))
    assert SMSA(8, reduction=16).hidden == 1          # C // r rounded up to at least 1
    for bad in (lambda: SqueezeExcitation(0), lambda: CBAM(16, kernel_size=4), lambda: SMSA(16, scales=0),
                lambda: SMSA(16, upsample="bicubic"), lambda: SMSA(16, reduction=0)):
        with pytest.raises(ValueError):
            bad()
    for module in (SqueezeExcitation(16), CBAM(16), SMSA(16)):
        with pytest.raises(ValueError, match=r"\(B, 16, H, W\)"):
            module(torch.zeros(2, 8, 5, 5))
        with pytest.raises(ValueError, match=r"\(B, 16, H, W\)"):
            module(torch.zeros(16, 5, 5))


# --- SqueezeExcitation ------------------------------------------------------------------------

def test_squeeze_excitation_equals_naive_reference(gen):
    se = randomize(SqueezeExcitation(6, reduction=2), gen)
    x = feature_map(gen, b=2, c=6, h=5, w=3)
    y, maps = se(x, return_maps=True)
    assert maps["s"].shape == (2, 6, 1, 1)
    for b in range(2):
        z = torch.tensor([float(x[b, c].sum()) / (5 * 3) for c in range(6)])       # squeeze       (Hu eq. 2)
        s = [1 / (1 + math.exp(-float(v))) for v in naive_mlp(z, se.fc1, se.fc2)]  # excitation    (Hu eq. 3)
        for c in range(6):
            torch.testing.assert_close(y[b, c], s[c] * x[b, c], atol=ATOL, rtol=0)   # scale      (Hu eq. 4)


# --- CBAM -------------------------------------------------------------------------------------

def test_cbam_maps_have_documented_shapes_and_range(gen):
    cbam = CBAM(16, reduction=4)
    x = feature_map(gen, b=3, h=7, w=11)
    y, maps = cbam(x, return_maps=True)
    assert maps["M_c"].shape == (3, 16, 1, 1) and maps["M_s"].shape == (3, 1, 7, 11)
    for m in maps.values():
        assert ((m > 0) & (m < 1)).all()
    torch.testing.assert_close(y, maps["M_s"] * maps["M_c"] * x)   # F'' = M_s(F') M_c(F) F


def test_cbam_equals_naive_reference(gen):
    cbam = randomize(CBAM(4, reduction=2, kernel_size=3), gen)
    x = feature_map(gen, b=2, c=4, h=5, w=4)
    y = cbam(x)
    mlp1, mlp2 = cbam.mlp[0], cbam.mlp[2]
    for b in range(2):
        avg = torch.tensor([float(x[b, c].mean()) for c in range(4)])
        mx = torch.tensor([float(x[b, c].max()) for c in range(4)])
        m_c = torch.sigmoid(naive_mlp(avg, mlp1, mlp2) + naive_mlp(mx, mlp1, mlp2))       # (Woo eq. 2)
        f1 = m_c[:, None, None] * x[b]                                                   # F'  (Woo eq. 1)
        pooled = torch.stack([f1.mean(dim=0), f1.max(dim=0).values])                     # [AvgPool; MaxPool]
        m_s = torch.sigmoid(naive_conv_same(pooled, cbam.spatial.weight[0], cbam.spatial.bias[0]))  # (Woo eq. 3)
        torch.testing.assert_close(y[b], m_s[None] * f1, atol=ATOL, rtol=0)              # F'' (Woo eq. 1)


# --- SMSA -------------------------------------------------------------------------------------

@pytest.mark.parametrize("h,w", [(9, 13), (3, 2), (1, 1), (16, 16)])
def test_smsa_split_averages_each_patch(gen, h, w):
    smsa = SMSA(4, scales=3, reduction=2)
    x = feature_map(gen, b=1, c=4, h=h, w=w)
    for k in (1, 2, 3):
        p = 2 ** k
        v = smsa.split(x, k)
        rows, cols = math.ceil(h / p), math.ceil(w / p)
        assert v.shape == (1, 2, rows, cols)             # at least 1 x 1 even when H, W < 2^k
        mx, mean = x[0].max(dim=0).values, x[0].mean(dim=0)
        for i in range(rows):
            for j in range(cols):
                patch = (slice(i * p, (i + 1) * p), slice(j * p, (j + 1) * p))
                torch.testing.assert_close(v[0, 0, i, j], mx[patch].mean(), atol=ATOL, rtol=0)
                torch.testing.assert_close(v[0, 1, i, j], mean[patch].mean(), atol=ATOL, rtol=0)


@pytest.mark.parametrize("upsample", ["bilinear", "nearest"])
def test_smsa_maps_shapes_and_eq3_eq4(gen, upsample):
    smsa = randomize(SMSA(16, scales=3, reduction=4, upsample=upsample), gen)
    x = feature_map(gen, b=2, h=9, w=13)
    y, maps = smsa(x, return_maps=True)
    assert len(maps["A_k"]) == 3 and all(a.shape == (2, 1, 9, 13) for a in maps["A_k"])
    assert maps["A_n"].shape == (2, 16, 1, 1) and maps["A_s"].shape == (2, 1, 9, 13)
    lambdas = maps["lambdas"].detach()
    assert lambdas.shape == (3,)
    a_s = sum(float(lambdas[k]) * maps["A_k"][k] for k in range(3))                      # (eq. 3)
    torch.testing.assert_close(maps["A_s"], a_s, atol=ATOL, rtol=0)
    torch.testing.assert_close(y, x + x * a_s * maps["A_n"], atol=ATOL, rtol=0)          # (eq. 4)
    # A_n is SENet's excitation of GAP(F)                                                 (eq. 2, k = n)
    z = x.mean(dim=(2, 3))
    for b in range(2):
        torch.testing.assert_close(maps["A_n"][b, :, 0, 0], torch.sigmoid(naive_mlp(z[b], smsa.fc1, smsa.fc2)),
                                   atol=ATOL, rtol=0)


def test_smsa_spatial_map_equals_naive_reference(gen):
    """A_k = Up(sigma(f^{3x3}(V_k))) (eq. 2), with nearest Up = each pixel takes its own patch's value."""
    smsa = randomize(SMSA(4, scales=2, reduction=2, upsample="nearest"), gen)
    x = feature_map(gen, b=1, c=4, h=7, w=5)
    maps = smsa(x, return_maps=True)[1]["A_k"]
    for k in (1, 2):
        p = 2 ** k
        conv = smsa.spatial[k - 1]
        small = torch.sigmoid(naive_conv_same(smsa.split(x, k)[0], conv.weight[0], conv.bias[0]))
        for i in range(7):
            for j in range(5):
                torch.testing.assert_close(maps[k - 1][0, 0, i, j], small[i // p, j // p], atol=ATOL, rtol=0)


def test_smsa_bilinear_map_of_a_constant_is_constant(gen):
    smsa = SMSA(4, scales=3, reduction=2)
    with torch.no_grad():
        for conv in smsa.spatial:
            conv.weight.zero_()
            conv.bias.fill_(0.3)
    maps = smsa(feature_map(gen, c=4, h=9, w=13), return_maps=True)[1]["A_k"]
    for a in maps:
        torch.testing.assert_close(a, torch.full_like(a, 1 / (1 + math.exp(-0.3))))


@pytest.mark.parametrize("h,w", [(9, 13), (1, 1), (5, 2)])
def test_smsa_with_maps_forced_to_zero_is_identity(gen, h, w):
    smsa = randomize(SMSA(16, scales=3, reduction=4), gen)
    with torch.no_grad():
        for conv in smsa.spatial:       # sigma(-200) is exactly 0 in float32, so every A_k = 0
            conv.weight.zero_()
            conv.bias.fill_(-200.0)
    x = feature_map(gen, h=h, w=w)
    y, maps = smsa(x, return_maps=True)
    assert all((a == 0).all() for a in maps["A_k"]) and (maps["A_s"] == 0).all()
    assert torch.equal(y, x)


def test_smsa_lambdas_start_as_a_mean_and_stay_in_open_interval():
    assert torch.allclose(SMSA(8, scales=3).lambdas, torch.full((3,), 1 / 3))
    assert torch.allclose(SMSA(8, scales=4).lambdas, torch.full((4,), 1 / 4))
    assert torch.allclose(SMSA(8, scales=1).lambdas, torch.full((1,), 0.5))
    smsa = SMSA(8, scales=3)
    opt = torch.optim.Adam(smsa.parameters(), lr=10.0)
    push = torch.tensor([1.0, -1.0, 1.0])      # lambda_1, lambda_3 towards 0, lambda_2 towards 1
    for _ in range(50):
        opt.zero_grad()
        (push * smsa.lambdas).sum().backward()
        opt.step()
    lambdas = smsa.lambdas.detach()
    assert ((lambdas > 0) & (lambdas < 1)).all(), lambdas
    assert lambdas[0] < 0.01 and lambdas[1] > 0.99 and lambdas[2] < 0.01   # pushed hard, yet inside


@pytest.mark.parametrize("make", [lambda: SqueezeExcitation(16, 4), lambda: CBAM(16, 4), lambda: SMSA(16, 3, 4)])
def test_gradients_reach_every_parameter(gen, make):
    module = make()
    x = feature_map(gen, h=9, w=7).requires_grad_()
    (module(x) * torch.randn(2, 16, 9, 7, generator=gen)).sum().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


def test_smsa_is_deterministic_and_batch_independent(gen):
    smsa = randomize(SMSA(16, scales=3, reduction=4), gen)
    x = feature_map(gen, b=3, h=11, w=6)
    y = smsa(x)
    torch.testing.assert_close(smsa(x[1:2]), y[1:2], atol=ATOL, rtol=0)
    assert torch.equal(smsa(x), y)
