"""Read Qt's binary resource bundles (`.rcc`), standard library only.

Some Debian packages ship their pictures inside such bundles (GCompris keeps its photographs in
one `.rcc` per activity). The format, as Qt's own `rcc` writes it and `QResource` reads it (all
integers big-endian):

    header   "qres", version (u32), tree offset (u32), data offset (u32), names offset (u32)
             [, flags (u32) from version 3 on]
    tree     one node per entry, 14 bytes (version 1) or 22 bytes (version 2+, with a u64 modification time):
             name offset (u32), flags (u16), then
               a directory (flags & 2): child count (u32), index of its first child node (u32)
               a file:                  territory (u16), language (u16), data offset (u32)
    names    at names offset + name offset: length (u16), hash (u32), the name in UTF-16BE
    data     at data offset + a file's data offset: size (u32), then the bytes; flags & 1: zlib
             (qCompress: the uncompressed size as a u32, then a zlib stream); flags & 4: zstd

    for name, data in read_rcc("activities/erase/resource/erase.rcc"):   # ("erase/resource/photo.webp", bytes)
        ...
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Iterator

DIRECTORY, COMPRESSED, COMPRESSED_ZSTD = 0x02, 0x01, 0x04


class RccError(ValueError):
    """A file that is not a Qt resource bundle, or one this reader cannot decode."""


def _node_size(version: int) -> int:
    return 14 if version == 1 else 22


def read_rcc(path: str | os.PathLike, *, suffixes: tuple[str, ...] | None = None) -> Iterator[tuple[str, bytes]]:
    """Yield (path inside the bundle, bytes) for every file of a `.rcc`, in tree order.

    `suffixes` (lower case, e.g. (".webp", ".jpg")) skips the other files without decompressing
    them. A zstd-compressed entry needs the `zstandard` package; without it that entry raises RccError.
    """
    blob = Path(path).read_bytes()
    if blob[:4] != b"qres":
        raise RccError(f"{path} is not a Qt resource bundle (no 'qres' header)")
    version, tree, data, names = struct.unpack_from(">4I", blob, 4)
    if version not in (1, 2, 3):
        raise RccError(f"{path}: resource format version {version}; this reader knows 1 to 3")
    node = _node_size(version)

    def name_at(offset: int) -> str:
        (length,) = struct.unpack_from(">H", blob, names + offset)
        start = names + offset + 6                       # after the length and the hash
        return blob[start:start + 2 * length].decode("utf-16-be")

    def walk(index: int, prefix: str) -> Iterator[tuple[str, bytes]]:
        at = tree + index * node
        name_offset, flags = struct.unpack_from(">IH", blob, at)
        name = "" if index == 0 else name_at(name_offset)          # the root has no name
        full = f"{prefix}/{name}" if prefix and name else (name or prefix)
        if flags & DIRECTORY:
            count, first = struct.unpack_from(">II", blob, at + 6)
            for child in range(first, first + count):
                yield from walk(child, full)
            return
        if suffixes is not None and not full.lower().endswith(suffixes):
            return
        (offset,) = struct.unpack_from(">I", blob, at + 10)
        (size,) = struct.unpack_from(">I", blob, data + offset)
        payload = blob[data + offset + 4:data + offset + 4 + size]
        if flags & COMPRESSED:
            payload = zlib.decompress(payload[4:])            # qCompress: a u32 length, then zlib
        elif flags & COMPRESSED_ZSTD:
            try:
                import zstandard
            except ImportError:
                raise RccError(f"{path}: {full} is zstd-compressed; install the zstandard package to read it") from None
            payload = zstandard.ZstdDecompressor().decompress(payload, max_output_size=1 << 30)
        yield full, payload

    try:
        yield from walk(0, "")
    except (struct.error, zlib.error, UnicodeDecodeError) as err:
        raise RccError(f"{path}: damaged resource bundle ({err})") from None


def write_rcc(files: dict[str, bytes], path: str | os.PathLike, *, compress: bool = True) -> Path:
    """Write `files` ({"dir/name.ext": bytes}) as a version-2 `.rcc` bundle, the layout `read_rcc`
    reads (and Qt's rcc writes: children of a directory are consecutive nodes). For tests, and to
    repack a subset of a bundle."""
    tree_root: dict = {}
    for name, payload in files.items():
        parts = name.strip("/").split("/")
        folder = tree_root
        for part in parts[:-1]:
            folder = folder.setdefault(part, {})
        folder[parts[-1]] = payload

    names, name_offsets = bytearray(), {}

    def name_offset(name: str) -> int:
        if name not in name_offsets:
            encoded = name.encode("utf-16-be")
            name_offsets[name] = len(names)
            names.extend(struct.pack(">HI", len(name), hash(name) & 0xFFFFFFFF) + encoded)
        return name_offsets[name]

    # breadth-first numbering: a directory's children get consecutive indices
    nodes: list[tuple[str, object]] = [("", tree_root)]
    children_of: dict[int, tuple[int, int]] = {}
    i = 0
    while i < len(nodes):
        name, item = nodes[i]
        if isinstance(item, dict):
            entries = sorted(item.items())
            children_of[i] = (len(entries), len(nodes))
            nodes.extend(entries)
        i += 1
    tree, data = bytearray(), bytearray()
    for index, (name, item) in enumerate(nodes):
        offset = 0 if index == 0 else name_offset(name)
        if isinstance(item, dict):
            count, first = children_of[index]
            tree += struct.pack(">IHIIQ", offset, DIRECTORY, count, first, 0)
        else:
            payload = struct.pack(">I", len(item)) + zlib.compress(item) if compress else item
            tree += struct.pack(">IHHHIQ", offset, COMPRESSED if compress else 0, 0, 1, len(data), 0)
            data += struct.pack(">I", len(payload)) + payload
    header = 20
    blob = (b"qres" + struct.pack(">4I", 2, header, header + len(tree), header + len(tree) + len(data))
            + tree + data + names)
    path = Path(path)
    path.write_bytes(blob)
    return path
