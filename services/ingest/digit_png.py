"""A fast decode path for the canonical digit image: an 8×8, 8-bit greyscale, non-interlaced PNG.

Pillow's per-image set-up dominates opening, loading and converting an 8×8 PNG; the canonical
image is 72 bytes of zlib-compressed scanlines, which this module checks and unfilters itself, for
a fraction of the CPU (figures in services/ingest/README.md, from `make bench-ingest`). It is
strict: any other shape, colour type, bit depth, ancillary chunk, bad CRC, bad zlib stream or
trailing byte returns None, and the caller falls back to `services.preprocessing.png_to_features`: the
one bounded decoder (`image_decode.py`: format allow-list, dimensions checked from the header), which
decodes it or raises the usual InvalidImage.
So the fast path never accepts what Pillow would refuse, and yields bit-identical features.
"""

from __future__ import annotations

import zlib

import numpy as np

from services.preprocessing import FEATURE_DIM, png_to_features
from services.preprocessing.digits import MAX_PNG_BYTES

SIGNATURE = b"\x89PNG\r\n\x1a\n"
SIDE = 8
ROW = SIDE + 1  # filter-type byte + 8 pixels
# width 8, height 8, bit depth 8, colour type 0 (grey), compression 0, filter 0, interlace 0
CANONICAL_IHDR = (8).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])


def features(data: bytes) -> np.ndarray:
    """64 features of an image: the fast path for canonical digit PNGs, the bounded decoder for anything else."""
    fast = canonical_features(data)
    return fast if fast is not None else png_to_features(data)


def canonical_features(data: bytes) -> np.ndarray | None:
    """Features of a canonical 8×8 greyscale PNG, or None when the image is anything else."""
    pixels = _canonical_pixels(data)
    if pixels is None:
        return None
    # The same arithmetic as png_to_features (uint8 → float32, / 255.0), so the values are identical.
    return (np.frombuffer(pixels, dtype=np.uint8).astype(np.float32) / 255.0).reshape(FEATURE_DIM)


def _canonical_pixels(data: bytes) -> bytes | None:
    if len(data) > MAX_PNG_BYTES or not data.startswith(SIGNATURE):
        return None
    pos, size = len(SIGNATURE), len(data)
    idat: list[bytes] = []
    first = True
    while True:
        if pos + 12 > size:
            return None
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        end = pos + 8 + length
        if end + 4 > size or zlib.crc32(data[pos + 4 : end]) != int.from_bytes(data[end : end + 4], "big"):
            return None
        body = data[pos + 8 : end]
        pos = end + 4
        if first:
            if kind != b"IHDR" or body != CANONICAL_IHDR:
                return None
            first = False
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        else:
            return None  # an ancillary chunk (tRNS, gAMA, text, …): Pillow decides what it means
    if pos != size or not idat:
        return None
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(b"".join(idat), SIDE * ROW + 1)
    except zlib.error:
        return None
    if not inflater.eof or inflater.unused_data or len(raw) != SIDE * ROW:
        return None
    return _unfilter(raw)


LOW7 = 0x7F7F7F7F7F7F7F7F
HIGH = 0x8080808080808080


def _unfilter(raw: bytes) -> bytes | None:
    """Undo PNG scanline filters for 1 byte per pixel (PNG spec §9).

    Rows are 8 bytes, so "none" and "up" (most rows of Pillow's digits) work on a row as one
    64-bit integer: "up" is a byte-wise addition mod 256 without carries between bytes.
    """
    out = bytearray(SIDE * SIDE)
    prior = 0
    for y in range(SIDE):
        kind = raw[y * ROW]
        line = raw[y * ROW + 1 : (y + 1) * ROW]
        if kind == 0:
            cur = int.from_bytes(line, "big")
        elif kind == 2:
            value = int.from_bytes(line, "big")
            cur = ((value & LOW7) + (prior & LOW7)) ^ ((value ^ prior) & HIGH)
        elif kind in (1, 3, 4):
            up_row = prior.to_bytes(SIDE, "big")
            row = bytearray(SIDE)
            left = 0
            for x in range(SIDE):
                up = up_row[x]
                if kind == 1:
                    predicted = left
                elif kind == 3:
                    predicted = (left + up) >> 1
                else:
                    upleft = up_row[x - 1] if x else 0
                    p = left + up - upleft
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - upleft)
                    predicted = left if pa <= pb and pa <= pc else (up if pb <= pc else upleft)
                left = (line[x] + predicted) & 0xFF
                row[x] = left
            cur = int.from_bytes(row, "big")
        else:
            return None
        out[y * SIDE : (y + 1) * SIDE] = cur.to_bytes(SIDE, "big")
        prior = cur
    return bytes(out)
