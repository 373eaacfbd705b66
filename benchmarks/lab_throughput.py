"""How fast is sRGB <-> Lab? colorkit.color (torch, float32) beside scikit-image (numpy, float64).

    python benchmarks/lab_throughput.py           # batch of 16 x 256x256 and one 1024x1024
    python benchmarks/lab_throughput.py --quick   # a few seconds: smaller images, fewer repeats

Prints a table in megapixels per second (MP/s, higher is better): the median over repeats after
a warm-up. torch runs on the CPU with torch.get_num_threads() threads, and on CUDA when a GPU is
visible (timed with torch.cuda.synchronize). scikit-image converts one HxWx3 image at a time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from colorkit.color import lab_to_rgb, rgb_to_lab  # noqa: E402


def median_seconds(fn: Callable[[], object], repeats: int, sync: Callable[[], None] = lambda: None) -> float:
    fn()  # warm-up: first-call allocations, kernel selection, CUDA context
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def skimage_per_image(convert: Callable[[np.ndarray], np.ndarray], images_hwc: list[np.ndarray]) -> Callable[[], object]:
    return lambda: [convert(img) for img in images_hwc]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (a few seconds)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per cell (default 5, quick 3)")
    parser.add_argument("--no-skimage", action="store_true", help="skip the scikit-image rows")
    args = parser.parse_args(argv)

    repeats = args.repeats or (3 if args.quick else 5)
    # (label, batch, height, width)
    shapes = [("4 x 128x128", 4, 128, 128), ("1 x 256x256", 1, 256, 256)] if args.quick else \
             [("16 x 256x256", 16, 256, 256), ("1 x 1024x1024", 1, 1024, 1024)]

    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}: {torch.get_num_threads()} CPU threads "
          f"(os.cpu_count() = {os.cpu_count()}); skimage uses numpy, mostly 1 thread")
    if torch.cuda.is_available():
        print(f"CUDA device: {torch.cuda.get_device_name(0)}")
    print(f"median of {repeats} repeats after one warm-up; MP/s = megapixels per second\n")

    rows = []  # (implementation, direction, shape label, MP/s)
    gen = torch.Generator().manual_seed(0)
    for label, b, h, w in shapes:
        megapixels = b * h * w / 1e6
        rgb_cpu = torch.rand(b, 3, h, w, generator=gen)  # float32 in [0, 1]
        lab_cpu = rgb_to_lab(rgb_cpu)
        for device in devices:
            rgb, lab = rgb_cpu.to(device), lab_cpu.to(device)
            sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
            name = f"colorkit {device.type} f32"
            with torch.no_grad():
                rows.append((name, "rgb->lab", label, megapixels / median_seconds(lambda: rgb_to_lab(rgb), repeats, sync)))
                rows.append((name, "lab->rgb", label, megapixels / median_seconds(lambda: lab_to_rgb(lab), repeats, sync)))
        if not args.no_skimage:
            from skimage.color import lab2rgb, rgb2lab

            rgb_hwc = [img.permute(1, 2, 0).double().numpy() for img in rgb_cpu]
            lab_hwc = [img.permute(1, 2, 0).double().numpy() for img in lab_cpu]
            rows.append(("skimage cpu f64", "rgb->lab", label,
                         megapixels / median_seconds(skimage_per_image(rgb2lab, rgb_hwc), repeats)))
            rows.append(("skimage cpu f64", "lab->rgb", label,
                         megapixels / median_seconds(skimage_per_image(lab2rgb, lab_hwc), repeats)))

    labels = [s[0] for s in shapes]
    impls = list(dict.fromkeys(r[0] for r in rows))
    table = {(r[0], r[1], r[2]): r[3] for r in rows}
    header = f"{'implementation':<20} {'direction':<9} " + " ".join(f"{lab + ' MP/s':>20}" for lab in labels)
    print(header)
    print("-" * len(header))
    for impl in impls:
        for direction in ("rgb->lab", "lab->rgb"):
            cells = " ".join(f"{table[(impl, direction, lab)]:>20.1f}" for lab in labels)
            print(f"{impl:<20} {direction:<9} {cells}")


if __name__ == "__main__":
    main()
