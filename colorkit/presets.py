"""Presets for every model, in one place: `smoke` (seconds, tests), `course` (CPU minutes), `full` (the paper).

    cfg = preset("baseline", "course", steps=200)    # {"model": {...}, "train": {...}, "data": {...}}

`model` is a config for `colorkit.models.build`, `train` the fields of `colorkit.train.TrainConfig`,
`data` the image size and how many training (None: all) and validation images. `full` holds the paper's own settings with
the section they come from; where a paper is silent, the comment says the value is ours.
"""

from __future__ import annotations

import copy
from typing import Any

from colorkit.runs import PRESETS as PRESET_NAMES

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "baseline": {
        "smoke": {
            "model": {"name": "baseline", "width": 8, "depth": 2, "image_size": 32},
            "train": {"steps": 4, "batch_size": 4, "lr": 1e-3, "optimizer": "adam", "log_every": 1},
            "data": {"size": 32, "train_images": 64, "val_images": 8},
        },
        "course": {
            "model": {"name": "baseline", "width": 16, "depth": 3, "image_size": 64},
            "train": {"steps": 300, "batch_size": 24, "lr": 2e-3, "optimizer": "adam", "warmup_steps": 20,
                      "schedule": "cosine", "log_every": 20},
            "data": {"size": 64, "train_images": 4096, "val_images": 96},
        },
        # Lakhani sec. 3.4 and 4: 256 x 256 L input, Adam with lr 1e-3, MSE on ab. Batch size and
        # the number of steps are not given in the paper: 32 and 100k steps (about 25 ImageNet
        # epochs at batch 32 would be 1M steps; 100k is where our runs level off) are our choice.
        "full": {
            "model": {"name": "baseline", "width": 64, "depth": 3, "image_size": 256},
            "train": {"steps": 100_000, "batch_size": 32, "lr": 1e-3, "optimizer": "adam", "warmup_steps": 1000,
                      "schedule": "cosine", "ema_decay": 0.999, "val_every": 5000, "ckpt_every": 2000,
                      "log_every": 100, "num_workers": 8},
            "data": {"size": 256, "train_images": None, "val_images": 1000},   # None: the whole training split
        },
    },
}


def preset(model: str, name: str, **train_overrides: Any) -> dict[str, Any]:
    """A deep copy of `model`'s preset `name`, with training fields overridden (e.g. steps=100).

    An unknown model, preset or training field is an error that lists the valid ones.
    """
    if model not in PRESETS:
        raise ValueError(f"no presets for model {model!r}; models with presets: {', '.join(sorted(PRESETS))}")
    if name not in PRESET_NAMES:
        raise ValueError(f"unknown preset {name!r}; valid presets are {', '.join(PRESET_NAMES)}")
    cfg = copy.deepcopy(PRESETS[model][name])
    from colorkit.train import TrainConfig  # the one list of valid training fields

    valid = set(TrainConfig.__dataclass_fields__)
    unknown = sorted(set(train_overrides) - valid)
    if unknown:
        raise ValueError(f"unknown training parameter(s) {unknown}; valid ones: {', '.join(sorted(valid))}")
    cfg["train"].update({k: v for k, v in train_overrides.items() if v is not None})
    return cfg
