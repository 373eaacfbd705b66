"""Does a hint model learn to use its hints? Zhang et al.'s network or Li et al.'s T under hint recipes.

    python benchmarks/hint_ablation.py                                  # zhang2017, every recipe, the course budget
    python benchmarks/hint_ablation.py --model li --variants course "paper: 10 hints"
    python benchmarks/hint_ablation.py --steps 1600 --variants course
    python benchmarks/hint_ablation.py --quick                          # seconds, on ToyWorld (the test runs this)

Each recipe trains the model from seed 0 through `colorkit.train.Trainer` on the same crops and is
measured on the shared validation split with the same seeded hints (`evaluate.fixed_hints`, 2 x 2):
PSNR at 0, 2 and 10 hints, the gain from 0 to 10 hints, and the margin over painting the mean hint
color everywhere (`evaluate.mean_hint_color`) and over the hints spread by distance
(`evaluate.spread_hint_color`, the prior the course models start from) at 2 and 10 hints. Issue
15's bar for the course: a gain of at least 3 dB at 10 hints, and above the fill from 2 hints on.
`--json PATH` writes the rows. The course presets' recipes (zhang2017: global hints on the spread
prior, p = 1/20, 800 steps; li: the hint path on the spread prior, Huber delta 10, p = 1/20, lr
1e-3, 600 steps) were chosen from these rows; "no prior" / "no hint path" rows are the papers'
networks.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import torch

from colorkit import data, evaluate, models, presets, runs, train
from colorkit.models import jiang, li

# name: (model changes, training-step options, Trainer changes), per model
RECIPES = {
    "zhang2017": {
        "course": ({}, {}, {}),                                      # the course preset: global hints on the spread prior
        "global hints, no prior": ({"prior": None}, {}, {}),         # the mean hint color after conv4, from nothing
        "no prior, no global hints": ({"prior": None, "global_hints": False}, {}, {}),   # Zhang et al.'s network
        "p = 1/8, no prior": ({"prior": None, "global_hints": False}, {"hint_p": 1 / 8}, {}),   # Zhang et al.'s p
        "patch 1-5, no prior": ({"prior": None, "global_hints": False}, {"max_patch": 5}, {}),  # their patch sides (1-9)
        "dense 25 %, no prior": ({"prior": None, "global_hints": False}, {"dense_share": 0.25}, {}),  # 50-400 hints
        "width 16, no prior": ({"prior": None, "global_hints": False, "width": 16}, {}, {}),
        "lr 5e-4, no prior": ({"prior": None, "global_hints": False}, {}, {"lr": 5e-4}),
    },
    "li": {
        "course": ({}, {}, {}),                                      # hint path (width 8) on the spread prior, Huber delta 10
        "path width 16": ({"hint_path_width": 16}, {}, {}),
        "delta 1 (eq. 13), width 16": ({"hint_path_width": 16}, {"delta": 1.0}, {}),   # the paper's Huber delta
        "lr 2e-3, width 16": ({"hint_path_width": 16}, {}, {"lr": 2e-3}),
        "hint path, no prior, delta 1": ({"hint_path": "global", "hint_path_width": 16}, {"delta": 1.0}, {}),
        "no hint path, delta 1": ({"hint_path": "none"}, {"delta": 1.0}, {}),   # the paper's network
        "paper: 10 hints, no hint path": ({"hint_path": "none"}, {"delta": 1.0, "hint_p": None}, {}),  # sec. 4.3
        "lr 5e-4, no hint path": ({"hint_path": "none"}, {"delta": 1.0}, {"lr": 5e-4}),   # the paper's rate
        "lr 2e-3, no hint path": ({"hint_path": "none"}, {"delta": 1.0}, {"lr": 2e-3}),
        "Swin's final LayerNorm, no hint path": ({"hint_path": "none", "final_norm": "layer"}, {"delta": 1.0}, {}),
    },
}
COUNTS = (0, 2, 10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="photos", help="what to train and validate on (default: the photo corpus)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the course preset's)")
    parser.add_argument("--model", default="zhang2017", choices=list(RECIPES))
    parser.add_argument("--variants", nargs="+", default=None, help="recipes to run (default: all of the model's)")
    parser.add_argument("--json", default=None, help="write the rows to this file")
    parser.add_argument("--quick", action="store_true", help="ToyWorld at 32 px, the smoke preset: checks the code runs")
    args = parser.parse_args()

    level = "smoke" if args.quick else "course"
    recipes = RECIPES[args.model]
    unknown = [v for v in args.variants or [] if v not in recipes]
    if unknown:
        parser.error(f"unknown recipe(s) {unknown} for {args.model}; choose from {list(recipes)}")
    cfg = presets.preset(args.model, level, steps=args.steps)
    data_name = "toyworld" if args.quick else args.data
    size = cfg["data"]["size"]
    variants = args.variants or list(recipes)
    variants = variants[:2] if args.quick else variants
    train_set = data.open_dataset(data_name, split="train", size=size, length=cfg["data"]["train_images"], seed=0)
    val_set = evaluate.validation_set(data_name, size=size, count=cfg["data"]["val_images"])
    val_rgb = torch.stack([val_set[i]["rgb"] for i in range(len(val_set))])
    fill = evaluate.psnr_vs_hints(evaluate.mean_hint_color, val_rgb, COUNTS)
    spread = evaluate.psnr_vs_hints(evaluate.spread_hint_color, val_rgb, COUNTS)
    print(f"{cfg['train']['steps']} steps of batch {cfg['train']['batch_size']} on {size}-px crops of {data_name}; "
          f"{len(val_rgb)} validation crops; mean hint color fill: "
          + ", ".join(f"{n} hints {fill[n]:.2f} dB" for n in COUNTS)
          + "; hints spread by distance (the prior): " + ", ".join(f"{n} hints {spread[n]:.2f} dB" for n in COUNTS), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in variants:
            model_changes, step_options, train_changes = recipes[name]
            runs.seed_everything(0)
            net = models.build({**cfg["model"], **model_changes})
            loss = cfg["loss"]
            if args.model == "li":
                options = {"hints": loss["hints"], "hint_patch": loss["hint_patch"], "delta": loss["delta"],
                           "hint_p": loss.get("hint_p"), **step_options}
                step = li.make_li_step(**options)
            else:
                options = {"hint_patch": loss["hint_patch"], "hint_p": loss.get("hint_p", jiang.HINT_P), **step_options}
                step = jiang.make_smsanet_step(alpha=0.0, **options)
            started = time.perf_counter()
            train.Trainer({"model": net}, step, train_set,
                          train.TrainConfig(**{**cfg["train"], **train_changes, "log_every": 10_000}),
                          out_dir=f"{tmp}/{name.replace(' ', '_').replace('/', '_').replace(':', '')}").fit()
            seconds = time.perf_counter() - started
            curve = evaluate.psnr_vs_hints(net.eval(), val_rgb, COUNTS)
            row = {"recipe": name, "train_seconds": round(seconds, 1), **{f"psnr_{n}": round(curve[n], 2) for n in COUNTS},
                   "gain_10": round(curve[10] - curve[0], 2), "over_fill_2": round(curve[2] - fill[2], 2),
                   "over_fill_10": round(curve[10] - fill[10], 2), "over_spread_2": round(curve[2] - spread[2], 2),
                   "over_spread_10": round(curve[10] - spread[10], 2)}
            rows.append(row)
            print(f"{name:>22}: {seconds:5.0f} s | PSNR " + " ".join(f"{n}:{curve[n]:.2f}" for n in COUNTS)
                  + f" | gain at 10 {row['gain_10']:+.2f} dB | over the fill at 2 {row['over_fill_2']:+.2f}, "
                  f"at 10 {row['over_fill_10']:+.2f} | over the spread at 2 {row['over_spread_2']:+.2f}, "
                  f"at 10 {row['over_spread_10']:+.2f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "steps": cfg["train"]["steps"], "data": data_name,
                       "command": "python benchmarks/hint_ablation.py " + " ".join(sys.argv[1:]),
                       "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
                       "preset": {k: cfg[k] for k in ("model", "train", "loss")},
                       "fill": fill, "spread": spread, "rows": rows}, f, indent=1, default=str)


if __name__ == "__main__":
    main()
