"""The model registry, presets, loading a checkpoint, colorize() and the command line."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import colorkit
from colorkit import models, presets
from colorkit.color import rgb_to_lab
from colorkit.models import Colorizer, register
from colorkit.runs import PRESETS
from colorkit.train import Trainer, TrainConfig

ROOT = Path(__file__).resolve().parents[1]


@register("test-hint-echo")
class HintEcho(Colorizer):
    """A stand-in interactive model: predicts the hint's ab where hinted, gray elsewhere."""

    takes_hints = True

    def __init__(self, image_size: int = 16):
        super().__init__()
        self.image_size = image_size
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, L, *, hint_ab=None, hint_mask=None):
        if hint_ab is None:
            return torch.zeros(L.shape[0], 2, *L.shape[-2:], device=L.device)
        return hint_ab * hint_mask * self.scale


def tiny_training(tmp_path, model_config, steps=2, size=32, batch_size=2, **train):
    """Train a model through the engine on ToyWorld; returns (model, trainer summary)."""
    from colorkit.data import ToyWorld

    model = models.build(model_config)
    step = models.training_step(model_config["name"])
    config = TrainConfig(**{"lr": 1e-3, "log_every": 1, **train, "steps": steps, "batch_size": batch_size, "device": "cpu"})
    summary = Trainer(model.training_models(), step, ToyWorld(size, length=8), config, out_dir=tmp_path).fit()
    return model, summary


# --- registry and presets ----------------------------------------------------------------------

def test_build_keeps_the_full_config_and_rebuilds_the_same_model():
    model = models.build({"name": "baseline", "width": 8})
    assert model.config == {"name": "baseline", "width": 8, "depth": 3, "image_size": 64, "features": None,
                            "feature_layers": None, "feature_size": 128, "fuse_width": 64}
    again = models.build(model.config)
    assert [p.shape for p in again.parameters()] == [p.shape for p in model.parameters()]


def test_unknown_model_or_parameter_lists_the_valid_ones():
    with pytest.raises(ValueError, match="registered models: .*baseline"):
        models.build({"name": "nope"})
    with pytest.raises(ValueError, match="valid parameters: width, depth, image_size"):
        models.build({"name": "baseline", "wdth": 8})


def test_presets_cover_every_model_with_papers_settings_and_check_their_arguments():
    for name in presets.PRESETS:
        assert set(presets.PRESETS[name]) == set(PRESETS)
    full = presets.preset("baseline", "full")
    assert full["train"]["lr"] == 1e-3 and full["train"]["optimizer"] == "adam" and full["data"]["size"] == 256
    assert presets.preset("baseline", "course", steps=7)["train"]["steps"] == 7
    with pytest.raises(ValueError, match="smoke, course, workshop, full"):
        presets.preset("baseline", "huge")
    with pytest.raises(ValueError, match="valid ones: .*batch_size"):
        presets.preset("baseline", "course", stepz=7)


def test_every_registered_model_has_presets():
    from colorkit.models import _REGISTRY

    # every model the course trains (a pipeline assembled from trained models has no training step)
    course_models = [name for name in models.registered()
                     if not name.startswith("test-") and getattr(_REGISTRY[name], "training_step", None)]
    assert sorted(presets.PRESETS) == course_models


@pytest.mark.parametrize("name", [n for n in presets.PRESETS])
def test_every_model_at_its_workshop_preset_trains_two_steps_on_the_cpu_at_its_image_size(tmp_path, name):
    """The workshop preset (about 10 GPU minutes per notebook) resolves, builds and trains 2 steps of
    batch 2 at its own image size and training settings, on the CPU."""
    cfg = presets.preset(name, "workshop")
    assert cfg["data"]["train_images"] is None and cfg["data"]["val_images"] >= 64        # a real dataset's whole split
    course, full = presets.preset(name, "course"), presets.preset(name, "full")
    assert course["data"]["size"] <= cfg["data"]["size"] <= full["data"]["size"]
    assert course["train"]["steps"] < cfg["train"]["steps"] < full["train"]["steps"]
    train = {k: v for k, v in cfg["train"].items() if k not in ("steps", "batch_size", "device", "num_workers")}
    model, summary = tiny_training(tmp_path, cfg["model"], steps=2, size=cfg["data"]["size"], batch_size=2, **train)
    assert summary["steps"] == 2 and all(np.isfinite(v) for v in summary["losses"].values())


@pytest.mark.parametrize("name", [n for n in presets.PRESETS])
def test_every_model_at_its_full_configuration_trains_two_steps_on_the_cpu(tmp_path, name):
    """So a full-size run cannot die of a shape error hours in: the full model and training settings
    (optimizer, warmup, EMA, validation cadence), with 2 steps, batch 2, 32 px images (64 for Sun et
    al.'s upgrader, whose critic is sized for 512 px and needs 48) and no workers."""
    full = presets.preset(name, "full")
    train = {**full["train"], "num_workers": 0}
    size = 64 if name == "sun2023_upgrader" else 32
    model, summary = tiny_training(tmp_path, full["model"], steps=2, size=size, batch_size=2,
                                   **{k: v for k, v in train.items() if k not in ("steps", "batch_size", "device")})
    assert summary["steps"] == 2
    assert summary["losses"] and all(np.isfinite(v) for v in summary["losses"].values())
    assert colorkit.load(summary["checkpoint"]).config == full["model"] | models.build(full["model"]).config


def test_the_baseline_with_pretrained_features_fuses_the_frozen_hypercolumn(tmp_path, monkeypatch):
    """features="efficientnet-lite0": the frozen network's maps on the gray image, resized to the bottleneck,
    reach the prediction; training leaves that network as shipped; the checkpoint alone rebuilds the model."""
    import torch.nn.functional as F

    from colorkit import pretrained
    from colorkit.color import lightness_to_gray

    config = {"name": "baseline", "width": 4, "depth": 2, "image_size": 32, "features": "efficientnet-lite0",
              "feature_layers": ["stage2", "stage3"], "feature_size": 32, "fuse_width": 8}
    model, summary = tiny_training(tmp_path, config, steps=3)
    reference = pretrained.features("efficientnet-lite0", layers=("stage2", "stage3"), size=32)
    L = torch.rand(2, 1, 37, 53) * 100
    maps = reference(lightness_to_gray(L))
    expected = torch.cat([F.interpolate(maps[n], size=(10, 14), mode="bilinear", align_corners=False)
                          for n in ("stage2", "stage3")], 1)
    torch.testing.assert_close(model.hypercolumn(L, (10, 14)), expected)
    for key, value in reference.state_dict().items():                # frozen: weights and BN statistics as shipped
        assert torch.equal(model.features.state_dict()[key], value), key
    assert all(not p.requires_grad for p in model.features.parameters())

    model.eval()
    with torch.no_grad():
        out = model(L)
        assert out.shape == (2, 2, 37, 53)
        model.project[0].weight.zero_()                                # cut the hypercolumn: the prediction changes
        assert not torch.allclose(model(L), out)

    def refuse(*args, **kwargs):
        raise AssertionError("colorkit.load read the pretrained weights file")

    monkeypatch.setattr(pretrained, "weights_file", refuse)
    loaded = colorkit.load(summary["checkpoint"]).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(L), out)


# --- load and colorize ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("baseline")
    model, summary = tiny_training(out, {"name": "baseline", "width": 8, "depth": 2, "image_size": 32}, steps=3)
    return model, Path(summary["checkpoint"])


def test_load_rebuilds_model_and_weights_from_a_checkpoint(trained):
    model, checkpoint = trained
    loaded = colorkit.load(checkpoint)
    L = torch.rand(2, 1, 32, 32) * 100
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(L), model(L))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        colorkit.load(checkpoint.parent / "missing.pt")


@pytest.mark.parametrize("shape, dtype", [((37, 53), np.uint8), ((40, 30, 3), np.uint8), ((41, 29, 3), np.float32),
                                          ((20, 70, 4), np.uint8), ((25, 25, 1), np.float64)])
def test_colorize_any_input_keeps_its_size_and_lightness(trained, shape, dtype):
    model, _ = trained
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, shape).astype(np.uint8) if dtype == np.uint8 else rng.random(shape).astype(dtype)
    out = colorkit.colorize(model, image)
    assert out.shape == (*shape[:2], 3) and out.dtype == np.uint8
    pixels = image.astype(np.float32) / (255 if dtype == np.uint8 else 1)
    pixels = pixels[..., None] if pixels.ndim == 2 else pixels
    if pixels.shape[-1] == 4:                                        # transparency is composited onto white
        pixels = pixels[..., :3] * pixels[..., 3:] + (1 - pixels[..., 3:])
    rgb_in = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).expand(3, *shape[:2])
    L_in = rgb_to_lab(rgb_in.float())[0]
    L_out = rgb_to_lab(torch.from_numpy(out).permute(2, 0, 1).float() / 255)[0]
    # full-resolution lightness survives; only 8-bit rounding and gamut clipping move it
    assert (L_out - L_in).abs().mean() < 1.5


def test_colorize_rejects_bad_input_and_hints(trained):
    model, _ = trained
    with pytest.raises(ValueError, match="takes no hints"):
        colorkit.colorize(model, np.zeros((8, 8), np.uint8), hints=[(1, 1, (255, 0, 0))])
    with pytest.raises(ValueError, match="shape"):
        colorkit.colorize(model, np.zeros((8, 8, 2), np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        colorkit.colorize(model, np.full((8, 8), 3.0))


def test_hints_land_where_the_user_put_them():
    model = models.build({"name": "test-hint-echo", "image_size": 16})
    image = np.full((64, 96), 128, np.uint8)
    out = colorkit.colorize(model, image, hints=[(40, 10, (230, 40, 40))])
    assert out[42, 13, 0] > out[42, 13, 1] + 40                     # red near the hint
    assert abs(int(out[5, 80, 0]) - int(out[5, 80, 1])) <= 2          # gray far from it
    with pytest.raises(ValueError, match="outside the 64 x 96 image"):
        colorkit.colorize(model, image, hints=[(64, 0, (0, 0, 0))])


def test_cli_colorizes_a_file_from_a_fresh_shell(trained, tmp_path):
    _, checkpoint = trained
    source, target = tmp_path / "in.png", tmp_path / "out.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (45, 61), dtype=np.uint8)).save(source)
    result = subprocess.run([sys.executable, "-m", "colorkit", "colorize", str(checkpoint), str(source), str(target)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert Image.open(target).size == (61, 45) and Image.open(target).mode == "RGB"
    refused = subprocess.run([sys.executable, "-m", "colorkit", "colorize", str(checkpoint), str(source), str(target),
                              "--hint", "3,4,#ff0000"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "takes no hints" in refused.stderr
    bad = subprocess.run([sys.executable, "-m", "colorkit", "colorize", str(checkpoint), str(source), str(target),
                          "--hint", "3,4,red"], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "Y,X,#RRGGBB" in bad.stderr
