"""A fast decode path for small 8-bit greyscale PNGs already at the model's size (digits' 8×8).

Pillow's per-image set-up dominates opening, loading and converting a tiny PNG; such an image is
a few dozen bytes of zlib-compressed scanlines, which this module checks and unfilters itself, for
a fraction of the CPU (figures in services/ingest/README.md, from `make bench-ingest`). It is
strict: any other size, colour type, bit depth, ancillary chunk, bad CRC, bad zlib stream or
trailing byte returns None, and services/preprocessing/images.py decodes the image with Pillow
instead (or refuses it). So the fast path never accepts what Pillow would refuse, and yields
bit-identical pixels. Only images.py calls it: it is part of the one image decoder.
"""

from __future__ import annotations

import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Wider images go to Pillow: per-pixel unfiltering in Python stops paying off.
MAX_SIDE = 64


def ihdr(width: int, height: int) -> bytes:
    """width, height, bit depth 8, colour type 0 (grey), compression 0, filter 0, interlace 0."""
    return width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])


def grey_png_pixels(data: bytes, width: int, height: int) -> bytes | None:
    """The row-major pixels of a width×height 8-bit greyscale PNG, or None for any other image."""
    if not 0 < width <= MAX_SIDE or not 0 < height <= MAX_SIDE or not data.startswith(SIGNATURE):
        return None
    pos, size = len(SIGNATURE), len(data)
    idat: list[bytes] = []
    first = True
    expected = ihdr(width, height)
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
            if kind != b"IHDR" or body != expected:
                return None
            first = False
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        else:
            return None  # an ancillary chunk (tRNS, gAMA, text, …): Pillow decides what it means
    row = width + 1  # filter-type byte + pixels
    if pos != size or not idat:
        return None
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(b"".join(idat), height * row + 1)
    except zlib.error:
        return None
    if not inflater.eof or inflater.unused_data or len(raw) != height * row:
        return None
    return _unfilter(raw, width, height)


def _unfilter(raw: bytes, width: int, height: int) -> bytes | None:
    """Undo PNG scanline filters for 1 byte per pixel (PNG spec §9).

    "None" and "up" (most rows of Pillow's small images) work on a row as one integer: "up" is a
    byte-wise addition mod 256 without carries between bytes.
    """
    low7 = int.from_bytes(b"\x7f" * width, "big")
    high = int.from_bytes(b"\x80" * width, "big")
    row = width + 1
    out = bytearray(width * height)
    prior = 0
    for y in range(height):
        kind = raw[y * row]
        line = raw[y * row + 1 : (y + 1) * row]
        if kind == 0:
            cur = int.from_bytes(line, "big")
        elif kind == 2:
            value = int.from_bytes(line, "big")
            cur = ((value & low7) + (prior & low7)) ^ ((value ^ prior) & high)
        elif kind in (1, 3, 4):
            up_row = prior.to_bytes(width, "big")
            pixels = bytearray(width)
            left = 0
            for x in range(width):
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
                pixels[x] = left
            cur = int.from_bytes(pixels, "big")
        else:
            return None
        out[y * width : (y + 1) * width] = cur.to_bytes(width, "big")
        prior = cur
    return bytes(out)
