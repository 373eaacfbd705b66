"""Named public datasets for users with the internet (never needed on the course's default path).

    python -m colorkit data fetch imagenette       # into data/imagenette; then DATA="imagenette"
    python -m colorkit data list

A fetch downloads the archive into `data/.downloads/` with a progress bar, resumes a broken
download where it stopped (an HTTP Range request), checks the archive's checksum, and extracts it
into a temporary folder that is renamed into place only when complete: a failed fetch leaves no
half-made dataset, only the partial download to resume. A dataset already there is a no-op.
Offline, or when the server cannot be reached, it ends with one line saying so.

Checksums: SHA-256 where one is published for the archive (Imagenette, from the FastAI.jl data
registry), else the MD5 that the dataset's page and torchvision's loaders list (Flowers, CUB).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteDataset:
    """An archive on the web and what it becomes: `data/<name>/` holds the archive's folder `root`."""

    name: str
    url: str
    root: str                         # the folder inside the archive that becomes data/<name>
    sha256: str | None = None
    md5: str | None = None
    about: str = ""

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1].split("?")[0]


DATASETS = {d.name: d for d in (
    RemoteDataset("imagenette", "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz", "imagenette2-160",
                  sha256="88daccb09b6fce93f45e6c09ddeb269cce705549e6bff322092a2a5a11489863",
                  about="Imagenette 160 px: 13k ImageNet photos of 10 classes, train/ and val/ (fast.ai, Apache-2.0)"),
    RemoteDataset("flowers", "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/102flowers.tgz", "jpg",
                  md5="52808999861908f626f3c1f4e79d11fa",
                  about="Oxford 102 Flowers: 8189 photos (Nilsback & Zisserman 2008), one of Li et al.'s datasets"),
    RemoteDataset("cub", "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz", "CUB_200_2011/images",
                  md5="97eceeb196236b17998738112f37df78",
                  about="CUB-200-2011: 11788 bird photos (Wah et al. 2011), one of Li et al.'s datasets"),
)}


class FetchError(RuntimeError):
    """A fetch that could not finish: offline, a server error, a checksum mismatch, a bad archive."""


def dataset_dir(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Where a fetched dataset lives: <data_dir>/<name> (default: the project's data/)."""
    from colorkit.runs import project_root

    return Path(data_dir) if data_dir is not None else project_root() / "data"


def fetched(name: str, data_dir: str | os.PathLike | None = None) -> Path | None:
    """The folder of a fetched dataset `name`, or None when it has not been fetched (completely)."""
    folder = dataset_dir(name, data_dir) / name
    return folder if (folder / ".complete").is_file() else None


def _download(dataset: RemoteDataset, partial: Path, say: Callable[[str], None], timeout: float) -> None:
    """Append the rest of the archive to `partial` (a Range request when part of it is there)."""
    from tqdm.auto import tqdm

    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(dataset.url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:                 # nothing left to send: the file is already whole
            return
        raise FetchError(f"{dataset.url}: the server answered {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise FetchError(f"cannot reach {urllib.request.urlparse(dataset.url).netloc} ({reason}): are you offline? "
                         + (f"{have:,} bytes are kept in {partial} and the next fetch resumes from there" if have
                            else "nothing was written")) from None
    with response:
        if have and response.status != 206:          # the server ignored the Range: start over
            have = 0
            say(f"[fetch] {dataset.name}: the server cannot resume; downloading from the start")
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        mode = "ab" if have else "wb"
        with open(partial, mode) as out, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                             desc=dataset.filename) as bar:
            try:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
            except (OSError, urllib.error.URLError) as err:
                out.flush()
                raise FetchError(f"{dataset.url}: the download broke off after {partial.stat().st_size:,} bytes ({err}); "
                                 "run the same fetch again to resume") from None
    if total is not None and partial.stat().st_size < total:
        raise FetchError(f"{dataset.url}: the download broke off after {partial.stat().st_size:,} of {total:,} bytes; "
                         "run the same fetch again to resume")


def _checksum(dataset: RemoteDataset, path: Path) -> None:
    kind, expected = ("sha256", dataset.sha256) if dataset.sha256 else ("md5", dataset.md5)
    if expected is None:
        return
    digest = hashlib.new(kind)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        path.unlink()
        raise FetchError(f"{dataset.filename}: {kind} {digest.hexdigest()} does not match the expected {expected}; "
                         "the download was removed, so the next fetch starts afresh")


def _safe_members(archive: tarfile.TarFile, into: Path) -> list[tarfile.TarInfo]:
    """Regular files and folders that land inside `into` (no absolute paths, '..', links or devices)."""
    members = []
    root = into.resolve()
    for member in archive.getmembers():
        target = (into / member.name).resolve()
        if member.name.startswith("/") or (target != root and root not in target.parents):
            raise FetchError(f"the archive names a path outside its folder: {member.name!r}")
        if member.isfile() or member.isdir():
            members.append(member)
    return members


def fetch(name: str | RemoteDataset, data_dir: str | os.PathLike | None = None, *,
          say: Callable[[str], None] = print, timeout: float = 60.0) -> Path:
    """Fetch a named dataset (see DATASETS) into <data_dir>/<name> and return that folder."""
    dataset = name if isinstance(name, RemoteDataset) else DATASETS.get(name)
    if dataset is None:
        raise ValueError(f"unknown dataset {name!r}; the datasets are: {', '.join(DATASETS)}")
    base = dataset_dir(dataset.name, data_dir)
    target = base / dataset.name
    if (target / ".complete").is_file():
        say(f"[fetch] {dataset.name} is already in {target}")
        return target
    downloads = base / ".downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    partial = downloads / (dataset.filename + ".part")
    _download(dataset, partial, say, timeout)
    _checksum(dataset, partial)
    staging = base / f".extract-{dataset.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        with tarfile.open(partial) as archive:
            archive.extractall(staging, members=_safe_members(archive, staging))
        source = staging / dataset.root
        if not source.is_dir():
            raise FetchError(f"{dataset.filename} has no folder {dataset.root!r}")
        (source / ".complete").write_text(dataset.url + "\n")
        if target.exists():
            shutil.rmtree(target)                     # an incomplete earlier attempt
        os.replace(source, target)                    # the dataset appears whole, or not at all
    except tarfile.TarError as err:
        partial.unlink(missing_ok=True)
        raise FetchError(f"{dataset.filename} is not a readable archive ({err}); it was removed") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    partial.unlink()
    say(f"[fetch] {dataset.name}: ready in {target}; use DATA={dataset.name!r}")
    return target


def main(argv: list[str]) -> int:
    """`python -m colorkit data fetch NAME [--dir DIR]` and `python -m colorkit data list`."""
    if argv[:1] == ["list"]:
        for d in DATASETS.values():
            where = fetched(d.name)
            print(f"{d.name:<12} {'fetched' if where else 'not fetched':<12} {d.about}")
        return 0
    if len(argv) >= 2 and argv[0] == "fetch":
        data_dir = argv[argv.index("--dir") + 1] if "--dir" in argv else None
        try:
            fetch(argv[1], data_dir)
        except (FetchError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    print("usage: python -m colorkit data fetch NAME [--dir DIR] | python -m colorkit data list", file=sys.stderr)
    return 2
