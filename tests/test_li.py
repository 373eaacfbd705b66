"""Li et al.: FWSA, the DLSA block, patch merging, the hierarchical colorizer, its hints and complexity."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import colorkit
from colorkit import evaluate, models, presets
from colorkit.data import ToyWorld, lab_batch, sample_hints
from colorkit.models import li
from colorkit.train import Trainer, TrainConfig

SMOKE = presets.preset("li", "smoke")["model"]


def build(**changes):
    torch.manual_seed(0)
    return models.build({**SMOKE, **changes})


# --- FWSA (eq. 8, 11-12) ---------------------------------------------------------------------------

def naive_fwsa(fwsa, x, perm, size):
    """Attention of each cluster's real tokens among themselves, one cluster at a time, put back in place."""
    b, h, w, c = x.shape
    tokens = x.reshape(b, h * w, c)
    out = torch.zeros_like(tokens)
    for i in range(b):
        for start in range(0, h * w, size):
            members = perm[i, start:start + size]                                # the real tokens of one cluster
            out[i, members] = fwsa.attn(tokens[i, members][None], fast=False)[0]
    return out.reshape(b, h, w, c)


@pytest.mark.parametrize("shape", [(8, 8), (5, 7)])                              # 64 tokens = 4 x 16; 35 is not
@pytest.mark.parametrize("similarity", li.SIMILARITIES)
def test_fwsa_is_attention_inside_each_cluster_returned_in_token_order(shape, similarity):
    torch.manual_seed(0)
    fwsa = li.FeatureWindowAttention(16, 2, 4, similarity=similarity)
    x = torch.randn(2, *shape, 16)
    brightness = torch.rand(2, shape[0] * shape[1]) * 100
    perm = fwsa.clusters(x, brightness)
    assert torch.equal(perm.sort(dim=1).values, torch.arange(shape[0] * shape[1]).expand(2, -1))   # a permutation
    out = fwsa(x, brightness=brightness)
    torch.testing.assert_close(out, naive_fwsa(fwsa, x, perm, 16), atol=1e-5, rtol=1e-5)


def test_fwsa_brightness_clusters_gather_tokens_of_similar_lightness():
    fwsa = li.FeatureWindowAttention(8, 1, 2)                                    # clusters of 4 tokens
    x = torch.randn(1, 4, 4, 8)
    brightness = torch.tensor([[90.0, 10, 91, 11, 12, 92, 13, 93, 50, 51, 52, 53, 30, 31, 32, 33]])
    perm = fwsa.clusters(x, brightness)
    groups = [sorted(brightness[0, perm[0, g:g + 4]].tolist()) for g in range(0, 16, 4)]
    assert sorted(groups) == [[10, 11, 12, 13], [30, 31, 32, 33], [50, 51, 52, 53], [90, 91, 92, 93]]
    # a token only sees its cluster: changing a token of another cluster leaves it unchanged
    out = fwsa(x, brightness=brightness)
    far = perm[0, 12].item()                                                     # in the brightest cluster
    changed = x.clone().reshape(1, 16, 8)
    changed[0, far] += 5
    again = fwsa(changed.reshape(1, 4, 4, 8), brightness=brightness)
    darkest = perm[0, :4]
    torch.testing.assert_close(again.reshape(1, 16, 8)[0, darkest], out.reshape(1, 16, 8)[0, darkest])


def test_fwsa_needs_brightness_for_brightness_similarity():
    with pytest.raises(ValueError, match="brightness"):
        li.FeatureWindowAttention(8, 1, 2)(torch.randn(1, 4, 4, 8))
    with pytest.raises(ValueError, match="similarity"):
        li.FeatureWindowAttention(8, 1, 2, similarity="euclid")


# --- the block (eq. 6-9) and patch merging ------------------------------------------------------------

def test_dlsa_block_is_the_identity_when_every_branch_outputs_zero_and_residual_otherwise():
    torch.manual_seed(0)
    block = li.DLSABlock(16, 2, 4)
    z = torch.randn(2, 8, 8, 16)
    brightness = torch.rand(2, 64) * 100
    assert not torch.allclose(block(z, brightness=brightness), z)
    with torch.no_grad():
        for layer in (block.wsa.proj, block.swsa.proj, block.fwsa.attn.proj, block.mlp.fc2):
            layer.weight.zero_()
            layer.bias.zero_()
    torch.testing.assert_close(block(z, brightness=brightness), z)                 # pre-LN residuals (eq. 6-9)


def test_dlsa_block_applies_wsa_swsa_fwsa_and_mlp_in_the_paper_order():
    from colorkit.attention import shifted_window_attention

    torch.manual_seed(0)
    block = li.DLSABlock(16, 2, 4)
    z = torch.randn(1, 8, 8, 16)
    brightness = torch.rand(1, 64) * 100
    z1 = shifted_window_attention(block.norm1(z), block.wsa, 0) + z                # eq. 6
    z2 = shifted_window_attention(block.norm2(z1), block.swsa, 2) + z1             # eq. 7, shift M / 2
    z3 = block.fwsa(block.norm3(z2), brightness=brightness) + z2                  # eq. 8
    z4 = block.mlp.fc2(F.gelu(block.mlp.fc1(block.norm4(z3)))) + z3              # eq. 9, r = 4
    assert block.mlp.fc1.out_features == 64
    torch.testing.assert_close(block(z, brightness=brightness), z4)


@pytest.mark.parametrize("reduce", [False, True])
def test_patch_merging_concatenates_each_2x2_neighbourhood_in_swin_order(reduce):
    torch.manual_seed(0)
    merge = li.PatchMerging(3, reduce=reduce)
    x = torch.randn(2, 6, 4, 3)
    out = merge(x)
    assert out.shape == (2, 3, 2, 6 if reduce else 12)
    merge.norm = torch.nn.Identity()
    merge.reduction = None
    raw = merge(x)                                                              # (B, H/2, W/2, 4C) before any norm
    for k, (dy, dx) in enumerate([(0, 0), (1, 0), (0, 1), (1, 1)]):
        torch.testing.assert_close(raw[..., 3 * k:3 * k + 3], x[:, dy::2, dx::2])


# --- the model --------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(64, 64), (37, 53), (20, 90)])
def test_any_size_with_and_without_hints(shape):
    model = build().eval()
    L = torch.rand(2, 1, *shape) * 100
    hints = evaluate.fixed_hints(torch.rand(2, 3, *shape), 5)
    with torch.no_grad():
        plain = model(L)
        hinted = model(L, hint_ab=hints["hint_ab"], hint_mask=hints["hint_mask"])
    assert plain.shape == hinted.shape == (2, 2, *shape)
    assert torch.isfinite(hinted).all() and not torch.equal(plain, hinted)


def test_widths_grow_4x_without_reduction_and_2x_with_it():
    assert build().widths == [8, 32, 128, 512]
    assert models.build({"name": "li", "arch": "S"}).widths == [12, 48, 192, 768]
    assert build(merge_reduction=True).widths == [8, 16, 32, 64]


@pytest.mark.parametrize("stabilizer", li.STABILIZERS)
def test_every_ablation_builds_and_trains_a_step(stabilizer, tmp_path):
    for changes in ({"stabilizer": stabilizer}, {"merge_reduction": True}, {"similarity": "cosine"}):
        if stabilizer != "conv" and len(changes) == 1 and "stabilizer" not in changes:
            continue
        model = build(**changes)
        before = [p.detach().clone() for p in model.parameters()]
        Trainer({"model": model}, li.make_li_step(), ToyWorld(32, length=8), TrainConfig(steps=1, batch_size=4, device="cpu"),
                out_dir=tmp_path / f"{stabilizer}{len(changes)}{changes}").fit()
        assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_dupsampling_rebuilds_each_32x32_block_from_its_own_token():
    # without a spatial stabilizer, output block (i, j) is a linear function of encoder token (i, j) only
    model = build(stabilizer="linear").eval()
    x = torch.randn(1, model.widths[-1], 2, 3)
    with torch.no_grad():
        full = F.pixel_shuffle(model.dupsample(model.stabilizer(x)), 32)
        x2 = x.clone()
        x2[..., 1, 2] += 1.0
        moved = F.pixel_shuffle(model.dupsample(model.stabilizer(x2)), 32)
    changed = (full - moved).abs().sum(dim=1)[0] > 0                            # (64, 96)
    assert changed[32:, 64:].all() and not changed[:32].any() and not changed[:, :64].any()


def test_clusters_for_pictures_are_permutations_per_stage():
    model = build().eval()
    with torch.no_grad():
        _, clusters = model(torch.rand(1, 1, 64, 64) * 100, return_clusters=True)
    assert sorted(clusters) == [1, 2, 3, 4]
    for stage, (perm, size) in clusters.items():
        n = (64 // (4 * 2 ** (stage - 1))) ** 2
        assert torch.equal(perm.sort(dim=1).values[0], torch.arange(n)) and size <= 16


def test_bad_configs_and_inputs_are_named():
    with pytest.raises(ValueError, match="arch"):
        build(arch="B")
    with pytest.raises(ValueError, match="stabilizer"):
        build(stabilizer="conv5")
    with pytest.raises(ValueError, match="divisible"):
        build(heads=[3, 4, 8, 16])
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        build()(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="together"):
        build()(torch.rand(1, 1, 32, 32), hint_ab=torch.zeros(1, 2, 32, 32))


def test_complexity_of_t_and_s_at_224_is_near_the_papers_table_1():
    t = li.complexity(models.build({"name": "li", "arch": "T"}))
    s = li.complexity(models.build({"name": "li", "arch": "S"}))
    # the paper: Ours-T 1.01 and Ours-S 3.47 GFLOPs (fvcore's multiply-adds); ours within 25 %
    assert 0.75 * 1.01 < t["gmacs"] < 1.25 * 1.01
    assert 0.75 * 3.47 < s["gmacs"] < 1.25 * 3.47
    assert t["parameters"] < s["parameters"] < 86e6 * 0.6                          # < ViT-B (iColoriT) by 40 %


def test_complexity_counts_a_linear_layer_exactly():
    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Conv2d(4, 7, 1)

        def forward(self, L, *, hint_ab, hint_mask):
            return self.fc(torch.cat([L, hint_ab, hint_mask], 1))

    assert li.complexity(Tiny(), 10)["gmacs"] == pytest.approx(4 * 7 * 100 / 1e9)


# --- training, hints, checkpoints ----------------------------------------------------------------------

def train(tmp_path, steps, hints=li.TRAIN_HINTS, dataset=None, **model_changes):
    model = build(**model_changes)
    config = TrainConfig(steps=steps, batch_size=8, lr=2e-3, optimizer="adamw", log_every=1, device="cpu")
    summary = Trainer({"model": model}, li.make_li_step(hints=hints), dataset or ToyWorld(32, length=64),
                      config, out_dir=tmp_path).fit()
    losses = [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    return model, summary, losses


def test_training_reduces_the_huber_loss(tmp_path):
    # (with the final BatchNorm the mean color comes from biases, so the first tens of steps move slowly)
    _, _, losses = train(tmp_path, 120)
    first, last = np.mean([r["loss"] for r in losses[:10]]), np.mean([r["loss"] for r in losses[-10:]])
    assert last < 0.8 * first


def test_the_step_draws_the_papers_10_hints_or_a_range():
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, L, *, hint_ab, hint_mask):
            seen.append(hint_mask.sum(dim=(1, 2, 3)) / 4)                        # 2 x 2 hints
            return torch.zeros_like(hint_ab, requires_grad=True)

    class Ctx:
        models = {"model": Recorder()}

        def update(self, *args, **kwargs):
            pass

    batch = lab_batch(torch.rand(6, 3, 32, 32))
    li.make_li_step()(Ctx(), batch)
    assert torch.all(seen[-1] <= 10) and seen[-1].max() == 10                   # overlaps may merge a few
    torch.manual_seed(0)
    li.make_li_step(hints=(0, 3))(Ctx(), batch)
    assert torch.all(seen[-1] <= 3)
    with pytest.raises(ValueError, match="hints"):
        li.make_li_step(hints=(5, 2))


def test_the_model_honours_hints_every_hint_reaches_the_output_and_a_fit_uses_them():
    from tests.test_jiang import FlatColors

    model = build()
    val = FlatColors(8)
    lab = lab_batch(val.rgb)
    hint = evaluate.fixed_hints(val.rgb, 3)
    # the hints reach the output: moving one hint's color changes ab at initialisation
    moved = hint["hint_ab"].clone()
    moved[0] += 20 * hint["hint_mask"][0]
    with torch.no_grad():
        assert not torch.allclose(model(lab["L"], hint_ab=hint["hint_ab"], hint_mask=hint["hint_mask"]),
                                  model(lab["L"], hint_ab=moved, hint_mask=hint["hint_mask"]))
    # the hint path learns: eight flat images share one L, so only their hints can tell their colors
    # apart; fitted on them, the model with the hints is far closer than without (it cannot be without)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(100):
        loss = li.huber_loss(model(lab["L"], hint_ab=hint["hint_ab"], hint_mask=hint["hint_mask"]), lab["ab"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        free = model(lab["L"])
        hinted = model(lab["L"], hint_ab=hint["hint_ab"], hint_mask=hint["hint_mask"])
    assert (hinted - lab["ab"]).abs().mean() < 0.3 * (free - lab["ab"]).abs().mean()


def test_colorize_api_and_cli_accept_hints(tmp_path):
    _, summary, _ = train(tmp_path / "run", 2)
    loaded = colorkit.load(summary["checkpoint"])
    assert loaded.takes_hints and loaded.config["name"] == "li"
    gray = (np.random.default_rng(0).random((40, 30)) * 255).astype(np.uint8)
    plain = colorkit.colorize(loaded, gray)
    hinted = colorkit.colorize(loaded, gray, hints=[(20, 15, (255, 0, 0))])
    assert plain.shape == hinted.shape == (40, 30, 3) and not np.array_equal(plain, hinted)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    subprocess.run([sys.executable, "-m", "colorkit", "colorize", summary["checkpoint"], str(tmp_path / "gray.png"),
                    str(tmp_path / "out.png"), "--hint", "20,15,#ff0000"], check=True, capture_output=True)
    assert np.asarray(Image.open(tmp_path / "out.png")).shape == (40, 30, 3)


@pytest.mark.parametrize("name", ["smoke", "course", "workshop", "full"])
def test_presets_follow_the_paper_where_it_speaks(name):
    cfg = presets.preset("li", name)
    assert cfg["train"]["optimizer"] == "adamw" and cfg["train"]["schedule"] == "cosine"
    assert cfg["loss"]["hint_patch"] == 2 and models.build(cfg["model"]).takes_hints
    if name == "full":
        assert cfg["train"]["lr"] == 5e-4 and cfg["data"]["size"] == 224 and cfg["model"]["window"] == 7
        assert cfg["loss"]["hints"] == 10


def test_per_image_hint_psnr_averages_to_psnr_vs_hints():
    rgb = torch.stack([ToyWorld(32, length=6)[i]["rgb"] for i in range(6)])
    per_image = evaluate.hint_psnr_per_image(evaluate.mean_hint_color, rgb, 5, batch_size=4)
    assert per_image.shape == (6,)
    assert per_image.double().mean().item() == pytest.approx(evaluate.psnr_vs_hints(evaluate.mean_hint_color, rgb, [5])[5])


def test_hint_metrics_rank_the_truth_above_gray():
    rgb = ToyWorld(32, length=4)[0]["rgb"][None].repeat(2, 1, 1, 1)
    truth = lambda L, hint_ab, hint_mask: lab_batch(rgb)["ab"]                     # an oracle
    gray = lambda L, hint_ab, hint_mask: torch.zeros_like(hint_ab)
    best, worst = evaluate.hint_metrics(truth, rgb, 5, error_patch=8), evaluate.hint_metrics(gray, rgb, 5, error_patch=8)
    assert best["psnr"] > 40 and best["ssim"] > 0.99 and best["pev"] < 1e-3 and best["b_psnr"] > 40
    assert worst["psnr"] < best["psnr"] and worst["pev"] > best["pev"]
    assert worst["psnr"] == pytest.approx(evaluate.psnr_vs_hints(gray, rgb, [5])[5])


def test_brightness_clusters_depend_on_lightness_only_so_a_stage_clusters_once():
    fwsa = li.FeatureWindowAttention(8, 1, 4)
    brightness = torch.rand(2, 64) * 100
    first, other = fwsa.clusters(torch.randn(2, 8, 8, 8), brightness), fwsa.clusters(torch.randn(2, 8, 8, 8), brightness)
    assert torch.equal(first, other)
    block, x = li.DLSABlock(8, 1, 4), torch.randn(2, 8, 8, 8)
    torch.testing.assert_close(block(x, brightness=brightness), block(x, brightness=brightness, perm=first))


# --- the final norm (issue 15): the model must learn to propagate hints to unseen images ------------

def flat_batch(generator: torch.Generator, n: int = 16, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """n images of random smooth lightness, each one flat random color: only the hints tell the color."""
    L = 50 + 20 * F.interpolate(torch.randn(n, 1, 8, 8, generator=generator), size=size, mode="bilinear")
    ab = (torch.rand(n, 2, 1, 1, generator=generator) * 120 - 60).expand(n, 2, size, size).contiguous()
    return L, ab


def test_the_model_learns_to_paint_unseen_flat_images_in_their_hints_color():
    # Every batch is new, so nothing can be memorised: the model must read the 10 hints' color and
    # spread it. With Swin's final LayerNorm this stayed at the loss of predicting gray (the encoder
    # collapsed to one vector for all images, see the module's docstring); with the BatchNorm it learns.
    torch.manual_seed(0)
    model = models.build({**presets.preset("li", "course")["model"], "depths": [1, 1, 1, 1]})
    assert model.final_norm == "batch" and isinstance(model.norm, torch.nn.BatchNorm2d)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    generator = torch.Generator().manual_seed(1)
    losses, gray = [], []
    for _ in range(160):
        L, ab = flat_batch(generator)
        hints = sample_hints(ab, 10, patch=2)
        loss = li.huber_loss(model(L, hint_ab=hints["hint_ab"], hint_mask=hints["hint_mask"]), ab)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        gray.append(li.huber_loss(torch.zeros_like(ab), ab).item())
    assert np.mean(losses[-40:]) < 0.75 * np.mean(gray[-40:]), (np.mean(losses[-40:]), np.mean(gray[-40:]))
    # the encoder's output still differs from image to image (no collapse)
    with torch.no_grad():
        L, ab = flat_batch(generator)
        hints = sample_hints(ab, 10)
        encoded = model.eval().encode(L, hints["hint_ab"], hints["hint_mask"])
    assert encoded.std(dim=0).mean() > 0.1


def test_a_checkpoint_with_swins_final_layernorm_loads_as_saved(tmp_path):
    old, summary, _ = train(tmp_path / "run", 1, final_norm="layer")
    path = summary["checkpoint"]
    checkpoint = torch.load(path, weights_only=True)
    for entry in checkpoint["models"].values():
        del entry["config"]["final_norm"]                                 # saved before the option existed
    torch.save(checkpoint, path)
    loaded = colorkit.load(path)
    assert loaded.final_norm == "layer" and isinstance(loaded.norm, torch.nn.LayerNorm)
    L = torch.rand(2, 1, 32, 32) * 100
    with torch.no_grad():
        assert torch.allclose(loaded(L), old.eval()(L), atol=1e-5)
    current = build()
    assert models.legacy_config(current.config, current.state_dict()) == current.config


def test_the_model_colors_an_odd_non_square_image_with_hints_through_colorize():
    # trained at 32 x 32 (smoke), used on 45 x 71: padded to multiples of 32 inside, cropped back
    model = build().eval()
    gray = (np.random.default_rng(0).random((45, 71)) * 255).astype(np.uint8)
    hints = [(10, 60, (30, 80, 220)), (40, 5, (40, 160, 60))]
    plain, hinted = colorkit.colorize(model, gray), colorkit.colorize(model, gray, hints=hints)
    assert plain.shape == hinted.shape == (45, 71, 3) and hinted.dtype == np.uint8
    assert not np.array_equal(plain, hinted)
    # the lightness is the input's: colorize keeps L and changes only a and b
    lab = lab_batch(torch.from_numpy(hinted).permute(2, 0, 1)[None].float() / 255)["L"][0, 0]
    gray_L = lab_batch(torch.from_numpy(np.repeat(gray[..., None], 3, -1)).permute(2, 0, 1)[None].float() / 255)["L"][0, 0]
    assert (lab - gray_L).abs().mean() < 2.0
