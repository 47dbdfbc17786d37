"""Reading a dataset written by `pspc ingest`: its manifest and shard files, verified as the Swift worker verifies
them (docs/design.md section 4), and the placement rule that assigns shards to workers.

A shard file (little-endian): a 56-byte header (magic "PSPCSHRD", version 1, C, H, W, count u64, first index u64,
images per block u32, blocks u32, header CRC-32 over bytes 0..48 and the block table, 0), a table of 32-byte
entries (offset u64, stored size u64, raw size u64, CRC-32 of the stored bytes, CRC-32 of the raw bytes), then one
zstd frame per block of uint8 images [n, C, H, W].
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import zstandard

MAGIC = b"PSPCSHRD"
VERSION = 1
HEADER_SIZE = 56
ENTRY_SIZE = 32


class DataError(Exception):
    """A dataset that cannot be served, with the file and the problem in the message."""


@dataclass(frozen=True)
class ShardEntry:
    file: str
    first: int
    count: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    source: str
    shape: tuple[int, int, int]
    count: int
    shards: list[ShardEntry]

    @property
    def fingerprint(self) -> str:
        """SHA-256 over the shards' SHA-256s joined by newlines: the dataset id workers must agree on."""
        return hashlib.sha256("\n".join(s.sha256 for s in self.shards).encode()).hexdigest()


def read_manifest(directory: str) -> Manifest:
    path = os.path.join(directory, "manifest.json")
    try:
        with open(path, "rb") as f:
            document = json.loads(f.read())
    except OSError as e:
        raise DataError(f"{path}: cannot read the manifest ({e.strerror})") from None
    except ValueError as e:
        raise DataError(f"{path}: not a valid manifest: {e}") from None
    try:
        if document["format"] != "pspc-shards" or document["version"] != 1:
            raise DataError(f"{path}: unsupported manifest format {document['format']} version {document['version']}")
        shape = document["shape"]
        manifest = Manifest(
            source=str(document["source"]),
            shape=(int(shape["channels"]), int(shape["height"]), int(shape["width"])),
            count=int(document["count"]),
            shards=[
                ShardEntry(str(s["file"]), int(s["first"]), int(s["count"]), int(s["bytes"]), str(s["sha256"]))
                for s in document["shards"]
            ],
        )
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{path}: not a valid manifest: missing or malformed {e}") from None
    expected = 0
    for shard in manifest.shards:
        if shard.first != expected or shard.count < 0:
            raise DataError(f"{path}: shard {shard.file} starts at {shard.first}, expected {expected}")
        expected += shard.count
    if expected != manifest.count:
        raise DataError(f"{path}: shards hold {expected} images, the manifest says {manifest.count}")
    return manifest


def read_shard(directory: str, manifest: Manifest, shard_id: int) -> np.ndarray:
    """Shard `shard_id`'s images, uint8 [count, C, H, W], after every check: size and SHA-256 against the
    manifest, header and block checksums, block sizes, the header against the manifest."""
    entry = manifest.shards[shard_id]
    path = os.path.join(directory, entry.file)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: shard named in the manifest is missing") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if len(data) != entry.bytes:
        truncated = " (truncated)" if len(data) < entry.bytes else ""
        raise DataError(f"{path}: {len(data)} bytes, the manifest says {entry.bytes}{truncated}")
    if len(data) < HEADER_SIZE:
        raise DataError(f"{path}: truncated: {len(data)} bytes, shorter than the {HEADER_SIZE}-byte header")
    if data[:8] != MAGIC:
        raise DataError(f"{path}: not a pspc shard (bad magic)")
    version, c, h, w, count, first, per_block, blocks, header_crc = struct.unpack_from("<IIIIQQIII", data, 8)
    if version != VERSION:
        raise DataError(f"{path}: shard format version {version}; this worker reads version {VERSION}")
    table_end = HEADER_SIZE + blocks * ENTRY_SIZE
    if len(data) < table_end:
        raise DataError(f"{path}: truncated: the block table needs {table_end} bytes, the file has {len(data)}")
    if zlib.crc32(data[HEADER_SIZE:table_end], zlib.crc32(data[:48])) != header_crc:
        raise DataError(f"{path}: header checksum mismatch")
    dim = c * h * w
    if dim <= 0 or per_block <= 0 or blocks != (count + per_block - 1) // per_block:
        raise DataError(f"{path}: inconsistent header ({count} images, {blocks} blocks of {per_block})")
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        raise DataError(f"{path}: SHA-256 does not match the manifest")
    if (c, h, w) != manifest.shape or count != entry.count or first != entry.first:
        raise DataError(
            f"{path}: header ({count} {c}x{h}x{w} images from {first}) disagrees with the manifest"
        )
    pixels = np.empty(count * dim, dtype=np.uint8)
    decompressor = zstandard.ZstdDecompressor()
    for b in range(blocks):
        offset, stored, raw_size, stored_crc, raw_crc = struct.unpack_from("<QQQII", data, HEADER_SIZE + b * ENTRY_SIZE)
        expected_raw = (min(count, (b + 1) * per_block) - b * per_block) * dim
        if raw_size != expected_raw:
            raise DataError(f"{path}: block {b} announces {raw_size} bytes, expected {expected_raw}")
        if offset < table_end or offset + stored > len(data):
            raise DataError(f"{path}: truncated: block {b} lies past the end of the file")
        block = data[offset : offset + stored]
        if zlib.crc32(block) != stored_crc:
            raise DataError(f"{path}: block {b} checksum mismatch")
        try:
            raw = decompressor.decompress(block, max_output_size=raw_size)
        except zstandard.ZstdError as e:
            raise DataError(f"{path}: block {b} does not decompress ({e})") from None
        if len(raw) != raw_size or zlib.crc32(raw) != raw_crc:
            raise DataError(f"{path}: block {b} decompressed to the wrong content (checksum mismatch)")
        start = b * per_block * dim
        pixels[start : start + raw_size] = np.frombuffer(raw, dtype=np.uint8)
    return pixels.reshape(count, c, h, w)


def placement(text: str, shard_count: int) -> list[int]:
    """`INDEX/COUNT[/REPLICATION]`: shard k goes to workers (k + j) mod COUNT for j < REPLICATION, as
    `pspc worker --placement` (Placement.swift)."""
    parts = text.split("/")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) not in (2, 3):
        raise ValueError(f"placement '{text}' is not INDEX/COUNT or INDEX/COUNT/REPLICATION")
    index, count = numbers[0], numbers[1]
    replication = numbers[2] if len(numbers) == 3 else 1
    if not (count >= 1 and 0 <= index < count and replication >= 1):
        raise ValueError(f"placement '{text}': need 0 <= INDEX < COUNT and REPLICATION >= 1")
    r = max(1, min(replication, count))
    return [k for k in range(shard_count) if any((k + j) % count == index for j in range(r))]


def parse_shard_list(text: str, shard_count: int) -> list[int]:
    ids = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) >= shard_count:
            raise ValueError(f"--shards: '{part}' is not a shard id of this dataset (0..<{shard_count})")
        ids.append(int(part))
    return ids
