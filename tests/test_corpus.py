"""colorkit.corpus: the photo corpus from package files; license parsing, pixel rules, the build."""

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from colorkit import corpus
from colorkit.rcc import write_rcc

ROOT = Path(__file__).resolve().parents[1]


def photo_like(seed: int, size=(180, 240)) -> np.ndarray:
    """Random smooth color fields plus sensor-like noise: many distinct colors, no flat runs, and a
    layout of its own for every seed."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(20, 236, (6, 8, 3), dtype=np.uint8))
    smooth = np.asarray(coarse.resize(size[::-1], Image.Resampling.BICUBIC), dtype=np.float64)
    return np.clip(smooth + rng.normal(0, 6, smooth.shape), 0, 255).astype(np.uint8)


def drawing_like(size=(180, 240)) -> np.ndarray:
    rgb = np.zeros((*size, 3), np.uint8)
    rgb[:] = (40, 120, 220)
    rgb[size[0] // 2:, :] = (60, 200, 80)
    rgb[40:90, 60:140] = (250, 220, 30)
    return rgb


def png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def test_gcompris_readme_gives_each_file_its_author_and_license():
    text = ("Copyright: Timothée Giet, 2022\nLicense: CC-BY-SA 4.0\nFiles:\nsquare.svg\nsquare_green.svg\n\n"
            "Copyright: Dietmar Rabich / Wikimedia Commons\nSource: https://commons.example/Alpakas.jpg\n"
            "License: CC-BY-SA-4.0\nComments: cropping\nFiles: alpaca.webp, llama.webp\n")
    credits = corpus.parse_gcompris_readme(text)
    assert credits["alpaca.webp"] == credits["llama.webp"] == {
        "author": "Dietmar Rabich / Wikimedia Commons", "license": "CC-BY-SA-4.0", "source": "https://commons.example/Alpakas.jpg"}
    assert credits["square_green.svg"]["license"] == "CC-BY-SA 4.0" and credits["square.svg"]["author"] == "Timothée Giet, 2022"


def test_debian_copyright_last_matching_stanza_wins_and_folders_match_by_file_name():
    text = ("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
            "Files: *\nCopyright: 2020 Someone\nLicense: GPL-2+ and CC0-1.0\n This package is free software.\n\n"
            "Files: 16.04/aitzgorri_by_Aitzol.jpg\nCopyright: Aitzol Berasategi, 2018\nLicense: CC-BY-4.0\n\n"
            "Files: Media/*\nCopyright: 2011 MIT\n           2012 others\nLicense: CC-BY-SA-3.0\n")
    stanzas = corpus.parse_debian_copyright(text)
    assert corpus.debian_credit(stanzas, "usr/share/backgrounds/aitzgorri_by_Aitzol.jpg")["license"] == "CC-BY-SA-3.0"
    only_two = stanzas[:2]
    assert corpus.debian_credit(only_two, "usr/share/backgrounds/aitzgorri_by_Aitzol.jpg") == {
        "author": "Aitzol Berasategi, 2018", "license": "CC-BY-4.0"}
    assert corpus.debian_credit(only_two, "usr/share/other.png")["license"] == "GPL-2+ and CC0-1.0"


def test_pixel_rules_keep_photos_and_drop_gray_drawings_and_small_ones():
    assert corpus.verdict(photo_like(0)) is None
    gray = np.repeat(photo_like(1).mean(-1, keepdims=True), 3, -1).astype(np.uint8)
    assert corpus.verdict(gray) == "gray"
    assert corpus.verdict(drawing_like()) == "drawing"
    assert corpus.verdict(photo_like(2, size=(60, 300))) == "too small"
    assert corpus.verdict(None) == "unreadable or gray file"
    assert corpus.color_variety(photo_like(0)) > corpus.MIN_VARIETY > corpus.color_variety(drawing_like())


def test_difference_hash_finds_rescaled_copies_and_tells_photos_apart():
    a = photo_like(3)
    rescaled = np.asarray(Image.fromarray(a).resize((200, 150), Image.Resampling.BILINEAR))
    distance = lambda x, y: bin(corpus.difference_hash(x) ^ corpus.difference_hash(y)).count("1")
    assert distance(a, rescaled) <= corpus.DUPLICATE_BITS < distance(a, photo_like(4))


@pytest.fixture
def fake_packages(tmp_path):
    """A Debian-like package (a folder of images and a copyright file) and a GCompris-like rcc bundle."""
    deb = tmp_path / "deb"
    pictures = deb / "usr/share/pics"
    pictures.mkdir(parents=True)
    for i in range(6):
        (pictures / f"photo{i}.png").write_bytes(png(photo_like(10 + i)))
    (pictures / "zz_copy_of_photo0.jpg").write_bytes(png(np.asarray(Image.fromarray(photo_like(10)).resize((236, 177)))))
    (pictures / "flat.png").write_bytes(png(drawing_like()))
    (pictures / "gray.png").write_bytes(png(np.full((180, 240), 90, np.uint8)))
    (pictures / "logo.png").write_bytes(png(photo_like(30)))                        # excluded by name
    (pictures / "notes.txt").write_text("not an image")
    doc = deb / "usr/share/doc/fake-pics"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text("Files: *\nCopyright: 2024 Fake Author\nLicense: CC0-1.0\n")
    rcc_root = tmp_path / "rccpkg"
    bundle = rcc_root / "usr/share/game/rcc/animals.rcc"
    bundle.parent.mkdir(parents=True)
    write_rcc({"game/animals/resource/cat.webp": png(photo_like(40)), "game/animals/resource/README":
               b"Copyright: A. Photographer\nSource: https://example.org/cat\nLicense: CC-BY-4.0\nFiles: cat.webp\n",
               "game/animals/Main.qml": b"Item {}"}, bundle)
    sources = (corpus.Source("fake-pics", "debian", ("usr/share/pics",), exclude=("logo",)),
               corpus.Source("fake-game", "debian", ("usr/share/game/rcc/animals.rcc",), rcc=True),
               corpus.Source("not-there", "debian", ("x",)))
    roots = {"fake-pics": deb, "fake-game": rcc_root}
    fetched = []

    def fetch(source, folder, say):
        fetched.append(source.package)
        if source.package not in roots:
            say(f"[photos] skipping {source.package}: not in this test")
            return None
        return roots[source.package]

    return sources, fetch, fetched


def test_prepare_builds_manifest_images_split_and_credits(tmp_path, fake_packages, monkeypatch):
    sources, fetch, fetched = fake_packages
    said = []
    monkeypatch.setattr(corpus, "MIN_VAL", 2)
    manifest = corpus.prepare(tmp_path / "corpus", sources, say=said.append, fetch=fetch)
    photos = {Path(p["path"]).name: p for p in manifest["photos"]}
    assert sorted(photos) == ["cat.webp"] + [f"photo{i}.png" for i in range(6)]
    assert manifest["dropped"] == {"near-duplicate": 1, "drawing": 1, "unreadable or gray file": 1}
    assert photos["cat.webp"]["license"] == "CC-BY-4.0" and photos["cat.webp"]["author"] == "A. Photographer"
    assert photos["photo3.png"]["license"] == "CC0-1.0" and photos["photo3.png"]["package"] == "fake-pics"
    assert any("skipping not-there" in line for line in said)
    assert sum(p["split"] == "val" for p in manifest["photos"]) == 2
    for p in manifest["photos"]:
        cached = Image.open(tmp_path / "corpus" / p["file"])
        assert cached.mode == "RGB" and min(cached.size) == min(corpus.CACHE_SIDE, min(p["original_size"]))
    assert "A. Photographer" in (tmp_path / "corpus" / "CREDITS.md").read_text()
    assert corpus.info(tmp_path / "corpus")["photos"] == {
        "train": 5, "val": 2, "sources": {"fake-game": 1, "fake-pics": 6}, "folder": str(tmp_path / "corpus"),
        "dropped": manifest["dropped"]}
    # a second prepare is offline: the manifest is reused, nothing is fetched again
    fetched.clear()
    assert corpus.prepare(tmp_path / "corpus", sources, say=said.append, fetch=fetch) == manifest and fetched == []
    assert said[-1].endswith("built without not-there; `prepare --force` tries them again")
    corpus.prepare(tmp_path / "corpus", sources, say=said.append, fetch=fetch, force=True)
    assert fetched == ["fake-pics", "fake-game", "not-there"]


def test_the_command_line_prints_counts_as_json(tmp_path, fake_packages):
    sources, fetch, _ = fake_packages
    corpus.prepare(tmp_path / "corpus", sources, say=lambda line: None, fetch=fetch)
    result = subprocess.run([sys.executable, "-m", "colorkit", "data", "info", "--json", "--dir", str(tmp_path / "corpus")],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout)["photos"]
    assert counts["train"] + counts["val"] == 7 and counts["sources"]["fake-pics"] == 6
    missing = subprocess.run([sys.executable, "-m", "colorkit", "data", "info", "--dir", str(tmp_path / "none")],
                             capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert missing.returncode == 2 and "python -m colorkit data prepare" in missing.stderr


def test_a_package_that_cannot_be_had_is_skipped_with_one_line(tmp_path):
    said = []
    missing_module = corpus.Source("nothing", "installed", ("x",), module="no_such_module_here")
    assert corpus.fetch_package(missing_module, tmp_path, said.append) is None
    assert said == ["[photos] skipping nothing: not installed"]


def test_data_corpus_crops_the_prepared_corpus_by_its_split(tmp_path, fake_packages, monkeypatch):
    from colorkit import course, data, evaluate

    sources, fetch, _ = fake_packages
    monkeypatch.setattr(corpus, "MIN_VAL", 2)
    monkeypatch.setenv("COLORKIT_PHOTOS", str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError, match="python -m colorkit data prepare"):
        data.open_dataset("corpus", split="train", size=32)
    with pytest.raises(FileNotFoundError, match="--data corpus: no photo corpus"):
        course.resolve_data("corpus")
    with pytest.raises(FileNotFoundError, match="--data photos: no photo corpus"):
        course.resolve_data("photos")
    manifest = corpus.prepare(tmp_path / "corpus", sources, say=lambda line: None, fetch=fetch)
    monkeypatch.setenv("COLORKIT_PHOTOS", str(tmp_path / "corpus"))
    train = data.open_dataset("corpus", split="train", size=32)
    assert len(train) == 5 * 8 and train[0]["rgb"].shape == (3, 32, 32)
    val_ids = {p["id"] for p in manifest["photos"] if p["split"] == "val"}
    assert {train[i]["source"] for i in range(len(train))}.isdisjoint(val_ids)
    val = evaluate.validation_set("corpus", size=32, count=6)
    assert len(val) == 6 and {val[i]["source"] for i in range(6)} == val_ids          # every val photo, interleaved
    again = evaluate.validation_set("corpus", size=32, count=6)
    assert all(torch.equal(val[i]["rgb"], again[i]["rgb"]) for i in range(6))
    assert course.resolve_data("corpus") == "corpus"
    photos = data.open_dataset("photos", split="train", size=32)           # DATA="photos" is the corpus
    assert all(torch.equal(photos[i]["rgb"], train[i]["rgb"]) for i in (0, 7, 39))
