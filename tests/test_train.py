"""Tests for colorkit.train: schedules, EMA, clipping, GAN updates, files, exact resume, NaN stops, DDP."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from colorkit.data import ToyWorld
from colorkit.train import (NonFiniteLossError, Trainer, TrainConfig, epoch_order, load_checkpoint,
                            lr_multiplier, rank_batches, save_checkpoint, supervised_step)

from ddp_worker import CONFIG as DDP_CONFIG, Points, build_model, regression_step

REPO = Path(__file__).resolve().parents[1]


def config(**overrides) -> TrainConfig:
    """Small CPU runs: 6 steps of 8 points, logged every 2 steps."""
    values = dict(steps=6, batch_size=8, lr=0.05, log_every=2, device="cpu")
    values.update(overrides)
    return TrainConfig(**values)


class NoisyMLP(nn.Module):
    """A model with dropout and a `config`, so resume must restore RNG states and check configs."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.config = {"name": "noisy_mlp", "width": width}
        self.net = nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Dropout(0.2), nn.Linear(width, 1))

    def forward(self, x):
        return self.net(x)


def noisy_step(ctx, batch):
    """A step drawing from torch's, NumPy's and Python's global RNGs (noise, like hint sampling)."""
    x = batch["x"] + 0.1 * torch.randn_like(batch["x"])
    scale = 1.0 + 0.01 * float(np.random.rand()) + 0.01 * random.random()
    loss = scale * F.mse_loss(ctx.models["model"](x), batch["y"])
    ctx.update("model", loss)
    return {"loss": loss}


def noisy_trainer(out_dir, step_fn=noisy_step, resume=True, **overrides) -> Trainer:
    """14 steps (over 2 epochs of 6 batches) of a noisy MLP with warmup, cosine, EMA, clipping, checkpoints every 4."""
    torch.manual_seed(0)
    cfg = config(steps=14, warmup_steps=3, ema_decay=0.9, grad_clip=0.5, min_lr_ratio=0.1, ckpt_every=4)
    cfg = TrainConfig(**{**cfg.to_dict(), **overrides})
    return Trainer({"model": NoisyMLP()}, step_fn, Points(), cfg, out_dir=out_dir, resume=resume)


def state_of(trainer: Trainer) -> dict[str, torch.Tensor]:
    out = {f"model.{k}": v for k, v in trainer.models["model"].state_dict().items()}
    out.update({f"ema.{k}": v for k, v in trainer.ema["model"].shadow.items()})
    for i, s in enumerate(trainer.optimizers["model"].state_dict()["state"].values()):
        out.update({f"adam{i}.{k}": torch.as_tensor(v) for k, v in s.items()})
    return out


# --- pure pieces ------------------------------------------------------------------------------

def test_lr_multiplier_matches_warmup_cosine_formula():
    cfg = TrainConfig(steps=20, batch_size=1, warmup_steps=4, min_lr_ratio=0.1)
    assert [lr_multiplier(s, cfg) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lr_multiplier(4, cfg) == pytest.approx(1.0)
    # p = (12 - 4) / 16 = 1/2: 0.1 + 0.9 (1 + cos(pi / 2)) / 2 = 0.55
    assert lr_multiplier(12, cfg) == pytest.approx(0.55)
    assert lr_multiplier(20, cfg) == pytest.approx(0.1)
    constant = TrainConfig(steps=20, batch_size=1, warmup_steps=2, schedule="constant")
    assert [lr_multiplier(s, constant) for s in (0, 1, 5, 19)] == pytest.approx([0.5, 1.0, 1.0, 1.0])


def test_bad_train_config_is_a_clear_error():
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainConfig(steps=1, batch_size=1, optimizer="adagrad")
    with pytest.raises(ValueError, match="unknown TrainConfig fields \\['stepz'\\]"):
        TrainConfig.from_dict({"stepz": 3, "batch_size": 1})


def test_rank_shards_partition_each_global_batch():
    order = epoch_order(50, seed=1, epoch=2)
    assert torch.equal(order, epoch_order(50, seed=1, epoch=2))
    assert not torch.equal(order, epoch_order(50, seed=1, epoch=3))
    full = rank_batches(50, 8, seed=1, epoch=2)
    assert len(full) == 6 and all(len(b) == 8 for b in full)            # drop_last: 50 // 8
    shards = [rank_batches(50, 8, seed=1, epoch=2, rank=r, world_size=2) for r in range(2)]
    for b, batch in enumerate(full):
        assert sorted(shards[0][b] + shards[1][b]) == sorted(batch)
    assert rank_batches(50, 8, seed=1, epoch=2, skip=4) == full[4:]


# --- the engine -------------------------------------------------------------------------------

def test_training_reduces_the_loss_and_lr_follows_the_schedule(tmp_path):
    lrs = []

    def step(ctx, batch):
        lrs.append(ctx.optimizers["model"].param_groups[0]["lr"])
        return regression_step(ctx, batch)

    cfg = config(steps=60, warmup_steps=5, min_lr_ratio=0.2, log_every=5)
    summary = Trainer({"model": build_model()}, step, Points(), cfg, out_dir=tmp_path).fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"]["loss"] for r in records if r["kind"] == "train"]
    assert losses[-1] < 0.1 * losses[0]
    assert summary["steps"] == 60 and summary["images_per_s"] > 0
    assert lrs == pytest.approx([0.05 * lr_multiplier(s, cfg) for s in range(60)])


def test_ema_shadow_equals_the_analytical_average(tmp_path):
    weights = []

    def step(ctx, batch):
        if not weights:
            weights.append(ctx.unwrapped["model"].weight.detach().clone())        # w0
        out = regression_step(ctx, batch)
        weights.append(ctx.unwrapped["model"].weight.detach().clone())            # w1, w2
        return out

    d = 0.8
    trainer = Trainer({"model": build_model()}, step, Points(), config(steps=2, ema_decay=d), out_dir=tmp_path)
    trainer.fit()
    w0, w1, w2 = weights
    expected = d * (d * w0 + (1 - d) * w1) + (1 - d) * w2
    torch.testing.assert_close(trainer.ema["model"].shadow["weight"], expected)
    assert torch.equal(trainer.models["model"].weight, w2)                       # trained weights kept


def test_grad_clip_caps_the_gradient_norm(tmp_path):
    seen = []

    def step(ctx, batch):
        loss = 1e3 * F.mse_loss(ctx.models["model"](batch["x"]), batch["y"])
        before = ctx.update("model", loss)
        after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in ctx.unwrapped["model"].parameters()]))
        seen.append((float(before), float(after)))
        return {"loss": loss}

    Trainer({"model": build_model()}, step, Points(), config(steps=3, grad_clip=0.5), out_dir=tmp_path).fit()
    assert all(before > 0.5 and after <= 0.5 * (1 + 1e-5) for before, after in seen)


def gan_models():
    torch.manual_seed(0)
    return {"generator": nn.Linear(4, 4), "discriminator": nn.Linear(4, 1)}


def test_gan_models_change_only_through_their_own_optimizer(tmp_path):
    def generator_only(ctx, batch):
        fake = ctx.models["generator"](batch["x"])
        loss = -ctx.models["discriminator"](fake).mean()                  # backprop reaches D's weights too
        ctx.update("generator", loss)
        return {"g": loss}

    models = gan_models()
    before = {n: {k: v.clone() for k, v in m.state_dict().items()} for n, m in models.items()}
    trainer = Trainer(models, generator_only, Points(), config(steps=3), out_dir=tmp_path / "g")
    trainer.fit()
    assert models["discriminator"].weight.grad is not None                  # D got gradients ...
    assert all(torch.equal(v, before["discriminator"][k]) for k, v in models["discriminator"].state_dict().items())
    assert not torch.equal(models["generator"].weight, before["generator"]["weight"])   # ... only G moved
    d_params = {id(p) for g in trainer.optimizers["discriminator"].param_groups for p in g["params"]}
    assert d_params == {id(p) for p in models["discriminator"].parameters()}

    def both(ctx, batch):
        fake = ctx.models["generator"](batch["x"])
        d_loss = F.softplus(ctx.models["discriminator"](fake.detach())).mean() + \
            F.softplus(-ctx.models["discriminator"](batch["x"])).mean()
        ctx.update("d", d_loss)
        g_loss = F.softplus(-ctx.models["discriminator"](fake)).mean()
        ctx.update("g", g_loss)
        return {"d": d_loss, "g": g_loss}

    specs = {"g": {"models": ["generator"], "lr": 1e-2}, "d": {"models": ["discriminator"], "lr": 1e-3, "betas": (0.5, 0.99)}}
    models = gan_models()
    start = {n: m.weight.clone() for n, m in models.items()}
    trainer = Trainer(models, both, Points(), config(steps=3), out_dir=tmp_path / "gd", optimizers=specs)
    trainer.fit()
    assert all(not torch.equal(m.weight, start[n]) for n, m in models.items())
    assert trainer.optimizers["d"].param_groups[0]["betas"] == (0.5, 0.99)
    assert trainer.optimizers["g"].param_groups[0]["initial_lr"] == 1e-2

    with pytest.raises(ValueError, match="names model 'critic'"):
        Trainer(gan_models(), both, Points(), config(), out_dir=tmp_path / "x", optimizers={"d": {"models": ["critic"]}})
    with pytest.raises(KeyError, match="no optimizer named 'gen'"):
        Trainer(gan_models(), lambda ctx, b: ctx.update("gen", torch.ones(())), Points(), config(),
                out_dir=tmp_path / "y").fit()


def test_seeded_runs_are_identical_and_seeds_matter(tmp_path):
    a = noisy_trainer(tmp_path / "a", steps=5)
    a.fit()
    b = noisy_trainer(tmp_path / "b", steps=5)
    b.fit()
    c = noisy_trainer(tmp_path / "c", steps=5, seed=1)
    c.fit()
    sa, sb, sc = state_of(a), state_of(b), state_of(c)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["model.net.0.weight"], sc["model.net.0.weight"])


def test_outputs_and_checkpoint_contents(tmp_path):
    val_weights = []

    def val_fn(ctx):
        model = ctx.models["model"]
        val_weights.append((model.training, model.net[0].weight.detach().clone()))
        return {"val_mse": float(F.mse_loss(model(Points().x), Points().y))}

    torch.manual_seed(0)
    cfg = config(steps=6, ema_decay=0.5, val_every=3)
    trainer = Trainer({"model": NoisyMLP()}, noisy_step, Points(), cfg, out_dir=tmp_path, val_fn=val_fn)
    summary = trainer.fit()

    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in records] == [("train", 2), ("val", 3), ("train", 4), ("train", 6), ("val", 6)]
    assert set(records[0]) >= {"loss", "lr", "images_per_s", "seconds"}
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "train_config.json").read_text())["train"]["batch_size"] == 8
    assert summary["val"] == records[-1]["metrics"] and summary["checkpoint"] == str(tmp_path / "checkpoint.pt")

    # Validation ran in eval mode with the EMA weights; training goes on with the trained ones.
    assert all(not training for training, _ in val_weights)
    assert torch.equal(val_weights[-1][1], trainer.ema["model"].shadow["net.0.weight"])
    assert not torch.equal(trainer.models["model"].net[0].weight, trainer.ema["model"].shadow["net.0.weight"])

    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert set(ckpt) >= {"format", "step", "models", "ema", "optimizers", "schedulers", "train_config", "rng"}
    assert ckpt["step"] == 6 and ckpt["models"]["model"]["config"] == {"name": "noisy_mlp", "width": 16}
    assert set(ckpt["models"]["model"]["state"]) == set(trainer.models["model"].state_dict())
    assert set(ckpt["ema"]["model"]) == set(ckpt["models"]["model"]["state"])
    assert ckpt["optimizers"]["model"]["state"] and ckpt["schedulers"]["model"]["last_epoch"] == 6
    assert ckpt["train_config"] == cfg.to_dict()
    assert {"torch", "numpy", "python"} <= set(ckpt["rng"])
    assert not list(tmp_path.glob("*.tmp"))


def test_toyworld_batches_get_lab_and_train_with_supervised_step(tmp_path):
    model = nn.Conv2d(1, 2, 3, padding=1)
    step = supervised_step(lambda m, batch: F.mse_loss(m(batch["L"] / 100), batch["ab"] / 100))
    summary = Trainer({"model": model}, step, ToyWorld(16, length=8), config(steps=2, batch_size=4),
                      out_dir=tmp_path).fit()
    assert summary["steps"] == 2 and math.isfinite(summary["losses"]["loss"])


# --- resume, interrupts, non-finite losses -----------------------------------------------------

@pytest.mark.parametrize("stop_at", [2, 6])          # mid first epoch (6 batches per epoch), mid second
def test_resume_after_ctrl_c_is_bit_identical(tmp_path, stop_at):
    reference = noisy_trainer(tmp_path / "reference")
    reference.fit()

    def interrupted_step(ctx, batch):
        if ctx.step == stop_at:
            os.kill(os.getpid(), signal.SIGINT)       # like Ctrl-C: the engine finishes this step, then stops
        return noisy_step(ctx, batch)

    with pytest.raises(KeyboardInterrupt):
        noisy_trainer(tmp_path / "run", interrupted_step).fit()
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == stop_at + 1

    resumed = noisy_trainer(tmp_path / "run")
    assert resumed.step == stop_at + 1
    resumed.fit()
    ref, got = state_of(reference), state_of(resumed)
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))                 # no duplicated log lines after the resume


def test_keyboard_interrupt_inside_a_step_saves_and_resumes_exactly(tmp_path):
    reference = noisy_trainer(tmp_path / "reference", num_workers=1)     # workers do not change the data
    reference.fit()

    def raising_step(ctx, batch):
        if ctx.step == 9:
            raise KeyboardInterrupt                   # before any update of step 9
        return noisy_step(ctx, batch)

    with pytest.raises(KeyboardInterrupt):
        noisy_trainer(tmp_path / "run", raising_step).fit()
    resumed = noisy_trainer(tmp_path / "run")
    assert resumed.step == 9
    resumed.fit()
    ref, got = state_of(reference), state_of(resumed)
    assert all(torch.equal(ref[k], got[k]) for k in ref)


@pytest.mark.parametrize("where", ["update", "returned"])
def test_nonfinite_loss_stops_and_leaves_the_checkpoint_alone(tmp_path, where):
    path = tmp_path / "checkpoint.pt"
    saved = []

    def step(ctx, batch):
        if ctx.step == 5:
            saved.append(path.read_bytes())           # the checkpoint of step 4 (ckpt_every=4)
            if where == "update":
                ctx.update("model", torch.tensor(float("nan"), requires_grad=True), name="mse")
        out = noisy_step(ctx, batch)
        if ctx.step == 5:
            out["ratio"] = float("inf")                # a logged value, after a finite update
        return out

    with pytest.raises(NonFiniteLossError, match=r"loss '(mse|ratio)' is (nan|inf) at step 5"):
        noisy_trainer(tmp_path, step).fit()
    assert path.read_bytes() == saved[0] and load_checkpoint(path)["step"] == 4
    with pytest.raises(NonFiniteLossError):
        noisy_trainer(tmp_path, step).fit()           # resumes at step 4 and fails again at step 5
    assert path.read_bytes() == saved[0] and not list(tmp_path.glob("*.tmp"))


def test_resume_rejects_a_changed_config_and_allows_more_steps(tmp_path):
    noisy_trainer(tmp_path, steps=4).fit()
    with pytest.raises(ValueError, match=r"batch_size: checkpoint 8, this run 4"):
        noisy_trainer(tmp_path, steps=4, batch_size=4)
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=r"model 'model' config differs \(width: 16 -> 8\)"):
        Trainer({"model": NoisyMLP(width=8)}, noisy_step, Points(), noisy_trainer(tmp_path / "o", steps=4).config,
                out_dir=tmp_path)
    longer = noisy_trainer(tmp_path, steps=6, log_every=3)            # steps and logging may change
    assert longer.step == 4
    # the re-planned schedule holds from the first resumed step: lr at step 4 of 6, not of 4
    lr = longer.optimizers["model"].param_groups[0]["lr"]
    assert lr == pytest.approx(longer.config.lr * lr_multiplier(4, longer.config))
    assert lr > 0.05 * 0.1 * 1.01                                       # the old schedule had ended at min lr
    assert longer.fit()["steps"] == 6
    assert noisy_trainer(tmp_path, steps=4, batch_size=4, resume=False).step == 0


def test_nonfinite_gradient_of_a_finite_loss_stops_before_the_update(tmp_path):
    path = tmp_path / "checkpoint.pt"
    saved = []

    def step(ctx, batch):
        if ctx.step == 5:
            saved.append(path.read_bytes())
            # sqrt at 0: the loss is a finite 0, its gradient is inf * 0 = NaN
            loss = torch.sqrt((ctx.models["model"](batch["x"]) * 0).pow(2).sum())
            ctx.update("model", loss, name="mse")
        return noisy_step(ctx, batch)

    trainer = noisy_trainer(tmp_path, step)
    with pytest.raises(NonFiniteLossError, match=r"gradient of loss 'mse' is (nan|inf) at step 5"):
        trainer.fit()
    assert all(torch.isfinite(p).all() for p in trainer.models["model"].parameters())
    assert path.read_bytes() == saved[0]


def test_resuming_a_finished_run_returns_at_once_with_its_training_time(tmp_path):
    calls = []
    trainer = Trainer({"model": NoisyMLP()}, noisy_step, Points(), config(steps=4), out_dir=tmp_path,
                      val_fn=lambda ctx: calls.append(ctx.step) or {"score": 1.0})
    first = trainer.fit()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    again = Trainer({"model": NoisyMLP()}, noisy_step, Points(), config(steps=4), out_dir=tmp_path,
                    val_fn=lambda ctx: calls.append(ctx.step) or {"score": 1.0}).fit()
    assert len(calls) == 1                                               # validated once, by the first run
    assert (tmp_path / "metrics.jsonl").read_text().splitlines() == lines
    assert again["resumed_from"] == again["steps"] == 4
    assert again["train_seconds"] == load_checkpoint(tmp_path / "checkpoint.pt")["train_seconds"] > 0
    # the summary is the same whether the run trained now or was resumed finished (a notebook run twice)
    same = ("steps", "train_seconds", "images_per_s", "losses", "val", "checkpoint")
    assert {k: again[k] for k in same} == {k: first[k] for k in same}
    assert first["losses"].keys() == {"loss"} and first["images_per_s"] > 0 and first["val"] == {"score": 1.0}


def test_a_finished_checkpoint_without_a_summary_reports_its_losses_from_metrics_jsonl(tmp_path):
    """Checkpoints written before the summary was stored: losses and val come from metrics.jsonl."""
    first = Trainer({"model": NoisyMLP()}, noisy_step, Points(), config(steps=4), out_dir=tmp_path,
                    val_fn=lambda ctx: {"score": 2.0}).fit()
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    del ckpt["summary"]
    save_checkpoint(ckpt, tmp_path / "checkpoint.pt")
    again = Trainer({"model": NoisyMLP()}, noisy_step, Points(), config(steps=4), out_dir=tmp_path).fit()
    assert again["losses"] == pytest.approx(first["losses"]) and again["val"] == {"score": 2.0}
    assert again["images_per_s"] == pytest.approx(first["images_per_s"], abs=0.01)


def test_load_checkpoint_errors_name_the_path(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(missing)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(ValueError, match="corrupt.pt"):
        load_checkpoint(corrupt)
    foreign = save_checkpoint({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="foreign.pt is not a colorkit checkpoint"):
        load_checkpoint(foreign)


# --- DistributedDataParallel on 2 CPU processes --------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_on_two_cpu_processes_matches_one_process(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(REPO / "tests" / "ddp_worker.py"), str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[1]["calls"] == {"save_checkpoint": 0, "_append_jsonl": 0, "plot_metrics": 0}
    assert ranks[0]["calls"]["save_checkpoint"] == 2 and ranks[0]["calls"]["_append_jsonl"] == 4
    assert {p.name for p in out.iterdir()} == {"checkpoint.pt", "metrics.jsonl", "loss.png", "train_config.json",
                                                "rank0.json", "rank1.json"}
    assert load_checkpoint(out / "checkpoint.pt")["step"] == DDP_CONFIG["steps"]

    seen = []

    def step(ctx, batch):
        seen.append(batch["index"].tolist())
        return regression_step(ctx, batch)

    single = Trainer({"model": build_model()}, step, Points(), TrainConfig(**DDP_CONFIG), out_dir=tmp_path / "single")
    single.fit()
    for s, batch in enumerate(seen):                   # each rank got half of every global batch
        assert len(ranks[0]["seen"][s]) == len(ranks[1]["seen"][s]) == len(batch) // 2
        assert sorted(ranks[0]["seen"][s] + ranks[1]["seen"][s]) == sorted(batch)
    for name, value in single.models["model"].state_dict().items():
        for rank in ranks:
            torch.testing.assert_close(torch.tensor(rank["weights"][name]), value.flatten(), rtol=0, atol=1e-6)
