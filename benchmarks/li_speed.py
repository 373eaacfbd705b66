"""Li et al. T and S: inference latency per image and training images/s with peak memory.

    python benchmarks/li_speed.py [--device auto] [--batch 64] [--size 224] [--steps 5] [--quick]

Inference: one 224 x 224 image with 10 hints, batch 1, the paper's measure (Table 1: Ours-T 89 ms,
Ours-S 187 ms on an RTX 5000). Training: `--steps` AdamW steps of the `full` preset's step function
(10 random hints, Huber loss) on random images of `--size`, batch `--batch`, after one warm-up step,
and the peak memory of one step (`colorkit.profiling.peak_memory_bytes`: CUDA's allocator, or the
process's peak RSS on a Linux CPU). Untrained weights: the time does not depend on them. On CUDA the
forward runs under bf16 autocast, as the training engine does. `--quick`: batch 2 at 64 x 64, for tests.
"""

from __future__ import annotations

import argparse
import time

import torch

from colorkit import evaluate
from colorkit.data import lab_batch
from colorkit.models import build, li
from colorkit.profiling import peak_memory_bytes, seconds_per_call, synchronize
from colorkit.runs import resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.size, args.steps = 2, 64, 1
    device = resolve_device(args.device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    print(f"device {device}; torch {torch.__version__}")
    for arch in ("T", "S"):
        torch.manual_seed(0)
        model = build({"name": "li", "arch": arch, "image_size": args.size, "window": 7 if args.size >= 112 else 4}).to(device)
        cost = li.complexity(model, args.size)
        model.eval()
        x = {k: v.to(device) for k, v in evaluate.fixed_hints(torch.rand(1, 3, args.size, args.size), 10).items()}
        with torch.no_grad(), autocast:
            ms = 1000 * seconds_per_call(lambda: model(x["L"], hint_ab=x["hint_ab"], hint_mask=x["hint_mask"]), device)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05)
        batch = lab_batch(torch.rand(args.batch, 3, args.size, args.size, device=device))
        step = li.make_li_step()

        class Context:                                     # the two things a step uses from the engine's context
            models = {"model": model}

            @staticmethod
            def update(model_name, loss, **_):
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

        def train_step():
            with autocast:
                step(Context, batch)

        train_step()                                       # warm-up
        synchronize(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            train_step()
        synchronize(device)
        images_per_second = args.steps * args.batch / (time.perf_counter() - start)
        peak, how = peak_memory_bytes(train_step, device)
        memory = f"{peak / 2 ** 30:.2f} GiB ({how})" if peak is not None else f"not measurable ({how})"
        print(f"Ours-{arch}: {cost['parameters'] / 1e6:.1f} M parameters, {cost['gmacs']:.2f} GMACs at {args.size}; "
              f"inference {ms:.1f} ms per image (batch 1); training {images_per_second:.1f} images/s at batch "
              f"{args.batch}, peak memory {memory}")


if __name__ == "__main__":
    main()
