"""Tests for colorkit.data: ToyWorld, package photos, image folders, Lab batches, hints."""

from __future__ import annotations

import os
import socket
import struct
import zlib
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import skimage
import sklearn
import torch
from PIL import Image
from skimage import color as skcolor

from colorkit import data
from colorkit.data import (
    AMBIGUOUS_CLASSES, FIXED_CLASSES, FIXED_COLORS, OUTLINE, PHOTO_SOURCES, SCENE_TYPES, TOYWORLD_CLASSES,
    ImageFolder, PackagePhotos, ToyWorld, geometric_hint_counts, lab_batch, load_package_photo, make_loader,
    photo_sources, sample_hints, toyworld_batch,
)

# ---------------------------------------------------------------------------------------------
# ToyWorld
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy():
    return toyworld_batch(240, 64, seed=0)


def test_class_sets_partition_the_classes():
    assert FIXED_CLASSES | AMBIGUOUS_CLASSES == set(range(len(TOYWORLD_CLASSES)))
    assert not FIXED_CLASSES & AMBIGUOUS_CLASSES
    assert TOYWORLD_CLASSES[OUTLINE] == "outline" and OUTLINE in FIXED_CLASSES
    assert {TOYWORLD_CLASSES[c] for c in AMBIGUOUS_CLASSES} == {"balloon", "shirt", "pants", "car"}


def test_toyworld_item_is_independent_of_batch():
    ds = ToyWorld(48, length=100, seed=3)
    batch = toyworld_batch(8, 48, seed=3, start=5)
    other = toyworld_batch(3, 48, seed=3, start=6)
    for k in range(8):
        item = ds[5 + k]
        assert torch.equal(item["rgb"], batch["rgb"][k])
        assert torch.equal(item["mask"], batch["mask"][k])
        assert item["scene"] == batch["scene"][k] and item["index"] == 5 + k
    assert torch.equal(other["rgb"], batch["rgb"][1:4])
    assert torch.equal(ds[-1]["rgb"], ds[99]["rgb"])
    with pytest.raises(IndexError):
        ds[100]


def test_toyworld_seed_reproducible_and_seeds_differ():
    a, b = toyworld_batch(6, 32, seed=1), toyworld_batch(6, 32, seed=1)
    c = toyworld_batch(6, 32, seed=2)
    assert torch.equal(a["rgb"], b["rgb"]) and torch.equal(a["mask"], b["mask"])
    assert not torch.equal(a["rgb"], c["rgb"])
    # consecutive images differ from one another
    assert all(not torch.equal(a["rgb"][i], a["rgb"][i + 1]) for i in range(5))


@pytest.mark.parametrize("size", [64, (48, 96), (100, 37), (17, 23), (130, 130)])
def test_toyworld_any_size(size):
    h, w = (size, size) if isinstance(size, int) else size
    out = toyworld_batch(5, size, seed=0)
    assert out["rgb"].shape == (5, 3, h, w) and out["rgb"].dtype == torch.float32
    assert out["mask"].shape == (5, h, w) and out["mask"].dtype == torch.long
    assert 0 <= out["rgb"].min() and out["rgb"].max() <= 1
    assert 0 <= out["mask"].min() and out["mask"].max() < len(TOYWORLD_CLASSES)
    assert out["scene"].shape == (5,) and out["scene"].max() < len(SCENE_TYPES)
    item = ToyWorld(size, length=5)[2]
    assert item["rgb"].shape == (3, h, w) and item["mask"].shape == (h, w)


def test_fixed_classes_have_exactly_one_color(toy):
    rgb = toy["rgb"].permute(0, 2, 3, 1)  # (N, H, W, 3)
    for c in FIXED_CLASSES:
        pixels = rgb[toy["mask"] == c]
        assert len(pixels) > 0, f"class {TOYWORLD_CLASSES[c]} never appears in 240 images"
        expected = torch.tensor(FIXED_COLORS[c])
        assert torch.equal(pixels, expected.expand_as(pixels)), TOYWORLD_CLASSES[c]


def _lch(colors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lab = skcolor.rgb2lab(colors.reshape(-1, 1, 3)).reshape(-1, 3)
    return lab[:, 0], np.hypot(lab[:, 1], lab[:, 2]), np.arctan2(lab[:, 2], lab[:, 1])


def test_ambiguous_classes_take_spread_out_hues(toy):
    rgb = toy["rgb"].permute(0, 2, 3, 1)
    for c in AMBIGUOUS_CLASSES:
        colors = torch.unique(rgb[toy["mask"] == c], dim=0).numpy().astype(np.float64)
        assert len(colors) >= 15, f"{TOYWORLD_CLASSES[c]}: only {len(colors)} distinct colors"
        L, chroma, hue = _lch(colors)
        # Uniform hues: the mean unit hue vector is short (it would be 1 for a single hue).
        resultant = np.hypot(np.cos(hue).mean(), np.sin(hue).mean())
        assert resultant < 0.35, f"{TOYWORLD_CLASSES[c]} hues cluster (resultant {resultant:.2f})"
        assert chroma.min() > 15, f"{TOYWORLD_CLASSES[c]} has washed-out colors (chroma {chroma.min():.1f})"
        # Lightness comes from a few levels independent of hue: gray gives no clue about the hue.
        assert 54 < L.min() and L.max() < 76


def test_outlines_are_dark_and_separate_every_region(toy):
    rgb, mask = toy["rgb"], toy["mask"]
    outline = mask == OUTLINE
    assert rgb.permute(0, 2, 3, 1)[outline].max() < 0.1
    assert 0.005 < outline.float().mean() < 0.3
    # No two touching non-outline pixels of different classes: a line always runs between regions.
    for a, b in ((mask[:, :, :-1], mask[:, :, 1:]), (mask[:, :-1, :], mask[:, 1:, :])):
        touching = (a != OUTLINE) & (b != OUTLINE)
        assert not (touching & (a != b)).any()


def test_scene_label_matches_content(toy):
    c = {name: i for i, name in enumerate(TOYWORLD_CLASSES)}
    present = lambda k, name: bool((toy["mask"][k] == c[name]).any())  # noqa: E731
    scenes = toy["scene"].tolist()
    assert set(scenes) == set(range(len(SCENE_TYPES)))
    for k, s in enumerate(scenes):
        kind = SCENE_TYPES[s]
        assert present(k, "road") == (kind == "road")
        if kind == "road":
            assert present(k, "car")
        else:
            assert not present(k, "car")
        if kind == "park":
            assert present(k, "skin")
        if kind == "meadow":
            assert present(k, "foliage") and not present(k, "skin")
        if kind == "fair":
            assert present(k, "balloon")


def test_toyworld_loader_batches_match_generator():
    ds = ToyWorld(32, length=20, seed=5)
    batch = next(iter(make_loader(ds, 8, shuffle=False)))
    ref = toyworld_batch(8, 32, seed=5)
    assert torch.equal(batch["rgb"], ref["rgb"]) and torch.equal(batch["mask"], ref["mask"])
    # worker processes render the same images
    with_workers = list(make_loader(ds, 8, shuffle=False, num_workers=2))
    assert torch.equal(with_workers[0]["rgb"], ref["rgb"])
    assert torch.equal(torch.cat([b["index"] for b in with_workers]), torch.arange(20))
    # shuffled order is fixed by the seed
    first = [next(iter(make_loader(ds, 4, shuffle=True, seed=1)))["index"].tolist() for _ in range(2)]
    assert first[0] == first[1]


# ---------------------------------------------------------------------------------------------
# Package photos
# ---------------------------------------------------------------------------------------------


def test_photo_split_is_by_source_group():
    train, val = photo_sources("train"), photo_sources("val")
    assert train and val
    assert {s.group for s in train}.isdisjoint({s.group for s in val})
    assert {s.name for s in train}.isdisjoint({s.name for s in val})
    motorcycle = [s for s in PHOTO_SOURCES if s.group == "motorcycle"]
    assert len(motorcycle) == 2 and len({s.split for s in motorcycle}) == 1
    for split in ("train", "val"):
        ds = PackagePhotos(split, size=32, crops_per_photo=3)
        expected = {s.name for s in photo_sources(split)}
        assert {ds[i]["source"] for i in range(len(ds))} == expected


def test_photos_are_color_and_never_downloaded(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("colorkit.data tried to open a network connection")

    import skimage.data._fetchers as fetchers

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(fetchers, "_fetch", no_network)  # skimage.data's (pooch) download path
    data._load_photo_pil.cache_clear()
    for source in photo_sources():
        rgb = load_package_photo(source.name)
        assert rgb.shape[0] == 3 and min(rgb.shape[1:]) >= 64
        spread = (rgb.max(0).values - rgb.min(0).values).mean()  # 0 for a gray image
        assert spread > 0.02, f"{source.name} looks grayscale"
        path = data._photo_path(source)  # a file inside the installed package, nothing fetched
        package_dirs = (Path(skimage.__file__).parent, Path(matplotlib.get_data_path()), Path(sklearn.__file__).parent)
        assert path.is_file() and any(d in path.parents for d in package_dirs)
    ds = PackagePhotos("val", size=32, crops_per_photo=2)
    assert all(ds[i]["rgb"].shape == (3, 32, 32) for i in range(len(ds)))


@pytest.mark.parametrize("size", [32, (40, 56)])
def test_photo_crops_in_range_and_deterministic(size):
    h, w = (size, size) if isinstance(size, int) else size
    a = PackagePhotos("train", size=size, crops_per_photo=4, seed=0)
    b = PackagePhotos("train", size=size, crops_per_photo=4, seed=0)
    c = PackagePhotos("train", size=size, crops_per_photo=4, seed=1)
    for i in range(0, len(a), 3):
        x = a[i]["rgb"]
        assert x.shape == (3, h, w) and x.dtype == torch.float32
        assert 0 <= x.min() and x.max() <= 1
        assert torch.equal(x, b[i]["rgb"])
    assert any(not torch.equal(a[i]["rgb"], c[i]["rgb"]) for i in range(len(a)))
    assert len(a) == 4 * len(photo_sources("train"))


def test_photo_bad_split():
    with pytest.raises(ValueError, match="split"):
        PackagePhotos("test")


# ---------------------------------------------------------------------------------------------
# Image folders
# ---------------------------------------------------------------------------------------------


def _png48(path: Path, arr: np.ndarray) -> None:
    """Write a 16-bit-per-channel RGB PNG by hand (PIL cannot write one)."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in arr)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def messy_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    (root / "sub" / "deeper").mkdir(parents=True)
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    img.save(root / "a.jpg")
    img.save(root / "b.PNG")
    img.save(root / "sub" / "c.webp")
    img.save(root / "sub" / "d.bmp")
    img.save(root / "sub" / "deeper" / "e.TIFF")
    img.convert("L").save(root / "gray.png")
    img.convert("RGBA").save(root / "rgba.png")
    img.quantize(16).save(root / "pal.png")
    img.convert("CMYK").save(root / "cmyk.jpg")
    Image.fromarray(rng.integers(0, 65535, (48, 64)).astype(np.uint16)).save(root / "i16.png")
    _png48(root / "sub" / "rgb48.png", rng.integers(0, 65535, (48, 64, 3)).astype(np.uint16))
    img.resize((4, 4)).save(root / "tiny.png")
    (root / "sub" / "bad.jpg").write_bytes(rng.bytes(500))
    jpeg = (root / "a.jpg").read_bytes()
    (root / "sub" / "trunc.jpeg").write_bytes(jpeg[: len(jpeg) // 3])  # header fine, decode fails
    (root / "notes.txt").write_text("not an image")
    return root


def test_image_folder_scan_report(messy_folder):
    assert Image.open(messy_folder / "i16.png").mode == "I;16"
    ds = ImageFolder(messy_folder, size=32)
    r = ds.report
    assert (r.scanned, r.ignored, r.usable, len(ds)) == (14, 1, 10, 10)
    expect = {
        data.GRAYSCALE: (2, "gray.png"),
        data.CORRUPT: (1, os.path.join("sub", "bad.jpg")),
        data.TOO_SMALL: (1, "tiny.png"),
        "alpha": (1, "rgba.png"),
        "palette": (1, "pal.png"),
        "CMYK": (1, "cmyk.jpg"),
        "16-bit": (1, os.path.join("sub", "rgb48.png")),
    }
    summary = ds.summary()
    for reason, (count, first) in expect.items():
        path = str(messy_folder / first)
        assert r.count(reason) == count and r.first(reason) == path, reason
        assert f"{count} {reason} (first: {path})" in summary
    assert summary.startswith(f"scanned 14 image files under {messy_folder}")
    assert "10 usable" in summary
    assert {Path(p).name for p in ds.files} >= {"a.jpg", "b.PNG", "c.webp", "d.bmp", "e.TIFF", "rgb48.png"}


def test_image_folder_never_raises_during_an_epoch(messy_folder):
    ds = ImageFolder(messy_folder, size=(24, 40))
    seen = set()
    for i in range(len(ds)):
        item = ds[i]
        assert item["rgb"].shape == (3, 24, 40) and 0 <= item["rgb"].min() and item["rgb"].max() <= 1
        seen.add(Path(item["path"]).name)
    assert "trunc.jpeg" not in seen
    assert ds.report.count(data.LOAD_FAILED) == 1
    assert ds.report.first(data.LOAD_FAILED) == str(messy_folder / "sub" / "trunc.jpeg")
    assert "1 failed at load time" in ds.summary()
    batches = list(make_loader(ds, 4, shuffle=True, seed=0))
    assert sum(len(b["rgb"]) for b in batches) == len(ds)


def test_image_folder_crops(messy_folder):
    center = ImageFolder(messy_folder, size=32, crop="center")
    assert torch.equal(center[0]["rgb"], center[0]["rgb"])
    assert not center.flip
    rand = ImageFolder(messy_folder, size=32, crop="random", flip=False)
    crops = []
    for epoch in range(6):
        rand.set_epoch(epoch)
        crops.append(rand[0]["rgb"])
    assert any(not torch.equal(crops[0], c) for c in crops[1:])  # fresh crops per epoch
    rand.set_epoch(0)
    assert torch.equal(rand[0]["rgb"], crops[0])                  # but reproducible


def test_image_folder_alpha_goes_on_white(tmp_path):
    rgba = np.zeros((40, 40, 4), dtype=np.uint8)
    rgba[..., 0] = 200  # red, but fully transparent: its RGB must not leak
    rgba[:, 20:, :] = (0, 0, 255, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "x.png")
    x = ImageFolder(tmp_path, size=40, crop="center")[0]["rgb"]
    assert torch.equal(x[:, :, :20], torch.ones(3, 40, 20))
    assert torch.equal(x[:, :, 20:], torch.tensor([0.0, 0.0, 1.0]).view(3, 1, 1).expand(3, 40, 20))


def test_image_folder_clear_errors(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope"):
        ImageFolder(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no image files.*empty"):
        ImageFolder(empty)
    (empty / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="no image files"):
        ImageFolder(empty)
    grays = tmp_path / "grays"
    grays.mkdir()
    Image.new("L", (64, 64), 128).save(grays / "g.png")
    with pytest.raises(ValueError, match="no usable images.*grayscale"):
        ImageFolder(grays)


# ---------------------------------------------------------------------------------------------
# Lab batches
# ---------------------------------------------------------------------------------------------


def test_lab_batch_matches_skimage():
    rgb = torch.rand(3, 3, 9, 11, generator=torch.Generator().manual_seed(0))
    out = lab_batch(rgb)
    assert out["L"].shape == (3, 1, 9, 11) and out["ab"].shape == (3, 2, 9, 11)
    ref = skcolor.rgb2lab(rgb.permute(0, 2, 3, 1).double().numpy())  # (B, H, W, 3)
    ref = torch.from_numpy(ref).permute(0, 3, 1, 2).float()
    assert torch.allclose(out["L"], ref[:, :1], atol=2e-3)
    assert torch.allclose(out["ab"], ref[:, 1:], atol=2e-3)
    assert 0 <= out["L"].min() and out["L"].max() <= 100
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        lab_batch(torch.rand(3, 9, 11))


# ---------------------------------------------------------------------------------------------
# Hints
# ---------------------------------------------------------------------------------------------


def _naive_hints(ab: torch.Tensor, positions: torch.Tensor, counts: torch.Tensor, p: int):
    hint_ab, mask = torch.zeros_like(ab), torch.zeros_like(ab[:, :1])
    for b in range(ab.shape[0]):
        for k in range(int(counts[b])):
            y, x = positions[b, k].tolist()
            hint_ab[b, :, y:y + p, x:x + p] = ab[b, :, y:y + p, x:x + p].mean(dim=(1, 2), keepdim=True)
            mask[b, :, y:y + p, x:x + p] = 1
    return hint_ab, mask


@pytest.mark.parametrize("mode", ["uniform", "center"])
@pytest.mark.parametrize("patch", [1, 2, 3])
def test_hints_carry_exact_patch_means(mode, patch):
    ab = torch.randn(4, 2, 16, 21, generator=torch.Generator().manual_seed(1)) * 40
    n = torch.tensor([0, 3, 12, 7])
    out = sample_hints(ab, n, patch=patch, mode=mode, seed=3)
    assert out["hint_ab"].shape == (4, 2, 16, 21) and out["hint_mask"].shape == (4, 1, 16, 21)
    assert torch.equal(out["counts"], n)
    pos = out["positions"]
    valid = torch.arange(pos.shape[1]) < n.view(-1, 1)
    assert (pos[valid] >= 0).all()
    assert (pos[valid][:, 0] <= 16 - patch).all() and (pos[valid][:, 1] <= 21 - patch).all()  # fully inside
    assert (pos[~valid] == -1).all()
    ref_ab, ref_mask = _naive_hints(ab, pos, n, patch)
    assert torch.allclose(out["hint_ab"], ref_ab, atol=1e-4)
    assert torch.equal(out["hint_mask"], ref_mask)
    # each image: at most n p^2 hinted pixels, exactly n p^2 when no two patches overlap
    for b in range(4):
        hinted = int(out["hint_mask"][b].sum())
        assert hinted <= n[b] * patch**2
        tl = pos[b, : n[b]]
        apart = all((tl[i] - tl[j]).abs().max() >= patch for i in range(len(tl)) for j in range(i))
        if apart:
            assert hinted == n[b] * patch**2


def test_hints_are_reproducible_and_nested():
    ab = torch.randn(3, 2, 32, 32)
    a = sample_hints(ab, 10, seed=7)
    b = sample_hints(ab, 10, generator=torch.Generator().manual_seed(7))
    c = sample_hints(ab, 10, seed=8)
    assert torch.equal(a["hint_ab"], b["hint_ab"]) and torch.equal(a["positions"], b["positions"])
    assert not torch.equal(a["positions"], c["positions"])
    more = sample_hints(ab, 20, seed=7)
    assert torch.equal(more["positions"][:, :10], a["positions"])  # the first 10 of 20 are the 10
    none = sample_hints(ab, 0, seed=7)
    assert not none["hint_ab"].any() and not none["hint_mask"].any()
    with pytest.raises(ValueError):
        sample_hints(ab, [1, 2], seed=0)
    with pytest.raises(ValueError):
        sample_hints(ab, 1, seed=0, generator=torch.Generator())


def test_center_hints_cluster_near_the_centre():
    ab = torch.zeros(50, 2, 64, 64)
    dist = {}
    for mode in ("uniform", "center"):
        pos = sample_hints(ab, 40, patch=2, mode=mode, seed=0)["positions"].float() + 1.0  # patch centres
        dist[mode] = (pos - 32.0).norm(dim=-1).mean().item()
    # uniform on a 64 x 64 square: mean distance ~ 24.5; Gaussian with sigma = 16 per axis: ~ 20
    assert dist["center"] < 0.85 * dist["uniform"]
    assert 22 < dist["uniform"] < 27


def test_geometric_hint_counts():
    k = geometric_hint_counts(20_000, p=1 / 8, seed=0)
    assert k.dtype == torch.long and k.min() == 0
    assert abs(k.float().mean().item() - 7.0) < 0.3               # mean (1 - p) / p
    assert abs((k == 0).float().mean().item() - 1 / 8) < 0.01      # P(K = 0) = p
    assert torch.equal(k, geometric_hint_counts(20_000, p=1 / 8, seed=0))
    assert geometric_hint_counts(1000, max_hints=5, seed=1).max() <= 5
    ab = torch.randn(16, 2, 24, 24)
    out = sample_hints(ab, geometric_hint_counts(16, max_hints=30, seed=2), seed=2)
    assert (out["hint_mask"].flatten(1).sum(1) <= out["counts"] * 4).all()


def test_open_dataset_maps_the_data_parameter(tmp_path):
    from colorkit.data import open_dataset

    train, val = open_dataset("toyworld", split="train", size=16, length=5), open_dataset("toyworld", split="val", size=16, length=5)
    assert len(train) == 5 and train[0]["rgb"].shape == (3, 16, 16)
    assert not torch.equal(train[0]["rgb"], val[0]["rgb"])          # validation scenes are other scenes
    photos = open_dataset("package-photos", split="val", size=24, length=7)
    assert len(photos) == 7 and {photos[i]["source"] for i in range(7)} <= {"chelsea", "grace_hopper", "flower"}
    with pytest.raises(ValueError, match="toyworld"):
        open_dataset("imagenet")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        open_dataset(str(tmp_path / "nowhere"))


def test_a_plain_folder_splits_by_file_and_train_val_subfolders_are_used(tmp_path):
    from colorkit.data import VAL_FRACTION_DENOMINATOR, folder_split, open_dataset

    rng = np.random.default_rng(0)
    for k in range(60):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / f"img{k:02d}.png")
    train, val = open_dataset(tmp_path, split="train", size=32), open_dataset(tmp_path, split="val", size=32)
    train_files = {train.dataset.files[i] for i in train.indices}
    val_files = {val.dataset.files[i] for i in val.indices}
    assert val_files and not train_files & val_files and len(train_files | val_files) == 60
    assert len(val_files) < 60 / VAL_FRACTION_DENOMINATOR * 3        # about 1 in 20
    # the split depends on the path inside the folder only: the same after moving the folder
    moved = tmp_path.parent / "moved"
    tmp_path.rename(moved)
    again = folder_split([f.replace(str(tmp_path), str(moved)) for f in sorted(train_files | val_files)], moved, "val")
    assert len(again) == len(val_files)
    for split in ("train", "val"):
        (moved / split).mkdir()
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(moved / split / "only.png")
    sub = open_dataset(moved, split="val", size=32)
    assert [sub.dataset.files[i] for i in sub.indices] == [str(moved / "val" / "only.png")]
