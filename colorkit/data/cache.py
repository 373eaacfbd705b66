"""A resized uint8 cache of an image folder, for full-size runs: `prepare_cache`, `CachedImages`.
Part of `colorkit.data`."""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from colorkit.data.folders import IMAGE_EXTENSIONS, LOAD_FAILED, FolderReport, ImageFolder, _decode_cover
from colorkit.data.rng import _FOLDER_STREAM, _hw, _uniforms

# Decoding and resizing one photo costs milliseconds of CPU; copying the 3 H W bytes of an image
# that is already resized out of a memory-mapped file costs microseconds. So a GPU run that reads
# JPEGs every epoch can wait on its CPUs. `prepare_cache` pays for the decoding once: each usable
# image of a folder (ImageFolder's scan and rules) is resized to cover `resize` and centre-cropped
# to exactly `resize`, then appended to raw uint8 shards. `CachedImages` takes its crops of `size`
# from those arrays, so random crops still move around inside the stored `resize` window.
#
# A cache folder:
#   shard_00000.u8, shard_00001.u8, ...  raw uint8 in C order, (n_k, RH, RW, 3) each (numpy memmap)
#   shard_00000.json, ...                 each shard's source files, their cover sizes, its failures
#   colorkit-cache.json                   the index, written last: the cache is complete iff it exists
#   colorkit-cache.partial.json           present while a preparation runs or after it was interrupted
# Every file is written under a temporary name and renamed once whole. A shard counts as finished
# only when its .json exists and names the same source files (path, byte size, modification time)
# and the same resize, so a preparation run again after an interruption keeps every finished shard.

CACHE_INDEX = "colorkit-cache.json"
CACHE_PARTIAL = "colorkit-cache.partial.json"
CACHE_FORMAT, CACHE_VERSION = "colorkit-image-cache", 1
_CACHE_MARGIN = 1.15      # default resize = round(1.15 * size): room for random crops of `size`
_SHARD_BYTES = 2**30      # default shard size: about 1 GiB of pixels


def _shard_name(k: int) -> str:
    return f"shard_{k:05d}.u8"


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _cover_crop(path: str, resize: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode `path`, resize it to cover `resize` and centre-crop that: ((RH, RW, 3) uint8, cover (h, w)).

    The same decoding as `ImageFolder._load` (`_decode_cover`), so a centre crop from the cache
    equals ImageFolder's pixel for pixel (tests/test_data_cache.py checks it).
    """
    rh, rw = resize
    im = _decode_cover(path, resize)
    new_w, new_h = im.size
    x0, y0 = (new_w - rw) // 2, (new_h - rh) // 2
    pixels = np.asarray(im.crop((x0, y0, x0 + rw, y0 + rh)), dtype=np.uint8)   # (RH, RW, 3)
    return pixels, (new_h, new_w)


def _cache_one(path: str, resize: tuple[int, int]) -> tuple[bytes | None, tuple[int, int] | None, str | None]:
    """One image for a shard: (pixel bytes, cover size, None), or (None, None, error) if it fails."""
    try:
        pixels, cover = _cover_crop(path, resize)
    except Exception as error:  # a file that passed the scan but does not decode (truncated JPEG, ...)
        return None, None, f"{type(error).__name__}: {error}"
    return pixels.tobytes(), cover, None


def _shard_key(paths: Sequence[str], resize: tuple[int, int]) -> str:
    """Fingerprint of one shard's inputs: the files (path, size, mtime) and the resize."""
    stats = [[p, os.stat(p).st_size, os.stat(p).st_mtime_ns] for p in paths]
    return hashlib.sha256(json.dumps([CACHE_VERSION, list(resize), stats]).encode()).hexdigest()


def _finished_shard(out: Path, k: int, key: str, image_bytes: int) -> dict | None:
    """Shard k's record if it was written whole for the same inputs, else None."""
    shard, meta = out / _shard_name(k), out / _shard_name(k).replace(".u8", ".json")
    try:
        record = json.loads(meta.read_text())
        whole = shard.stat().st_size == record["count"] * image_bytes
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record if whole and record.get("key") == key else None


def _write_shard(out: Path, k: int, key: str, results: Iterable, bar) -> dict:
    """Write shard k from (path, (pixels, cover, error)) pairs: data file first, then its record."""
    shard, meta = out / _shard_name(k), out / _shard_name(k).replace(".u8", ".json")
    meta.unlink(missing_ok=True)  # the shard is about to change: unfinished until its record is back
    tmp = shard.with_name(f"{shard.name}.tmp{os.getpid()}")
    paths, covers, failed = [], [], []
    try:
        with open(tmp, "wb") as f:
            for path, (pixels, cover, error) in results:
                if pixels is None:
                    failed.append([path, error])
                else:
                    f.write(pixels)
                    paths.append(path)
                    covers.append(list(cover))
                bar.update(1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, shard)
    finally:
        tmp.unlink(missing_ok=True)
    record = {"key": key, "file": shard.name, "count": len(paths), "paths": paths, "cover": covers, "failed": failed}
    _write_json_atomic(meta, record)
    return record


def _cache_state(path: str | os.PathLike) -> str | None:
    """"complete" for a finished cache folder, "partial" for an unfinished one, None otherwise."""
    p = Path(path).expanduser()
    if not p.is_dir():
        return None
    if (p / CACHE_INDEX).is_file():
        return "complete"
    if (p / CACHE_PARTIAL).exists() or next(p.glob("shard_*.u8*"), None) is not None:
        return "partial"
    return None


def prepare_cache(root: str | os.PathLike, out_dir: str | os.PathLike, size: int | Sequence[int], *,
                  resize: int | Sequence[int] | None = None, shard_size: int | None = None, workers: int = 0,
                  progress: bool = True, min_side: int = 32, extensions: Iterable[str] = IMAGE_EXTENSIONS) -> Path:
    """Decode every usable image under `root` once into a uint8 cache in `out_dir`; returns `out_dir`.

    Images are chosen exactly as `ImageFolder(root, min_side=..., extensions=...)` chooses them
    (its report, with any decoding failures added, is stored in the index). Each is resized to
    cover `resize` and centre-cropped to it; `resize` defaults to round(1.15 * size), so
    `CachedImages(out_dir, size)` can still take random crops of `size`. With resize = size a
    centre crop from the cache equals `ImageFolder(root, size, crop="center")` pixel for pixel;
    with a larger resize it equals `ImageFolder(root, size, resize=resize, crop="center")`.

    Disk: N * RH * RW * 3 bytes (256 -> 294 x 294: 259 KB an image). Shards hold `shard_size`
    images (default: about 1 GiB each). `workers` > 0 decodes in that many processes.
    Atomic and resumable: the index is written last (a cache without it is refused as incomplete);
    run again after an interruption and finished shards are kept. Run again on a complete cache
    with the same inputs and it returns at once; with other inputs it is rebuilt.
    """
    out = Path(out_dir).expanduser()
    h, w = _hw(size)
    rh, rw = (round(_CACHE_MARGIN * h), round(_CACHE_MARGIN * w)) if resize is None else _hw(resize)
    if rh < h or rw < w:
        raise ValueError(f"resize {(rh, rw)} must be at least size {(h, w)}")
    image_bytes = rh * rw * 3
    shard_size = max(1, _SHARD_BYTES // image_bytes) if shard_size is None else int(shard_size)
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"cache folder {out} exists and is not a directory")

    folder = ImageFolder(root, size=(h, w), resize=(rh, rw), crop="center", min_side=min_side, extensions=extensions)
    files = folder.files
    slices = [files[i:i + shard_size] for i in range(0, len(files), shard_size)]
    keys = [_shard_key(part, (rh, rw)) for part in slices]
    plan = hashlib.sha256(json.dumps([CACHE_VERSION, [h, w], shard_size, keys]).encode()).hexdigest()

    out.mkdir(parents=True, exist_ok=True)
    index_path = out / CACHE_INDEX
    if index_path.exists():
        try:
            if _read_cache_index(out).get("plan") == plan:
                return out  # already prepared from the same files at the same resize
        except ValueError:
            pass
        index_path.unlink()  # about to change the cache: from here on it reads as incomplete
    _write_json_atomic(out / CACHE_PARTIAL, {"format": CACHE_FORMAT, "version": CACHE_VERSION, "plan": plan,
                                             "root": str(folder.root), "resize": [rh, rw], "shards": len(slices)})
    for stale in out.glob("*.tmp*"):  # temporaries of an interrupted run (ours: shard_* and colorkit-cache*)
        if stale.name.startswith(("shard_", "colorkit-cache")):
            stale.unlink(missing_ok=True)

    records = [_finished_shard(out, k, keys[k], image_bytes) for k in range(len(slices))]
    todo = sum(len(part) for part, record in zip(slices, records) if record is None)
    free = shutil.disk_usage(out).free
    if todo * image_bytes > free:
        raise OSError(f"the cache needs about {todo * image_bytes / 1e9:.1f} GB more in {out}, "
                      f"which has {free / 1e9:.1f} GB free")

    from tqdm.auto import tqdm

    bar = tqdm(total=len(files), initial=len(files) - todo, unit="img", disable=not progress,
               desc=f"caching {folder.root.name or folder.root} at {rh}x{rw}")
    pool = None
    if workers > 0 and todo:
        from concurrent.futures import ProcessPoolExecutor
        pool = ProcessPoolExecutor(int(workers))
    try:
        for k, part in enumerate(slices):
            if records[k] is not None:
                continue  # finished by an earlier run
            if pool is not None:
                decoded = pool.map(_cache_one, part, [(rh, rw)] * len(part), chunksize=max(1, min(16, len(part) // (4 * workers))))
            else:
                decoded = (_cache_one(path, (rh, rw)) for path in part)
            records[k] = _write_shard(out, k, keys[k], zip(part, decoded), bar)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)

    for record in records:
        for path, _ in record["failed"]:
            folder.report.add("skipped", LOAD_FAILED, path)
    count = sum(record["count"] for record in records)
    if count == 0:
        raise ValueError(f"none of the images under {folder.root} could be decoded: {folder.report.summary()}")
    for extra in out.glob("shard_*"):  # shards of an earlier, larger cache in the same folder
        number = extra.name[len("shard_"):].split(".")[0]
        if number.isdigit() and int(number) >= len(slices):
            extra.unlink(missing_ok=True)
    index = {
        "format": CACHE_FORMAT, "version": CACHE_VERSION, "plan": plan,
        "root": str(folder.root), "size": [h, w], "resize": [rh, rw],
        "dtype": "uint8", "layout": "(n, RH, RW, 3) per shard, C order",
        "count": count, "shard_size": shard_size,
        "shards": [{"file": record["file"], "count": record["count"]} for record in records],
        "paths": [path for record in records for path in record["paths"]],
        "cover": [cover for record in records for cover in record["cover"]],   # (h, w) before the crop
        "report": dict(vars(folder.report)), "summary": folder.report.summary(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _write_json_atomic(index_path, index)
    (out / CACHE_PARTIAL).unlink(missing_ok=True)
    return out


def _read_cache_index(cache_dir: Path) -> dict:
    """The index of a complete cache, with every shard's file checked; clear errors otherwise."""
    if not cache_dir.exists():
        raise FileNotFoundError(f"image cache {cache_dir} does not exist")
    if not cache_dir.is_dir():
        raise NotADirectoryError(f"image cache {cache_dir} is not a directory")
    index_path = cache_dir / CACHE_INDEX
    if not index_path.is_file():
        if _cache_state(cache_dir) == "partial":
            raise ValueError(f"image cache {cache_dir} is incomplete (no {CACHE_INDEX}): its preparation was "
                             f"interrupted or is still running; run prepare_cache again to finish it")
        raise ValueError(f"{cache_dir} is not an image cache: {CACHE_INDEX} not found "
                         f"(make one with colorkit.data.prepare_cache)")
    try:
        index = json.loads(index_path.read_text())
        rh, rw = index["resize"]
        shards = [(str(s["file"]), int(s["count"])) for s in index["shards"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"image cache index {index_path} is unreadable ({error}); prepare the cache again") from None
    if index.get("format") != CACHE_FORMAT or index.get("version") != CACHE_VERSION:
        raise ValueError(f"{index_path} is format {index.get('format')!r} version {index.get('version')!r}; this "
                         f"colorkit reads {CACHE_FORMAT!r} version {CACHE_VERSION}: prepare the cache again")
    for name, count in shards:
        shard = cache_dir / name
        expected = count * rh * rw * 3
        if not shard.is_file():
            raise ValueError(f"image cache {cache_dir} is incomplete: shard {shard} is missing")
        if shard.stat().st_size != expected:
            raise ValueError(f"image cache shard {shard} holds {shard.stat().st_size} bytes, expected {expected} "
                             f"({count} images of {rh}x{rw}x3): the cache is damaged; prepare it again")
    return index


class CachedImages(Dataset):
    """Crops of `size` from a cache written by `prepare_cache`: ImageFolder's samples, without decoding.

    Samples: {"rgb": (3, H, W) float in [0, 1], "path": str (the source file), "index": int}.
    `size` defaults to the size the cache was prepared for. A smaller size first scales the stored
    images by size / prepared size (bilinear, antialiased), so a crop covers the same part of the
    photo; a larger one is an error (prepare another cache). Crops are random (`crop="random"`,
    train) or central (`crop="center"`, val); flips left-right with probability 1/2 when `flip`
    (default: with random crops). Random choices are a hash of (seed, epoch, index), as in
    ImageFolder (the same flips for the same seed): `set_epoch(e)` for fresh crops each epoch.
    Random crops move inside the stored `resize` window only, not over the whole photo.

    The shards are memory-mapped on first use in each process (DataLoader workers included) and
    never pickled. Missing, unfinished or damaged caches raise errors naming the path.
    """

    def __init__(self, cache_dir: str | os.PathLike, size: int | Sequence[int] | None = None, *,
                 crop: str = "random", flip: bool | None = None, seed: int = 0):
        if crop not in ("random", "center"):
            raise ValueError(f"crop must be 'random' or 'center', got {crop!r}")
        self.cache_dir = Path(cache_dir).expanduser()
        index = _read_cache_index(self.cache_dir)
        self.stored: tuple[int, int] = tuple(index["resize"])      # (RH, RW) of the arrays on disk
        self.prepared: tuple[int, int] = tuple(index["size"])      # the size the cache was made for
        self.size = self.prepared if size is None else _hw(size)
        h, w = self.size
        self.scale = max(h / self.prepared[0], w / self.prepared[1])
        if self.scale > 1:
            raise ValueError(f"image cache {self.cache_dir} was prepared for size {self.prepared} (stored at "
                             f"{self.stored}); size {self.size} is larger: prepare a cache for it")
        self.crop, self.seed, self.epoch = crop, int(seed), 0
        self.flip = crop == "random" if flip is None else bool(flip)
        self.files: list[str] = index["paths"]
        self.source_root = Path(index["root"])                       # the folder the images came from
        self._cover: list[list[int]] = index["cover"]
        self.report = FolderReport(**index["report"])
        self._shards = [(self.cache_dir / s["file"], int(s["count"])) for s in index["shards"]]
        self._starts = np.cumsum([0] + [count for _, count in self._shards])[:-1].tolist()
        self._maps: dict[int, np.memmap] = {}
        self._maps_pid = os.getpid()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_maps"] = {}  # never pickle the mapped arrays (a memmap pickles as a full copy)
        return state

    def _shard(self, k: int) -> np.memmap:
        if self._maps_pid != os.getpid():  # a forked worker: open its own maps
            self._maps, self._maps_pid = {}, os.getpid()
        if k not in self._maps:
            path, count = self._shards[k]
            self._maps[k] = np.memmap(path, dtype=np.uint8, mode="r", shape=(count, *self.stored, 3))
        return self._maps[k]

    def set_epoch(self, epoch: int) -> None:
        """Use fresh random crops/flips for this epoch (set it before creating the loader's iterator)."""
        self.epoch = int(epoch)

    def summary(self) -> str:
        return (f"{len(self)} images cached at {self.stored[0]}x{self.stored[1]} in {self.cache_dir} "
                f"({len(self._shards)} shards); {self.report.summary()}")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i) + (len(self) if int(i) < 0 else 0)
        if not 0 <= i < len(self):
            raise IndexError(f"CachedImages index {i} out of range for length {len(self)}")
        k = bisect.bisect_right(self._starts, i) - 1
        image = self._shard(k)[i - self._starts[k]]                            # (RH, RW, 3) uint8, mapped
        (h, w), (rh, rw) = self.size, self.stored
        if self.scale < 1:
            # round(RH * s) >= H because RH >= prepared H and s >= H / prepared H
            rh, rw = round(rh * self.scale), round(rw * self.scale)
            image = np.asarray(Image.fromarray(np.asarray(image)).resize((rw, rh), Image.Resampling.BILINEAR,
                                                                         reducing_gap=3.0))
        u = _uniforms((self.seed, _FOLDER_STREAM, self.epoch), np.array([i]), 3)[0]
        if self.crop == "random":
            x0, y0 = int(u[0] * (rw - w + 1)), int(u[1] * (rh - h + 1))
        elif self.scale == 1:
            # ImageFolder's centre of the cover-resized image, in the stored window's coordinates
            ch, cw = self._cover[i]
            x0, y0 = (cw - w) // 2 - (cw - rw) // 2, (ch - h) // 2 - (ch - rh) // 2
        else:
            x0, y0 = (rw - w) // 2, (rh - h) // 2
        patch = image[y0:y0 + h, x0:x0 + w]                                    # (H, W, 3)
        if self.flip and u[2] < 0.5:
            patch = patch[:, ::-1]
        rgb = torch.from_numpy(patch.copy()).permute(2, 0, 1).float().div_(255.0)           # (3, H, W)
        return {"rgb": rgb, "path": self.files[i], "index": i}
