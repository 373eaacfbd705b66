"""Untrusted checkpoints, broken inputs and interrupted runs lose nothing and fail clearly.

One test (or a few) per case of the reliability issue, numbered as there; tiny images, tiny models.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import colorkit
from colorkit import course, inference, models, presets
from colorkit.color import rgb_to_lab
from colorkit.data import NOT_A_FILE, UNREADABLE_FOLDER, ImageFolder, ToyWorld
from colorkit.models import Colorizer, register
from colorkit.train import (CHECKPOINT_FORMAT, NonFiniteLossError, Trainer, TrainConfig, first_nonfinite,
                            load_checkpoint, save_checkpoint)

ROOT = Path(__file__).resolve().parents[1]


def train_tiny(out_dir, model_config=None, steps=2, **train) -> dict:
    """A few steps of a model through the engine on 32 px ToyWorld; returns the summary."""
    torch.manual_seed(0)                              # the same initial weights every time
    model = models.build(model_config or {"name": "baseline", "width": 8, "depth": 2, "image_size": 32})
    config = TrainConfig(**{"lr": 1e-3, "log_every": 1, "batch_size": 2, "device": "cpu", **train, "steps": steps})
    step = models.training_step(model.config["name"])
    return Trainer(model.training_models(), step, ToyWorld(32, length=8), config, out_dir=out_dir).fit()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return Path(train_tiny(tmp_path_factory.mktemp("baseline"))["checkpoint"])


def lightness(rgb_uint8: np.ndarray) -> torch.Tensor:
    return rgb_to_lab(torch.from_numpy(np.array(rgb_uint8)).permute(2, 0, 1).float() / 255)[0]


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "colorkit", *map(str, args)], cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=120)


# --- 1. a checkpoint never makes colorkit open (or run) another file --------------------------------

class Logits(torch.nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3)).repeat(1, 2)          # (B, 6)


@pytest.fixture(scope="module")
def lakhani_torchscript(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lakhani")
    script = folder / "net.pt"
    torch.jit.script(Logits()).save(str(script))
    config = {"name": "lakhani", "width": 4, "image_size": 32, "global_source": "torchscript",
              "global_path": "net.pt", "global_feature": "logits", "global_dim": 6, "global_input_size": 32}
    model = models.build({**config, "global_path": str(script)})
    saved = save_checkpoint({"format": CHECKPOINT_FORMAT, "step": 0, "ema": {}, "optimizers": {}, "schedulers": {},
                             "train_config": {}, "rng": {},
                             "models": {"model": {"config": config, "state": model.state_dict()}}},
                            folder / "checkpoint.pt")
    return saved, script


def test_1_load_never_opens_a_file_the_checkpoint_names(lakhani_torchscript, monkeypatch):
    saved, script = lakhani_torchscript
    opened = []
    real = torch.jit.load
    monkeypatch.setattr(torch.jit, "load", lambda path, *a, **k: opened.append(str(path)) or real(path, *a, **k))
    monkeypatch.chdir(script.parent)                     # the checkpoint's relative "net.pt" would resolve here
    monkeypatch.delenv("COLORKIT_GLOBAL_PATH", raising=False)
    with pytest.raises(ValueError, match=r"never opens a file that a checkpoint names.*files=\{'global_path': PATH\}"):
        colorkit.load(saved)
    assert opened == []
    # the user names the network at load time: an argument, or an environment variable
    model = colorkit.load(saved, files={"global_path": script})
    assert opened == [str(script)] and colorkit.colorize(model, np.zeros((9, 11), np.uint8)).shape == (9, 11, 3)
    monkeypatch.setenv("COLORKIT_GLOBAL_PATH", str(script))
    colorkit.load(saved)
    assert opened == [str(script)] * 2
    # the command line takes it as --file
    monkeypatch.delenv("COLORKIT_GLOBAL_PATH")
    Image.fromarray(np.zeros((9, 11), np.uint8)).save(script.parent / "in.png")
    refused = cli("colorize", saved, script.parent / "in.png", script.parent / "out.png", cwd=script.parent)
    assert refused.returncode == 2 and "never opens a file" in refused.stderr
    done = cli("colorize", saved, script.parent / "in.png", script.parent / "out.png", "--file", f"global_path={script}")
    assert done.returncode == 0, done.stderr


def test_1_unreadable_checkpoints_give_no_advice_to_load_unsafely(tmp_path):
    random_bytes = tmp_path / "random.pt"
    random_bytes.write_bytes(np.random.default_rng(0).bytes(4096))
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": 1, "thing": Logits()}, pickled)          # a Python object: would need unpickling code
    for path in (random_bytes, pickled):
        with pytest.raises(ValueError) as err:
            colorkit.load(path)
        assert str(path) in str(err.value) and "weights_only" not in str(err.value), err.value
        assert "trusted source" not in str(err.value)


# --- 2. a non-finite weight or buffer is never saved, and never loaded -----------------------------

def test_2_exploding_batchnorm_keeps_the_last_finite_checkpoint(tmp_path):
    cfg = presets.preset("baseline", "smoke", steps=30)
    train = {**cfg["train"], "steps": 30, "lr": 1e18, "ckpt_every": 1, "ema_decay": 0.9, "device": "cpu"}

    def run():
        model = models.build(cfg["model"])
        return Trainer(model.training_models(), models.training_step("baseline"), ToyWorld(32, length=64),
                       TrainConfig(**train), out_dir=tmp_path).fit()

    with pytest.raises(NonFiniteLossError, match=r"at step \d+") as first:
        run()
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert first_nonfinite({**{n: e["state"] for n, e in ckpt["models"].items()}, **ckpt["ema"]}) is None
    colorkit.load(tmp_path / "checkpoint.pt")                       # finite: loads
    with pytest.raises(NonFiniteLossError) as again:                 # resumes from it, stops the same way
        run()
    assert str(again.value) == str(first.value)


def test_2_load_and_resume_refuse_a_checkpoint_with_inf_statistics(tmp_path):
    train_tiny(tmp_path)
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    key = next(k for k in ckpt["models"]["model"]["state"] if k.endswith("running_var"))
    ckpt["models"]["model"]["state"][key][0] = float("inf")
    save_checkpoint(ckpt, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match=rf"checkpoint.pt: the weights of model 'model'.*model\.{key} holds inf"):
        colorkit.load(tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match=rf"(?s)cannot resume .*model\.{key} holds inf"):
        train_tiny(tmp_path)


# --- 3. 16-bit, 32-bit and float grayscale files keep their lightness -------------------------------

@pytest.mark.parametrize("kind", ["I;16 png", "I;16 tiff", "I 32-bit tiff", "F tiff"])
def test_3_high_bit_depth_gray_is_scaled_by_its_depth(tmp_path, kind, checkpoint):
    ramp = np.linspace(0.05, 0.6, 40 * 48).reshape(40, 48)            # a dark-to-mid gray ramp
    if kind.startswith("I;16"):
        array, top = np.round(ramp * 65535).astype(np.uint16), 65535
    elif kind.startswith("I 32"):
        array, top = np.round(ramp * (2**32 - 1) / 2).astype(np.int32), 2**32 - 1   # PIL's I is signed
    else:
        array, top = ramp.astype(np.float32), 1
    path = tmp_path / ("in.png" if "png" in kind else "in.tif")
    Image.fromarray(array).save(path)
    image = inference.read_image(path)
    assert image.dtype == np.float32 and np.allclose(image, array / top, atol=1e-6)
    out = tmp_path / "out.png"
    result = cli("colorize", checkpoint, path, out)
    assert result.returncode == 0, result.stderr
    L_in = rgb_to_lab(torch.from_numpy(image.astype(np.float32))[None].expand(3, -1, -1))[0]
    assert (lightness(np.asarray(Image.open(out))) - L_in).abs().mean() < 1.0     # not clipped to white


# --- 4. the output is written atomically -----------------------------------------------------------

def test_4_output_equal_to_input_and_an_interrupted_save_lose_nothing(tmp_path, checkpoint, monkeypatch):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(photo)
    result = cli("colorize", checkpoint, photo, photo)                 # output = input
    assert result.returncode == 0, result.stderr
    assert Image.open(photo).size == (40, 30) and not list(tmp_path.glob(".*tmp"))
    before = photo.read_bytes()

    def interrupted_save(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"\x89PNG half")                          # a partial write, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        inference.save_image(np.zeros((30, 40, 3), np.uint8), photo)
    assert photo.read_bytes() == before and not list(tmp_path.glob(".*tmp"))
    with pytest.raises(ValueError, match="unknown image extension '.xyz'"):
        inference.save_image(np.zeros((3, 4, 3), np.uint8), tmp_path / "out.xyz")


# --- 5. interrupted course runs leave tables that say so --------------------------------------------

@pytest.fixture
def fake_course(tmp_path, monkeypatch):
    """Three stand-in notebooks, and papermill replaced by `behaviour[name](out_dir)`."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    names = ["00_a.ipynb", "01_b.ipynb", "02_c.ipynb"]
    for name in names:
        (folder / name).write_text("{}")
    behaviour = {}

    def execute(path, output, parameters, **kwargs):
        out_dir = Path(parameters["OUT_DIR"])
        behaviour[Path(path).name](out_dir)
        Path(output).write_text("{}")

    def trained(value):
        def write(out_dir):
            (out_dir / "metrics.json").write_text(json.dumps(
                {"psnr": value, "trained_models": [{"model": "baseline", "variant": "", "preset": "smoke",
                                                    "parameters": 1, "train_seconds": 1.0, "checkpoint": "x",
                                                    "val": {"psnr": value, "ssim": 0.5}}]}))
        return write

    import papermill
    monkeypatch.setattr(papermill, "execute_notebook", execute)
    monkeypatch.setattr(course, "notebooks", lambda root=None: sorted(folder.glob("*.ipynb")))
    monkeypatch.setattr(course, "kernel_name", lambda: "python3")
    return tmp_path / "out", behaviour, trained


def test_5_a_notebook_interrupted_is_marked_and_finished_ones_get_rows(fake_course):
    out, behaviour, trained = fake_course
    behaviour.update({"00_a.ipynb": trained(20.0), "01_b.ipynb": trained(21.0), "02_c.ipynb": trained(22.0)})
    course.run(out=str(out))

    seen_while_running = {}

    def interrupted(out_dir):
        # while 01 runs, the tables already hold 00's new row and mark 01 as running, without its old result
        seen_while_running.update(summary=json.loads((out / "summary.json").read_text()),
                                  results=json.loads((out / "results.json").read_text()))
        raise KeyboardInterrupt

    behaviour.update({"00_a.ipynb": trained(30.0), "01_b.ipynb": interrupted})
    with pytest.raises(KeyboardInterrupt):
        course.run(out=str(out))
    status = {r["notebook"]: r["status"] for r in seen_while_running["summary"]}
    assert status == {"00_a.ipynb": "ok", "01_b.ipynb": "running", "02_c.ipynb": "ok"}
    assert [r["val"]["psnr"] for r in seen_while_running["results"]] == [30.0, 22.0]
    summary = {r["notebook"]: r["status"] for r in json.loads((out / "summary.json").read_text())}
    assert summary == {"00_a.ipynb": "ok", "01_b.ipynb": "interrupted", "02_c.ipynb": "ok"}
    results = json.loads((out / "results.json").read_text())
    assert [(r["notebook"], r["val"]["psnr"]) for r in results] == [("00_a.ipynb", 30.0), ("02_c.ipynb", 22.0)]
    assert "| 01_b.ipynb | interrupted |" in (out / "results.md").read_text()


def test_5_a_run_killed_mid_notebook_is_marked_interrupted_by_the_next_run(fake_course):
    out, behaviour, trained = fake_course
    behaviour.update({"00_a.ipynb": trained(20.0), "01_b.ipynb": trained(21.0), "02_c.ipynb": trained(22.0)})
    course.run(out=str(out))
    rows = json.loads((out / "summary.json").read_text())
    rows[1]["status"] = "running"                       # what kill -9 during 01 leaves (its result already dropped)
    (out / "summary.json").write_text(json.dumps(rows))
    course.run(out=str(out), only=["02"])
    summary = {r["notebook"]: r["status"] for r in json.loads((out / "summary.json").read_text())}
    assert summary == {"00_a.ipynb": "ok", "01_b.ipynb": "interrupted", "02_c.ipynb": "ok"}


# --- 6. the runner's arguments and errors ------------------------------------------------------------

def test_6_data_is_taken_from_the_callers_folder_and_checked_first(fake_course, tmp_path, monkeypatch):
    out, behaviour, trained = fake_course
    passed = []
    behaviour.update({name: (lambda out_dir: passed.append(out_dir)) for name in ("00_a.ipynb", "01_b.ipynb", "02_c.ipynb")})
    mini = tmp_path / "work" / "data" / "mini"
    mini.mkdir(parents=True)
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(mini / "a.png")
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.delenv(course.CALLER_CWD_ENV, raising=False)
    assert course.resolve_data("data/mini") == str(mini) and course.resolve_data("package-photos") == "package-photos"
    monkeypatch.setenv(course.CALLER_CWD_ENV, str(tmp_path / "work"))      # course.sh runs from the project root
    monkeypatch.chdir(ROOT)
    assert course.resolve_data("data/mini") == str(mini)
    with pytest.raises(FileNotFoundError, match=r"--data data/nope: no folder .*work/data/nope"):
        course.run(out=str(out), data="data/nope")
    (tmp_path / "work" / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        course.run(out=str(out), data="empty")
    assert passed == [] and not out.exists()                              # nothing ran, nothing written


def test_6_a_failed_notebook_carries_its_error_line(fake_course):
    from papermill.exceptions import PapermillExecutionError

    out, behaviour, trained = fake_course

    def fails(out_dir):
        raise PapermillExecutionError(3, 4, "summary['losses']['loss']", "KeyError", "'loss'", [])

    behaviour.update({"00_a.ipynb": fails})
    rows = course.run(out=str(out), only=["00"])
    assert rows[0]["status"] == "failed: KeyError: 'loss'"


def test_6_only_must_name_notebooks(fake_course, capsys):
    out, behaviour, trained = fake_course
    with pytest.raises(ValueError, match="--only 9: no notebook matches; the notebooks are: 00_a, 01_b, 02_c"):
        course.run(out=str(out), only=["00", "9"])
    assert course.main(["run", "--out", str(out), "--only"]) == 2
    assert "--only needs notebook names" in capsys.readouterr().err
    assert not out.exists()


# --- 7. folders: links followed once, unreadable folders counted, only regular files read -----------

@pytest.mark.timeout(60)
def test_7_folder_scan_follows_links_once_counts_unreadable_and_skips_fifos(tmp_path, monkeypatch):
    root = tmp_path / "images"
    (root / "real").mkdir(parents=True)
    (root / "locked").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    color = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(color).save(root / "real" / "a.png")
    Image.fromarray(color).save(elsewhere / "b.png")
    Image.fromarray(color).save(root / "locked" / "c.png")
    (root / "linked").symlink_to(elsewhere, target_is_directory=True)      # followed
    (root / "real" / "loop").symlink_to(root, target_is_directory=True)    # a loop: walked once
    os.mkfifo(root / "pipe.png")                                           # opening it would block
    real_scandir = os.scandir

    def scandir(path="."):                                                 # root reads everything: simulate
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    folder = ImageFolder(root, size=32)
    assert sorted(Path(f).name for f in folder.files) == ["a.png", "b.png"]
    assert folder.report.count(UNREADABLE_FOLDER) == 1 and folder.report.first(UNREADABLE_FOLDER).endswith("locked")
    assert folder.report.count(NOT_A_FILE) == 1 and folder.report.first(NOT_A_FILE).endswith("pipe.png")
    assert "unreadable folder" in folder.summary()


# --- 8, 9. EXIF orientation and transparency ---------------------------------------------------------

def test_8_exif_orientation_is_applied_and_hints_use_displayed_coordinates(tmp_path):
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :10] = 255                                                  # a white band on the stored left
    exif = Image.Exif()
    exif[0x0112] = 6                                                      # displayed rotated 90 degrees clockwise
    path = tmp_path / "rotated.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    image = inference.read_image(path)
    assert image.shape[:2] == (40, 20)                                    # as displayed: portrait
    assert image[:10].mean() > 200 and image[-10:].mean() < 50            # the white band is on top
    model = models.build({"name": "test-reliability-hint-echo"})
    out = colorkit.colorize(model, image, hints=[(35, 5, "#d03020")])     # a displayed position
    assert out.shape == (40, 20, 3)


def test_9_transparent_pixels_become_white_never_black(tmp_path, checkpoint):
    rgba = np.zeros((24, 30, 4), np.uint8)                                # RGB 0, alpha 0: fully transparent
    rgba[:, 20:] = (0, 0, 0, 255)                                         # an opaque black stripe
    model = colorkit.load(checkpoint)
    L = lightness(colorkit.colorize(model, rgba))
    assert L[:, :18].min() > 90 and L[:, 22:].max() < 10
    path = tmp_path / "logo.png"
    Image.fromarray(rgba, "RGBA").save(path)
    assert cli("colorize", checkpoint, path, tmp_path / "out.png").returncode == 0
    assert lightness(np.asarray(Image.open(tmp_path / "out.png")))[:, :18].min() > 90


@register("test-reliability-hint-echo")
class HintEcho(Colorizer):
    """Predicts the hints' ab where hinted, gray elsewhere."""

    takes_hints = True
    image_size = 16

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, L, *, hint_ab=None, hint_mask=None):
        if hint_ab is None:
            return torch.zeros(L.shape[0], 2, *L.shape[-2:])
        return hint_ab * hint_mask * self.scale


# --- 10. checkpoints that do not fit their model -----------------------------------------------------

def _edited(checkpoint: Path, tmp_path: Path, edit) -> Path:
    ckpt = load_checkpoint(checkpoint)
    edit(ckpt)
    return save_checkpoint(ckpt, tmp_path / "edited.pt")


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["models"]["model"]["config"].update(width=16), r"has shape .* the model's is"),
    (lambda c: c["models"]["model"]["state"].pop(next(iter(c["models"]["model"]["state"]))), r"missing '"),
    (lambda c: c["ema"].clear() or c["models"]["model"]["state"].update(extra=torch.zeros(1)), r"unexpected 'extra'"),
    (lambda c: c["models"]["model"]["config"].update(width="wide"), r"cannot build model 'model' from its config"),
    (lambda c: c["models"]["model"]["config"].update(colour=1), r"cannot build model .*unexpected keyword"),
    (lambda c: c.update(models=[1, 2]), r"'models' is list, not a dict"),
    (lambda c: c["models"]["model"].update(state=[1]), r"is not \{'config'"),
    (lambda c: c.update(format=CHECKPOINT_FORMAT + 1), r"written by a newer colorkit \(checkpoint format 2"),
], ids=["other-config", "missing-key", "unexpected-key", "wrong-type", "unknown-field", "models-list",
        "state-list", "newer-format"])
def test_10_a_checkpoint_that_does_not_fit_names_the_file_and_the_first_mismatch(checkpoint, tmp_path, edit, message):
    path = _edited(checkpoint, tmp_path, edit)
    with pytest.raises(ValueError, match=message) as err:
        colorkit.load(path)
    assert "edited.pt" in str(err.value) and len(str(err.value).splitlines()) == 1


def test_10_an_older_checkpoint_without_a_newer_field_resumes_at_its_default(tmp_path):
    train_tiny(tmp_path, steps=2)
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    del ckpt["train_config"]["min_lr_ratio"]                              # as if written before the field existed
    save_checkpoint(ckpt, tmp_path / "checkpoint.pt")
    assert train_tiny(tmp_path, steps=3)["steps"] == 3                   # the default (0.0) keeps the old schedule
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    del ckpt["train_config"]["min_lr_ratio"]
    save_checkpoint(ckpt, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match=r"min_lr_ratio: checkpoint '\(none: an older colorkit\)', this run 0.5"):
        train_tiny(tmp_path, steps=4, min_lr_ratio=0.5)


# --- 11. very large images ---------------------------------------------------------------------------

def test_11_an_image_over_the_pixel_limit_is_a_clear_error(tmp_path, checkpoint, monkeypatch):
    for side in (40, 100):                            # over the limit (PIL warns) and over twice it (PIL raises)
        path = tmp_path / f"big{side}.png"
        Image.fromarray(np.zeros((side, side), np.uint8)).save(path)
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
        with pytest.raises(inference.ImageTooLargeError, match=rf"big{side}.png has {side * side:,} pixels, over the limit of 1,000"):
            inference.read_image(path)
        monkeypatch.undo()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    code = ("import sys; from PIL import Image; Image.MAX_IMAGE_PIXELS = 1000; from colorkit.__main__ import main; "
            f"sys.exit(main(['colorize', {str(checkpoint)!r}, {str(tmp_path / 'big100.png')!r}, {str(tmp_path / 'o.png')!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "over the limit" in result.stderr


def test_11_banded_colorize_equals_one_band_and_memory_stays_bounded(checkpoint):
    model = colorkit.load(checkpoint)
    image = np.random.default_rng(0).integers(0, 256, (123, 77, 3), dtype=np.uint8)
    whole = colorkit.colorize(model, image, band_pixels=10**9)
    assert np.array_equal(colorkit.colorize(model, image, band_pixels=500), whole)      # bands of 6 rows
    code = textwrap.dedent(f"""
        import resource, numpy as np, colorkit
        model = colorkit.load({str(checkpoint)!r})
        image = np.full((4000, 4000), 128, np.uint8)
        colorkit.colorize(model, image[:64, :64])
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        colorkit.colorize(model, image)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024 / image.size)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    bytes_per_pixel = float(result.stdout.strip())
    assert bytes_per_pixel < 20, f"{bytes_per_pixel:.1f} bytes per pixel (a whole-image conversion took about 130)"


# --- 12. small ones ----------------------------------------------------------------------------------

@pytest.mark.parametrize("device, message", [("cuda", "sees no CUDA device"), ("foo", "unknown device 'foo'")])
def test_12_a_missing_or_unknown_device_is_one_line(checkpoint, tmp_path, device, message):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "in.png")
    result = cli("colorize", checkpoint, tmp_path / "in.png", tmp_path / "out.png", "--device", device)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    refused = course.main(["run", "--out", str(tmp_path / "course"), "--device", device, "--only", "00"])
    assert refused == 2 and not (tmp_path / "course").exists()


def test_12_python_hints_take_the_command_lines_forms_and_refuse_floats_and_bools():
    model = models.build({"name": "test-reliability-hint-echo"})
    image = np.full((32, 32), 128, np.uint8)
    reference = colorkit.colorize(model, image, hints=[(4, 5, (255, 0, 0))])
    for hints in ([(4, 5, "#ff0000")], [(4, 5, "ff0000")], ["4,5,#ff0000"], [(np.int64(4), 5, [255, 0, 0])]):
        assert np.array_equal(colorkit.colorize(model, image, hints=hints), reference), hints
    for bad in ([(4.0, 5, "#ff0000")], [(True, 5, "#ff0000")], [(4, 5, (255.0, 0, 0))], [(4, 5, "red")]):
        with pytest.raises(ValueError, match="hint 0"):
            colorkit.colorize(model, image, hints=bad)


def test_12_the_first_log_line_after_a_resume_averages_the_same_steps(tmp_path):
    train = {"log_every": 4, "lr": 1e-2}
    train_tiny(tmp_path / "whole", steps=8, **train)
    baseline_step = models.training_step("baseline")

    def stopped_at_3(ctx, batch):
        if ctx.step == 2:
            os.kill(os.getpid(), signal.SIGINT)          # Ctrl-C: the engine ends step 3 and saves there
        return baseline_step(ctx, batch)

    torch.manual_seed(0)
    model = models.build({"name": "baseline", "width": 8, "depth": 2, "image_size": 32})
    config = TrainConfig(lr=1e-2, log_every=4, batch_size=2, device="cpu", steps=8)
    with pytest.raises(KeyboardInterrupt):
        Trainer(model.training_models(), stopped_at_3, ToyWorld(32, length=8), config, out_dir=tmp_path / "split").fit()
    assert load_checkpoint(tmp_path / "split" / "checkpoint.pt")["step"] == 3
    train_tiny(tmp_path / "split", steps=8, **train)

    def losses(folder):
        return [(r["step"], r["loss"]) for r in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines())
                if r["kind"] == "train"]

    assert losses(tmp_path / "split") == losses(tmp_path / "whole")      # steps 4 and 8: the same windows, same means
