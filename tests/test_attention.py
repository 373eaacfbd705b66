"""colorkit.attention against torch's fused attention and against naive versions of each idea."""

import pytest
import torch
import torch.nn.functional as F

from colorkit.attention import (
    AxialAttention,
    ColumnAttention,
    MultiHeadAttention,
    RowAttention,
    WindowAttention,
    attention_flops,
    attention_matrix_elements,
    causal_mask,
    scaled_dot_product_attention,
    window_partition,
    window_reverse,
)

ATOL = 1e-5


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


def qkv(gen, batch=(2, 3), n=5, m=7, d=8, dv=6):
    return (torch.randn(*batch, n, d, generator=gen), torch.randn(*batch, m, d, generator=gen),
            torch.randn(*batch, m, dv, generator=gen))


def test_plain_attention_equals_torch(gen):
    q, k, v = qkv(gen)
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v), F.scaled_dot_product_attention(q, k, v),
                               atol=ATOL, rtol=0)


@pytest.mark.parametrize("mask_shape", [(5, 7), (2, 1, 5, 7), (2, 3, 1, 7)])
def test_plain_attention_with_mask_equals_torch(gen, mask_shape):
    q, k, v = qkv(gen)
    mask = torch.rand(mask_shape, generator=gen) < 0.6
    mask[..., 0] = True  # at least one key per row: torch's older kernels give NaN otherwise
    ours = scaled_dot_product_attention(q, k, v, mask)
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=ATOL, rtol=0)


def test_causal_mask_matches_torch_is_causal(gen):
    q, k, v = qkv(gen, n=6, m=6)
    mask = causal_mask(6)
    assert mask.dtype == torch.bool and mask.shape == (6, 6)
    ours = scaled_dot_product_attention(q, k, v, mask)
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=ATOL, rtol=0)
    # rectangular: same top-left alignment as torch
    torch.testing.assert_close(causal_mask(3, 5), torch.ones(3, 5).tril().bool())


def test_weights_rows_sum_to_one_and_respect_mask(gen):
    q, k, v = qkv(gen)
    mask = torch.rand(5, 7, generator=gen) < 0.5
    mask[:, 0] = True
    out, weights = scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    assert weights.shape == (2, 3, 5, 7)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 5))
    assert (weights[..., ~mask] == 0).all()
    torch.testing.assert_close(out, weights @ v)


def test_fully_masked_row_gives_zeros_not_nan(gen):
    q, k, v = qkv(gen)
    q.requires_grad_(True)
    mask = torch.ones(5, 7, dtype=torch.bool)
    mask[2] = False
    out, weights = scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    assert not out.isnan().any() and not weights.isnan().any()
    assert (out[..., 2, :] == 0).all() and (weights[..., 2, :] == 0).all()
    out.sum().backward()
    assert not q.grad.isnan().any()
    # torch's fused kernel (2.5+) agrees on the zeros
    torch.testing.assert_close(out.detach(), F.scaled_dot_product_attention(q.detach(), k, v, attn_mask=mask),
                               atol=ATOL, rtol=0)


def test_bad_inputs_raise_clear_errors(gen):
    q, k, v = qkv(gen)
    with pytest.raises(TypeError, match="boolean"):
        scaled_dot_product_attention(q, k, v, torch.ones(5, 7))
    with pytest.raises(ValueError, match="does not broadcast"):
        scaled_dot_product_attention(q, k, v, torch.ones(7, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="same d"):
        scaled_dot_product_attention(q, k[..., :4], v)
    with pytest.raises(ValueError, match="multiple of heads"):
        MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match="dim=8"):
        MultiHeadAttention(8, 2)(torch.randn(2, 5, 6))
    with pytest.raises(ValueError, match="multiple of window"):
        WindowAttention(8, 2, 4)(torch.randn(1, 6, 8, 8))
    with pytest.raises(ValueError, match="axis"):
        AxialAttention(8, 2, axis="diagonal")


@pytest.mark.parametrize("use_mask", [False, True])
def test_multi_head_fast_equals_plain(gen, use_mask):
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4)
    x = torch.randn(2, 9, 16, generator=gen)
    mask = causal_mask(9) if use_mask else None
    fast = mha(x, mask=mask)
    plain = mha(x, mask=mask, fast=False)
    out, weights = mha(x, mask=mask, return_weights=True)
    assert fast.shape == (2, 9, 16) and weights.shape == (2, 4, 9, 9)
    torch.testing.assert_close(fast, plain, atol=ATOL, rtol=0)
    torch.testing.assert_close(out, plain)


def test_multi_head_equals_per_head_equation(gen):
    """Eq. 4 written literally: separate W_i per head, concatenate, W_o."""
    torch.manual_seed(0)
    dim, heads = 12, 3
    mha = MultiHeadAttention(dim, heads)
    x = torch.randn(2, 5, dim, generator=gen)
    hd = dim // heads
    wq, wk, wv = mha.qkv.weight.split(dim)  # each (dim, dim), rows grouped by head
    bq, bk, bv = mha.qkv.bias.split(dim)
    outs = []
    for i in range(heads):
        rows = slice(i * hd, (i + 1) * hd)
        q_i = x @ wq[rows].T + bq[rows]
        k_i = x @ wk[rows].T + bk[rows]
        v_i = x @ wv[rows].T + bv[rows]
        outs.append(torch.softmax(q_i @ k_i.transpose(-2, -1) / hd**0.5, dim=-1) @ v_i)
    expected = mha.proj(torch.cat(outs, dim=-1))
    torch.testing.assert_close(mha(x, fast=False), expected, atol=ATOL, rtol=0)


def test_multi_head_padding_mask(gen):
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2)
    x = torch.randn(2, 6, 8, generator=gen)
    keep = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    out = mha(x, mask=keep[:, None, None, :])
    # padded tokens must not influence the real ones: same as running on the unpadded sequence
    torch.testing.assert_close(out[0, :4], mha(x[:1, :4])[0], atol=ATOL, rtol=0)
    torch.testing.assert_close(out, mha(x, mask=keep[:, None, None, :], fast=False), atol=ATOL, rtol=0)


def _same_line_mask(h, w, axis):
    rows = torch.arange(h).repeat_interleave(w)  # row index of each token, raster order
    cols = torch.arange(w).repeat(h)
    line = rows if axis == "row" else cols
    return line[:, None] == line[None, :]  # (hw, hw)


@pytest.mark.parametrize("axis", ["row", "column"])
@pytest.mark.parametrize("fast", [True, False])
def test_axial_equals_full_attention_with_same_line_mask(gen, axis, fast):
    torch.manual_seed(0)
    b, h, w, c = 2, 4, 5, 8
    axial = AxialAttention(c, 2, axis=axis)
    full = MultiHeadAttention(c, 2)
    full.load_state_dict(axial.state_dict())
    x = torch.randn(b, h, w, c, generator=gen)
    naive = full(x.reshape(b, h * w, c), mask=_same_line_mask(h, w, axis), fast=False).reshape(b, h, w, c)
    torch.testing.assert_close(axial(x, fast=fast), naive, atol=ATOL, rtol=0)


def test_row_and_column_classes_are_axial(gen):
    torch.manual_seed(0)
    x = torch.randn(1, 3, 4, 8, generator=gen)
    row, col = RowAttention(8, 2), ColumnAttention(8, 2)
    axial = AxialAttention(8, 2, axis="column")
    axial.load_state_dict(col.state_dict())
    torch.testing.assert_close(col(x), axial(x))
    out, weights = row(x, return_weights=True)
    assert out.shape == x.shape and weights.shape == (1, 3, 2, 4, 4)
    out, weights = col(x, return_weights=True)
    assert out.shape == x.shape and weights.shape == (1, 4, 2, 3, 3)


@pytest.mark.parametrize("axis", ["row", "column"])
@pytest.mark.parametrize("fast", [True, False])
def test_causal_axial_does_not_look_ahead(gen, axis, fast):
    torch.manual_seed(0)
    b, h, w, c = 2, 5, 6, 8
    attn = AxialAttention(c, 2, axis=axis)
    x = torch.randn(b, h, w, c, generator=gen)
    out = attn(x, causal=True, fast=fast)
    n = w if axis == "row" else h
    for j in range(n):
        y = x.clone()
        later = (slice(None), slice(None), slice(j + 1, None)) if axis == "row" else (slice(None), slice(j + 1, None))
        y[later] = torch.randn_like(y[later])  # change every pixel after position j along the axis
        out_y = attn(y, causal=True, fast=fast)
        upto = (slice(None), slice(None), slice(0, j + 1)) if axis == "row" else (slice(None), slice(0, j + 1))
        torch.testing.assert_close(out_y[upto], out[upto], atol=ATOL, rtol=0)
    # and without the mask, later pixels do matter
    y = x.clone()
    y[(slice(None), slice(None), slice(1, None)) if axis == "row" else (slice(None), slice(1, None))] += 1.0
    first = (slice(None), slice(None), 0) if axis == "row" else (slice(None), 0)
    assert not torch.allclose(attn(y)[first], attn(x)[first], atol=1e-3)


def test_causal_axial_gradient_is_lower_triangular(gen):
    torch.manual_seed(0)
    attn = RowAttention(4, 1)
    x = torch.randn(1, 1, 5, 4, generator=gen, requires_grad=True)
    jac = torch.autograd.functional.jacobian(lambda t: attn(t, causal=True).sum(-1), x)  # (1,1,5, 1,1,5,4)
    influence = jac.abs().sum(-1).reshape(5, 5)  # output position x input position
    assert (influence.triu(diagonal=1) == 0).all()
    assert (influence.diagonal() > 0).all()


@pytest.mark.parametrize("h,w,window", [(8, 8, 4), (4, 6, 2), (6, 6, 6)])
def test_window_partition_round_trip(gen, h, w, window):
    x = torch.randn(3, h, w, 5, generator=gen)
    windows = window_partition(x, window)
    assert windows.shape == (3 * (h // window) * (w // window), window * window, 5)
    # the first window is the top-left patch, read row by row
    torch.testing.assert_close(windows[0], x[0, :window, :window].reshape(-1, 5))
    torch.testing.assert_close(window_reverse(windows, window, h, w), x)


@pytest.mark.parametrize("fast", [True, False])
def test_window_attention_equals_per_window_loop(gen, fast):
    torch.manual_seed(0)
    b, h, w, c, m = 2, 8, 12, 8, 4
    attn = WindowAttention(c, 2, m)
    mha = MultiHeadAttention(c, 2)
    mha.load_state_dict(attn.state_dict())
    x = torch.randn(b, h, w, c, generator=gen)
    expected = torch.empty_like(x)
    for i in range(0, h, m):
        for j in range(0, w, m):
            patch = x[:, i:i + m, j:j + m]  # (B, M, M, C)
            expected[:, i:i + m, j:j + m] = mha(patch.reshape(b, m * m, c), fast=False).reshape(b, m, m, c)
    torch.testing.assert_close(attn(x, fast=fast), expected, atol=ATOL, rtol=0)
    out, weights = attn(x, return_weights=True)
    assert weights.shape == (b * (h // m) * (w // m), 2, m * m, m * m)


def test_window_as_big_as_image_is_full_attention(gen):
    torch.manual_seed(0)
    attn = WindowAttention(8, 2, 4)
    mha = MultiHeadAttention(8, 2)
    mha.load_state_dict(attn.state_dict())
    x = torch.randn(2, 4, 4, 8, generator=gen)
    torch.testing.assert_close(attn(x), mha(x.reshape(2, 16, 8)).reshape(2, 4, 4, 8), atol=ATOL, rtol=0)


def test_flops_formulas():
    d = 32
    assert attention_flops("full", 16, 16, d) == 2 * 256 * 256 * d
    assert attention_flops("axial", 16, 16, d) == attention_flops("row", 16, 16, d) + attention_flops("column", 16, 16, d)
    assert attention_flops("axial", 8, 12, d) == 2 * 96 * (8 + 12) * d
    assert attention_flops("window", 16, 16, d, window=4) == 2 * 256 * 16 * d
    # a window as big as the image is full attention
    assert attention_flops("window", 8, 8, d, window=8) == attention_flops("full", 8, 8, d)
    # ratios: full / axial = N / (h + w), full / window = N / M^2
    assert attention_flops("full", 64, 64, d) // attention_flops("axial", 64, 64, d) == 64 * 64 // 128
    assert attention_flops("full", 64, 64, d) // attention_flops("window", 64, 64, d, window=8) == 64
    # doubling the side multiplies full by 16, axial by 8, window by 4
    for kind, factor in [("full", 16), ("axial", 8), ("window", 4)]:
        assert attention_flops(kind, 32, 32, d, window=8) == factor * attention_flops(kind, 16, 16, d, window=8)
    # projections: 4 N d^2 per layer, two layers for axial
    assert attention_flops("full", 4, 4, d, projections=True) - attention_flops("full", 4, 4, d) == 4 * 16 * d * d
    assert attention_flops("axial", 4, 4, d, projections=True) - attention_flops("axial", 4, 4, d) == 8 * 16 * d * d
    with pytest.raises(ValueError, match="window"):
        attention_flops("window", 8, 8, d)
    with pytest.raises(ValueError, match="kind"):
        attention_flops("global", 8, 8, d)


def test_flops_count_matches_matmul_shapes(gen):
    """The analytic count equals the multiply-adds of the two matmuls the plain path runs."""
    b, h, w, c, heads, m = 1, 4, 8, 8, 2, 4
    x = torch.randn(b, h, w, c, generator=gen)
    hd = c // heads
    for kind, module in [("full", MultiHeadAttention(c, heads)), ("row", RowAttention(c, heads)),
                         ("column", ColumnAttention(c, heads)), ("window", WindowAttention(c, heads, m))]:
        inp = x.reshape(b, h * w, c) if kind == "full" else x
        _, weights = module(inp, return_weights=True)
        # each weight element costs head_dim multiply-adds in Q K^T and again in A V
        assert 2 * weights.numel() * hd == attention_flops(kind, h, w, c, window=m)
        assert weights.numel() == attention_matrix_elements(kind, h, w, heads=heads, batch=b, window=m)


def test_effective_cells_is_n_for_uniform_rows_one_for_one_hot_and_between_otherwise():
    from colorkit.attention import effective_cells

    uniform, one_hot = torch.full((3, 64), 1 / 64), torch.eye(64)[:3]
    assert torch.allclose(effective_cells(uniform), torch.full((3,), 64.0))
    assert torch.allclose(effective_cells(one_hot), torch.ones(3))
    two = torch.tensor([[0.5, 0.5, 0.0, 0.0]])                  # two equal cells: exactly 2
    mixed = torch.softmax(torch.randn(5, 16, generator=torch.Generator().manual_seed(0)), -1)
    assert torch.allclose(effective_cells(two), torch.tensor([2.0]))
    assert ((effective_cells(mixed) > 1) & (effective_cells(mixed) < 16)).all()
