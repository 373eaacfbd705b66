"""Narkhede et al.: SAGAN self-attention, the spectral-norm U-Net, the staged training, the A/B test."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import colorkit
from colorkit import models, presets
from colorkit.attention import SelfAttention2d
from colorkit.data import ToyWorld
from colorkit.losses import FeatureLoss, RandomFeatures, VGG16Features, feature_network
from colorkit.models import narkhede
from colorkit.train import Trainer, TrainConfig
from colorkit.widgets import BlindABTest, blind_trials, tally

SMOKE = presets.preset("narkhede", "smoke")["model"]


def tiny_gan(seed=0):
    torch.manual_seed(seed)
    G = models.build(SMOKE)
    return G, narkhede.SACritic(**G.critic_kwargs)


def states(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


# --- the SAGAN layer -------------------------------------------------------------------------------

@pytest.mark.parametrize("spectral_norm", [True, False])
def test_self_attention_with_gamma_zero_is_the_identity(spectral_norm):
    layer = SelfAttention2d(16, spectral_norm=spectral_norm)
    x = torch.randn(2, 16, 5, 7)
    assert layer.gamma.item() == 0.0
    assert torch.equal(layer(x), x)
    y, weights = layer(x, return_weights=True)
    assert torch.equal(y, x) and weights.shape == (2, 35, 35)


def test_self_attention_matches_a_naive_loop_of_the_sagan_equations():
    torch.manual_seed(0)
    layer = SelfAttention2d(16, spectral_norm=False).eval()
    layer.gamma.data.fill_(0.8)
    x = torch.randn(1, 16, 3, 4)
    f = layer.key(x).flatten(2)[0]      # (C/8, N)
    g = layer.query(x).flatten(2)[0]
    h = layer.value(x).flatten(2)[0]    # (C, N)
    f, g, h = f.detach(), g.detach(), h.detach()
    n = x.shape[2] * x.shape[3]
    out = torch.zeros(16, n)
    for j in range(n):                  # output position j
        s = torch.tensor([float(f[:, i] @ g[:, j]) for i in range(n)])       # s_ij, eq. 1
        beta = torch.exp(s) / torch.exp(s).sum()
        out[:, j] = sum(beta[i] * h[:, i] for i in range(n))                 # o_j, eq. 2
    expected = 0.8 * out.view(1, 16, 3, 4) + x                               # eq. 3
    fast = layer(x)
    plain, weights = layer(x, fast=False, return_weights=True)
    torch.testing.assert_close(plain, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(1, n))


def test_self_attention_rejects_wrong_channels():
    with pytest.raises(ValueError, match=r"\(B, 16, H, W\)"):
        SelfAttention2d(16)(torch.randn(1, 8, 4, 4))
    with pytest.raises(ValueError, match="multiple of reduction"):
        SelfAttention2d(12)


def test_spectral_norm_keeps_the_largest_singular_value_near_one():
    G, D = tiny_gan()
    x = torch.rand(2, 1, 32, 32) * 100
    for _ in range(20):                 # each training forward pass runs one power iteration
        D(x, G(x))
    sigmas = []
    for module in list(G.modules()) + list(D.modules()):
        if isinstance(module, torch.nn.Conv2d) and hasattr(module, "parametrizations"):
            weight = module.weight.detach()                                  # the normalised weight
            sigmas.append(torch.linalg.matrix_norm(weight.flatten(1), ord=2).item())
            raw = module.parametrizations.weight.original.detach()
            assert torch.linalg.matrix_norm(raw.flatten(1), ord=2) > 0       # not trivially zero
    assert len(sigmas) > 10
    assert min(sigmas) > 0.95 and max(sigmas) < 1.05, (min(sigmas), max(sigmas))


# --- generator and critic --------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(32, 32), (37, 53), (20, 44)])
def test_generator_keeps_any_size_and_exposes_its_attention(shape):
    G, D = tiny_gan()
    G.eval()
    L = torch.rand(2, 1, *shape) * 100
    ab, weights, grid = G(L, return_attention=True)
    assert ab.shape == (2, 2, *shape) and ab.abs().max() <= narkhede.AB_SCALE
    # attention at 1/4 in the smoke config: the padded size over 4
    assert grid == (-(-shape[0] // 8) * 2, -(-shape[1] // 8) * 2)
    assert weights.shape == (2, grid[0] * grid[1], grid[0] * grid[1])
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, grid[0] * grid[1]))
    torch.testing.assert_close(G(L), ab)
    logits = D(L, ab)
    assert logits.shape[:2] == (2, 1) and logits.shape[-1] >= 1


def test_generator_rejects_bad_input_and_bad_config():
    G, _ = tiny_gan()
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        G(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="no hints"):
        G(torch.rand(1, 1, 32, 32), hint_ab=torch.zeros(1, 2, 32, 32))
    with pytest.raises(ValueError, match="attention_scale"):
        models.build({"name": "narkhede", "depth": 3, "attention_scale": 16})
    with pytest.raises(ValueError, match="multiple of 8"):
        models.build({"name": "narkhede", "width": 10, "depth": 3, "attention_scale": 2})
    with pytest.raises(ValueError, match="unknown phase"):
        narkhede.phase("nope", *tiny_gan())


# --- the training phases ---------------------------------------------------------------------------

def run_phase(tmp_path, name, G, D, steps=3, feature_loss=None, **train):
    models_, step, optimizers = narkhede.phase(name, G, D, feature_loss=feature_loss)
    config = TrainConfig(**{"steps": steps, "batch_size": 4, "lr": 1e-3, "log_every": 1, "device": "cpu",
                            "schedule": "constant", **train})
    return Trainer(models_, step, ToyWorld(32, length=32), config, out_dir=tmp_path / name,
                   optimizers=optimizers).fit()


def test_each_phase_updates_only_the_models_it_should(tmp_path):
    G, D = tiny_gan()
    g0, d0 = states(G), states(D)
    run_phase(tmp_path, "generator", G, D)
    g1, d1 = states(G), states(D)
    assert not same(g0, g1) and same(d0, d1)          # phase 1 is given only G: by construction D stays
    run_phase(tmp_path, "critic", G, D)
    g2, d2 = states(G), states(D)
    # G frozen: its weights, batch norm statistics and spectral norm vectors all stay put
    assert same(g1, g2) and not same(d1, d2)
    run_phase(tmp_path, "gan", G, D)
    g3, d3 = states(G), states(D)
    assert not same(g2, g3) and not same(d2, d3)


def test_gan_phase_uses_ttur_and_sagan_betas():
    G, D = tiny_gan()
    _, _, optimizers = narkhede.phase("gan", G, D, lr=1e-4, ttur=4.0)
    assert optimizers["generator"]["lr"] == 1e-4 and optimizers["critic"]["lr"] == 4e-4
    assert optimizers["generator"]["betas"] == optimizers["critic"]["betas"] == (0.0, 0.9)


def test_generator_pretraining_reduces_the_perceptual_loss(tmp_path):
    G, D = tiny_gan()
    summary = run_phase(tmp_path, "generator", G, D, steps=40, lr=2e-3)
    import json
    losses = [json.loads(line)["loss"]["loss_g"] for line in (tmp_path / "generator" / "metrics.jsonl").read_text().splitlines()
              if json.loads(line).get("kind") == "train"]
    assert summary["steps"] == 40
    assert np.mean(losses[-8:]) < 0.8 * np.mean(losses[:8])


def test_gan_phase_resumes_exactly_from_its_checkpoint(tmp_path):
    G, D = tiny_gan()
    run_phase(tmp_path / "straight", "gan", G, D, steps=4)
    G2, D2 = tiny_gan()
    run_phase(tmp_path / "resumed", "gan", G2, D2, steps=2)
    G3, D3 = tiny_gan(seed=1)                       # other weights: all must come from the checkpoint
    summary = run_phase(tmp_path / "resumed", "gan", G3, D3, steps=4)
    assert summary["resumed_from"] == 2 and summary["steps"] == 4
    assert same(states(G), states(G3)) and same(states(D), states(D3))


def test_snapshots_are_loadable_and_the_chosen_one_colorizes_through_the_cli(tmp_path):
    G, D = tiny_gan()
    val_rgb = torch.stack([ToyWorld(32, length=4, seed=5)[i]["rgb"] for i in range(4)])
    validator = narkhede.SnapshotValidator(val_rgb, tmp_path / "snapshots")
    models_, step, optimizers = narkhede.phase("gan", G, D)
    config = TrainConfig(steps=4, batch_size=4, val_every=2, log_every=1, device="cpu", schedule="constant")
    Trainer(models_, step, ToyWorld(32, length=16), config, out_dir=tmp_path / "gan", optimizers=optimizers,
            val_fn=validator).fit()
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == ["step_0000002.pt", "step_0000004.pt"]
    # the pretrained generator as a candidate, step 0, measured the same way in small batches
    untrained, _ = tiny_gan()
    metrics0 = narkhede.SnapshotValidator(val_rgb, tmp_path / "snapshots", batch_size=3).snapshot(untrained.eval(), 0)
    assert set(metrics0) == {"psnr", "ssim", "colorfulness"} and validator.path(0).exists()
    torch.testing.assert_close(colorkit.load(validator.path(0))(torch.full((1, 1, 32, 32), 50.0)),
                               untrained(torch.full((1, 1, 32, 32), 50.0)))
    loaded = colorkit.load(validator.path(4))
    G.eval()
    L = torch.rand(1, 1, 32, 32) * 100
    torch.testing.assert_close(loaded(L), G(L))
    gray = (np.random.default_rng(0).random((40, 30)) * 255).astype(np.uint8)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    subprocess.run([sys.executable, "-m", "colorkit", "colorize", str(validator.path(2)), str(tmp_path / "gray.png"),
                    str(tmp_path / "out.png")], check=True, capture_output=True)
    assert np.asarray(Image.open(tmp_path / "out.png")).shape == (40, 30, 3)


def test_critic_accuracy_counts_real_and_fake_decisions():
    G, _ = tiny_gan()
    rgb = torch.stack([ToyWorld(32, length=6)[i]["rgb"] for i in range(6)])

    class Judge(torch.nn.Module):
        """Calls an image real when its mean |ab| exceeds `threshold`."""

        def __init__(self, threshold):
            super().__init__()
            self.threshold = torch.nn.Parameter(torch.tensor(float(threshold)))

        def forward(self, L, ab):
            return (ab.abs().mean(dim=(1, 2, 3), keepdim=True) - self.threshold).expand(-1, 1, 4, 4)

    class Gray(torch.nn.Module):
        """A generator that predicts ab = 0 everywhere."""

        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))

        def forward(self, L):
            return torch.zeros(L.shape[0], 2, *L.shape[-2:])

    # real ToyWorld images have mean |ab| far above 1, the gray generator's is 0: a perfect judge
    assert narkhede.critic_accuracy(Judge(1.0), Gray(), rgb) == {"real": 1.0, "fake": 1.0, "accuracy": 1.0}
    assert narkhede.critic_accuracy(Judge(-1.0), Gray(), rgb) == {"real": 1.0, "fake": 0.0, "accuracy": 0.5}
    assert narkhede.critic_accuracy(Judge(1e6), G, rgb) == {"real": 0.0, "fake": 1.0, "accuracy": 0.5}


# --- choosing the snapshot -------------------------------------------------------------------------

def test_choose_snapshot_keeps_half_the_gain_over_gray_then_matches_colorfulness():
    records = [{"step": 10, "psnr": 20.2, "colorfulness": 36.0},
               {"step": 20, "psnr": 19.3, "colorfulness": 47.0},
               {"step": 30, "psnr": 18.9, "colorfulness": 58.0},     # below the bar: too distorted
               {"step": 40, "psnr": 19.5, "colorfulness": 45.0}]
    chosen = narkhede.choose_snapshot(records, reference_psnr=20.0, gray_psnr=18.0, true_colorfulness=60.0)
    assert chosen["psnr_bar"] == pytest.approx(19.0)
    assert chosen["admissible"] == [10, 20, 40] and chosen["step"] == 20
    # nothing admissible: the most faithful one
    low = [{"step": 5, "psnr": 17.0, "colorfulness": 60.0}, {"step": 6, "psnr": 17.5, "colorfulness": 10.0}]
    assert narkhede.choose_snapshot(low, reference_psnr=20.0, gray_psnr=18.0, true_colorfulness=60.0)["step"] == 6
    # overshooting colorfulness is as wrong as falling short
    loud = [{"step": 1, "psnr": 20.0, "colorfulness": 80.0}, {"step": 2, "psnr": 20.0, "colorfulness": 50.0}]
    assert narkhede.choose_snapshot(loud, reference_psnr=20.0, gray_psnr=18.0, true_colorfulness=60.0)["step"] == 2
    with pytest.raises(ValueError, match="lacks"):
        narkhede.choose_snapshot([{"step": 1}], reference_psnr=1, gray_psnr=0, true_colorfulness=1)


# --- losses ----------------------------------------------------------------------------------------

def test_feature_loss_is_johnsons_squared_distance_per_map_size_beside_the_pixel_term():
    """Johnson et al.'s eq. 2, ||phi(y_hat) - phi(y)||_2^2 / (C H W) per layer, computed naively here."""
    network = feature_network()
    torch.manual_seed(0)
    pred, target = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    a, b = torch.randn(2, 2, 32, 32), torch.randn(2, 2, 32, 32)
    loss, parts = FeatureLoss(network, layer_weights=[1.0, 0.5, 2.0])(pred, target, a, b)
    with torch.no_grad():
        maps = list(zip(network(pred), network(target)))
    naive = sum(w * ((p - t) ** 2).sum() / p[0].numel() / len(p) for w, (p, t) in zip([1.0, 0.5, 2.0], maps))
    torch.testing.assert_close(parts["feature"], naive)
    torch.testing.assert_close(parts["pixel"], (a - b).abs().mean())
    torch.testing.assert_close(loss, parts["pixel"] + parts["feature"])
    l1 = FeatureLoss(network, distance="l1", pixel_weight=0.0)(pred, target)[1]["feature"]
    torch.testing.assert_close(l1, sum((p - t).abs().mean() for p, t in maps))
    with pytest.raises(ValueError, match="distance must be"):
        FeatureLoss(network, distance="cosine")


def test_feature_loss_is_zero_for_identical_images_and_never_trains_its_network():
    loss_fn = FeatureLoss(feature_network())
    assert loss_fn.name.startswith("efficientnet-lite0 features")     # the pretrained network by default
    rgb = torch.rand(2, 3, 32, 32)
    loss, parts = loss_fn(rgb, rgb.clone())
    assert loss.item() == 0.0
    pred = rgb.clone().requires_grad_(True)
    loss, _ = loss_fn(pred.flip(-1), rgb)
    loss.backward()
    assert pred.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in loss_fn.network.parameters())
    loss_fn.train()
    assert not loss_fn.network.training
    # the stand-in is the same on every run
    a, b = RandomFeatures(seed=3), RandomFeatures(seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_vgg16_features_load_a_torchvision_layout_file_and_reject_others(tmp_path):
    reference = RandomFeatures(width=64, seed=1)            # VGG16's own widths
    state = {f"features.{k}": v for k, v in reference.features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)        # ignored
    torch.save(state, tmp_path / "vgg16.pth")
    vgg = VGG16Features(tmp_path / "vgg16.pth")
    x = torch.rand(1, 3, 32, 32)
    for a, b in zip(vgg(x), reference(x)):
        torch.testing.assert_close(a, b)
    assert [f.shape[1] for f in vgg(x)] == [64, 128, 256]
    with pytest.raises(FileNotFoundError, match="no weights file"):
        VGG16Features(tmp_path / "missing.pth")
    torch.save({"features.0.weight": torch.zeros(3, 3, 3, 3)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not a VGG16 state dict"):
        VGG16Features(tmp_path / "bad.pth")


# --- the blind A/B test ----------------------------------------------------------------------------

def test_blind_trials_pair_every_model_on_every_image_with_random_sides():
    trials = blind_trials(["a", "b", "c"], 20, seed=0)
    assert len(trials) == 20 * 3
    assert len({(t.image, frozenset((t.left, t.right))) for t in trials}) == 60
    left_counts = {m: sum(t.left == m for t in trials) for m in "abc"}
    assert all(10 <= n <= 30 for n in left_counts.values())              # sides are not fixed per model
    assert trials == blind_trials(["a", "b", "c"], 20, seed=0)
    assert trials != blind_trials(["a", "b", "c"], 20, seed=1)
    with pytest.raises(ValueError, match="two distinct"):
        blind_trials(["a", "a"], 3)


def test_tally_and_the_test_state():
    images = {"gray": np.zeros((3, 4, 4, 3), np.uint8), "color": np.full((3, 4, 4, 3), 200, np.uint8)}
    test = BlindABTest(images, seed=0)
    answered = 0
    while (step := test.current()) is not None:
        trial, left, right = step
        assert np.array_equal(left, images[trial.left][trial.image])
        # an observer who always picks the brighter image
        test.choose("left" if left.mean() > right.mean() else "right")
        answered += 1
    assert answered == 3 and test.done
    result = test.results()
    assert result["wins"] == {"color": 3, "gray": 0} and result["shown"] == {"color": 3, "gray": 3}
    assert result["rate"]["color"] == 1.0
    test.undo()
    assert test.results()["answered"] == 2
    with pytest.raises(ValueError, match="'left' or 'right'"):
        test.choose("middle")
    assert tally(test.trials, ["left", "right"])["left_rate"] == 0.5
    with pytest.raises(ValueError, match="same images and size"):
        BlindABTest({"a": np.zeros((2, 4, 4, 3), np.uint8), "b": np.zeros((3, 4, 4, 3), np.uint8)})


def test_the_ab_widget_builds_and_clicks_drive_the_same_state():
    pytest.importorskip("ipywidgets")
    from colorkit.widgets import ab_test_widget

    images = {"a": np.zeros((2, 4, 4, 3), np.uint8), "b": np.full((2, 4, 4, 3), 9, np.uint8)}
    test = BlindABTest(images)
    box = ab_test_widget(test)
    left_button = box.children[1].children[0]
    left_button.click()
    assert test.choices == ["left"]
    box.children[1].children[2].click()           # undo
    assert test.choices == []
