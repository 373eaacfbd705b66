"""Swin window attention (Li et al. eq. 6-7, 10): WSA and SWSA against masked full-attention references."""

import pytest
import torch

from colorkit.attention import (
    MultiHeadAttention,
    SwinWindowAttention,
    relative_position_index,
    shifted_window_attention,
    shifted_window_mask,
)

ATOL = 1e-5


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


def make_attn(dim=8, heads=2, window=4, seed=0):
    torch.manual_seed(seed)
    attn = SwinWindowAttention(dim, heads, window)
    with torch.no_grad():  # a bias big enough to matter
        attn.relative_position_bias_table.normal_()
    return attn


def naive_index(m):
    index = torch.zeros(m * m, m * m, dtype=torch.long)
    for i in range(m * m):
        for j in range(m * m):
            yi, xi, yj, xj = i // m, i % m, j // m, j % m
            index[i, j] = (yi - yj + m - 1) * (2 * m - 1) + (xi - xj + m - 1)
    return index


def reference(x, attn, shift, window=None):
    """Full attention over the whole (padded, rolled) image, allowed pairs built by naive loops:
    same window, same original region (neighbours before the roll), real key (or itself)."""
    m = attn.window if window is None else window
    b, h, w, c = x.shape
    hp, wp = -(-h // m) * m, -(-w // m) * m
    xp = torch.zeros(b, hp, wp, c)
    xp[:, :h, :w] = x
    xr = torch.roll(xp, shifts=(-shift, -shift), dims=(1, 2))
    n = hp * wp
    allowed = torch.zeros(n, n, dtype=torch.bool)
    bias = torch.zeros(attn.heads, n, n)
    table, big = attn.relative_position_bias_table.detach(), attn.window
    for p in range(n):
        rp, cp = divmod(p, wp)
        for q in range(n):
            rq, cq = divmod(q, wp)
            same_window = (rp // m, cp // m) == (rq // m, cq // m)
            same_region = ((rp >= hp - shift) == (rq >= hp - shift)) and ((cp >= wp - shift) == (cq >= wp - shift))
            orig_r, orig_c = (rq + shift) % hp, (cq + shift) % wp
            real_key = orig_r < h and orig_c < w
            allowed[p, q] = p == q or (same_window and same_region and real_key)
            if same_window:  # offsets inside a window are global offsets
                bias[:, p, q] = table[(rp - rq + big - 1) * (2 * big - 1) + (cp - cq + big - 1)]
    out = MultiHeadAttention.forward(attn, xr.reshape(b, n, c), mask=allowed, bias=bias, fast=False)
    out = torch.roll(out.reshape(b, hp, wp, c), shifts=(shift, shift), dims=(1, 2))
    return out[:, :h, :w]


def naive_mask(hp, wp, m, shift, h, w):
    """(nW, M^2, M^2) from loops over windows and the tokens in them (rolled coordinates)."""
    masks = []
    for wy in range(hp // m):
        for wx in range(wp // m):
            mk = torch.zeros(m * m, m * m, dtype=torch.bool)
            for i in range(m * m):
                for j in range(m * m):
                    ri, ci = wy * m + i // m, wx * m + i % m
                    rj, cj = wy * m + j // m, wx * m + j % m
                    same = (ri >= hp - shift) == (rj >= hp - shift) and (ci >= wp - shift) == (cj >= wp - shift)
                    real = (rj + shift) % hp < h and (cj + shift) % wp < w
                    mk[i, j] = i == j or (same and real)
            masks.append(mk)
    return torch.stack(masks)


def test_relative_position_index_equals_loop():
    for m in (1, 2, 3, 7):
        idx = relative_position_index(m)
        assert idx.dtype == torch.long and idx.shape == (m * m, m * m)
        assert torch.equal(idx, naive_index(m))
        assert torch.equal(SwinWindowAttention(4, 2, m).relative_position_index, naive_index(m))
    # a smaller window inside a table for M reads the offsets it has with M's stride
    sub = relative_position_index(2, table_window=4)
    assert sub.max() < 49 and sub[0, 0] == 3 * 7 + 3  # offset (0, 0) is the table's centre


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("h,w", [(8, 8), (8, 12)])
def test_wsa_equals_block_masked_full_attention(gen, fast, h, w):
    attn = make_attn()
    x = torch.randn(2, h, w, 8, generator=gen)
    out = shifted_window_attention(x, attn, 0, fast=fast)
    torch.testing.assert_close(out, reference(x, attn, 0), atol=ATOL, rtol=0)


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("h,w", [(8, 8), (12, 8), (10, 11), (9, 13)])
def test_swsa_equals_rolled_region_masked_reference(gen, fast, h, w):
    attn = make_attn()
    x = torch.randn(2, h, w, 8, generator=gen)
    out = shifted_window_attention(x, attn, 2, fast=fast)
    assert out.shape == x.shape
    torch.testing.assert_close(out, reference(x, attn, 2), atol=ATOL, rtol=0)


def test_padding_wsa_matches_reference_and_ignores_padding(gen):
    attn = make_attn()
    x = torch.randn(1, 6, 7, 8, generator=gen)
    out = shifted_window_attention(x, attn, 0)
    torch.testing.assert_close(out, reference(x, attn, 0), atol=ATOL, rtol=0)
    # the top-left 4x4 window is all real: the same as attending inside it alone
    alone = shifted_window_attention(x[:, :4, :4], attn, 0)
    torch.testing.assert_close(out[:, :4, :4], alone, atol=ATOL, rtol=0)


@pytest.mark.parametrize("hp,wp,m,shift,h,w", [(8, 8, 4, 2, 8, 8), (12, 8, 4, 2, 10, 7), (6, 9, 3, 1, 6, 9),
                                               (8, 8, 4, 0, 7, 6), (8, 8, 4, 3, 8, 8)])
def test_mask_equals_naive(hp, wp, m, shift, h, w):
    mask = shifted_window_mask(hp, wp, m, shift, valid_height=h, valid_width=w)
    assert mask.dtype == torch.bool and mask.shape == ((hp // m) * (wp // m), m * m, m * m)
    assert torch.equal(mask, naive_mask(hp, wp, m, shift, h, w))


def test_mask_interior_windows_are_unmasked():
    mask = shifted_window_mask(12, 12, 4, 2)
    # window (0, 0) of the rolled image holds only original neighbours; the last one mixes 4 regions
    assert mask[0].all()
    assert mask[-1].sum() == 4 * 4 * 4  # four 2x2 regions, each 4 tokens seeing 4


def test_no_shift_for_small_maps(gen):
    attn = make_attn(window=4)
    for h, w in [(4, 4), (3, 5), (4, 9)]:
        x = torch.randn(2, h, w, 8, generator=gen)
        shifted = shifted_window_attention(x, attn, 2)
        # no shift, and the window clamped to min(H, W)
        torch.testing.assert_close(shifted, shifted_window_attention(x, attn, 0), atol=0, rtol=0)
        torch.testing.assert_close(shifted, reference(x, attn, 0, window=min(h, w)), atol=ATOL, rtol=0)
    # a window as big as the map is full attention with the bias
    x = torch.randn(1, 4, 4, 8, generator=gen)
    full = MultiHeadAttention.forward(attn, x.reshape(1, 16, 8), bias=attn.relative_position_bias(), fast=False)
    torch.testing.assert_close(shifted_window_attention(x, attn, 2), full.reshape(1, 4, 4, 8), atol=ATOL, rtol=0)


def test_swin_state_dict_loads_strict():
    dim, heads, m = 12, 3, 7
    swin = {
        "qkv.weight": torch.randn(3 * dim, dim), "qkv.bias": torch.randn(3 * dim),
        "proj.weight": torch.randn(dim, dim), "proj.bias": torch.randn(dim),
        "relative_position_bias_table": torch.randn((2 * m - 1) ** 2, heads),
        "relative_position_index": naive_index(m),
    }
    attn = SwinWindowAttention(dim, heads, m)
    assert set(attn.state_dict()) == set(swin)
    assert {k: tuple(v.shape) for k, v in attn.state_dict().items()} == {k: tuple(v.shape) for k, v in swin.items()}
    attn.load_state_dict(swin, strict=True)
    torch.testing.assert_close(attn.relative_position_bias_table, swin["relative_position_bias_table"])
    # bias[h, i, j] = table[index[i, j], h]
    bias = attn.relative_position_bias()
    assert bias.shape == (heads, m * m, m * m)
    torch.testing.assert_close(bias[1, 5, 30], swin["relative_position_bias_table"][naive_index(m)[5, 30], 1])


@pytest.mark.parametrize("shift", [0, 2])
def test_fast_equals_plain_math_and_weights(gen, shift):
    attn = make_attn()
    x = torch.randn(2, 10, 9, 8, generator=gen)
    fast = shifted_window_attention(x, attn, shift, fast=True)
    plain, weights = shifted_window_attention(x, attn, shift, return_weights=True)
    torch.testing.assert_close(fast, plain, atol=ATOL, rtol=0)
    assert weights.shape == (2 * 3 * 3, 2, 16, 16)
    torch.testing.assert_close(weights.sum(-1), torch.ones(18, 2, 16))
    # forbidden pairs get zero weight
    mask = shifted_window_mask(12, 12, 4, shift, valid_height=10, valid_width=9)
    assert (weights[:9][~mask[:, None].expand(-1, 2, -1, -1)] == 0).all()


def test_windows_mask_per_image_and_gradients(gen):
    attn = make_attn()
    windows = torch.randn(2 * 4, 16, 8, generator=gen, requires_grad=True)
    mask = shifted_window_mask(8, 8, 4, 2)
    out = attn(windows, mask)
    per_window = torch.cat([attn(windows[i:i + 1], mask[i % 4:i % 4 + 1], fast=False) for i in range(8)])
    torch.testing.assert_close(out, per_window, atol=ATOL, rtol=0)
    out.sum().backward()
    assert attn.relative_position_bias_table.grad is not None and windows.grad is not None


def test_errors(gen):
    attn = make_attn()
    with pytest.raises(ValueError, match="shift"):
        shifted_window_attention(torch.randn(1, 8, 8, 8), attn, 4)
    with pytest.raises(ValueError, match="shift"):
        shifted_window_attention(torch.randn(1, 8, 8, 8), attn, -1)
    with pytest.raises(ValueError, match="m \\* m tokens"):
        attn(torch.randn(2, 15, 8))
    with pytest.raises(ValueError, match="m \\* m tokens"):
        attn(torch.randn(2, 25, 8))
    with pytest.raises(ValueError, match="whole number"):
        attn(torch.randn(3, 16, 8), shifted_window_mask(8, 8, 4, 2))
    with pytest.raises(ValueError, match="boolean"):
        attn(torch.randn(4, 16, 8), torch.ones(4, 16, 16))
    with pytest.raises(ValueError, match="B, H, W, C"):
        shifted_window_attention(torch.randn(8, 8, 8), attn, 0)
    with pytest.raises(TypeError, match="SwinWindowAttention"):
        shifted_window_attention(torch.randn(1, 8, 8, 8), MultiHeadAttention(8, 2), 0)
    with pytest.raises(ValueError, match="multiple of window"):
        shifted_window_mask(10, 8, 4, 2)
