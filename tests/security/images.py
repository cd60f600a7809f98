"""Hostile images built byte by byte: what an attacker sends to make a decoder spend memory and CPU.

Each is small on the wire and declares far more pixels than any limit allows, or is not the
format it claims, or is a format the decoder must not be asked to parse.
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(width: int = 13000, height: int = 13000, bit_depth: int = 1) -> bytes:
    """A valid greyscale PNG of all-zero rows: ~20 KB for 13000×13000 1-bit pixels (169 Mpx)."""
    row = b"\0" + b"\0" * ((width * bit_depth + 7) // 8)
    deflate = zlib.compressobj(9)
    data = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width×height and carries a few bytes of pixel data (it lies)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = _chunk(b"IDAT", zlib.compress(b"\0" * 9))
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + pixels + _chunk(b"IEND", b"")


def gif_bomb(width: int = 65535, height: int = 65535) -> bytes:
    """A GIF whose logical screen and frame declare 65535×65535 (4.3 Gpx) in a few dozen bytes."""
    screen = b"GIF89a" + struct.pack("<HH", width, height) + b"\x80\x00\x00" + b"\0\0\0\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHH", 0, 0, width, height) + b"\x00" + b"\x02\x02\x44\x01\x00"
    return screen + frame + b"\x3b"


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small real JPEG whose SOF0 marker is rewritten to declare width×height."""
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def bmp_declaring(width: int, height: int) -> bytes:
    """A BMP header declaring width×height, 1 bit per pixel, with no pixel data behind it."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 1, 0, 0, 2835, 2835, 2, 0)
    palette = b"\0\0\0\0\xff\xff\xff\0"
    offset = 14 + len(info) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + 16, 0, 0, offset) + info + palette + b"\0" * 16


def tiff() -> bytes:
    """A genuine small TIFF: a format Pillow reads, and none of ours (never handed to its decoder)."""
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="TIFF")
    return buf.getvalue()


def png(width: int = 8, height: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (width, height), 128).save(buf, format="PNG")
    return buf.getvalue()


def truncated_png() -> bytes:
    return png(32, 32)[:60]
