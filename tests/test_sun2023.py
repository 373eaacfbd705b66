"""Sun et al.'s coarse colorizer (colorkit.models.sun2023) and the axial block it is built from."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import colorkit
from colorkit import models
from colorkit.attention import AxialBlock, MultiHeadAttention, RelativePositionBias, scaled_dot_product_attention
from colorkit.data import ToyWorld, toyworld_batch
from colorkit.models.sun2023 import ColorTransformer, coarse_batch, shift_down, shift_right
from colorkit.train import Trainer, TrainConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


@pytest.fixture
def one_thread():
    """Sampling runs thousands of tiny ops, where a second intra-op thread only adds synchronisation
    (on a busy 2-core machine, up to 100x slower); the results do not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randomized(model: torch.nn.Module, seed: int = 0, std: float = 0.3) -> torch.nn.Module:
    """Give the zero-initialised parts (heads, conditioning, position bias) random values, so that
    every path through the model carries signal and a dependence cannot hide behind a zero weight."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.abs().any():
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def small_model(size=8, **kwargs):
    config = {"name": "sun2023", "dim": 16, "heads": 2, "image_size": size, **kwargs}
    return randomized(models.build(config)).eval()


# --- the axial block ---------------------------------------------------------------------------

def test_relative_bias_table_and_lookup():
    rel = RelativePositionBias(heads=3, max_len=6)
    assert rel.table.shape == (3, 11)                      # 2 * max_len - 1 offsets per head
    with torch.no_grad():
        rel.table.copy_(torch.arange(33.0).view(3, 11))
    bias = rel(4)
    assert bias.shape == (3, 4, 4)
    for h in range(3):
        for i in range(4):
            for j in range(4):
                assert bias[h, i, j] == rel.table[h, j - i + 5]
    assert rel(2, 5).shape == (3, 2, 5)
    with pytest.raises(ValueError, match="max_len=6"):
        rel(7)


@pytest.mark.parametrize("use_mask", [False, True])
def test_bias_fast_path_equals_plain_math_and_bias_moves_the_scores(gen, use_mask):
    mha = MultiHeadAttention(8, 2)
    x = torch.randn(2, 3, 5, 8, generator=gen)
    bias = torch.randn(2, 5, 5, generator=gen)
    mask = torch.ones(5, 5, dtype=torch.bool).tril() if use_mask else None
    fast = mha(x, mask=mask, bias=bias)
    plain = mha(x, mask=mask, bias=bias, fast=False)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(fast, mha(x, mask=mask))
    # the bias enters as softmax(q k / sqrt(d) + b)
    q, k, v = (torch.randn(4, 6, generator=gen) for _ in range(3))
    b = torch.randn(4, 4, generator=gen)
    expected = torch.softmax(q @ k.T / math.sqrt(6) + b, dim=-1) @ v
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v, bias=b), expected)
    with pytest.raises(TypeError, match="float"):
        scaled_dot_product_attention(q, k, v, bias=b > 0)
    with pytest.raises(ValueError, match="does not broadcast"):
        scaled_dot_product_attention(q, k, v, bias=torch.zeros(3, 3))


@pytest.mark.parametrize("axis", ["row", "column"])
@pytest.mark.parametrize("fast", [True, False])
def test_masked_block_output_at_j_ignores_inputs_after_j(gen, axis, fast):
    block = randomized(AxialBlock(8, 2, axis, causal=True, max_len=6))
    x = torch.randn(2, 6, 6, 8, generator=gen)
    out = block(x, fast=fast)
    for j in range(5):
        x2 = x.clone()
        if axis == "row":
            x2[:, :, j + 1:] += torch.randn(2, 6, 5 - j, 8, generator=gen)
            changed = block(x2, fast=fast)
            torch.testing.assert_close(changed[:, :, :j + 1], out[:, :, :j + 1], atol=1e-6, rtol=0)
            assert not torch.allclose(changed[:, :, j + 1:], out[:, :, j + 1:])
        else:
            x2[:, j + 1:] += torch.randn(2, 5 - j, 6, 8, generator=gen)
            changed = block(x2, fast=fast)
            torch.testing.assert_close(changed[:, :j + 1], out[:, :j + 1], atol=1e-6, rtol=0)


def test_block_is_eq5_pre_norm(gen):
    block = randomized(AxialBlock(8, 2, "row", relative_bias=False))
    x = torch.randn(2, 3, 4, 8, generator=gen)
    # x' = MSA(LN(x)) + x ;  x^ = MLP(LN(x')) + x'                          (eq. 5)
    x1 = block.attn(block.attn_norm(x)) + x
    torch.testing.assert_close(block(x), block.mlp(block.mlp_norm(x1)) + x1)
    unmasked = randomized(AxialBlock(8, 2, "column", max_len=3))
    assert unmasked.bias.table.shape == (2, 5)
    x = torch.randn(2, 3, 4, 8, generator=gen)
    assert not torch.allclose(unmasked(x)[:, 0], unmasked(torch.cat([x[:, :1], x[:, 1:].flip(-1)], 1))[:, 0])  # unmasked: row 0 sees rows below


def coltran_block_by_hand(block, x, c, p):
    """ColTran's conditioned layer (sec. 4.1) written out with plain tensor math, rows as sequences
    (a column block: the same on the transposed image; the pooled context is not transposed)."""
    if block.axis == "column":
        return coltran_block_by_hand_rows(block, x.transpose(1, 2), c.transpose(1, 2), p).transpose(1, 2)
    return coltran_block_by_hand_rows(block, x, c, p)


def coltran_block_by_hand_rows(block, x, c, p):
    n, d = x.shape[-1], block.attn.head_dim
    ln = lambda t: torch.nn.functional.layer_norm(t, (n,))
    weights = block.pool_logits[:p.shape[1], :p.shape[2]].flatten().softmax(0)
    pooled = (p.flatten(1, 2) * weights[None, :, None]).sum(1)                          # (B, Cp)
    s1, t1, s2, t2 = (u[:, None, None] for u in block.ln_condition(pooled).chunk(4, -1))
    h = ln(x) * (1 + s1) + t1                                                            # cLN
    qkv = h @ block.attn.qkv.weight.T + block.attn.qkv.bias
    sq, tq = (c @ block.attn_condition.weight.T + block.attn_condition.bias).chunk(2, -1)
    qkv = qkv * (1 + sq) + tq                                                            # cAtt
    q, k, v = (t.unflatten(-1, (block.attn.heads, d)) for t in qkv.chunk(3, -1))        # (B, H, W, heads, d)
    scores = torch.einsum("bhigd,bhjgd->bhgij", q, k) / d ** 0.5                        # along each row
    out = torch.einsum("bhgij,bhjgd->bhigd", scores.softmax(-1), v).flatten(-2)
    x = x + block.attn.proj(out)
    m = block.mlp(ln(x) * (1 + s2) + t2)
    sm, tm = (c @ block.mlp_condition.weight.T + block.mlp_condition.bias).chunk(2, -1)
    return x + m * (1 + sm) + tm                                                         # cMLP


@pytest.mark.parametrize("axis", ["row", "column"])
def test_coltran_conditioning_matches_its_equations_and_starts_as_the_plain_block(gen, axis):
    x = torch.randn(2, 3, 4, 8, generator=gen)
    c, p = torch.randn(2, 3, 4, 5, generator=gen), torch.randn(2, 6, 7, 6, generator=gen)
    plain = AxialBlock(8, 2, axis, relative_bias=False, max_len=8)
    conditioned = AxialBlock(8, 2, axis, relative_bias=False, max_len=8, context_dim=5, pooled_dim=6,
                             conditional_attention=True)
    conditioned.load_state_dict(plain.state_dict(), strict=False)       # the shared weights
    with torch.no_grad():
        torch.testing.assert_close(conditioned(x, context=c, pooled=p), plain(x))   # zero-initialised
        torch.testing.assert_close(conditioned.pool(p), p.mean(dim=(1, 2)))         # uniform spatial weights at start
        randomized(conditioned)
        torch.testing.assert_close(conditioned(x, context=c, pooled=p), coltran_block_by_hand(conditioned, x, c, p),
                                   atol=1e-5, rtol=1e-5)
        out = conditioned(x, context=c, pooled=p)
        assert not torch.allclose(conditioned(x, context=c * 0, pooled=p), out)
        assert not torch.allclose(conditioned(x, context=c, pooled=p * 0), out)
        # the pooled context reaches every pixel: a change at one far corner of p moves them all
        moved = p.clone(); moved[:, 5, 6] += 1.0
        assert ((conditioned(x, context=c, pooled=moved) - out).abs().amax(dim=-1) > 1e-6).all()
    with pytest.raises(ValueError, match="context"):
        conditioned(x, pooled=p)
    with pytest.raises(ValueError, match="pooled"):
        conditioned(x, context=c)
    with pytest.raises(ValueError, match="pooled must be"):
        conditioned(x, context=c, pooled=torch.randn(2, 9, 9, 6))
    with pytest.raises(ValueError, match="context"):
        plain(x, context=c)
    with pytest.raises(ValueError, match="conditional_attention needs"):
        AxialBlock(8, 2, conditional_attention=True)


# --- the model: shapes, causality, loss ----------------------------------------------------------

def test_shifts_move_by_one_and_pad_with_zeros():
    x = torch.arange(2 * 3 * 4 * 1.0).view(2, 3, 4, 1)
    assert torch.equal(shift_down(x)[:, 1:], x[:, :-1]) and not shift_down(x)[:, 0].any()
    assert torch.equal(shift_right(x)[:, :, 1:], x[:, :, :-1]) and not shift_right(x)[:, :, 0].any()


def test_builds_from_config_and_shapes():
    model = models.build({"name": "sun2023", "dim": 16, "heads": 2, "image_size": 16})
    assert isinstance(model, ColorTransformer) and model.config["decoder_weight"] == 0.99
    assert models.build(model.config).config == model.config
    L = torch.rand(3, 1, 16, 16) * 100
    y = torch.randint(0, 512, (3, 16, 16))
    dec, aux = model.logits(L, y)
    assert dec.shape == aux.shape == (3, 512, 16, 16)
    ab = model(L)
    assert ab.shape == (3, 2, 16, 16) and ab.abs().max() < 128
    assert model.predict_parallel(L).shape == (3, 16, 16)
    assert model.sample(L[:, :, :4, :4], generator=torch.Generator().manual_seed(0)).shape == (3, 4, 4)
    with pytest.raises(ValueError, match="image_size=16"):
        model(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="palette_index"):
        model.logits(L, y[:, :8])


def test_decoder_is_causal_in_raster_order(gen, one_thread):
    """Changing pixel p's color never changes the predicted distribution at p or any pixel before it."""
    model = small_model(8)
    L = torch.rand(2, 1, 8, 8, generator=gen) * 100
    y = torch.randint(0, 512, (2, 8, 8), generator=gen)
    with torch.no_grad():
        before = model.logits(L, y)[0].flatten(2)                 # (B, 512, 64) raster order
        for p in [0, 7, 8, 19, 36, 50, 63] + torch.randint(0, 64, (5,), generator=gen).tolist():
            y2 = y.clone()
            y2.view(2, 64)[:, p] = (y2.view(2, 64)[:, p] + 1 + torch.randint(0, 510, (1,), generator=gen)) % 512
            after = model.logits(L, y2)[0].flatten(2)
            assert torch.equal(after[..., :p + 1], before[..., :p + 1]), f"pixel {p} leaks backwards"
            if p < 63:   # and the model does use it: the next pixels change
                assert not torch.allclose(after[..., p + 1:], before[..., p + 1:])


def test_untrained_model_costs_log2_512_bits_per_pixel():
    model = models.build({"name": "sun2023", "dim": 16, "heads": 2, "image_size": 16})
    batch = toyworld_batch(4, 16)
    L, y = coarse_batch(batch, 16)
    with torch.no_grad():
        losses = model.loss(L, y)
    for key in ("loss", "bpd_decoder", "bpd_aux"):
        assert abs(float(losses[key]) - math.log2(512)) < 0.05
    # the bits of a confident, correct prediction are ~0 and eq. 7 weighs the two heads 0.99 / 0.01
    dec = torch.nn.functional.one_hot(y, 512).permute(0, 3, 1, 2).float() * 50
    aux = torch.zeros_like(dec)
    from colorkit.models.sun2023 import coarse_loss
    parts = coarse_loss(dec, aux, y, 0.99)
    assert float(parts["bpd_decoder"]) < 1e-6
    assert abs(float(parts["loss"]) - 0.01 * 9) < 1e-4


def test_coarse_batch_downsamples_other_sizes():
    batch = {"rgb": toyworld_batch(2, 32)["rgb"]}
    L, y = coarse_batch(batch, 16)
    assert L.shape == (2, 1, 16, 16) and y.shape == (2, 16, 16) and y.dtype == torch.long


# --- sampling ------------------------------------------------------------------------------------

@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_cached_sampling_equals_naive_sampling(gen, temperature, one_thread):
    # float64, so that float rounding (the two paths run the inner decoder on differently shaped
    # tensors) cannot move a uniform across a class boundary; see ColorTransformer.sample
    model = small_model(12).double()
    L = (torch.rand(2, 1, 12, 12, generator=gen) * 100).double()
    naive = model.sample(L, temperature=temperature, generator=torch.Generator().manual_seed(3), cached=False)
    cached = model.sample(L, temperature=temperature, generator=torch.Generator().manual_seed(3), cached=True)
    assert torch.equal(naive, cached)
    assert naive.unique().numel() > 20                          # really sampled, not a constant
    other = model.sample(L, temperature=temperature, generator=torch.Generator().manual_seed(4))
    assert not torch.equal(other, cached)


def test_sampling_is_batched_and_temperature_sharpens(gen, one_thread):
    model = small_model(8)
    L = torch.rand(3, 1, 8, 8, generator=gen) * 100
    both = model.sample(L, generator=torch.Generator().manual_seed(0))
    assert both.shape == (3, 8, 8)
    # T = 0 is the argmax of each conditional: deterministic, and the decoder's own greedy choice
    greedy = model.sample(L, temperature=0)
    assert torch.equal(greedy, model.sample(L, temperature=0))
    with torch.no_grad():
        dec, _ = model.logits(L, greedy)
    assert torch.equal(dec.argmax(1), greedy)
    # low temperature lands closer to the greedy path than T = 1
    cold = model.sample(L, temperature=0.05, generator=torch.Generator().manual_seed(0))
    assert (cold == greedy).float().mean() > (both == greedy).float().mean()
    with pytest.raises(ValueError, match="temperature"):
        model.sample(L, temperature=-1)


# --- training and inference through the engine ---------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("sun2023")
    torch.manual_seed(0)
    model = models.build({"name": "sun2023", "dim": 32, "heads": 2, "image_size": 16})
    config = TrainConfig(steps=40, batch_size=8, lr=3e-3, log_every=1, device="cpu", seed=0)
    summary = Trainer({"model": model}, models.training_step("sun2023"), ToyWorld(16, length=256), config,
                      out_dir=out).fit()
    return model, summary, out


def test_loss_decreases_on_toyworld(trained):
    import json
    _, summary, out = trained
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"]["loss"] for r in records if r["kind"] == "train"]
    assert set(summary["losses"]) >= {"loss", "bpd_decoder", "bpd_aux"}
    assert np.mean(losses[:3]) > 8.5                       # starts at the uniform 9 bits
    assert np.mean(losses[-5:]) < np.mean(losses[:3]) - 2.0


def test_colorize_and_load_work_on_its_checkpoint(trained):
    model, summary, _ = trained
    loaded = colorkit.load(summary["checkpoint"])
    assert isinstance(loaded, ColorTransformer) and loaded.image_size == 16
    L = torch.rand(2, 1, 16, 16) * 100
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(L), model(L))
    out = colorkit.colorize(loaded, np.random.default_rng(0).integers(0, 256, (20, 30), dtype=np.uint8))
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8


def test_sampling_benchmark_quick_runs():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sun2023_sampling.py"), "--quick", "--threads", "1"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "cached sampling" in done.stdout and "naive sampling" in done.stdout and "speed-up" in done.stdout


def test_the_models_coloring_is_its_decoder_by_default_with_the_parallel_head_as_a_named_option():
    """forward (so colorize and evaluate) decodes as the config says: "greedy" is the autoregressive
    decoder at temperature 0, "sample" a seeded draw at `temperature`, "parallel" the auxiliary head."""
    config = {"name": "sun2023", "dim": 8, "heads": 2, "image_size": 8}
    greedy = randomized(models.build(config)).eval()
    assert greedy.config["decode"] == "greedy"
    L = torch.rand(2, 1, 8, 8) * 100
    with torch.no_grad():
        assert torch.equal(greedy.colors(L), greedy.sample(L, temperature=0.0))
        drawn = randomized(models.build({**config, "decode": "sample", "temperature": 0.7, "sample_seed": 3})).eval()
        assert torch.equal(drawn.colors(L), drawn.sample(L, temperature=0.7, generator=torch.Generator().manual_seed(3)))
        assert torch.equal(drawn.colors(L), drawn.colors(L))                    # one call, one fixed coloring
        state = torch.get_rng_state()
        greedy(L)
        assert torch.equal(torch.get_rng_state(), state)                      # coloring draws nothing from the global RNG
        fast = randomized(models.build({**config, "decode": "parallel"})).eval()
        assert torch.equal(fast.colors(L), fast.predict_parallel(L))
        assert not torch.equal(greedy.colors(L), greedy.predict_parallel(L))    # two different colorings
        expected = colorkit.color.rgb_to_lab(colorkit.color.palette_to_rgb(greedy.colors(L)))[:, 1:]
        torch.testing.assert_close(greedy(L), expected)
    with pytest.raises(ValueError, match="decode must be one of"):
        models.build({**config, "decode": "beam"})
