"""Jiang et al. (SMSANet, automatic) and Zhang et al.'s user-guided network: attention slots, the
Huber and salient losses, hints, Zhang et al.'s released weights, hint curves."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import colorkit
from colorkit import evaluate, models, presets
from colorkit.color import lab_to_rgb
from colorkit.data import ToyWorld, lab_batch
from colorkit.models import jiang
from colorkit.train import Trainer, TrainConfig

SMOKE = presets.preset("jiang", "smoke")["model"]
ZHANG = presets.preset("zhang2017", "smoke")["model"]


def build(**changes):
    torch.manual_seed(0)
    return models.build({**SMOKE, **changes})


def build_zhang(**changes):
    torch.manual_seed(0)
    return models.build({**ZHANG, **changes})


@pytest.mark.parametrize("attention", jiang.ATTENTIONS)
@pytest.mark.parametrize("shape", [(32, 32), (37, 45)])
def test_smsanet_is_automatic_at_any_size_for_every_attention(attention, shape):
    model = build(attention=attention).eval()
    assert not model.takes_hints and model.conv1[0].in_channels == 1
    L = torch.rand(2, 1, *shape) * 100
    ab = model(L)
    assert ab.shape == (2, 2, *shape) and ab.abs().max() <= 110
    with pytest.raises(ValueError, match="take no hints.*zhang2017"):
        model(L, hint_ab=torch.zeros(2, 2, *shape), hint_mask=torch.zeros(2, 1, *shape))


@pytest.mark.parametrize("attention", [None, "smsa"])
@pytest.mark.parametrize("shape", [(32, 32), (37, 45)])
def test_zhangs_user_guided_network_reads_hints(attention, shape):
    model = build_zhang(attention=attention).eval()
    assert model.takes_hints and model.conv1[0].in_channels == 4
    L = torch.rand(2, 1, *shape) * 100
    ab = model(L)
    assert ab.shape == (2, 2, *shape) and ab.abs().max() <= 110
    hint_ab, hint_mask = torch.zeros(2, 2, *shape), torch.zeros(2, 1, *shape)
    torch.testing.assert_close(model(L, hint_ab=hint_ab, hint_mask=hint_mask), ab)   # no hint = zeros
    hint_ab[:, 0, 3:5, 3:5], hint_mask[:, :, 3:5, 3:5] = 60.0, 1.0
    assert not torch.allclose(model(L, hint_ab=hint_ab, hint_mask=hint_mask), ab)


def test_attention_sits_after_the_blocks_it_names_and_smsa_exposes_its_maps():
    model = build(attention="smsa", attention_after=(5, 7)).eval()
    assert sorted(model.attention) == ["5", "7"]
    _, maps = model(torch.rand(1, 1, 32, 32) * 100, return_maps=True)
    assert sorted(maps) == [5, 7]
    assert build(attention=None).attention_after == () and len(build(attention=None).attention) == 0
    with pytest.raises(ValueError, match="attention must be one of"):
        build(attention="transformer")
    with pytest.raises(ValueError, match="hint_ab and hint_mask together"):
        build_zhang()(torch.rand(1, 1, 32, 32), hint_ab=torch.zeros(1, 2, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        build()(torch.rand(1, 3, 32, 32))


def test_huber_and_salient_losses_follow_eq_5_and_6():
    pred, true = torch.tensor([[0.0, 0.5, 3.0]]), torch.tensor([[0.0, 0.0, 0.0]])
    # 1/2 d^2 below delta = 1, |d| - 1/2 above, averaged
    assert jiang.huber_loss(pred, true).item() == pytest.approx((0 + 0.125 + 2.5) / 3)
    true_ab, pred_ab = torch.full((1, 2, 2, 2), 10.0), torch.full((1, 2, 2, 2), 4.0)
    fg_true = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    fg_pred = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    # pixel (0,0): |10 - 4| = 6; (0,1): |0 - 4| = 4; others 0; two channels each -> mean 10 * 2 / 8
    assert jiang.salient_loss(pred_ab, true_ab, fg_pred, fg_true).item() == pytest.approx(2.5)


def train(tmp_path, steps, alpha=1.0, hint_p=jiang.HINT_P, zhang=False, **model_changes):
    model = (build_zhang if zhang else build)(**model_changes)
    config = TrainConfig(steps=steps, batch_size=8, lr=2e-3, log_every=1, device="cpu")
    summary = Trainer({"model": model}, jiang.make_smsanet_step(alpha=alpha, hint_p=hint_p), ToyWorld(32, length=64),
                      config, out_dir=tmp_path).fit()
    losses = [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    return model, summary, losses


def test_training_reduces_the_loss_and_logs_the_salient_term_only_when_used(tmp_path):
    _, _, losses = train(tmp_path / "sal", 30, alpha=1.0)
    assert all("loss_sal" in r for r in losses)
    first, last = np.mean([r["loss"] for r in losses[:6]]), np.mean([r["loss"] for r in losses[-6:]])
    assert last < 0.8 * first
    _, _, plain = train(tmp_path / "huber", 2, alpha=0.0)
    assert all("loss_sal" not in r for r in plain)


class FlatColors(torch.utils.data.Dataset):
    """Images of one random flat color each at L = 60: nothing in L says the color, only the hints do."""

    def __init__(self, n, size=32, seed=0):
        gen = torch.Generator().manual_seed(seed)
        ab = (torch.rand(n, 2, generator=gen) - 0.5) * 60                        # |a|, |b| <= 30: in gamut at L = 60
        lab = torch.cat([torch.full((n, 1), 60.0), ab], dim=1)[:, :, None, None].expand(n, 3, size, size)
        self.rgb = lab_to_rgb(lab.contiguous())

    def __len__(self):
        return len(self.rgb)

    def __getitem__(self, i):
        return {"rgb": self.rgb[i]}


def test_zhangs_network_honours_hints_after_a_short_training(tmp_path):
    model = build_zhang(width=8)
    config = TrainConfig(steps=150, batch_size=8, lr=2e-3, log_every=10, device="cpu")
    Trainer({"model": model}, jiang.make_smsanet_step(alpha=0.0, hint_p=0.2), FlatColors(256), config,
            out_dir=tmp_path).fit()
    model.eval()
    val = FlatColors(8, seed=1)
    lab = lab_batch(val.rgb)
    hint = evaluate.fixed_hints(val.rgb, 3)
    with torch.no_grad():
        free = model(lab["L"])
        hinted = model(lab["L"], hint_ab=hint["hint_ab"], hint_mask=hint["hint_mask"])
    # with three hints of the true color the whole image moves toward it; without, it can only guess
    assert (hinted - lab["ab"]).abs().mean() < 0.85 * (free - lab["ab"]).abs().mean()


def test_resume_is_exact_with_hint_sampling(tmp_path):
    model = build_zhang()
    config = TrainConfig(steps=2, batch_size=8, lr=2e-3, log_every=1, device="cpu", schedule="constant")
    Trainer({"model": model}, jiang.make_smsanet_step(), ToyWorld(32, length=64), config, out_dir=tmp_path / "b").fit()
    config4 = TrainConfig(steps=4, batch_size=8, lr=2e-3, log_every=1, device="cpu", schedule="constant")
    resumed = build_zhang()
    Trainer({"model": resumed}, jiang.make_smsanet_step(), ToyWorld(32, length=64), config4, out_dir=tmp_path / "b").fit()
    again = build_zhang()
    Trainer({"model": again}, jiang.make_smsanet_step(), ToyWorld(32, length=64), config4, out_dir=tmp_path / "c").fit()
    for a, b in zip(resumed.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_smsanet_colorizes_without_hints_and_refuses_them(tmp_path):
    _, summary, _ = train(tmp_path / "run", 2)
    loaded = colorkit.load(summary["checkpoint"])
    assert not loaded.takes_hints and loaded.config["name"] == "jiang"
    gray = (np.random.default_rng(0).random((40, 30)) * 255).astype(np.uint8)
    assert colorkit.colorize(loaded, gray).shape == (40, 30, 3)
    with pytest.raises(ValueError, match="takes no hints"):
        colorkit.colorize(loaded, gray, hints=[(20, 15, (255, 0, 0))])


def test_colorize_api_and_cli_accept_hints(tmp_path):
    _, summary, _ = train(tmp_path / "run", 2, zhang=True)
    loaded = colorkit.load(summary["checkpoint"])
    assert loaded.takes_hints
    gray = (np.random.default_rng(0).random((40, 30)) * 255).astype(np.uint8)
    plain = colorkit.colorize(loaded, gray)
    hinted = colorkit.colorize(loaded, gray, hints=[(20, 15, (255, 0, 0))])
    assert plain.shape == hinted.shape == (40, 30, 3) and not np.array_equal(plain, hinted)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    subprocess.run([sys.executable, "-m", "colorkit", "colorize", summary["checkpoint"], str(tmp_path / "gray.png"),
                    str(tmp_path / "out.png"), "--hint", "20,15,#ff0000"], check=True, capture_output=True)
    assert np.asarray(Image.open(tmp_path / "out.png")).shape == (40, 30, 3)


def test_a_checkpoint_of_the_old_hint_taking_jiang_loads_as_zhangs_network(tmp_path):
    """Before SMSANet became automatic, "jiang" took hints: such a checkpoint is Zhang et al.'s network."""
    _, summary, _ = train(tmp_path / "run", 1, zhang=True)
    path = summary["checkpoint"]
    checkpoint = torch.load(path, weights_only=True)
    for entry in checkpoint["models"].values():
        entry["config"]["name"] = "jiang"
    torch.save(checkpoint, path)
    loaded = colorkit.load(path)
    assert loaded.takes_hints and loaded.config["name"] == "zhang2017"
    from colorkit.widgets import hint_capable_runs
    assert list(hint_capable_runs(tmp_path).values()) == [Path(path)]


# --- Zhang et al.'s released weights ------------------------------------------------------------------

class ZhangReference(torch.nn.Module):
    """Zhang et al.'s siggraph17 generator written out from their paper's Fig. 2 and their released
    layer names (model1 ... model10, the shortcuts, model_out), at any width; a naive reference."""

    def __init__(self, c):
        super().__init__()
        nn = torch.nn

        def block(c_in, c_out, n, dilation=1, first_relu=False):
            layers = [nn.ReLU()] if first_relu else []
            for i in range(n):
                layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=dilation, dilation=dilation), nn.ReLU()]
            return nn.Sequential(*layers, nn.BatchNorm2d(c_out))

        self.model1, self.model2, self.model3 = block(4, c, 2), block(c, 2 * c, 2), block(2 * c, 4 * c, 3)
        self.model4 = block(4 * c, 8 * c, 3)
        self.model5, self.model6 = block(8 * c, 8 * c, 3, 2), block(8 * c, 8 * c, 3, 2)
        self.model7 = block(8 * c, 8 * c, 3)
        self.model8up = nn.Sequential(nn.ConvTranspose2d(8 * c, 4 * c, 4, 2, 1))
        self.model3short8 = nn.Sequential(nn.Conv2d(4 * c, 4 * c, 3, padding=1))
        self.model8 = block(4 * c, 4 * c, 2, first_relu=True)
        self.model9up = nn.Sequential(nn.ConvTranspose2d(4 * c, 2 * c, 4, 2, 1))
        self.model2short9 = nn.Sequential(nn.Conv2d(2 * c, 2 * c, 3, padding=1))
        self.model9 = block(2 * c, 2 * c, 1, first_relu=True)
        self.model10up = nn.Sequential(nn.ConvTranspose2d(2 * c, 2 * c, 4, 2, 1))
        self.model1short10 = nn.Sequential(nn.Conv2d(c, 2 * c, 3, padding=1))
        self.model10 = nn.Sequential(nn.ReLU(), nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.LeakyReLU(0.2))
        self.model_class = nn.Sequential(nn.Conv2d(4 * c, 529, 1))          # their classification head, unused
        self.model_out = nn.Sequential(nn.Conv2d(2 * c, 2, 1), nn.Tanh())

    def forward(self, L, ab, mask):
        c1 = self.model1(torch.cat([(L - 50) / 100, ab / 110, mask], 1))
        c2 = self.model2(c1[:, :, ::2, ::2])
        c3 = self.model3(c2[:, :, ::2, ::2])
        c7 = self.model7(self.model6(self.model5(self.model4(c3[:, :, ::2, ::2]))))
        c8 = self.model8(self.model8up(c7) + self.model3short8(c3))
        c9 = self.model9(self.model9up(c8) + self.model2short9(c2))
        c10 = self.model10(self.model10up(c9) + self.model1short10(c1))
        return self.model_out(c10) * 110


def released_weights(tmp_path, width=4):
    torch.manual_seed(3)
    reference = ZhangReference(width)
    with torch.no_grad():                               # non-trivial batch-norm statistics
        for m in reference.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5); m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5); m.bias.uniform_(-0.2, 0.2)
    path = tmp_path / "siggraph17.pth"
    torch.save(reference.state_dict(), path)
    return reference.eval(), path


def test_zhangs_released_weights_reproduce_their_network_with_and_without_hints(tmp_path):
    reference, path = released_weights(tmp_path)
    L = torch.rand(2, 1, 40, 24) * 100
    hints = evaluate.fixed_hints(lab_to_rgb(torch.cat([L, torch.randn(2, 2, 40, 24) * 20], 1)).clamp(0, 1), 5)
    user_guided = jiang.load_zhang_weights(build_zhang(), path).eval()
    basenet = jiang.load_zhang_weights(build(attention=None), path).eval()
    with torch.no_grad():
        expected = reference(hints["L"], hints["hint_ab"], hints["hint_mask"])
        torch.testing.assert_close(user_guided(hints["L"], hint_ab=hints["hint_ab"], hint_mask=hints["hint_mask"]),
                                   expected, atol=1e-4, rtol=1e-4)
        # automatic: Zhang et al.'s network with no hints (ab and mask zero), as Jiang et al.'s Table 1 runs it
        no_hints = reference(hints["L"], torch.zeros(2, 2, 40, 24), torch.zeros(2, 1, 40, 24))
        torch.testing.assert_close(basenet(hints["L"]), no_hints, atol=1e-4, rtol=1e-4)
    smsanet = jiang.load_zhang_weights(build(attention="smsa"), path)          # attention keeps its init
    assert torch.equal(smsanet.conv5[0].weight, reference.model5[0].weight)
    # an export without batch norm's step counters (unused in eval) loads the same
    state = {k: v for k, v in torch.load(path, weights_only=True).items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "no_counters.pth")
    again = jiang.load_zhang_weights(build(attention=None), tmp_path / "no_counters.pth").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(hints["L"]), basenet(hints["L"]))


def test_zhangs_weights_give_clear_errors(tmp_path):
    _, path = released_weights(tmp_path)
    with pytest.raises(ValueError, match="no file"):
        jiang.load_zhang_weights(build(), tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="width 64"):
        jiang.load_zhang_weights(build(width=8), path)
    state = torch.load(path, weights_only=True)
    del state["model6.2.weight"]
    torch.save(state, tmp_path / "cut.pth")
    with pytest.raises(ValueError, match="model6.2.weight"):
        jiang.load_zhang_weights(build(), tmp_path / "cut.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        jiang.load_zhang_weights(build(), tmp_path / "junk.pth")


# --- the shared hint curves ----------------------------------------------------------------------------

def test_fixed_hints_are_nested_and_the_same_for_every_method():
    rgb = torch.stack([ToyWorld(32, length=4)[i]["rgb"] for i in range(4)])
    five, fifty = evaluate.fixed_hints(rgb, 5), evaluate.fixed_hints(rgb, 50)
    assert torch.equal(evaluate.fixed_hints(rgb, 5)["hint_mask"], five["hint_mask"])
    assert int(five["hint_mask"].sum()) <= 5 * 4 * 4 < int(fifty["hint_mask"].sum())
    # the first 5 hints are among the 50 (later ones may overlap them)
    assert ((five["hint_mask"] > 0) & (fifty["hint_mask"] == 0)).sum() == 0


def test_psnr_vs_hints_ranks_an_oracle_above_the_mean_hint_color_above_nothing():
    rgb = torch.stack([ToyWorld(32, length=6)[i]["rgb"] for i in range(6)])
    true_ab = lab_batch(rgb)["ab"]
    oracle = evaluate.psnr_vs_hints(lambda L, h, m: true_ab[: L.shape[0]], rgb, [0, 5], batch_size=6)
    mean_color = evaluate.psnr_vs_hints(evaluate.mean_hint_color, rgb, [0, 50])
    assert oracle[0] > 40 and set(mean_color) == {0, 50}
    L = lab_batch(rgb)["L"]
    assert torch.equal(evaluate.mean_hint_color(L, torch.zeros(6, 2, 32, 32), torch.zeros(6, 1, 32, 32)),
                       torch.zeros(6, 2, 32, 32))


def test_hint_recipes_reach_the_sampler(tmp_path, monkeypatch):
    """dense_share = 1: every image gets a count from dense_hints; max_patch: patch sides from 1..max_patch."""
    seen = []
    real = jiang.sample_hints

    def spy(ab, counts, *, patch):
        seen.append((list(counts), patch))
        return real(ab, counts, patch=patch)

    monkeypatch.setattr(jiang, "sample_hints", spy)
    model = build_zhang()
    step = jiang.make_smsanet_step(alpha=0.0, dense_share=1.0, dense_hints=(60, 70), max_patch=3)
    Trainer({"model": model}, step, ToyWorld(32, length=64), TrainConfig(steps=6, batch_size=8, log_every=1, device="cpu"),
            out_dir=tmp_path).fit()
    assert len(seen) == 6 and all(60 <= c <= 70 for counts, _ in seen for c in counts)
    assert {patch for _, patch in seen} <= {1, 2, 3} and len({patch for _, patch in seen}) > 1
