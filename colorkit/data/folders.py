"""Folders of user images: `walk_files`, `FolderReport`, `ImageFolder`. Part of `colorkit.data`."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageOps
from torch import Tensor
from torch.utils.data import Dataset

from colorkit.data.photos import _pil_to_tensor, _to_rgb
from colorkit.data.rng import _FOLDER_STREAM, _hw, _uniforms

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")

# Single-channel modes: no color to learn from, so these files are skipped.
_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}

# Reasons, as the summary prints them.
CORRUPT, TOO_SMALL, GRAYSCALE = "corrupt or unreadable", "too small", "grayscale, no color"
LOAD_FAILED = "failed at load time"
NOT_A_FILE, UNREADABLE_FOLDER = "not a regular file", "unreadable folder"


def walk_files(root: str | os.PathLike, *, on_skip: Callable[[str, str], None] | None = None) -> Iterator[str]:
    """Every file path under `root`, in a deterministic (sorted) order.

    Symlinked folders are followed, each real folder once (a link back up the tree is not a loop);
    a folder that cannot be listed is reported to `on_skip(UNREADABLE_FOLDER, path)`, and so is
    anything that is not a regular file (a FIFO, a socket, a device: opening one could hang) with
    NOT_A_FILE; neither stops the walk.
    """
    report = on_skip or (lambda reason, path: None)
    seen: set[str] = set()
    for folder, dirs, names in os.walk(root, followlinks=True, onerror=lambda err: report(UNREADABLE_FOLDER, err.filename)):
        real = os.path.realpath(folder)
        if real in seen:                 # reached again through a link: already walked
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()                      # deterministic order, whatever the file system returns
        for name in sorted(names):
            path = os.path.join(folder, name)
            try:
                regular = stat.S_ISREG(os.stat(path).st_mode)
            except OSError:              # a dangling link, a file that vanished
                regular = False
            if regular:
                yield path
            else:
                report(NOT_A_FILE, path)


@dataclass
class FolderReport:
    """What a scan of an image folder found. Counts and the first path for each reason."""

    root: str
    scanned: int = 0                      # files with an image extension
    ignored: int = 0                      # other files (no image extension)
    usable: int = 0
    skipped: dict[str, list] = field(default_factory=dict)    # reason -> [count, first path]
    converted: dict[str, list] = field(default_factory=dict)  # conversion -> [count, first path]

    def add(self, table: str, reason: str, path: str) -> None:
        entry = getattr(self, table).setdefault(reason, [0, path])
        entry[0] += 1

    def count(self, reason: str) -> int:
        """How many files were skipped or converted for `reason` (0 if none)."""
        return (self.skipped.get(reason) or self.converted.get(reason) or [0])[0]

    def first(self, reason: str) -> str | None:
        """The first file (in scan order) skipped or converted for `reason`."""
        entry = self.skipped.get(reason) or self.converted.get(reason)
        return entry[1] if entry else None

    def summary(self) -> str:
        def table(entries: dict) -> str:
            return ", ".join(f"{c} {reason} (first: {first})" for reason, (c, first) in entries.items()) or "none"

        other = f" (ignored {self.ignored} other file{'s' if self.ignored != 1 else ''})" if self.ignored else ""
        return (f"scanned {self.scanned} image files under {self.root}{other}: {self.usable} usable; "
                f"skipped: {table(self.skipped)}; converted: {table(self.converted)}")

    __str__ = summary


def _decode_cover(path: str, resize: tuple[int, int]) -> Image.Image:
    """Decode an image file to RGB (EXIF rotation applied, alpha onto white), resized bilinearly so that
    it covers `resize` = (h, w) with its aspect ratio kept."""
    rh, rw = resize
    with Image.open(path) as im:
        im.draft("RGB", (max(rh, rw), max(rh, rw)))  # JPEG: decode at a reduced scale when large
        im = _to_rgb(ImageOps.exif_transpose(im))
    cover = max(rh / im.height, rw / im.width)
    new_w, new_h = max(rw, round(im.width * cover)), max(rh, round(im.height * cover))
    return im.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=3.0)


class ImageFolder(Dataset):
    """All images under `root` (recursive), resized and cropped to `size`; for full-size runs.

    The walk (`walk_files`) follows symlinked folders once each, counts folders it cannot list
    ("unreadable folder") and skips anything that is not a regular file ("not a regular file": a FIFO
    named *.png would hang a read).

    Extensions: IMAGE_EXTENSIONS, any case. The scan opens every file's header (PIL `open` +
    `verify`, no full decode) and decides, in this order:
      corrupt or unreadable -> skipped; smaller than `min_side` on its short side -> skipped;
      grayscale (L, 1-bit, I;16, F, LA, or a palette of grays) -> skipped, it has no color to learn;
      RGBA / LA / PA / P with transparency -> composited onto white ("alpha");
      palette P -> RGB ("palette"); CMYK -> RGB ("CMYK"); 16 bits per channel -> 8 ("16-bit");
      other modes (YCbCr, LAB, HSV) -> RGB ("other mode").
    `report` (a FolderReport) holds the counts and first paths; `summary()` prints them. An RGB
    file that only holds grays is not detected (that would need a full decode).
    A file that passes the scan but fails to decode later is counted under LOAD_FAILED and replaced
    by the next good item, so an epoch never stops halfway (with workers, each counts its own).

    Items: the image is resized so that it covers `resize` (default: `size`), then cropped to
    `size`: at random with `crop="random"` (train), in the centre with `crop="center"` (val);
    flipped left-right with probability 1/2 when `flip` (default: with random crops). Random
    choices are a hash of (seed, epoch, index): call `set_epoch(e)` for fresh crops each epoch.
    Samples: {"rgb": (3, H, W) float in [0, 1], "path": str, "index": int}.
    Missing folder: FileNotFoundError; no image files or none usable: ValueError with the summary.
    """

    def __init__(self, root: str | os.PathLike, size: int | Sequence[int] = 256, *, crop: str = "random",
                 resize: int | Sequence[int] | None = None, min_side: int = 32, flip: bool | None = None,
                 seed: int = 0, extensions: Iterable[str] = IMAGE_EXTENSIONS):
        if crop not in ("random", "center"):
            raise ValueError(f"crop must be 'random' or 'center', got {crop!r}")
        self.root = Path(root).expanduser()
        self.size = _hw(size)
        self.resize = self.size if resize is None else _hw(resize)
        if self.resize[0] < self.size[0] or self.resize[1] < self.size[1]:
            raise ValueError(f"resize {self.resize} must be at least size {self.size}")
        self.crop, self.min_side, self.seed, self.epoch = crop, int(min_side), int(seed), 0
        self.flip = crop == "random" if flip is None else bool(flip)
        self.extensions = tuple(e.lower() for e in extensions)
        if not self.root.exists():
            raise FileNotFoundError(f"image folder {self.root} does not exist")
        if not self.root.is_dir():
            raise NotADirectoryError(f"image folder {self.root} is not a directory")
        self.report = FolderReport(root=str(self.root))
        self.files: list[str] = self._scan()
        if self.report.scanned == 0:
            raise ValueError(f"no image files ({', '.join(self.extensions)}) found under {self.root}")
        if not self.files:
            raise ValueError(f"no usable images under {self.root}: {self.report.summary()}")
        self._failed: set[int] = set()

    def _scan(self) -> list[str]:
        usable = []

        def skip(reason: str, path: str) -> None:
            if reason == UNREADABLE_FOLDER:
                self.report.add("skipped", reason, path)
            elif path.lower().endswith(self.extensions):      # a FIFO or socket named like an image
                self.report.scanned += 1
                self.report.add("skipped", reason, path)

        for path in walk_files(self.root, on_skip=skip):
            if not path.lower().endswith(self.extensions):
                self.report.ignored += 1
                continue
            self.report.scanned += 1
            verdict = self._inspect(path)
            if verdict in (CORRUPT, TOO_SMALL, GRAYSCALE):
                self.report.add("skipped", verdict, path)
                continue
            if verdict is not None:
                self.report.add("converted", verdict, path)
            usable.append(path)
        self.report.usable = len(usable)
        return usable

    def _inspect(self, path: str) -> str | None:
        """CORRUPT / TOO_SMALL / GRAYSCALE to skip, a conversion name, or None for plain RGB."""
        try:
            with Image.open(path) as im:
                im.verify()  # checks what it can without decoding (PNG checksums, structure)
            with Image.open(path) as im:  # verify() leaves the file unusable: reopen for the header
                mode, (w, h), info = im.mode, im.size, dict(im.info)
                args = im.tile[0][3] if im.tile else ""
                rawmode = args if isinstance(args, str) else (args[0] if args and isinstance(args[0], str) else "")
                # Reading the palette decodes the image; palette files are rare and small.
                palette = im.getpalette() if mode in ("P", "PA") and min(w, h) >= self.min_side else None
        except Exception:  # PIL raises many types for bad files (UnidentifiedImageError, OSError, SyntaxError...)
            return CORRUPT
        if min(w, h) < self.min_side:
            return TOO_SMALL
        if mode in _GRAY_MODES:
            return GRAYSCALE
        if palette is not None:
            rgb = np.asarray(palette, dtype=np.int64).reshape(-1, 3)
            if (rgb == rgb[:, :1]).all():
                return GRAYSCALE
        if mode in ("RGBA", "PA", "RGBa") or (mode == "P" and "transparency" in info):
            return "alpha"
        if mode == "P":
            return "palette"
        if mode == "CMYK":
            return "CMYK"
        if mode == "RGB" and isinstance(rawmode, str) and "16" in rawmode:
            return "16-bit"
        if mode != "RGB":
            return "other mode"
        return None

    def set_epoch(self, epoch: int) -> None:
        """Use fresh random crops/flips for this epoch (set it before creating the loader's iterator)."""
        self.epoch = int(epoch)

    def summary(self) -> str:
        return self.report.summary()

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, i: int) -> Tensor:
        path = self.files[i]
        hh, ww = self.size
        im = _decode_cover(path, self.resize)                  # covers (rh, rw), aspect ratio kept
        new_w, new_h = im.size
        u = _uniforms((self.seed, _FOLDER_STREAM, self.epoch), np.array([i]), 3)[0]
        if self.crop == "random":
            x0, y0 = int(u[0] * (new_w - ww + 1)), int(u[1] * (new_h - hh + 1))
        else:
            x0, y0 = (new_w - ww) // 2, (new_h - hh) // 2
        im = im.crop((x0, y0, x0 + ww, y0 + hh))
        if self.flip and u[2] < 0.5:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return _pil_to_tensor(im)

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i) + (len(self) if int(i) < 0 else 0)
        if not 0 <= i < len(self):
            raise IndexError(f"ImageFolder index {i} out of range for length {len(self)}")
        # Try item i, then the next ones: a file that fails here is counted and never tried again.
        for k in range(len(self)):
            j = (i + k) % len(self)
            if j in self._failed:
                continue
            try:
                return {"rgb": self._load(j), "path": self.files[j], "index": j}
            except Exception:
                self._failed.add(j)
                self.report.add("skipped", LOAD_FAILED, self.files[j])
        raise RuntimeError(f"every image under {self.root} failed to load: {self.report.summary()}")
