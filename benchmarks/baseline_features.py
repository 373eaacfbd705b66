"""What the frozen ImageNet hypercolumn adds to the course baseline: the CNN alone against the CNN with it.

    python benchmarks/baseline_features.py                      # the course preset's data and budget
    python benchmarks/baseline_features.py --steps 900 --feature-size 128 --variants plain features
    python benchmarks/baseline_features.py --quick              # seconds, on ToyWorld (the test runs this)

Each variant trains from seed 0 through `colorkit.train.Trainer` on the same crops and is measured on
the shared validation split. Prints one line per variant: training seconds, PSNR and its gain over
the gray image, colorfulness against the photos', and the mean predicted (a, b) on the validation
pixels whose true color is sky-blue, green, skin-like or yellow, beside their true mean.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from colorkit import data, evaluate, models, presets, runs, train
from colorkit.models import baseline

KINDS = {  # masks over true (a, b, L) of a validation pixel: the kinds of color notebook 00 reports
    "sky-blue": lambda a, b, L: (b < -15) & (a.abs() < 20),
    "green": lambda a, b, L: (a < -10) & (b > 5),
    "skin-like": lambda a, b, L: (a > 8) & (a < 30) & (b > 10) & (b < 40) & (L > 30),
    "yellow": lambda a, b, L: b > 40,
}


def colors_by_kind(model: torch.nn.Module, val_set) -> dict[str, dict[str, float]]:
    """For each kind: its share of validation pixels, the true mean (a, b) and the predicted mean (a, b)."""
    lab = data.lab_batch(torch.stack([val_set[i]["rgb"] for i in range(len(val_set))]))
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(L) for L in lab["L"].split(32)])                # (N, 2, H, W)
    a, b, L = lab["ab"][:, 0], lab["ab"][:, 1], lab["L"][:, 0]
    out = {}
    for kind, mask in KINDS.items():
        where = mask(a, b, L)
        if where.any():
            out[kind] = {"share": round(where.float().mean().item(), 3),
                         "true_ab": [round(a[where].mean().item(), 1), round(b[where].mean().item(), 1)],
                         "pred_ab": [round(pred[:, 0][where].mean().item(), 1), round(pred[:, 1][where].mean().item(), 1)]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="photos", help="what to train and validate on (default: the photo corpus)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the course preset's)")
    parser.add_argument("--feature-size", type=int, default=None, help="side the frozen network sees (default: the preset's)")
    parser.add_argument("--variants", nargs="+", default=["plain", "features"], choices=["plain", "features"])
    parser.add_argument("--quick", action="store_true", help="ToyWorld at 32 px, the smoke preset: checks the code runs")
    args = parser.parse_args()

    level = "smoke" if args.quick else "course"
    cfg = presets.preset("baseline", level, steps=args.steps)
    dataset = "toyworld" if args.quick else args.data
    size = cfg["data"]["size"]
    train_set = data.open_dataset(dataset, split="train", size=size, length=cfg["data"]["train_images"], seed=0)
    val_set = evaluate.validation_set(dataset, size=size, count=cfg["data"]["val_images"])
    print(f"{dataset}: {len(train_set)} training crops, {len(val_set)} validation crops of {size} px; "
          f"{cfg['train']['steps']} steps of batch {cfg['train']['batch_size']}; {torch.get_num_threads()} CPU threads")
    for variant in args.variants:
        config = dict(cfg["model"])
        if variant == "plain":
            config["features"] = None
        elif args.feature_size is not None:
            config["feature_size"] = args.feature_size
        runs.seed_everything(0)
        model = models.build(config)
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            train.Trainer({"model": model}, baseline.mse_step, train_set,
                          train.TrainConfig(**{**cfg["train"], "log_every": 10**9}), out_dir=out).fit()
            seconds = time.perf_counter() - start
        scores = evaluate.evaluate(model, val_set)
        name = "plain CNN" if variant == "plain" else f"CNN + {config['features']} hypercolumn at {config['feature_size']} px"
        print(f"{name}: {seconds:.0f} s training, PSNR {scores['psnr']:.2f} dB ({scores['psnr'] - scores['gray_psnr']:+.2f} "
              f"over gray), colorfulness {scores['colorfulness']:.1f} of {scores['true_colorfulness']:.1f}")
        print("  by true color:", json.dumps(colors_by_kind(model, val_set)))


if __name__ == "__main__":
    main()
