"""Sun et al. (2023) step 2, the upgrading GAN: shapes, the kept lightness, the coarse input X_LQ,
the two-optimizer step (eq. 9-10) through the engine, and a short ToyWorld run that learns."""

import json

import numpy as np
import pytest
import torch

import colorkit
from colorkit import models
from colorkit.color import in_gamut, lab_from_parts, lab_to_rgb, palette_colors, rgb_to_lab
from colorkit.data import ToyWorld, toyworld_batch
from colorkit.models import sun2023_upgrade as up
from colorkit.models.sun2023_upgrade import PatchDiscriminator, SunUpgrader, coarse_from_rgb, upgrade_metrics
from colorkit.train import Trainer, TrainConfig


def small_upgrader(**kw) -> SunUpgrader:
    torch.manual_seed(0)
    return models.build({"name": "sun2023_upgrader", "width": 8, "n_res": 2, **kw})


def gray_and_coarse(b: int, h: int, w: int, coarse: int = 64):
    rgb = toyworld_batch(b, (h, w))["rgb"]
    return rgb_to_lab(rgb)[:, :1], coarse_from_rgb(rgb, coarse), rgb


# --- shapes ------------------------------------------------------------------------------------

@pytest.mark.parametrize("h, w, coarse", [(64, 64, 16), (64, 64, 64), (128, 128, 64), (96, 128, 64), (50, 70, 32)])
def test_upgrader_and_discriminator_shapes(h, w, coarse):
    G, D = small_upgrader(), PatchDiscriminator(width=8)
    L, coarse_rgb, _ = gray_and_coarse(2, h, w, coarse)
    ab = G(L, coarse_rgb=coarse_rgb)
    assert ab.shape == (2, 2, h, w) and ab.abs().max() <= up.AB_SCALE
    assert torch.equal(ab, G.upgrade(L, coarse_rgb))
    x = G.coarse_lab(coarse_rgb, (h, w))                                        # X_LQ as Lab, upsampled
    logits = D(x, torch.cat([L, ab], 1))
    assert logits.shape[:2] == (2, 1) and logits.shape[-2:] == D.net(torch.zeros(1, 6, h, w)).shape[-2:]
    with pytest.raises(ValueError, match="Lab"):
        D(L, ab)                                                                 # the old (gray, ab) pair is refused
    with pytest.raises(ValueError, match="at least 12 x 12 px"):
        D(x[..., :8, :8], torch.cat([L, ab], 1)[..., :8, :8])


def test_patch_discriminator_receptive_field_is_measured_not_just_computed():
    assert PatchDiscriminator(n_layers=3).receptive_field == 70                 # pix2pix's 70 x 70 PatchGAN
    D = PatchDiscriminator(width=4, n_layers=2).eval()     # (instance norm would see the whole image)
    assert D.receptive_field == 34
    x = torch.full((1, 3, 96, 96), 50.0)
    y = torch.zeros(1, 3, 96, 96, requires_grad=True)
    out = D(x, y)
    out[0, 0, out.shape[-2] // 2, out.shape[-1] // 2].backward()               # one logit in the middle
    rows, cols = y.grad.abs().sum(dim=(0, 1)).nonzero(as_tuple=True)
    assert rows.max() - rows.min() + 1 == 34 and cols.max() - cols.min() + 1 == 34


def test_the_critic_is_conditioned_on_the_coarse_color_image_as_eq_9_says():
    """x ~ X_LQ: the same color image y judged against two different coarse images gets two different
    scores, so D can penalise an upgrade that ignores the coarse colors; and the step feeds D exactly
    X_LQ (the real image's coarse version, upsampled by the generator's own coarse_lab)."""
    torch.manual_seed(0)
    G, D = small_upgrader(), PatchDiscriminator(width=8).eval()
    L, coarse_rgb, rgb = gray_and_coarse(2, 64, 64, 16)
    y = rgb_to_lab(rgb)
    x = G.coarse_lab(coarse_rgb, (64, 64))
    other = G.coarse_lab(coarse_rgb.flip(1), (64, 64))                          # the same coarse image, R and B swapped
    with torch.no_grad():
        assert not torch.allclose(D(x, y), D(other, y))
    seen = []
    D.register_forward_hook(lambda module, args, out: seen.append(args[0].detach().clone()))

    class Ctx:                                                                  # the engine's view, for one step
        models = unwrapped = {"generator": G, "discriminator": D}
        def update(self, *args, **kwargs):
            pass
    up.make_upgrade_step()(Ctx(), {"rgb": rgb, "L": L, "ab": y[:, 1:]})
    assert len(seen) == 3 and all(torch.allclose(s, G.coarse_lab(coarse_from_rgb(rgb, G.coarse_size), (64, 64))) for s in seen)


def test_the_full_critic_sees_the_same_share_of_a_512_px_image_as_the_course_critic_of_128_px():
    from colorkit import presets

    full, course = (presets.preset("sun2023_upgrader", level)["model"] for level in ("full", "course"))
    share = [PatchDiscriminator(n_layers=m.get("disc_layers", 2)).receptive_field / m["image_size"] for m in (full, course)]
    assert share[1] == 34 / 128 and abs(share[0] / share[1] - 1) < 0.1


# --- what the upgrader computes ----------------------------------------------------------------

def test_output_keeps_the_full_resolution_lightness():
    G = small_upgrader()
    L, coarse_rgb, _ = gray_and_coarse(2, 64, 96, 16)
    with torch.no_grad():
        for p in G.head.parameters():                                          # a trained-looking head
            p.normal_(0, 0.02)
        ab = G(L, coarse_rgb=coarse_rgb)
    lab = lab_from_parts(L, ab)
    assert torch.equal(lab[:, :1], L)
    # the displayed image has the input's lightness wherever the predicted color is displayable
    back = rgb_to_lab(lab_to_rgb(lab))[:, :1]
    ok = in_gamut(lab)
    assert ok.float().mean() > 0.3
    assert (back - L).abs()[ok.unsqueeze(1)].max() < 0.05


def test_residual_upgrader_starts_at_the_upsampled_coarse_ab():
    G = small_upgrader(coarse_size=16)
    L, coarse_rgb, _ = gray_and_coarse(2, 64, 64, 16)
    ab = G(L, coarse_rgb=coarse_rgb)
    coarse_ab = torch.nn.functional.interpolate(rgb_to_lab(coarse_rgb), size=(64, 64), mode="bilinear")[:, 1:]
    assert torch.allclose(ab, coarse_ab.clamp(-0.99 * up.AB_SCALE, 0.99 * up.AB_SCALE), atol=1e-3)
    plain = small_upgrader(residual=False)
    assert not torch.allclose(plain(L, coarse_rgb=coarse_rgb), coarse_ab, atol=1.0)


def test_coarse_from_rgb_is_a_palette_image_of_block_means():
    rgb = torch.rand(2, 3, 64, 48, generator=torch.Generator().manual_seed(0))
    coarse = coarse_from_rgb(rgb, 16)
    assert coarse.shape == (2, 3, 16, 16)
    colors = coarse.permute(0, 2, 3, 1).reshape(-1, 3).unique(dim=0)
    assert len(colors) <= 512
    assert (torch.cdist(colors, palette_colors()).min(dim=1).values < 1e-6).all()   # every color is a palette color
    # a flat block of one color becomes that color's palette entry
    flat = torch.tensor([0.9, 0.2, 0.55]).view(1, 3, 1, 1).expand(1, 3, 32, 32)
    assert torch.allclose(coarse_from_rgb(flat, 8), ((flat[..., :8, :8] * 8).floor() + 0.5) / 8)
    # the mean of each block is what gets quantized (area downsampling)
    halves = torch.cat([torch.zeros(1, 3, 4, 2), torch.full((1, 3, 4, 2), 0.8)], dim=-1)   # mean 0.4 -> level 3
    assert torch.allclose(coarse_from_rgb(halves, 1), torch.full((1, 3, 1, 1), 3.5 / 8))


def test_build_config_errors_and_the_coarse_image_is_required():
    G = models.build({"name": "sun2023_upgrader"})
    assert G.config == {"name": "sun2023_upgrader", "width": 16, "n_down": 2, "n_res": 3, "image_size": 128,
                        "coarse_size": 64, "upsample": "bilinear", "residual": True,
                        "disc_width": 32, "disc_layers": 2, "disc_spectral_norm": True}
    again = models.build(G.config)
    assert [p.shape for p in again.parameters()] == [p.shape for p in G.parameters()]
    L = torch.full((1, 1, 32, 32), 50.0)
    with pytest.raises(ValueError, match="needs the coarse color"):
        G(L)
    with pytest.raises(ValueError, match="takes no hints"):
        G(L, coarse_rgb=torch.rand(1, 3, 8, 8), hint_ab=torch.zeros(1, 2, 32, 32))
    with pytest.raises(ValueError, match=r"coarse_rgb must be an RGB batch.*\(1, 1, 8, 8\)"):
        G(L, coarse_rgb=torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="upsample must be"):
        models.build({"name": "sun2023_upgrader", "upsample": "nearest"})


def test_upgrade_metrics_rows():
    # an image that *is* a nearest-neighbour-upsampled palette image: "before upgrading" is exact
    idx = torch.randint(0, 512, (2, 16, 16), generator=torch.Generator().manual_seed(1))
    rgb = torch.nn.functional.interpolate(colorkit.color.palette_to_rgb(idx), scale_factor=4, mode="nearest")
    m = upgrade_metrics(small_upgrader(coarse_size=16), rgb)
    assert set(m) == {"before_upgrading", "bicubic", "full_L_coarse_ab", "upgraded"}
    assert m["before_upgrading"] == {"ssim": pytest.approx(1.0), "psnr": 100.0}
    assert m["bicubic"]["psnr"] < 40
    # Table II passes step 1's colorization as coarse_rgb; here that is the same palette image
    assert upgrade_metrics(small_upgrader(coarse_size=16), rgb, coarse_rgb=colorkit.color.palette_to_rgb(idx)) == m


def test_upgrade_metrics_per_image_scores_average_to_the_means():
    rgb = toyworld_batch(3, 64)["rgb"]
    G = small_upgrader(coarse_size=16)
    means, per_image = upgrade_metrics(G, rgb), upgrade_metrics(G, rgb, reduction="none")
    assert set(per_image) == set(means)
    for row, scores in per_image.items():
        for name in ("ssim", "psnr"):
            assert scores[name].shape == (3,)
            assert float(scores[name].double().mean()) == pytest.approx(means[row][name], rel=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        upgrade_metrics(G, rgb, reduction="sum")


# --- the GAN step through the engine -----------------------------------------------------------

def gan_trainer(tmp_path, steps, *, size=64, coarse=16, batch_size=4, length=256):
    torch.manual_seed(0)
    G = models.build({"name": "sun2023_upgrader", "width": 16, "n_res": 3, "image_size": size, "coarse_size": coarse})
    nets = G.training_models()
    assert nets["generator"] is G and isinstance(nets["discriminator"], PatchDiscriminator)
    config = TrainConfig(steps=steps, batch_size=batch_size, lr=2e-4, schedule="constant", log_every=10, device="cpu")
    return Trainer(nets, models.training_step("sun2023_upgrader"), ToyWorld(size, length=length), config,
                   out_dir=tmp_path, optimizers=up.UPGRADE_OPTIMIZERS)


def test_gan_step_moves_each_network_only_through_its_own_optimizer(tmp_path):
    trainer = gan_trainer(tmp_path, steps=2, batch_size=2, length=8)
    for opt in trainer.optimizers.values():
        assert opt.param_groups[0]["betas"] == (0.0, 0.9) and opt.param_groups[0]["initial_lr"] == 2e-4
    nets = trainer.models
    seen = []

    def params(name):
        return [p.detach().clone() for p in nets[name].parameters()]

    def grads(name):
        return [None if p.grad is None else p.grad.clone() for p in nets[name].parameters()]

    def spied(ctx, batch):
        update = ctx.update

        def spy(optimizer, loss, **kw):
            before = {n: params(n) for n in nets}
            g_grads = grads("generator")
            norm = update(optimizer, loss, **kw)
            moved = {n for n in nets if any(not torch.equal(a, b) for a, b in zip(before[n], params(n)))}
            same_g_grads = all((a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))
                               for a, b in zip(g_grads, grads("generator")))
            seen.append((optimizer, moved, same_g_grads))
            return norm

        ctx.update = spy
        try:
            return up.upgrade_step(ctx, batch)
        finally:
            ctx.update = update

    trainer.step_fn = spied
    summary = trainer.fit()
    assert [(o, m) for o, m, _ in seen] == [("discriminator", {"discriminator"}), ("generator", {"generator"})] * 2
    # the D loss uses G(x).detach(): its backward leaves the generator's gradients as they were
    assert all(same for o, _, same in seen if o == "discriminator")
    assert {"loss_d", "loss_g_gan", "loss_mse", "loss_g"} <= set(summary["losses"])


def test_short_run_learns_and_beats_bicubic_and_the_untrained_start(tmp_path):
    trainer = gan_trainer(tmp_path, steps=60)
    summary = trainer.fit()
    logs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    mse = [r["loss"]["loss_mse"] for r in logs if r.get("kind") == "train"]
    assert len(mse) == 6 and mse[-1] < 0.75 * mse[0]                            # measured: 0.0037 vs 0.0067
    G = trainer.models["generator"]
    m = upgrade_metrics(G, toyworld_batch(32, 64)["rgb"])                       # training-like images
    # measured: bicubic 17.6 dB, full L + coarse ab (the untrained start) 25.2 dB, upgraded 28.3 dB
    assert m["upgraded"]["psnr"] > m["bicubic"]["psnr"] + 5
    assert m["upgraded"]["psnr"] > m["full_L_coarse_ab"]["psnr"] + 1
    assert m["upgraded"]["ssim"] > m["bicubic"]["ssim"]
    # colorkit.load picks the generator out of the GAN checkpoint and rebuilds it
    loaded = colorkit.load(summary["checkpoint"])
    assert isinstance(loaded, SunUpgrader)
    L, coarse_rgb, _ = gray_and_coarse(2, 64, 64, 16)
    G.eval()
    assert torch.allclose(loaded(L, coarse_rgb=coarse_rgb), G(L, coarse_rgb=coarse_rgb))


def test_training_models_builds_the_discriminator_the_config_asks_for():
    G = models.build({"name": "sun2023_upgrader", "width": 8, "disc_width": 8, "disc_layers": 3,
                      "disc_spectral_norm": False})
    D = G.training_models()["discriminator"]
    assert D.config == {"name": "sun2023_patch_discriminator", "width": 8, "n_layers": 3, "spectral_norm": False,
                        "condition": "coarse Lab"}


def test_the_pipeline_checkpoint_colorizes_any_image_with_both_steps_and_needs_no_other_file(tmp_path):
    """Sun et al.'s method as one model: save_pipeline writes both trained networks into one checkpoint;
    colorkit.load and colorkit.colorize run step 1 (the decoder, at 64 x 64 after area resizing) then
    step 2 at the image's own size, and the result equals the two steps run by hand."""
    import torch.nn.functional as F

    from colorkit.color import palette_to_rgb
    from colorkit.models.sun2023_upgrade import SunPipeline, save_pipeline

    torch.manual_seed(0)
    coarse = models.build({"name": "sun2023", "dim": 8, "heads": 2, "image_size": 16}).eval()
    for p in coarse.parameters():
        p.data.normal_(0, 0.3)
    upgrader = small_upgrader(image_size=32, coarse_size=16).eval()
    for p in upgrader.head.parameters():
        p.data.normal_(0, 0.02)
    path = save_pipeline(tmp_path / "pipeline.pt", coarse, upgrader)
    pipeline = colorkit.load(path)
    assert isinstance(pipeline, SunPipeline) and pipeline.image_size == 32
    assert pipeline.config["coarse"] == coarse.config and pipeline.config["upgrader"] == upgrader.config
    L = torch.rand(2, 1, 40, 56) * 100
    with torch.no_grad():
        by_hand = upgrader.upgrade(L, palette_to_rgb(coarse.sample(F.interpolate(L, size=(16, 16), mode="area"),
                                                                   temperature=0.0)))
        torch.testing.assert_close(pipeline(L), by_hand)
    image = (np.random.default_rng(0).random((37, 53, 3)) * 255).astype(np.uint8)
    out = colorkit.colorize(pipeline, image)
    assert out.shape == (37, 53, 3) and out.dtype == np.uint8
    with pytest.raises(ValueError, match="sun2023 config"):
        models.build({"name": "sun2023_pipeline", "coarse": upgrader.config, "upgrader": upgrader.config})
