"""Sampling time of the sun2023 coarse colorizer: naive vs cached, a batch of gray images on the CPU.

    python benchmarks/sun2023_sampling.py [--batch 20] [--size 64] [--naive-rows 1] [--quick]

The issue's benchmark: a batch of 20 gray 64 x 64 images, the course-size model (its default
config, untrained: the time does not depend on the weights). Both loops draw pixel by pixel in
raster order:
- naive: the whole decoder (outer + inner) on the whole canvas for each of the H * W pixels;
- cached: the outer decoder once per row, the inner decoder on the current
  row's prefix for each pixel.
Naive sampling of all 4096 pixels takes many minutes here, so it is timed on the first
`--naive-rows` rows and extrapolated linearly per pixel (every naive step does the same work, so
the time per pixel is constant); the printout says so. `--naive-rows 0` times it in full.
The cached loop always runs in full. Also printed: the one-pass parallel prediction (aux head).
`--quick`: batch 2 at 8 x 8, for tests (a few seconds).
"""

from __future__ import annotations

import argparse
import time

import torch

from colorkit.data import toyworld_batch
from colorkit.models import build
from colorkit.models.sun2023 import ColorTransformer  # noqa: F401  (registers "sun2023")


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--naive-rows", type=int, default=1, help="rows of naive sampling to time (0: all)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--quick", action="store_true", help="batch 2 at 8 x 8, in seconds")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.size, args.naive_rows = 2, 8, 0
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = build({"name": "sun2023", "image_size": args.size}).eval()
    L = toyworld_batch(args.batch, args.size)["rgb"]
    from colorkit.color import rgb_to_lab
    L = rgb_to_lab(L)[:, :1]                                  # (B, 1, S, S)
    pixels = args.size * args.size
    print(f"sun2023 sampling, batch {args.batch} at {args.size}x{args.size}, model {model.config}, "
          f"{torch.get_num_threads()} CPU threads")

    parallel = timed(lambda: model.predict_parallel(L))
    cached = timed(lambda: model.sample(L, generator=torch.Generator().manual_seed(0), cached=True))
    rows = args.size if args.naive_rows <= 0 else min(args.naive_rows, args.size)
    naive_part = timed(lambda: model.sample(L, generator=torch.Generator().manual_seed(0), cached=False, rows=rows))
    naive = naive_part * pixels / (rows * args.size)

    print(f"parallel (aux head argmax, 1 pass): {parallel:8.3f} s")
    print(f"cached sampling ({pixels} pixels):      {cached:8.3f} s")
    if rows == args.size:
        print(f"naive sampling ({pixels} pixels):       {naive:8.3f} s  (timed in full)")
    else:
        print(f"naive sampling ({pixels} pixels):       {naive:8.3f} s  (EXTRAPOLATED: timed {naive_part:.2f} s "
              f"for the first {rows} row(s) = {rows * args.size} pixels, x {pixels / (rows * args.size):.0f})")
    print(f"speed-up cached over naive:         {naive / cached:8.1f} x")


if __name__ == "__main__":
    main()
