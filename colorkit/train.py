"""One training engine for every model in the course, GANs included.

A paper defines a *step function*; the engine does everything around it:

    def step_fn(ctx, batch):                         # batch: the prepared, device-moved batch
        ab = ctx.models["model"](batch["L"])
        loss = F.mse_loss(ab, batch["ab"])
        ctx.update("model", loss)                    # finite check, backward, clip, step, EMA
        return {"loss": loss}                        # what to log

    Trainer({"model": net}, step_fn, ToyWorld(64), TrainConfig(steps=500, batch_size=32),
            out_dir="runs/00_baseline").fit()

Around it: device choice, bf16 autocast on CUDA, gradient clipping, warmup + cosine learning
rates, an optional EMA of the weights, periodic validation, a progress bar, `metrics.jsonl`,
`loss.png`, and atomic checkpoints.

Exact resume. The data order is a pure function of (seed, epoch): `rank_batches` builds each
epoch's batches from a permutation seeded by a hash of both, and a run resumed at step k starts at
epoch k // steps_per_epoch and slices off the batches already used (it never loads them). The
checkpoint holds the RNG states too, so randomness inside a step (dropout, noise, hint sampling)
continues where it stopped: a CPU run stopped at step k and resumed gives bit-identical weights.

Multi-GPU. Under `torchrun` (WORLD_SIZE > 1) the same script runs DistributedDataParallel:
`batch_size` is the *global* batch; global batch b is split into world_size equal shards, rank r
taking every world_size-th index from r, so gradient averaging equals the single-process mean
gradient. Rank 0 logs and writes files; validation runs on rank 0 with the unwrapped models.

Speed (opt-in TrainConfig fields; a run may turn them on or off when it resumes):
- `compile`: the step calls `torch.compile`d models (True, or a mode such as "max-autotune");
  validation and checkpoints use the plain modules, so a checkpoint loads without compiling.
- `channels_last`: models and every 4-D floating batch tensor in NHWC memory format, which
  cuDNN's convolutions and bf16 autocast prefer on recent GPUs; the values are the same.
- `device_cache`: the training set read once onto the device (`colorkit.data.DeviceCache`): each
  batch is then an index into device memory, with the same items as the DataLoader's batch.
Host-to-device copies are non-blocking from pinned memory on CUDA. benchmarks/gpu_check.py measures
what each option gives on a GPU.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import random
import re
import signal
import threading
import time
import warnings
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import Subset, DataLoader, Dataset
from tqdm.auto import tqdm

from colorkit.data import _seed_worker, lab_batch
from colorkit.runs import _jsonable, _write_json_atomic, resolve_device, run_dir, seed_everything

__all__ = ["TrainConfig", "Trainer", "TrainContext", "EMA", "NonFiniteLossError", "NonFiniteLoss", "NonFiniteStateError",
           "lr_multiplier", "epoch_order", "rank_batches", "supervised_step", "default_prepare",
           "save_checkpoint", "load_checkpoint", "first_nonfinite", "state_fit_problem", "plot_metrics",
           "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = 1
OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
SCHEDULES = ("cosine", "constant")
# Fields a resumed run may change; every other TrainConfig field must match the checkpoint.
# Changing `steps` re-plans the cosine schedule from the resume point on.
RESUMABLE_CHANGES = ("steps", "val_every", "ckpt_every", "log_every", "device", "num_workers", "pin_memory", "amp",
                     "compile", "channels_last", "device_cache")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class TrainConfig:
    """Everything a run needs besides models and data; stored in every checkpoint."""

    steps: int
    batch_size: int                   # global batch: split across ranks under torchrun
    lr: float = 1e-3
    optimizer: str = "adam"           # one of OPTIMIZERS
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "cosine"          # "cosine" (to min_lr_ratio * lr after warmup) or "constant"
    min_lr_ratio: float = 0.0
    grad_clip: float | None = 1.0     # max global gradient norm per optimizer; None or 0: no clipping
    ema_decay: float | None = None    # e.g. 0.999; None: no EMA
    amp: bool = True                  # bf16 autocast, only on CUDA
    val_every: int = 0                # 0: only at the end
    ckpt_every: int = 0               # 0: only at the end (and on interrupt)
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    pin_memory: bool | None = None    # None: True on CUDA
    # Speed, opt-in; none changes what a step computes (see the module docstring, "Speed"):
    compile: bool | str = False       # torch.compile the models a step calls: True, or one of COMPILE_MODES
    channels_last: bool = False       # models and 4-D batch tensors in channels-last memory format (CNNs on GPUs)
    device_cache: bool = False        # hold the training data on the device (colorkit.data.DeviceCache)

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)
        checks = [(self.steps >= 1, "steps must be >= 1"), (self.batch_size >= 1, "batch_size must be >= 1"),
                  (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}"),
                  (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}"),
                  (self.warmup_steps >= 0, "warmup_steps must be >= 0"),
                  (0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio must be in [0, 1]"),
                  (self.ema_decay is None or 0.0 <= self.ema_decay < 1.0, "ema_decay must be None or in [0, 1)"),
                  (self.compile in (False, True) or self.compile in COMPILE_MODES,
                   f"compile must be False, True or one of {COMPILE_MODES}"),
                  (min(self.val_every, self.ckpt_every, self.num_workers) >= 0 and self.log_every >= 1,
                   "val_every, ckpt_every, num_workers must be >= 0 and log_every >= 1")]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"TrainConfig: {message}; got {self}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; valid fields are {valid}")
        return cls(**values)


class NonFiniteLossError(FloatingPointError):
    """A loss was NaN or inf: the run stops before that update; the last checkpoint stays as it was."""


class NonFiniteStateError(NonFiniteLossError):
    """A weight or buffer (a BatchNorm statistic, an EMA shadow) became NaN or inf while the loss was
    still finite: nothing is saved, so the last finite checkpoint stays as it was."""


NonFiniteLoss = NonFiniteLossError


def lr_multiplier(step: int, config: TrainConfig) -> float:
    """The factor on the base learning rate during 0-based `step`.

    Linear warmup:  (step + 1) / warmup_steps                       for step < warmup_steps
    Cosine decay:   r + (1 - r) (1 + cos(pi p)) / 2,  p = (step - warmup_steps) / (steps - warmup_steps)
    with r = min_lr_ratio and p clipped to [0, 1] (SGDR, Loshchilov & Hutter 2017, eq. 5, no restarts).
    """
    warmup = config.warmup_steps
    if step < warmup:
        return (step + 1) / warmup
    if config.schedule == "constant":
        return 1.0
    p = min(1.0, max(0.0, (step - warmup) / max(1, config.steps - warmup)))
    r = config.min_lr_ratio
    return r + (1 - r) * 0.5 * (1 + math.cos(math.pi * p))


# ---------------------------------------------------------------------------------------------
# Optimizers and the exponential moving average
# ---------------------------------------------------------------------------------------------

_SPEC_KEYS = ("models", "optimizer", "lr", "betas", "weight_decay", "momentum")


def _optimizer_specs(model_names: list[str], config: TrainConfig,
                     overrides: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Resolve {optimizer name: settings}; default: one optimizer per model, named like it."""
    overrides = overrides if overrides is not None else {name: {"models": [name]} for name in model_names}
    specs, owner = {}, {}
    for name, spec in overrides.items():
        unknown = sorted(set(spec) - set(_SPEC_KEYS))
        if unknown:
            raise ValueError(f"optimizer {name!r}: unknown keys {unknown}; valid keys are {list(_SPEC_KEYS)}")
        models = list(spec.get("models", [name]))
        for model in models:
            if model not in model_names:
                raise ValueError(f"optimizer {name!r} names model {model!r}; the models are {model_names}")
            if model in owner:
                raise ValueError(f"model {model!r} is in optimizers {owner[model]!r} and {name!r}; give it one")
            owner[model] = name
        kind = spec.get("optimizer", config.optimizer)
        if kind not in OPTIMIZERS:
            raise ValueError(f"optimizer {name!r}: kind must be one of {OPTIMIZERS}, got {kind!r}")
        specs[name] = {"models": models, "optimizer": kind, "lr": float(spec.get("lr", config.lr)),
                       "betas": tuple(float(b) for b in spec.get("betas", config.betas)),
                       "weight_decay": float(spec.get("weight_decay", config.weight_decay)),
                       "momentum": float(spec.get("momentum", 0.9 if kind == "sgd" else 0.0))}
    return specs


def _build_optimizer(params: list[nn.Parameter], spec: Mapping[str, Any]) -> torch.optim.Optimizer:
    kind, lr, wd = spec["optimizer"], spec["lr"], spec["weight_decay"]
    if kind in ("adam", "adamw"):
        cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
        return cls(params, lr=lr, betas=spec["betas"], weight_decay=wd)
    if kind == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=spec["momentum"], weight_decay=wd)
    return torch.optim.SGD(params, lr=lr, momentum=spec["momentum"], weight_decay=wd)


class EMA:
    """Exponential moving average of a model's weights (Polyak averaging), updated after each step:

        shadow <- d * shadow + (1 - d) * weight

    kept for every floating tensor of the state dict (parameters and buffers such as BatchNorm
    statistics); integer buffers are copied. The shadow usually generalises better than the last
    weights; validation and the checkpoint use it.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for key, value in model.state_dict().items():
            shadow = self.shadow[key]
            if shadow.is_floating_point():
                shadow.lerp_(value.detach(), 1 - self.decay)   # shadow + (1 - d)(w - shadow)
            else:
                shadow.copy_(value)

    @contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[nn.Module]:
        """Load the shadow into `model` for the `with` block, then put the trained weights back."""
        trained = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        try:
            yield model
        finally:
            model.load_state_dict(trained)


# ---------------------------------------------------------------------------------------------
# Data order: a pure function of (seed, epoch), sharded by rank
# ---------------------------------------------------------------------------------------------

def _derived_seed(*keys: Any) -> int:
    """A 63-bit seed from a hash of `keys`: unrelated streams for different keys, same on every machine."""
    digest = hashlib.sha256(repr(("colorkit.train",) + keys).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    """A permutation of range(n) that depends only on (seed, epoch)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(_derived_seed("order", seed, epoch)))


def rank_batches(n: int, batch_size: int, *, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
                 skip: int = 0) -> list[list[int]]:
    """This rank's index lists for one epoch, from global batch number `skip` on (drop_last).

    Global batch b is order[b B : (b + 1) B]; rank r takes its elements r, r + world_size, ...,
    so the ranks' shards of a step together are exactly the single-process batch.
    """
    order = epoch_order(n, seed, epoch).tolist()
    return [order[b * batch_size:(b + 1) * batch_size][rank::world_size] for b in range(skip, n // batch_size)]


# ---------------------------------------------------------------------------------------------
# Processes, RNG states and files
# ---------------------------------------------------------------------------------------------

@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    owns_group: bool = False          # we called init_process_group, so we destroy it


def _init_distributed(device_name: str) -> tuple[_Dist, torch.device]:
    """Join the torchrun process group when WORLD_SIZE > 1 (nccl on CUDA, gloo on the CPU)."""
    device = resolve_device(device_name)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist(), device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ValueError(f"multi-process training needs CUDA or the CPU, got device {device}")
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), owns), device


def _rng_state(device: torch.device) -> dict[str, Any]:
    """Every RNG a step may draw from, as plain values torch.load(weights_only=True) accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": [name, keys.tolist(), pos, has_gauss, cached],
             "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write `state` atomically: readers see the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(dict(state), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


_CHECKPOINT_KEYS = ("format", "step", "models", "ema", "optimizers", "schedulers", "train_config", "rng")


def save_model(model: nn.Module, path: str | os.PathLike, *, name: str = "model", step: int = 0,
               train_config: Mapping[str, Any] | None = None) -> Path:
    """Write one model (its `config` and weights, on the CPU) as a checkpoint that `colorkit.load` reads,
    with no optimizer or RNG state to resume from: a snapshot, or a model assembled from trained parts."""
    config = getattr(model, "config", None)
    if not isinstance(config, dict):
        raise ValueError(f"save_model: {type(model).__name__} has no config dict (build it with colorkit.models.build)")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return save_checkpoint({"format": CHECKPOINT_FORMAT, "step": step, "models": {name: {"config": config, "state": state}},
                            "ema": {}, "optimizers": {}, "schedulers": {}, "train_config": dict(train_config or {}),
                            "rng": {}}, path)


def _torch_load_reason(err: Exception) -> str:
    """What torch.load's error says about the file itself, without its advice on loading it unsafely."""
    text = str(err)
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.\s+Please use|\n\n|$)", text, re.S)
    reason = found.group(1) if found else text.splitlines()[0] if text else type(err).__name__
    reason = re.sub(r"\s+", " ", reason).strip()
    return reason if "weights_only" not in reason else type(err).__name__


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint onto the CPU; a missing, corrupt, foreign or newer file is an error naming `path`.

    Safe to call on a file from anywhere: torch.load(weights_only=True) builds only tensors and plain
    values (never runs code from the file), and nothing the checkpoint names is opened.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, random bytes, a pickle with foreign classes, ...
        raise ValueError(f"cannot read checkpoint {path}: it is corrupt or not a colorkit checkpoint (which holds only "
                         f"tensors and plain values): {_torch_load_reason(err)}") from None
    if isinstance(ckpt, dict) and isinstance(ckpt.get("format"), int) and ckpt["format"] > CHECKPOINT_FORMAT:
        raise ValueError(f"{path} was written by a newer colorkit (checkpoint format {ckpt['format']}; this version "
                         f"reads format {CHECKPOINT_FORMAT}): upgrade colorkit to read it")
    missing = [k for k in _CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing or ckpt["format"] != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a colorkit checkpoint (format {CHECKPOINT_FORMAT}); missing {missing}")
    problem = _layout_problem(ckpt)
    if problem:
        raise ValueError(f"{path} is not a valid colorkit checkpoint: {problem}")
    return ckpt


def _layout_problem(ckpt: Mapping[str, Any]) -> str | None:
    """The first part of a checkpoint that is not what colorkit writes, or None."""
    if not isinstance(ckpt["step"], int) or ckpt["step"] < 0:
        return f"'step' is {ckpt['step']!r}, not a count"
    if not isinstance(ckpt["models"], dict) or not ckpt["models"]:
        return f"'models' is {type(ckpt['models']).__name__}, not a dict of models"
    for name, entry in ckpt["models"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("state"), dict):
            return f"model {name!r} is not {{'config': ..., 'state': {{name: tensor}}}}"
        if entry.get("config") is not None and not isinstance(entry["config"], dict):
            return f"model {name!r}: its config is {type(entry['config']).__name__}, not a dict"
        bad = next((k for k, v in entry["state"].items() if not isinstance(v, Tensor)), None)
        if bad is not None:
            return f"model {name!r}: state entry {bad!r} is {type(entry['state'][bad]).__name__}, not a tensor"
    if not isinstance(ckpt["ema"], dict) or not all(isinstance(v, dict) for v in ckpt["ema"].values()):
        return "'ema' is not a dict of state dicts"
    if not isinstance(ckpt["train_config"], dict):
        return f"'train_config' is {type(ckpt['train_config']).__name__}, not a dict"
    return None


def first_nonfinite(states: Mapping[str, Mapping[str, Any]]) -> str | None:
    """'model.bn.running_var holds inf' for the first floating tensor with a NaN or inf in
    {prefix: state dict}, or None when all are finite (parameters and buffers alike)."""
    for prefix, state in states.items():
        for key, value in state.items():
            if isinstance(value, Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
                kind = "nan" if torch.isnan(value).any() else "inf"
                return f"{prefix}.{key} holds {kind}"
    return None


def state_fit_problem(model: nn.Module, state: Mapping[str, Any]) -> str | None:
    """The first way `state` does not fit `model` (a missing or unexpected key, a shape or dtype
    mismatch), or None; load_state_dict's own error for the same is a page of every mismatch."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        return f"missing {missing[0]!r}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
    unexpected = [k for k in state if k not in own]
    if unexpected:
        return f"unexpected {unexpected[0]!r}" + (f" and {len(unexpected) - 1} more" if len(unexpected) > 1 else "")
    for key, value in own.items():
        if not isinstance(state[key], Tensor):
            return f"{key!r} is {type(state[key]).__name__}, not a tensor"
        if state[key].shape != value.shape:
            return f"{key!r} has shape {tuple(state[key].shape)}, the model's is {tuple(value.shape)}"
        if state[key].is_floating_point() != value.is_floating_point():
            return f"{key!r} is {state[key].dtype}, the model's is {value.dtype}"
    return None


def _append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(_jsonable(record)) + "\n")


def plot_metrics(records: list[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Training losses (and validation metrics, if any) against the step, saved as a PNG.

    Uses matplotlib's Figure directly (no pyplot), so a notebook's own backend is left alone.
    """
    from matplotlib.figure import Figure

    train = [r for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "val" and r.get("metrics")]
    fig = Figure(figsize=(10 if val else 6, 4), layout="constrained")
    axes = fig.subplots(1, 2 if val else 1, squeeze=False)[0]
    for ax, rows, key, title in ((axes[0], train, "loss", "training loss"), (axes[-1], val, "metrics", "validation")):
        names = sorted({name for r in rows for name in r[key]})
        for name in names:
            points = [(r["step"], r[key][name]) for r in rows if isinstance(r[key].get(name), (int, float))]
            ax.plot(*zip(*points), label=name, marker="." if len(points) < 30 else None)
        values = [v for r in rows for v in r[key].values() if isinstance(v, (int, float))]
        if values and min(values) > 0 and max(values) / min(values) > 20:
            ax.set_yscale("log")
        ax.set(xlabel="step", title=title)
        if names:
            ax.legend(fontsize=8)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=100)
    os.replace(tmp, path)
    return path


def _to_device(batch: Any, device: torch.device, non_blocking: bool) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device, non_blocking) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device, non_blocking) for v in batch)
    return batch


def _channels_last(batch: Any) -> Any:
    """Every 4-D floating tensor of `batch` in channels-last memory format (same values, NHWC strides)."""
    if isinstance(batch, Tensor):
        return batch.contiguous(memory_format=torch.channels_last) if batch.dim() == 4 and batch.is_floating_point() else batch
    if isinstance(batch, Mapping):
        return {k: _channels_last(v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_channels_last(v) for v in batch)
    return batch


def default_prepare(batch: Any) -> Any:
    """Add L (B, 1, H, W) and ab (B, 2, H, W) when the batch has "rgb" (B, 3, H, W) and no "L" yet."""
    if isinstance(batch, Mapping) and "rgb" in batch and "L" not in batch:
        return {**batch, **lab_batch(batch["rgb"])}
    return batch


class _StopOnInterrupt:
    """First Ctrl-C (SIGINT): finish the current step, then stop cleanly. Second Ctrl-C: stop at once.

    Stopping at a step boundary keeps the interrupt checkpoint exact. Only the main thread can
    install signal handlers; elsewhere a KeyboardInterrupt arrives as usual.
    """

    def __enter__(self) -> "_StopOnInterrupt":
        self.requested, self._previous = False, None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


# ---------------------------------------------------------------------------------------------
# What a step function sees
# ---------------------------------------------------------------------------------------------

class TrainContext:
    """The step function's handle on the run.

    models: name -> module to call (DistributedDataParallel-wrapped under torchrun; the plain
    modules during validation); unwrapped: name -> plain module; optimizers, schedulers, ema;
    step: 0-based number of the step being run (= steps completed before it; in val_fn, the steps
    completed); epoch; device;
    config; rank; world_size.
    """

    def __init__(self, trainer: "Trainer", models: dict[str, nn.Module]):
        self.models, self.unwrapped = models, trainer.models
        self.optimizers, self.schedulers, self.ema = trainer.optimizers, trainer.schedulers, trainer.ema
        self.config, self.device = trainer.config, trainer.device
        self.rank, self.world_size = trainer.dist.rank, trainer.dist.world_size
        self.step, self.epoch = trainer.step, 0
        self._specs = trainer.specs
        self.updated_in_step = False           # whether an optimizer stepped since this step began

    def update(self, optimizer: str, loss: Tensor, *, name: str | None = None) -> Tensor:
        """One step of `optimizer` on the scalar `loss`; returns the gradient norm before clipping.

        Checks the loss is finite (else NonFiniteLossError naming the step and `name`, default the
        optimizer's name), zeroes this optimizer's gradients, backpropagates, clips, steps, and
        updates the EMA of this optimizer's models. Other models' weights are never touched, so a
        GAN calls update("generator", ...) and update("discriminator", ...) independently.
        """
        if optimizer not in self.optimizers:
            raise KeyError(f"no optimizer named {optimizer!r}; the optimizers are {list(self.optimizers)}")
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise TypeError(f"ctx.update({optimizer!r}, loss) needs a scalar tensor loss, got {loss!r:.80}")
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteLossError(f"loss {name or optimizer!r} is {value} at step {self.step}; "
                                     "stopped before this update, the last checkpoint is unchanged")
        opt = self.optimizers[optimizer]
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", enabled=False) if self.device.type == "cuda" else nullcontext():
            loss.backward()
        params = [p for group in opt.param_groups for p in group["params"]]
        max_norm = self.config.grad_clip or math.inf          # inf: measure only
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        if not torch.isfinite(norm):           # a finite loss can still have an inf/NaN gradient
            opt.zero_grad(set_to_none=True)
            raise NonFiniteLossError(f"the gradient of loss {name or optimizer!r} is {float(norm)} at step {self.step}; "
                                     "stopped before this update, the last checkpoint is unchanged")
        opt.step()
        self.updated_in_step = True
        for model in self._specs[optimizer]["models"]:
            if model in self.ema:
                self.ema[model].update(self.unwrapped[model])
        return norm.detach()


def supervised_step(loss_fn: Callable[[nn.Module, Any], Tensor], model: str = "model",
                    optimizer: str | None = None) -> Callable[[TrainContext, Any], dict[str, Tensor]]:
    """The step function of a single-model run: loss = loss_fn(module, batch), one update, log "loss"."""

    def step(ctx: TrainContext, batch: Any) -> dict[str, Tensor]:
        loss = loss_fn(ctx.models[model], batch)
        ctx.update(optimizer or model, loss, name="loss")
        return {"loss": loss}

    return step


# ---------------------------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------------------------

class Trainer:
    """Trains `models` with `step_fn` on `train_data`; see the module docstring.

    optimizers: {name: {"models": [...], "optimizer", "lr", "betas", "weight_decay", "momentum"}}
    (missing keys come from `config`); default one optimizer per model, named like it. Models in
    no optimizer are frozen. resume=True continues from out_dir/checkpoint.pt when it exists; a
    checkpoint that disagrees with this run (other than RESUMABLE_CHANGES) is a ValueError.
    Under torchrun, call fit() once: it ends the process group it started.
    """

    def __init__(self, models: Mapping[str, nn.Module], step_fn: Callable[[TrainContext, Any], Mapping[str, Any]],
                 train_data: Dataset, config: TrainConfig, *, out_dir: str | os.PathLike,
                 prepare: Callable[[Any], Any] | None = None,
                 val_fn: Callable[[TrainContext], Mapping[str, float]] | None = None,
                 optimizers: Mapping[str, Mapping[str, Any]] | None = None, resume: bool = True):
        if not models or not all(isinstance(m, nn.Module) for m in models.values()):
            raise TypeError(f"models must be a non-empty dict of nn.Module, got {models!r:.120}")
        self.config, self.step_fn, self.data = config, step_fn, train_data
        self.prepare, self.val_fn = prepare or default_prepare, val_fn
        self.dist, self.device = _init_distributed(config.device)
        if config.batch_size % self.dist.world_size:
            raise ValueError(f"batch_size {config.batch_size} must be divisible by the {self.dist.world_size} processes")
        self.steps_per_epoch = len(train_data) // config.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"the dataset has {len(train_data)} items, fewer than one batch of {config.batch_size}")
        self.out_dir = run_dir(out_dir)
        self.checkpoint_path = self.out_dir / "checkpoint.pt"
        self.is_main = self.dist.rank == 0
        seed_everything(config.seed + self.dist.rank)

        self.models = {name: m.to(self.device).train() for name, m in models.items()}
        if config.channels_last:                # NHWC: what cuDNN's fastest convolutions want
            self.models = {name: m.to(memory_format=torch.channels_last) for name, m in self.models.items()}
        self.device_cache = None                # built on the first fit() when config.device_cache
        if self.dist.world_size > 1 and self.device.type == "cuda":
            # batch norm statistics over the global batch, as in one process (SyncBatchNorm needs CUDA;
            # under gloo on a CPU each rank normalises its own shard)
            self.models = {name: nn.SyncBatchNorm.convert_sync_batchnorm(m) for name, m in self.models.items()}
        if self.dist.world_size > 1:            # every rank starts from rank 0's weights (and EMA)
            for tensor in (t for m in self.models.values() for t in m.state_dict().values()):
                dist.broadcast(tensor, src=0)
        self.specs = _optimizer_specs(list(self.models), config, optimizers)
        self.optimizers, self.schedulers = {}, {}
        for name, spec in self.specs.items():
            params = [p for m in spec["models"] for p in self.models[m].parameters() if p.requires_grad]
            if not params:
                raise ValueError(f"optimizer {name!r} has no trainable parameters (models {spec['models']})")
            self.optimizers[name] = _build_optimizer(params, spec)
            self.schedulers[name] = LambdaLR(self.optimizers[name], functools.partial(lr_multiplier, config=config))
        # Models some optimizer trains: they get an EMA and, under torchrun, a DDP wrapper.
        self.trained = [m for spec in self.specs.values() for m in spec["models"]]
        self.ema = {m: EMA(self.models[m], config.ema_decay) for m in self.trained} if config.ema_decay is not None else {}

        self.step, self.last_val, self.last_losses, self.train_seconds = 0, {}, {}, 0.0
        self.last_images_per_s = 0.0          # of the last session that trained (the summary's images_per_s)
        # losses of the steps since the last log line: the checkpoint keeps them, so that the first
        # line after a resume averages the same steps as an uninterrupted run's
        self._log_sums: dict[str, float] = {}
        self._log_count = 0
        self._rng_to_restore = None
        if resume and self.checkpoint_path.exists():
            self._restore(load_checkpoint(self.checkpoint_path))
        self.resumed_from = self.step
        self._start_time = time.perf_counter()

    # -- resume ------------------------------------------------------------------------------

    def _model_config(self, name: str) -> Any:
        return _jsonable(getattr(self.models[name], "config", None))

    def _check_compatible(self, ckpt: Mapping[str, Any]) -> None:
        """List every difference between the checkpoint and this run that would make resuming wrong."""
        problems = []
        saved, now = _jsonable(ckpt["train_config"]), _jsonable(self.config.to_dict())
        defaults = _jsonable(TrainConfig(steps=1, batch_size=1).to_dict())
        for key in now:
            if key in RESUMABLE_CHANGES or saved.get(key) == now[key]:
                continue
            if key not in saved and now[key] == defaults[key]:
                continue     # a field newer than the checkpoint, at the default that keeps the old behaviour
            problems.append(f"train config {key}: checkpoint {saved.get(key, '(none: an older colorkit)')!r}, "
                            f"this run {now[key]!r}")
        if set(ckpt["models"]) != set(self.models):
            problems.append(f"models: checkpoint {sorted(ckpt['models'])}, this run {sorted(self.models)}")
        for name in set(ckpt["models"]) & set(self.models):
            old, new = _jsonable(ckpt["models"][name]["config"]), self._model_config(name)
            if old != new:
                if isinstance(old, dict) and isinstance(new, dict):
                    diff = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
                            if old.get(k) != new.get(k)]
                    problems.append(f"model {name!r} config differs ({'; '.join(diff)})")
                else:
                    problems.append(f"model {name!r} config: checkpoint {old!r}, this run {new!r}")
        if _jsonable(ckpt.get("optimizer_specs")) != _jsonable(self.specs):
            problems.append(f"optimizers: checkpoint {ckpt.get('optimizer_specs')}, this run {self.specs}")
        if ckpt.get("data_len") != len(self.data):
            problems.append(f"dataset length: checkpoint {ckpt.get('data_len')}, this run {len(self.data)}")
        if ckpt["step"] > self.config.steps:
            problems.append(f"the checkpoint is at step {ckpt['step']}, beyond steps={self.config.steps}")
        if not problems:
            for name in self.models:
                fit = state_fit_problem(self.models[name], ckpt["models"][name]["state"])
                ema = ckpt["ema"].get(name)
                fit = fit or (state_fit_problem(self.models[name], ema) if name in self.ema and ema is not None else None)
                if fit:
                    problems.append(f"model {name!r} weights do not fit this model: {fit}")
            bad = first_nonfinite({**{n: e["state"] for n, e in ckpt["models"].items()},
                                   **{f"ema.{n}": e for n, e in ckpt["ema"].items()}})
            if bad:
                problems.append(f"{bad} (a checkpoint from before colorkit refused to save non-finite weights)")
        if problems:
            raise ValueError(f"cannot resume from {self.checkpoint_path}:\n  - " + "\n  - ".join(problems)
                             + f"\n(a run made by other code or settings). Delete {self.checkpoint_path.parent} to "
                             "train afresh, pass resume=False (overwrites it) or choose another out_dir.")

    def _restore(self, ckpt: Mapping[str, Any]) -> None:
        self._check_compatible(ckpt)
        for name, model in self.models.items():
            model.load_state_dict(ckpt["models"][name]["state"])
        for name in self.optimizers:
            self.optimizers[name].load_state_dict(ckpt["optimizers"][name])
            self.schedulers[name].load_state_dict(ckpt["schedulers"][name])
            # the schedule may be re-planned (more steps): the next step's lr follows this run's config
            scheduler, multiplier = self.schedulers[name], lr_multiplier(int(ckpt["step"]), self.config)
            for group, base in zip(self.optimizers[name].param_groups, scheduler.base_lrs):
                group["lr"] = base * multiplier
            scheduler._last_lr = [group["lr"] for group in self.optimizers[name].param_groups]
        for name, ema in self.ema.items():
            ema.shadow = {k: v.to(self.device) for k, v in ckpt["ema"][name].items()}
        self.step = int(ckpt["step"])
        self.train_seconds = float(ckpt.get("train_seconds", 0.0))
        # What the summary reports: from the checkpoint, or (older checkpoints) from metrics.jsonl,
        # so that a finished run resumed reports what it reported when it trained.
        records = [r for r in self._read_records() if r.get("step", math.inf) <= self.step]
        saved = ckpt.get("summary") or {}
        self.last_losses = dict(saved.get("losses") or next(
            (r["loss"] for r in reversed(records) if r.get("kind") == "train"), {}))
        self.last_val = dict(saved.get("val") or next(
            (r["metrics"] for r in reversed(records) if r.get("kind") == "val"), {}))
        self.last_images_per_s = float(saved.get("images_per_s") or next(
            (r["images_per_s"] for r in reversed(records) if r.get("kind") == "train"), 0.0))
        window = ckpt.get("log_window") or {}
        self._log_sums = {k: float(v) for k, v in (window.get("sums") or {}).items()}
        self._log_count = int(window.get("count") or 0)
        # Each rank continues its own RNG streams; with another world size, rank 0's are reused.
        states = ckpt.get("rng_by_rank") or [ckpt["rng"]]
        self._rng_to_restore = states[self.dist.rank] if self.dist.rank < len(states) else states[0]

    # -- pieces of fit() ------------------------------------------------------------------------

    def _autocast(self):
        on = self.config.amp and self.device.type == "cuda"
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16) if on else nullcontext()

    def _loader(self, epoch: int, skip: int) -> Iterator[Any]:
        """A DataLoader over this rank's remaining batches of `epoch`; its own generator leaves the global RNG alone.
        With config.device_cache, the same batches built on the device from the DeviceCache."""
        base = self.data.dataset if isinstance(self.data, Subset) else self.data   # fresh crops through a Subset too
        if hasattr(base, "set_epoch"):
            base.set_epoch(epoch)
        cfg = self.config
        batches = rank_batches(len(self.data), cfg.batch_size, seed=cfg.seed, epoch=epoch, rank=self.dist.rank,
                               world_size=self.dist.world_size, skip=skip)
        if cfg.device_cache:
            if self.device_cache is None:
                from colorkit.data import DeviceCache

                self.device_cache = DeviceCache(self.data, self.device)
            return (self.device_cache.batch(indices) for indices in batches)
        pin = cfg.pin_memory if cfg.pin_memory is not None else self.device.type == "cuda"
        return DataLoader(self.data, batch_sampler=batches, num_workers=cfg.num_workers, pin_memory=pin,
                          generator=torch.Generator().manual_seed(_derived_seed("workers", cfg.seed, epoch, self.dist.rank)),
                          worker_init_fn=_seed_worker if cfg.num_workers else None)

    def _train_step(self, ctx: TrainContext, batch: Any) -> dict[str, float]:
        batch = self.prepare(_to_device(batch, self.device, non_blocking=self.device.type == "cuda"))
        if self.config.channels_last:
            batch = _channels_last(batch)
        with self._autocast():
            losses = self.step_fn(ctx, batch)
        if not isinstance(losses, Mapping):
            raise TypeError(f"step_fn must return a dict of losses to log, got {type(losses).__name__}")
        values = {k: float(v.detach()) if isinstance(v, Tensor) else float(v) for k, v in losses.items()}
        for key, value in values.items():
            if not math.isfinite(value):
                raise NonFiniteLossError(f"loss {key!r} is {value} at step {ctx.step}; the last checkpoint is unchanged")
        with warnings.catch_warnings():  # an optimizer that skipped this step (GAN schedules) is fine
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            for scheduler in self.schedulers.values():
                scheduler.step()
        return values

    def _all_reduce(self, values: list[float], op: str = "sum") -> list[float]:
        """Sum (or max) `values` over the ranks; a no-op in a single process."""
        if self.dist.world_size == 1 or not values:
            return values
        comm = self.device if self.device.type == "cuda" else torch.device("cpu")
        total = torch.tensor(values, dtype=torch.float64, device=comm)
        dist.all_reduce(total, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        return total.tolist()

    def _record(self, record: dict[str, Any]) -> None:
        if self.is_main:
            self.records.append(_jsonable(record))
            _append_jsonl(self.metrics_path, record)

    def _validate(self, ctx: TrainContext) -> None:
        """Run val_fn on rank 0 with the plain models in eval mode, EMA weights swapped in."""
        if self.val_fn is None:
            return
        if self.is_main:
            training = {name: m.training for name, m in self.models.items()}
            ctx.step = self.step              # during validation: the number of steps completed, as in the record
            wrapped, ctx.models = ctx.models, self.models
            try:
                with ExitStack() as stack, torch.no_grad(), self._autocast():
                    for name, ema in self.ema.items():
                        stack.enter_context(ema.swapped_in(self.models[name]))
                    for m in self.models.values():
                        m.eval()
                    metrics = {k: float(v) for k, v in self.val_fn(ctx).items()}
            finally:
                ctx.models = wrapped
                for name, m in self.models.items():
                    m.train(training[name])
            self.last_val = metrics
            self._record({"kind": "val", "step": self.step, "metrics": metrics})
        if self.dist.world_size > 1:
            dist.barrier()

    def _checkpoint(self, rng_by_rank: list[dict[str, Any]]) -> dict[str, Any]:
        """The checkpoint: plain (unwrapped) state dicts plus everything exact resume needs."""
        return {"format": CHECKPOINT_FORMAT, "step": self.step,
                "models": {n: {"config": self._model_config(n), "state": m.state_dict()} for n, m in self.models.items()},
                "ema": {n: dict(e.shadow) for n, e in self.ema.items()},
                "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
                "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
                "train_config": self.config.to_dict(), "optimizer_specs": self.specs, "data_len": len(self.data),
                "world_size": self.dist.world_size, "rng": rng_by_rank[0], "rng_by_rank": rng_by_rank,
                "train_seconds": self._saved_train_seconds,
                "summary": {"losses": dict(self.last_losses), "val": dict(self.last_val),
                            "images_per_s": self.last_images_per_s},
                "log_window": {"sums": dict(self._log_sums), "count": self._log_count}}

    def _save(self) -> None:
        """Rank 0 writes the checkpoint; every rank contributes its RNG state and waits for the write."""
        bad = first_nonfinite({**{n: m.state_dict() for n, m in self.models.items()},
                               **{f"ema.{n}": e.shadow for n, e in self.ema.items()}})
        if self._all_reduce([float(bad is not None)], "max")[0]:   # every rank stops together
            bad = bad or "a weight or buffer of another process is not finite"
            # e.g. BatchNorm statistics that overflowed in a forward pass whose loss was still finite
            raise NonFiniteStateError(f"{bad} at step {self.step}: not saved, the last checkpoint {self.checkpoint_path} "
                                      "is kept (lower the learning rate, or clip gradients)")
        rng_by_rank = [_rng_state(self.device)]
        self._saved_train_seconds = self.train_seconds + time.perf_counter() - self._start_time   # every session's
        if self.dist.world_size > 1:
            rng_by_rank = [None] * self.dist.world_size
            dist.all_gather_object(rng_by_rank, _rng_state(self.device))
        if self.is_main:
            save_checkpoint(self._checkpoint(rng_by_rank), self.checkpoint_path)
            plot_metrics(self.records, self.out_dir / "loss.png")
        if self.dist.world_size > 1:
            dist.barrier()

    def _read_records(self) -> list[dict[str, Any]]:
        path = self.out_dir / "metrics.jsonl"
        records = []
        for line in path.read_text().splitlines() if path.exists() else []:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:      # a line cut short by a crash
                continue
        return records

    def _start_records(self) -> None:
        """Keep metrics.jsonl lines up to the resume step (drop those of steps that will rerun); a fresh run starts empty."""
        self.metrics_path, self.records = self.out_dir / "metrics.jsonl", []
        if not self.is_main:
            return
        if self.step > 0:
            self.records = [r for r in self._read_records() if r.get("step", math.inf) <= self.step]
        tmp = self.metrics_path.with_name("metrics.jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in self.records))
        os.replace(tmp, self.metrics_path)
        _write_json_atomic(self.out_dir / "train_config.json",
                           {"train": self.config.to_dict(), "optimizers": self.specs, "world_size": self.dist.world_size,
                            "models": {n: self._model_config(n) for n in self.models}})

    # -- the loop -------------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train to config.steps; returns a summary (steps, seconds, images_per_s, losses, val, checkpoint).

        Ctrl-C finishes the current step, saves a checkpoint there and re-raises KeyboardInterrupt
        (so a notebook or papermill stops); a second Ctrl-C, or a KeyboardInterrupt raised inside a
        step, saves the state as it is only if no update of that step ran (else the last checkpoint
        is kept). A finished run that is resumed returns at once, without validating or saving again;
        `train_seconds` in the summary counts the training time of every session of the run.
        A NaN/inf loss raises NonFiniteLossError and writes no checkpoint. Under torchrun a loss
        that is non-finite on one rank only stops that rank; torchrun then ends the others.
        """
        cfg = self.config
        wrapped = {n: DistributedDataParallel(m, device_ids=[self.device.index] if self.device.type == "cuda" else None)
                   if self.dist.world_size > 1 and n in self.trained else m for n, m in self.models.items()}
        if cfg.compile:                         # the step calls the compiled modules; checkpoints keep the plain ones
            mode = None if cfg.compile in (True, "default") else cfg.compile
            wrapped = {n: torch.compile(m, mode=mode) for n, m in wrapped.items()}
        ctx = TrainContext(self, wrapped)
        self._start_records()
        if self._rng_to_restore is not None:
            _set_rng_state(self._rng_to_restore, self.device)
            self._rng_to_restore = None
        start_step, start_time = self.step, time.perf_counter()
        self._start_time = start_time
        stopping = False
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not self.is_main, desc="train", unit="step")
        try:
            with _StopOnInterrupt() as interrupt:
                while self.step < cfg.steps:
                    epoch = self.step // self.steps_per_epoch
                    for batch in self._loader(epoch, skip=self.step % self.steps_per_epoch):
                        ctx.step, ctx.epoch, ctx.updated_in_step = self.step, epoch, False
                        for key, value in self._train_step(ctx, batch).items():
                            self._log_sums[key] = self._log_sums.get(key, 0.0) + value
                        self.step, self._log_count = self.step + 1, self._log_count + 1
                        bar.update(1)
                        done = self.step >= cfg.steps
                        if self.step % cfg.log_every == 0 or done:
                            self._log(self._log_sums, self._log_count, start_step, start_time, bar)
                            self._log_sums, self._log_count = {}, 0
                        if cfg.val_every and self.step % cfg.val_every == 0 and not done:
                            self._validate(ctx)
                        if cfg.ckpt_every and self.step % cfg.ckpt_every == 0 and not done:
                            self._save()
                        if self._all_reduce([float(interrupt.requested)], "max")[0]:   # stop together
                            stopping = True
                            raise KeyboardInterrupt
                        if done:
                            break
                if self.step > start_step:        # a finished run resumed: nothing new to validate or save
                    self._validate(ctx)
                    self._save()
        except KeyboardInterrupt:
            # Under torchrun, save only when every rank stopped at this step together (else the collectives would hang).
            if stopping or (self.dist.world_size == 1 and not ctx.updated_in_step):
                self._save()
                if self.is_main:
                    bar.write(f"interrupted: checkpoint at step {self.step} in {self.checkpoint_path}")
            elif self.is_main:
                # some update of the interrupted step already ran: saving would mix two steps
                bar.write(f"interrupted inside step {self.step}: kept the last checkpoint {self.checkpoint_path}")
            raise
        finally:
            bar.close()
            if self.dist.owns_group:
                dist.destroy_process_group()
        seconds = time.perf_counter() - start_time
        if self.step > start_step:
            # the time the final checkpoint recorded, so that a resumed finished run reports the same
            self.train_seconds = self._saved_train_seconds
        # A finished run that is resumed reports what it reported when it trained (losses, val,
        # images/s of its last training session, train_seconds): only `seconds` and `resumed_from` differ.
        return {"steps": self.step, "resumed_from": start_step, "seconds": seconds, "train_seconds": self.train_seconds,
                "images_per_s": self.last_images_per_s, "losses": dict(self.last_losses), "val": dict(self.last_val),
                "checkpoint": str(self.checkpoint_path), "out_dir": str(self.out_dir), "world_size": self.dist.world_size}

    def _log(self, sums: dict[str, float], count: int, start_step: int, start_time: float, bar: tqdm) -> None:
        keys = sorted(sums)                    # the same order on every rank
        totals = self._all_reduce([sums[k] / count for k in keys])
        means = {k: v / self.dist.world_size for k, v in zip(keys, totals)}
        seconds = time.perf_counter() - start_time
        images_per_s = (self.step - start_step) * self.config.batch_size / max(seconds, 1e-9)
        self.last_losses, self.last_images_per_s = means, images_per_s
        lrs = {n: s.get_last_lr()[0] for n, s in self.schedulers.items()}   # the next step's learning rate
        self._record({"kind": "train", "step": self.step, "seconds": round(seconds, 3),
                      "images_per_s": round(images_per_s, 2), "loss": means, "lr": lrs})
        shown = {k: f"{v:.4g}" for k, v in list(means.items())[:3]}
        bar.set_postfix(**shown, img_s=f"{images_per_s:.1f}")
