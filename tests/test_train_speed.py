"""The engine's speed options (TrainConfig compile, channels_last, device_cache): each leaves the
computation as it was, checked on the CPU against the plain path."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import Subset, default_collate

from colorkit.data import CachedImages, DeviceCache, ImageFolder, ToyWorld, prepare_cache
from colorkit.train import Trainer, TrainConfig, supervised_step


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A CachedImages cache of 9 photo-like images of mixed sizes, stored at 37 x 37 for 32 px crops."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for k, (h, w) in enumerate([(48, 64), (64, 48), (40, 90), (50, 50), (45, 71), (60, 60), (41, 80), (70, 44), (52, 52)]):
        coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC).save(root / f"im{k}.png")
    return prepare_cache(root, tmp_path_factory.mktemp("cache") / "c", 32, shard_size=4, progress=False)


def assert_same_batch(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for key, value in want.items():
        if isinstance(value, torch.Tensor):
            assert got[key].dtype == value.dtype and torch.equal(got[key].cpu(), value), key
        else:
            assert list(got[key]) == list(value), key


@pytest.mark.parametrize("kwargs", [{}, {"size": 24}, {"crop": "center"}, {"size": 20, "crop": "center"}])
def test_device_cache_of_cached_images_gives_the_dataloaders_batches_every_epoch(cache, kwargs):
    dataset = CachedImages(cache, seed=3, **kwargs)
    device_cache = DeviceCache(dataset, "cpu")
    assert device_cache.images.dtype == torch.uint8 and len(device_cache) == 9
    indices = [4, 0, 8, 4, 7]
    for epoch in (0, 1):
        dataset.set_epoch(epoch)
        assert_same_batch(device_cache.batch(indices), default_collate([dataset[i] for i in indices]))
    if dataset.crop == "random":                 # fresh crops each epoch, as on the CPU path
        dataset.set_epoch(0)
        first = device_cache.batch(indices)["rgb"]
        dataset.set_epoch(1)
        assert not torch.equal(first, device_cache.batch(indices)["rgb"])


def test_device_cache_reads_fixed_items_once_and_keeps_their_values():
    toy = ToyWorld(16, length=10)                # float images that are not k / 255: kept as float32
    device_cache = DeviceCache(Subset(toy, [9, 2, 5, 7]), "cpu")
    assert not device_cache.as_uint8["rgb"] and device_cache.fields["rgb"].shape == (4, 3, 16, 16)
    assert_same_batch(device_cache.batch([3, 0, 0]), default_collate([toy[i] for i in (7, 9, 9)]))

    class Decoded(torch.utils.data.Dataset):     # 8-bit decoded images: stored as uint8, read back exactly
        def __len__(self):
            return 6

        def __getitem__(self, i):
            rgb = torch.randint(0, 256, (3, 8, 8), generator=torch.Generator().manual_seed(i)).float().div_(255.0)
            return {"rgb": rgb, "index": i, "source": f"photo{i}"}

    device_cache = DeviceCache(Decoded(), "cpu")
    assert device_cache.as_uint8["rgb"] and device_cache.nbytes == 6 * 3 * 8 * 8
    assert_same_batch(device_cache.batch([5, 1]), default_collate([Decoded()[5], Decoded()[1]]))


def test_device_cache_refuses_what_it_would_change_or_cannot_hold(cache, tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    for k in range(3):
        Image.fromarray(np.full((40, 40, 3), 60 * k + 20, np.uint8) + np.arange(40, dtype=np.uint8)[:, None, None]
                        ).save(root / f"{k}.png")
    with pytest.raises(ValueError, match=r"ImageFolder draws new random crops each epoch.*prepare_cache"):
        DeviceCache(ImageFolder(root, size=16), "cpu")
    with pytest.raises(ValueError, match=r"9 cached images of 37x37 take 0\.00 GiB, more than"):
        DeviceCache(CachedImages(cache), "cpu", max_bytes=1000)


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 2, 3, padding=1))

    def forward(self, L):
        return self.net(L / 50.0 - 1.0)


def train_small_cnn(tmp_path, name: str, dataset, **options) -> tuple[dict, list, list]:
    """6 steps of SmallCNN on `dataset` (batches of 4); its state, the batches' rgb and whether each L was NHWC."""
    seen = []

    def loss(model, batch):
        seen.append(batch["rgb"].detach().clone())
        seen_layout.append(batch["L"].is_contiguous(memory_format=torch.channels_last))
        return F.mse_loss(model(batch["L"]), batch["ab"] / 100.0)

    seen_layout: list[bool] = []
    torch.manual_seed(0)
    model = SmallCNN()
    cfg = TrainConfig(steps=6, batch_size=4, lr=1e-2, device="cpu", log_every=3, **options)
    Trainer({"model": model}, supervised_step(loss), dataset, cfg, out_dir=tmp_path / name).fit()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, seen, seen_layout


def test_device_cache_and_channels_last_train_as_the_plain_engine(tmp_path, cache):
    for k, dataset in enumerate((ToyWorld(16, length=12), CachedImages(cache, size=16))):
        plain, batches, layout = train_small_cnn(tmp_path / str(k), "plain", dataset)
        cached, cached_batches, _ = train_small_cnn(tmp_path / str(k), "cached", dataset, device_cache=True)
        assert all(torch.equal(a, b) for a, b in zip(batches, cached_batches)) and len(batches) == 6
        assert all(torch.equal(plain[k], cached[k]) for k in plain)      # bit-identical on the CPU
        nhwc, _, nhwc_layout = train_small_cnn(tmp_path / str(k), "nhwc", dataset, channels_last=True)
        assert all(nhwc_layout) and not any(layout)
        assert all(torch.allclose(plain[k].float(), nhwc[k].float(), atol=1e-5) for k in plain)


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="torch.compile on the CPU needs a C++ compiler (cc or gcc)")
def test_compiled_training_matches_eager(tmp_path):
    """torch.compile on the CPU (inductor, a C++ compiler): the same weights within float rounding."""
    dataset = ToyWorld(16, length=12)
    eager, _, _ = train_small_cnn(tmp_path, "eager", dataset)
    compiled, _, _ = train_small_cnn(tmp_path, "compiled", dataset, compile=True)
    assert all(torch.allclose(eager[k].float(), compiled[k].float(), atol=1e-4) for k in eager)
    with pytest.raises(ValueError, match="compile must be False, True or one of"):
        TrainConfig(steps=1, batch_size=1, compile="fastest")
