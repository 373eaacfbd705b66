"""colorkit.profiling: the memory it reports follows what a call really allocates."""

import pytest
import torch

from colorkit import profiling


@pytest.mark.skipif(not profiling.can_measure_memory("cpu"), reason="needs Linux /proc")
def test_cpu_peak_memory_tracks_a_known_allocation():
    def allocate(n_bytes):
        return lambda: torch.ones(n_bytes // 4).sum()       # touches every page of a float32 tensor

    small, how = profiling.peak_memory_bytes(allocate(8 * 2**20), "cpu")
    large, _ = profiling.peak_memory_bytes(allocate(128 * 2**20), "cpu")
    assert "VmHWM" in how
    assert 100 * 2**20 < large < 160 * 2**20               # 128 MiB, plus a little overhead
    assert large - small > 100 * 2**20                      # it grows with the allocation, not fixed
    again, _ = profiling.peak_memory_bytes(allocate(8 * 2**20), "cpu")
    assert 6 * 2**20 < again < 12 * 2**20                   # freed memory is not silently reused


def test_seconds_per_call_is_positive_and_orders_work():
    x, y = torch.randn(4), torch.randn(512, 512)
    cheap = profiling.seconds_per_call(lambda: x + 1, repeats=5)
    costly = profiling.seconds_per_call(lambda: y @ y @ y @ y, repeats=5)   # ~0.8 GFLOP against 4 additions
    assert 0 < cheap < costly
