"""How fast ToyWorld renders on one CPU thread, in images per second (the target is >= 500 at 64x64).

    python benchmarks/toyworld_speed.py [--size 64] [--seconds 2]

Prints three numbers: the batched generator (`toyworld_batch`), one item at a time
(`ToyWorld()[i]`, what a DataLoader without batching would call) and a DataLoader that fetches
whole batches through `ToyWorld.__getitems__`.
"""

from __future__ import annotations

import argparse
import time

import torch

from colorkit.data import ToyWorld, make_loader, toyworld_batch


def rate(render, images_per_call: int, seconds: float) -> float:
    render(0)  # warm-up: builds the ambiguous-color table once
    done, calls, start = 0, 1, time.perf_counter()
    while time.perf_counter() - start < seconds:
        render(calls)
        done += images_per_call
        calls += 1
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    batch = rate(lambda k: toyworld_batch(args.batch, args.size, start=k * args.batch), args.batch, args.seconds)
    dataset = ToyWorld(args.size, length=10**9)
    single = rate(lambda k: dataset[k], 1, args.seconds)
    loader_ds = ToyWorld(args.size, length=args.batch * 20)
    loader = make_loader(loader_ds, args.batch, shuffle=True, seed=0)
    start = time.perf_counter()
    n = sum(len(b["rgb"]) for b in loader)
    via_loader = n / (time.perf_counter() - start)

    print(f"ToyWorld {args.size}x{args.size}, 1 thread (torch {torch.__version__})")
    print(f"  toyworld_batch({args.batch}):          {batch:8.0f} images/s")
    print(f"  ToyWorld()[i], one at a time:    {single:8.0f} images/s")
    print(f"  make_loader(batch_size={args.batch}):   {via_loader:8.0f} images/s")


if __name__ == "__main__":
    main()
