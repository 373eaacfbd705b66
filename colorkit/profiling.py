"""Measuring what code costs: seconds per call and peak memory, on a CPU or a GPU.

Used by the notebooks' cost plots and by benchmarks/. Speed goals are printed, never asserted.
"""

from __future__ import annotations

import ctypes
import functools
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

_PROC_STATUS = Path("/proc/self/status")
_PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


def synchronize(device: torch.device | str) -> None:
    """Wait for the device: GPUs run asynchronously, so read the clock only after this."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def seconds_per_call(fn: Callable[[], object], device: torch.device | str = "cpu", *, repeats: int = 5,
                     fill_seconds: float = 0.02) -> float:
    """Median over `repeats` of the mean time of one call, each repeat looping for about `fill_seconds`.

    One warm-up call first. Looping short calls until they fill ~20 ms keeps the clock's resolution
    and one-off hiccups (another program, a thread waking up) out of the median.
    """
    fn()
    synchronize(device)
    single = []
    for _ in range(3):                                     # calibrate: how many calls fill the window
        start = time.perf_counter()
        fn()
        synchronize(device)
        single.append(time.perf_counter() - start)
    loops = max(1, int(fill_seconds / max(min(single), 1e-6)))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        synchronize(device)
        times.append((time.perf_counter() - start) / loops)
    return statistics.median(times)


def _proc_bytes(field: str) -> int:
    match = re.search(rf"{field}:\s+(\d+) kB", _PROC_STATUS.read_text())
    return int(match.group(1)) * 1024


@functools.lru_cache(maxsize=None)
def _libc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024)   # -3 = M_MMAP_THRESHOLD: blocks >= 64 KiB are mapped, unmapped on free
        return libc
    except (OSError, AttributeError):
        return None


def _release_freed_memory() -> None:
    """Hand the memory glibc keeps after frees back to the OS, so that reusing it shows up again.

    glibc keeps freed blocks resident (below a threshold that grows up to 32 MiB, and whole free
    chunks inside its heap); a call that reuses them would show no rise in resident memory. A fixed
    mmap threshold (once per process; a little slower for large allocations) and malloc_trim(0)
    before each measurement make the rise honest.
    """
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def can_measure_memory(device: torch.device | str) -> bool:
    device = torch.device(device)
    if device.type == "cuda":
        return True
    return device.type == "cpu" and sys.platform.startswith("linux") and _PROC_CLEAR_REFS.exists()


def peak_memory_bytes(fn: Callable[[], object], device: torch.device | str = "cpu") -> tuple[int | None, str]:
    """Extra memory at the peak of one call of `fn`, measured, and how it was measured.

    CUDA: `torch.cuda.max_memory_allocated` above what was allocated before the call.
    CPU on Linux: the rise of the process's peak resident memory (VmHWM, reset through
    /proc/self/clear_refs) above its resident memory before the call, after glibc returned the
    memory it kept from earlier frees (see `_release_freed_memory`). It counts every page the call
    touches; the kernel updates its counters in batches, so allocations under about 1 MiB may read
as 0, while large tensors read true.
    Elsewhere (macOS, Windows, MPS) nothing is measured: returns (None, reason).
    """
    device = torch.device(device)
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base, "cuda max_memory_allocated"
    if can_measure_memory(device):
        _release_freed_memory()
        _PROC_CLEAR_REFS.write_text("5")                    # reset the peak to the current resident size
        base = _proc_bytes("VmRSS")
        fn()
        return max(0, _proc_bytes("VmHWM") - base), "peak resident memory rise (Linux VmHWM)"
    return None, f"not measured on {device.type} here"
