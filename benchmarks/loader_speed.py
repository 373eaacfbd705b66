"""DataLoader images/s from a folder of JPEGs (ImageFolder) and from its uint8 cache (CachedImages).

    python benchmarks/loader_speed.py [--images 200] [--size 256] [--batch 32] [--epochs 2] [--repeats 3] [--quick]

Writes (in a temporary folder) JPEG photos of 512 x 384 cut from the package photos (quality 90),
prepares a cache of them with `colorkit.data.prepare_cache`, then times `make_loader` over both
datasets with random crops of `size`, with 0 and 2 worker processes, pin_memory=False, one torch
thread in the main process. A rate is images delivered / wall time for whole epochs, worker
start-up included (workers are not persistent, as in training); the best of `--repeats` runs is
printed, since other processes on a small machine only ever slow a run down. The page cache is
warm for both: the files were just written.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from colorkit.data import CachedImages, ImageFolder, load_package_photo, make_loader, photo_sources, prepare_cache


def write_photos(folder: Path, count: int, width: int = 512, height: int = 384, seed: int = 0) -> None:
    """`count` JPEGs (quality 90) of width x height: random 4:3 crops of the package photos, some flipped."""
    rng = np.random.default_rng(seed)
    photos = [load_package_photo(s.name) for s in photo_sources()]
    photos = [Image.fromarray((p.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for p in photos]
    for i in range(count):
        im = photos[i % len(photos)]
        box_h = min(im.height, im.width * height / width) * rng.uniform(0.5, 1.0)
        box_w = box_h * width / height
        x0, y0 = rng.uniform(0, im.width - box_w), rng.uniform(0, im.height - box_h)
        crop = im.resize((width, height), Image.Resampling.BILINEAR, box=(x0, y0, x0 + box_w, y0 + box_h))
        if rng.uniform() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        crop.save(folder / f"photo_{i:04d}.jpg", quality=90)


def loader_rate(dataset, batch: int, workers: int, epochs: int, repeats: int) -> float:
    loader = make_loader(dataset, batch, shuffle=True, seed=0, num_workers=workers, pin_memory=False)
    best = 0.0
    for _ in range(repeats):
        images, start = 0, time.perf_counter()
        for epoch in range(epochs):
            dataset.set_epoch(epoch)
            for b in loader:
                images += len(b["rgb"])
        best = max(best, images / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a few seconds: 48 images, 1 epoch, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.images, args.epochs, args.repeats = 48, 1, 1
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory(prefix="colorkit-loader-") as tmp:
        photos, cache = Path(tmp) / "photos", Path(tmp) / "cache"
        photos.mkdir()
        write_photos(photos, args.images)
        jpeg_mb = sum(f.stat().st_size for f in photos.iterdir()) / 1e6

        start = time.perf_counter()
        folder = ImageFolder(photos, args.size, crop="random")
        scan_s = time.perf_counter() - start
        start = time.perf_counter()
        prepare_cache(photos, cache, args.size, workers=max(args.workers), progress=False)
        prepare_s = time.perf_counter() - start
        cached = CachedImages(cache, args.size, crop="random")
        cache_mb = sum(f.stat().st_size for f in cache.glob("shard_*.u8")) / 1e6

        print(f"{len(folder)} JPEGs 512x384 (q90, {jpeg_mb:.1f} MB) -> random {args.size}x{args.size} crops, "
              f"batch {args.batch}, {args.epochs} epoch(s), best of {args.repeats}, pin_memory False, "
              f"{os.cpu_count()} CPUs, torch {torch.__version__}")
        print(f"ImageFolder scan: {scan_s:.2f} s; prepare_cache (workers={max(args.workers)}, one time): "
              f"{prepare_s:.2f} s = {len(cached) / prepare_s:.0f} images/s, "
              f"{cache_mb:.1f} MB at {cached.stored[0]}x{cached.stored[1]}")
        print(f"{'dataset':<14}{'workers':>8}{'images/s':>12}{'vs folder':>11}")
        for workers in args.workers:
            folder_rate = loader_rate(folder, args.batch, workers, args.epochs, args.repeats)
            cache_rate = loader_rate(cached, args.batch, workers, args.epochs, args.repeats)
            print(f"{'ImageFolder':<14}{workers:>8}{folder_rate:>12.0f}{1.0:>10.1f}x")
            print(f"{'CachedImages':<14}{workers:>8}{cache_rate:>12.0f}{cache_rate / folder_rate:>10.1f}x")


if __name__ == "__main__":
    main()
