"""A tiny regression trained by colorkit.train, for tests/test_train.py.

Run under torchrun by the DDP test:
    python -m torch.distributed.run --nproc_per_node 2 --master_port PORT tests/ddp_worker.py OUT_DIR
Each rank writes OUT_DIR/rank<r>.json: its final weights, the dataset indices it saw per step and
how often it called the engine's file writers (only rank 0 should). The test imports `Points`,
`build_model`, `CONFIG` and `regression_step` to train the same thing in a single process.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

CONFIG = dict(steps=8, batch_size=8, lr=0.05, warmup_steps=2, log_every=2, ckpt_every=4, seed=3)


class Points(Dataset):
    """A fixed synthetic set: y = x . w + 0.5 + small noise; items carry their index."""

    def __init__(self, n: int = 48, dim: int = 4):
        g = torch.Generator().manual_seed(1234)
        self.x = torch.randn(n, dim, generator=g)                                          # (n, dim)
        self.y = self.x @ torch.linspace(-1, 1, dim).view(-1, 1) + 0.5 + 0.05 * torch.randn(n, 1, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i], "index": i}


def build_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(4, 1)


def regression_step(ctx, batch) -> dict:
    loss = F.mse_loss(ctx.models["model"](batch["x"]), batch["y"])     # mean over the rank's shard
    ctx.update("model", loss)
    return {"loss": loss}


def main(out_dir: str) -> None:
    from colorkit import train

    calls = {"save_checkpoint": 0, "_append_jsonl": 0, "plot_metrics": 0}
    for name in calls:                          # count the engine's file writes on this rank
        original = getattr(train, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        setattr(train, name, counted)

    seen = []

    def step(ctx, batch):
        seen.append(batch["index"].tolist())
        return regression_step(ctx, batch)

    trainer = train.Trainer({"model": build_model()}, step, Points(), train.TrainConfig(**CONFIG), out_dir=out_dir)
    summary = trainer.fit()
    report = {"rank": trainer.dist.rank, "world_size": trainer.dist.world_size, "calls": calls, "seen": seen,
              "summary": summary,
              "weights": {k: v.flatten().tolist() for k, v in trainer.models["model"].state_dict().items()}}
    Path(out_dir, f"rank{trainer.dist.rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
