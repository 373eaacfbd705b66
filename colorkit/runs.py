"""Small pieces every notebook uses: presets, device choice, seeding and the run folder.

A notebook's `parameters` cell holds plain literals (PRESET, DEVICE, OUT_DIR, ...). These helpers
turn them into a device, a seeded RNG state and a folder where the run writes `config.json` and
`metrics.json`, so that every run, by a student or under papermill, leaves the same record.
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

PRESETS = ("smoke", "course", "workshop", "full")


def choose(preset: str, **by_preset: Any) -> Any:
    """Return the value for `preset`, e.g. ``choose(PRESET, smoke=8, course=64, workshop=128, full=256)``.

    An unknown preset is an error that lists the valid ones.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown PRESET {preset!r}; valid presets are {', '.join(PRESETS)}")
    missing = [p for p in PRESETS if p not in by_preset]
    if missing:
        raise TypeError(f"choose() needs a value for every preset; missing {missing}")
    return by_preset[preset]


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; 'cpu', 'cuda', 'cuda:N' or 'mps' must be there, else a
    ValueError in one line says what is missing."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for CUDA, but torch sees no CUDA device; use 'auto' or 'cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: torch sees {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {device!r}: torch sees no MPS (Apple GPU) device; use 'auto' or 'cpu'")
    elif dev.type != "cpu":
        raise ValueError(f"device {device!r}: colorkit runs on 'cpu', 'cuda' or 'mps'")
    return dev


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch.Generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def project_root(start: str | os.PathLike | None = None) -> Path:
    """The nearest folder at or above `start` (default: cwd) holding pyproject.toml, else cwd.

    Notebooks run with their own folder as the working directory (Jupyter, nbval) or with the
    caller's (papermill); resolving OUT_DIR against the project root puts results under `runs/`
    either way.
    """
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "colorkit").is_dir():
            return folder
    return here


OUT_ROOT_ENV = "COLORKIT_OUT_ROOT"


def out_root() -> Path:
    """The folder that relative OUT_DIRs (``"runs/..."``) are taken from: the project root, or
    $COLORKIT_OUT_ROOT when set. The test command sets it to a folder of its own, so that testing
    never reads or writes a user's `runs/`."""
    override = os.environ.get(OUT_ROOT_ENV)
    return Path(override).resolve() if override else project_root()


def resolve_out(path: str | os.PathLike) -> Path:
    """`path` as is when absolute, else taken from `out_root()`."""
    path = Path(path)
    return path if path.is_absolute() else out_root() / path


def run_dir(out_dir: str | os.PathLike, *, seed: int | None = None) -> Path:
    """Create and return the run folder; a relative path is taken from `out_root()` (the project root).

    `seed`: the folder for a notebook's checkpoints under that SEED. Seed 0 (the default) uses
    `out_dir` itself, any other seed `out_dir/seed_<seed>`: a rerun with another SEED trains afresh
    beside the first run, where one folder would refuse to resume a checkpoint of another seed.
    """
    path = resolve_out(out_dir)
    if seed not in (None, 0):
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        path = path / f"seed_{seed}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _jsonable(value: Any) -> Any:
    """Plain JSON values; non-finite floats (a PSNR of identical images is inf) become "inf"/"-inf"/"nan"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.detach().cpu().tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (Path, torch.device)):
        return str(value)
    return value


def _write_json_atomic(path: Path, payload: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_jsonable(payload), indent=2, sort_keys=True, allow_nan=False) + "\n")
    os.replace(tmp, path)


def save_run(out_dir: str | os.PathLike, config: Mapping[str, Any], metrics: Mapping[str, Any], *,
             trained_models: list[Mapping[str, Any]] | None = None) -> Path:
    """Write `config.json` and `metrics.json` into the run folder and return the folder.

    `trained_models`: one record per model the notebook trained (see `trained_model_record`); the
    course runner gathers them into runs/results.json and runs/results.md.
    """
    folder = run_dir(out_dir)
    _write_json_atomic(folder / "config.json", config)
    if trained_models:
        trained_models = [{**record, **_paper_settings(config, record.get("model"))} for record in trained_models]
    _write_json_atomic(folder / "metrics.json", {**metrics, **({"trained_models": trained_models} if trained_models else {})})
    return folder


def _paper_settings(config: Mapping[str, Any], model_name: str | None) -> dict[str, Any]:
    """{"paper": ..., "ours": ...} of the `full` preset in `config` that configures `model_name`
    (see colorkit.presets), so the results table stores them with the model; {} for other presets."""
    for value in config.values():
        if isinstance(value, Mapping) and "ours" in value and isinstance(value.get("model"), Mapping) \
                and value["model"].get("name") == model_name:
            return {"paper": value["paper"], "ours": value["ours"]}
    return {}


def trained_model_record(model: torch.nn.Module, *, checkpoint: str | os.PathLike, preset: str,
                         train_seconds: float, val: Mapping[str, Any], data: str, variant: str = "") -> dict[str, Any]:
    """What the results table shows for a trained model: its name, size, time and validation metrics.

    `variant` tells apart several models of one registered name in a notebook (an ablation's rows).
    """
    config = getattr(model, "config", {}) or {}
    return {"model": config.get("name", type(model).__name__), "variant": variant, "preset": preset,
            "parameters": sum(p.numel() for p in model.parameters()), "train_seconds": round(train_seconds, 1),
            "checkpoint": str(checkpoint), "data": str(data), "val": dict(val)}
