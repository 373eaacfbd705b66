"""colorkit.rcc: Qt resource bundles read with the standard library."""

import struct
import zlib

import pytest

from colorkit.rcc import RccError, read_rcc, write_rcc


def test_a_bundle_round_trips_with_folders_compression_and_unicode_names(tmp_path):
    files = {"activities/erase/resource/photo1.webp": b"RIFF....WEBP" * 50,
             "activities/erase/README": "Autor: Jörg, CC-BY-SA 4.0".encode(),
             "activities/explore/à_la_carte.jpg": bytes(range(256)) * 3,
             "top.txt": b""}
    for compress in (True, False):
        path = write_rcc(files, tmp_path / f"bundle{compress}.rcc", compress=compress)
        assert dict(read_rcc(path)) == files
    only = dict(read_rcc(tmp_path / "bundleTrue.rcc", suffixes=(".webp", ".jpg")))
    assert sorted(only) == ["activities/erase/resource/photo1.webp", "activities/explore/à_la_carte.jpg"]


def test_a_version_1_bundle_as_old_qt_writes_it(tmp_path):
    """Hand-built to the layout of Qt's documentation: 14-byte nodes, a zlib (qCompress) file."""
    content = b"hello resources"
    name = "a.txt"
    names = struct.pack(">HI", len(name), 0) + name.encode("utf-16-be")
    compressed = struct.pack(">I", len(content)) + zlib.compress(content)
    data = struct.pack(">I", len(compressed)) + compressed
    tree = struct.pack(">IHII", 0, 0x02, 1, 1) + struct.pack(">IHHHI", 0, 0x01, 0, 1, 0)
    header = 20
    blob = b"qres" + struct.pack(">4I", 1, header, header + len(tree), header + len(tree) + len(data)) + tree + data + names
    (tmp_path / "v1.rcc").write_bytes(blob)
    assert list(read_rcc(tmp_path / "v1.rcc")) == [("a.txt", content)]


def test_not_a_bundle_or_a_damaged_one_is_a_clear_error(tmp_path):
    (tmp_path / "x.rcc").write_bytes(b"PK\x03\x04 not qt")
    with pytest.raises(RccError, match="no 'qres' header"):
        list(read_rcc(tmp_path / "x.rcc"))
    good = write_rcc({"d/a.bin": b"x" * 100}, tmp_path / "good.rcc").read_bytes()
    (tmp_path / "cut.rcc").write_bytes(good[:40])
    with pytest.raises(RccError, match="damaged"):
        list(read_rcc(tmp_path / "cut.rcc"))
