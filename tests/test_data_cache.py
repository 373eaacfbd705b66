"""Tests for the image cache in colorkit.data: prepare_cache, CachedImages, open_dataset, loaders."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from colorkit import data
from colorkit.data import CACHE_INDEX, CachedImages, ImageFolder, make_loader, open_dataset, prepare_cache

ROOT = Path(__file__).resolve().parents[1]


def _photo(rng: np.random.Generator, h: int, w: int) -> Image.Image:
    """A smooth color image (a noise grid blown up) plus a little fine noise: realistic for resizing."""
    coarse = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    im = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)).astype(np.int16)
    return Image.fromarray(np.clip(im + rng.integers(-12, 13, im.shape), 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """20 image files of mixed formats, sizes and modes: 17 cacheable, 2 skipped at the scan, 1 undecodable."""
    root = tmp_path_factory.mktemp("photos")
    (root / "sub").mkdir()
    rng = np.random.default_rng(0)
    sizes = [(48, 64), (64, 48), (40, 90), (90, 40), (37, 37), (50, 50), (45, 71)]
    for k, ext in enumerate(["jpg", "png", "webp", "bmp", "tiff", "jpeg", "PNG"]):
        for j in range(2):
            _photo(rng, *sizes[(k + j) % len(sizes)]).save(root / ("sub" if j else "") / f"img{k}{j}.{ext}")
    _photo(rng, 150, 200).save(root / "large.jpg", quality=90)            # JPEG draft decoding kicks in
    _photo(rng, 44, 60).convert("RGBA").save(root / "alpha.png")
    exif = Image.Exif()
    exif[0x0112] = 6                                                       # rotated 90 degrees by EXIF
    _photo(rng, 40, 70).save(root / "rotated.jpg", exif=exif)
    _photo(rng, 50, 50).convert("L").save(root / "gray.png")               # skipped: no color
    (root / "bad.jpg").write_bytes(rng.bytes(300))                         # skipped: corrupt
    jpeg = (root / "large.jpg").read_bytes()
    (root / "sub" / "trunc.jpg").write_bytes(jpeg[: len(jpeg) // 3])      # passes the scan, fails to decode
    return root


@pytest.fixture(scope="module")
def cache(folder, tmp_path_factory):
    return prepare_cache(folder, tmp_path_factory.mktemp("cache") / "c", 32, shard_size=6, progress=False)


def _by_path(dataset) -> dict[str, torch.Tensor]:
    items = (dataset[i] for i in range(len(dataset)))
    return {item["path"]: item["rgb"] for item in items}


def test_cache_index_and_shards(folder, cache):
    index = json.loads((cache / CACHE_INDEX).read_text())
    assert index["format"] == data.CACHE_FORMAT and index["version"] == data.CACHE_VERSION
    assert index["size"] == [32, 32] and index["resize"] == [37, 37]      # round(1.15 * 32)
    assert index["count"] == 17 == len(index["paths"]) == len(index["cover"])
    assert [s["count"] for s in index["shards"]] == [6, 6, 5]             # sub/trunc.jpg, last in scan order, failed
    assert str(folder / "sub" / "trunc.jpg") not in index["paths"]
    for s in index["shards"]:
        assert (cache / s["file"]).stat().st_size == s["count"] * 37 * 37 * 3
    summary = index["summary"]
    assert "18 usable" in summary and "1 grayscale, no color" in summary and "1 corrupt" in summary
    assert f"1 failed at load time (first: {folder / 'sub' / 'trunc.jpg'})" in summary
    assert not list(cache.glob("*.tmp*")) and not (cache / data.CACHE_PARTIAL).exists()
    ds = CachedImages(cache)
    assert ds.size == (32, 32) and len(ds) == 17 and ds.report.count(data.LOAD_FAILED) == 1
    assert "17 images cached at 37x37" in ds.summary()


@pytest.mark.parametrize("size, resize", [(32, None), (32, 32), ((24, 40), None), ((24, 40), (30, 44))])
def test_center_crops_equal_image_folder(folder, tmp_path, size, resize):
    out = prepare_cache(folder, tmp_path / "c", size, resize=resize, shard_size=5, progress=False)
    cached = CachedImages(out, crop="center")
    h, w = (size, size) if isinstance(size, int) else size
    stored = cached.stored
    expected = (round(1.15 * h), round(1.15 * w)) if resize is None else tuple(np.broadcast_to(resize, 2).tolist())
    assert stored == expected
    reference = ImageFolder(folder, size, resize=stored, crop="center")
    ref = _by_path(reference)
    got = _by_path(cached)
    assert set(got) == set(ref) and len(got) == 17
    for path, rgb in got.items():
        assert rgb.shape == (3, h, w) and rgb.dtype == torch.float32
        assert torch.equal(rgb, ref[path]), path                           # the same pixels exactly
    if stored == (h, w):
        plain = _by_path(ImageFolder(folder, size, crop="center"))         # ImageFolder's own defaults
        assert all(torch.equal(got[p], plain[p]) for p in got)


def test_random_crops_are_deterministic(cache):
    a, b = CachedImages(cache, crop="random", seed=0), CachedImages(cache, crop="random", seed=0)
    other = CachedImages(cache, crop="random", seed=1)
    assert a.flip and not CachedImages(cache, crop="center").flip
    for i in range(len(a)):
        x = a[i]["rgb"]
        assert x.shape == (3, 32, 32) and 0 <= x.min() and x.max() <= 1
        assert torch.equal(x, b[i]["rgb"])
    assert any(not torch.equal(a[i]["rgb"], other[i]["rgb"]) for i in range(len(a)))
    epochs = []
    for epoch in range(4):
        a.set_epoch(epoch)
        epochs.append(torch.stack([a[i]["rgb"] for i in range(len(a))]))
    assert all(not torch.equal(epochs[0], e) for e in epochs[1:])          # fresh crops per epoch
    a.set_epoch(0)
    assert torch.equal(torch.stack([a[i]["rgb"] for i in range(len(a))]), epochs[0])
    assert torch.equal(a[-1]["rgb"], a[len(a) - 1]["rgb"])
    with pytest.raises(IndexError):
        a[len(a)]
    # a random crop is a window of the stored image (possibly flipped)
    arr = np.memmap(cache / "shard_00000.u8", dtype=np.uint8, mode="r", shape=(6, 37, 37, 3))
    crop = (a[0]["rgb"].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    windows = [arr[0, y:y + 32, x:x + 32] for y in range(6) for x in range(6)]
    assert any(np.array_equal(crop, win) or np.array_equal(crop, win[:, ::-1]) for win in windows)


def test_worker_processes_and_pickling(cache):
    ds = CachedImages(cache, crop="random", seed=3)
    ds.set_epoch(2)
    ref = [ds[i] for i in range(len(ds))]                                  # also opens the maps here
    batches = list(make_loader(ds, 4, shuffle=False, num_workers=2))
    assert torch.equal(torch.cat([b["index"] for b in batches]), torch.arange(len(ds)))
    assert torch.equal(torch.cat([b["rgb"] for b in batches]), torch.stack([r["rgb"] for r in ref]))
    assert [p for b in batches for p in b["path"]] == [r["path"] for r in ref]
    blob = pickle.dumps(ds)
    assert len(blob) < 20_000                                              # no pixels inside
    copy = pickle.loads(blob)
    assert torch.equal(copy[5]["rgb"], ref[5]["rgb"])
    shuffled = list(make_loader(ds, 5, shuffle=True, seed=1, num_workers=2))
    assert sorted(torch.cat([b["index"] for b in shuffled]).tolist()) == list(range(len(ds)))


def test_smaller_size_rescales_larger_size_refused(cache):
    small = CachedImages(cache, 16, crop="center")
    x = small[0]["rgb"]
    assert x.shape == (3, 16, 16)
    # about the same view as the full-size centre crop, at half the resolution
    full = CachedImages(cache, crop="center")[0]["rgb"]
    assert (x - torch.nn.functional.avg_pool2d(full[None], 2)[0]).abs().mean() < 0.05
    assert CachedImages(cache, (16, 12), crop="random")[3]["rgb"].shape == (3, 16, 12)
    with pytest.raises(ValueError, match=r"prepared for size \(32, 32\).*larger"):
        CachedImages(cache, 48)
    with pytest.raises(ValueError, match="crop"):
        CachedImages(cache, crop="middle")


def test_workers_and_shard_sizes_give_the_same_pixels(folder, cache, tmp_path):
    pooled = prepare_cache(folder, tmp_path / "pooled", 32, shard_size=100, workers=2, progress=False)
    assert len(list(pooled.glob("shard_*.u8"))) == 1
    a, b = CachedImages(cache, crop="center"), CachedImages(pooled, crop="center")
    assert a.files == b.files
    assert all(torch.equal(a[i]["rgb"], b[i]["rgb"]) for i in range(len(a)))


def _counting(monkeypatch, fail_at: int | None = None) -> list:
    calls = []
    real = data.cache._cache_one

    def counted(path, resize):
        calls.append(path)
        if fail_at is not None and len(calls) == fail_at:
            raise KeyboardInterrupt
        return real(path, resize)

    monkeypatch.setattr(data.cache, "_cache_one", counted)                # where prepare_cache looks it up
    return calls


def test_interrupted_cache_is_refused_then_resumed(folder, cache, tmp_path, monkeypatch):
    out = tmp_path / "c"
    calls = _counting(monkeypatch, fail_at=10)                             # inside the second shard
    with pytest.raises(KeyboardInterrupt):
        prepare_cache(folder, out, 32, shard_size=6, progress=False)
    assert (out / "shard_00000.u8").exists() and (out / "shard_00000.json").exists()
    assert not (out / "shard_00001.u8").exists() and not list(out.glob("*.tmp*"))
    assert not (out / CACHE_INDEX).exists() and data._cache_state(out) == "partial"
    with pytest.raises(ValueError, match=f"image cache {out} is incomplete"):
        CachedImages(out)
    with pytest.raises(ValueError, match="incomplete"):
        open_dataset(str(out), size=32)

    calls = _counting(monkeypatch)
    assert prepare_cache(folder, out, 32, shard_size=6, progress=False) == out
    assert len(calls) == 18 - 6                                            # the finished shard was kept
    for name in ["shard_00000.u8", "shard_00001.u8", "shard_00002.u8"]:
        assert (out / name).read_bytes() == (cache / name).read_bytes()
    assert CachedImages(out).files == CachedImages(cache).files
    assert data._cache_state(out) == "complete" and not (out / data.CACHE_PARTIAL).exists()

    # Again with the same inputs: nothing decoded. With another resize and one shard: rebuilt, old shards gone.
    calls = _counting(monkeypatch)
    prepare_cache(folder, out, 32, shard_size=6, progress=False)
    assert calls == []
    prepare_cache(folder, out, 32, resize=40, shard_size=100, progress=False)
    assert len(calls) == 18 and sorted(p.name for p in out.glob("shard_*")) == ["shard_00000.json", "shard_00000.u8"]
    assert CachedImages(out).stored == (40, 40)


def test_clear_errors(folder, cache, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        CachedImages(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=f"{folder} is not an image cache"):
        CachedImages(folder)
    with pytest.raises(FileNotFoundError, match="nope"):
        prepare_cache(tmp_path / "nope", tmp_path / "out", 32, progress=False)
    with pytest.raises(ValueError, match="resize"):
        prepare_cache(folder, tmp_path / "out", 32, resize=30, progress=False)
    with pytest.raises(ValueError, match="no usable images"):
        (tmp_path / "grays").mkdir()
        Image.new("L", (64, 64), 128).save(tmp_path / "grays" / "g.png")
        prepare_cache(tmp_path / "grays", tmp_path / "out", 32, progress=False)

    damaged = tmp_path / "damaged"
    prepare_cache(folder, damaged, 32, shard_size=6, progress=False)
    shard = damaged / "shard_00001.u8"
    shard.write_bytes(shard.read_bytes()[:1000])
    with pytest.raises(ValueError, match=f"shard {shard} holds 1000 bytes, expected {6 * 37 * 37 * 3}"):
        CachedImages(damaged)
    shard.unlink()
    with pytest.raises(ValueError, match=f"shard {shard} is missing"):
        CachedImages(damaged)
    (damaged / CACHE_INDEX).write_text("{not json")
    with pytest.raises(ValueError, match=f"index {damaged / CACHE_INDEX} is unreadable"):
        CachedImages(damaged)
    index = json.loads((cache / CACHE_INDEX).read_text())
    (damaged / CACHE_INDEX).write_text(json.dumps({**index, "version": 99, "shards": []}))
    with pytest.raises(ValueError, match="version 99"):
        CachedImages(damaged)


def test_open_dataset_reads_a_cache_and_splits_it_by_file(cache):
    train = open_dataset(str(cache), split="train", size=32, seed=4)
    val = open_dataset(str(cache), split="val", size=32)
    assert isinstance(train.dataset, CachedImages) and train.dataset.crop == "random" and train.dataset.seed == 4
    assert isinstance(val.dataset, CachedImages) and val.dataset.crop == "center"
    assert not set(train.indices) & set(val.indices)
    assert sorted(train.indices + val.indices) == list(range(len(train.dataset)))
    assert torch.equal(val[0]["rgb"], CachedImages(cache, crop="center")[val.indices[0]]["rgb"])
    small = open_dataset(str(cache), split="train", size=16, length=5)
    assert len(small) == 5 and small[0]["rgb"].shape == (3, 16, 16)


def test_make_loader_pin_and_persistent_options(cache):
    ds = CachedImages(cache, crop="center")
    plain = make_loader(ds, 4)
    assert plain.pin_memory == torch.cuda.is_available() and not plain.persistent_workers
    assert not make_loader(ds, 4, persistent_workers=True).persistent_workers   # ignored without workers
    kept = make_loader(ds, 4, shuffle=False, num_workers=2, persistent_workers=True, pin_memory=False)
    assert kept.persistent_workers and not kept.pin_memory
    for _ in range(2):
        assert sum(len(b["rgb"]) for b in kept) == len(ds)


def test_loader_benchmark_quick_runs():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "loader_speed.py"), "--quick"],
                          capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "images/s" in done.stdout
    assert "ImageFolder" in done.stdout and "CachedImages" in done.stdout
