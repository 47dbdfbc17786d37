"""Fashion-MNIST reader: gzipped IDX image files (Debian package dataset-fashion-mnist)."""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np
import torch

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
FILES = {"train": "train-images-idx3-ubyte.gz", "test": "t10k-images-idx3-ubyte.gz"}

# IDX header: two zero bytes, a type code (0x08 = uint8), the number of dimensions, then one
# big-endian uint32 per dimension. Images files are 0x00000803 followed by N, rows, cols.
IDX_UINT8_3D_MAGIC = 0x00000803


class IDXFormatError(ValueError):
    """The bytes are not a uint8 image IDX file of the expected shape."""


def parse_idx_images(raw: bytes, name: str = "<bytes>", shape: tuple[int, int] | None = (28, 28)) -> np.ndarray:
    """Parse uncompressed IDX image bytes into uint8 `[N, rows, cols]`; `shape` checks rows, cols."""
    if len(raw) < 16:
        raise IDXFormatError(f"{name}: {len(raw)} bytes is too short for an IDX image header (16 bytes)")
    magic, n, rows, cols = struct.unpack(">IIII", raw[:16])
    if magic != IDX_UINT8_3D_MAGIC:
        raise IDXFormatError(
            f"{name}: bad IDX magic 0x{magic:08x}, expected 0x{IDX_UINT8_3D_MAGIC:08x} (uint8, 3 dimensions)"
        )
    if shape is not None and (rows, cols) != tuple(shape):
        raise IDXFormatError(f"{name}: images are {rows}x{cols}, expected {shape[0]}x{shape[1]}")
    expected = 16 + n * rows * cols
    if len(raw) != expected:
        raise IDXFormatError(
            f"{name}: header says {n} images of {rows}x{cols} ({expected} bytes) but the file has {len(raw)} bytes"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, rows, cols)


def read_idx_images(path: str, shape: tuple[int, int] | None = (28, 28)) -> torch.Tensor:
    """Read a gzipped (or plain) IDX image file as a uint8 tensor `[N, 1, rows, cols]`."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise IDXFormatError(f"{path}: corrupt gzip stream: {e}") from e
    images = parse_idx_images(raw, name=path, shape=shape)
    return torch.from_numpy(images.copy()).unsqueeze(1)


def load_fashion_mnist(split: str = "train", root: str | None = None) -> torch.Tensor:
    """Fashion-MNIST `split` ("train": 60000, "test": 10000 images) as uint8 `[N, 1, 28, 28]`."""
    if split not in FILES:
        raise ValueError(f"unknown split {split!r}, expected one of {sorted(FILES)}")
    root = root or os.environ.get("PSPC_FASHION_MNIST_DIR", DEFAULT_DIR)
    path = os.path.join(root, FILES[split])
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: install the Debian package dataset-fashion-mnist")
    return read_idx_images(path)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels to float32 in [-1, 1]: x / 127.5 - 1 (docs/science.md section 1)."""
    return x.to(torch.float32) / 127.5 - 1.0
