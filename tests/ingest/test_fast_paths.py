"""The fast paths behind ingest's throughput give exactly what the slow ones gave.

* `grey_png`: the small greyscale PNG decoder matches Pillow bit for bit for every PNG scanline
  filter, and hands anything else (other sizes and modes, ancillary chunks, bad CRCs, truncated
  or trailing bytes) to Pillow, so errors and results are Pillow's.
* `ObjectStore.put_many`: a batch stored at once is what `put` stores one by one, idempotent,
  with no temporary files left behind.
"""

from __future__ import annotations

import io
import re
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from services.preprocessing import InvalidImage, features_to_png, png_to_features
from services.preprocessing.digits import DIGITS_INPUT
from services.preprocessing.grey_png import grey_png_pixels
from services.preprocessing.images import decode_image
from services.storage import ObjectStore
from tests.ingest.conftest import digit_png


def canonical_features(data: bytes) -> np.ndarray | None:
    """The fast path's features, or None when it hands the image to Pillow."""
    pixels = grey_png_pixels(data, 8, 8)
    return None if pixels is None else np.frombuffer(pixels, dtype=np.uint8).astype(np.float32) / 255.0


def pillow_features(data: bytes) -> np.ndarray:
    """Pillow alone (the decoder's slow path): what the fast path must match bit for bit."""
    img, _ = decode_image(data, DIGITS_INPUT)
    grey = img.convert("L")
    if grey.size != (8, 8):
        grey = grey.resize((8, 8), Image.Resampling.BOX)
    return (np.asarray(grey, dtype=np.float32) / 255.0).reshape(64)


features = png_to_features


def _chunk(kind: bytes, body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def _png(pixels: np.ndarray, filters: list[int], extra: bytes = b"") -> bytes:
    """An 8×8 greyscale PNG whose row y uses filter type filters[y] (PNG spec §9)."""
    rows, prior = [], [0] * 8
    for y, kind in enumerate(filters):
        line = [int(v) for v in pixels[y]]
        out = []
        for x, v in enumerate(line):
            left, up, upleft = (line[x - 1] if x else 0), prior[x], (prior[x - 1] if x else 0)
            predicted = [0, left, up, (left + up) >> 1, _paeth(left, up, upleft)][kind]
            out.append((v - predicted) & 0xFF)
        rows.append(bytes([kind, *out]))
        prior = line
    ihdr = _chunk(b"IHDR", (8).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0]))
    idat = _chunk(b"IDAT", zlib.compress(b"".join(rows)))
    return b"\x89PNG\r\n\x1a\n" + ihdr + extra + idat + _chunk(b"IEND", b"")


@pytest.mark.parametrize("kind", [0, 1, 2, 3, 4])
def test_every_scanline_filter_decodes_like_pillow(kind: int) -> None:
    rng = np.random.default_rng(kind)
    for _ in range(20):
        pixels = rng.integers(0, 256, size=(8, 8), dtype=np.uint8)
        data = _png(pixels, [kind] * 8)
        fast = canonical_features(data)
        assert fast is not None
        assert fast.dtype == np.float32 and np.array_equal(fast, pillow_features(data))
        assert np.array_equal(png_to_features(data), fast)
    mixed = _png(rng.integers(0, 256, size=(8, 8), dtype=np.uint8), [4, 3, 2, 1, 0, 1, 3, 4])
    assert np.array_equal(canonical_features(mixed), pillow_features(mixed))


def test_pillow_written_digits_take_the_fast_path_with_identical_features() -> None:
    rng = np.random.default_rng(7)
    images = [digit_png(seed) for seed in range(50)]
    images += [features_to_png(rng.random(64).astype(np.float32)) for _ in range(50)]
    for data in images:
        fast = canonical_features(data)
        assert fast is not None and np.array_equal(fast, pillow_features(data))


def _pillow(mode: str, size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 90).save(buf, format="PNG")
    return buf.getvalue()


def _no_address(text: str) -> str:
    return re.sub(r"0x[0-9a-f]+", "0x…", text)


def test_anything_else_goes_to_pillow_with_pillows_answer() -> None:
    good = digit_png(1)
    others = [
        _pillow("RGB", (8, 8)),
        _pillow("L", (16, 16)),
        _pillow("LA", (8, 8)),
        _png(np.full((8, 8), 200, np.uint8), [0] * 8, extra=_chunk(b"tEXt", b"k\x00v")),
    ]
    for data in others:
        assert canonical_features(data) is None
        assert np.array_equal(features(data), pillow_features(data))
    bad_crc = bytearray(good)
    bad_crc[29] ^= 0xFF  # the IHDR CRC
    broken = [bytes(bad_crc), good[:-5], good + b"trailing", good[:40], b"not a png", b""]
    for data in broken:
        assert canonical_features(data) is None
        try:
            expected = pillow_features(data)
        except InvalidImage as exc:
            with pytest.raises(InvalidImage) as got:
                features(data)
            assert _no_address(str(got.value)) == _no_address(str(exc))
        else:
            assert np.array_equal(features(data), expected)


def test_put_many_stores_a_batch_like_put_idempotently(tmp_path: Path) -> None:
    blobs = [digit_png(i) for i in range(40)] + [digit_png(0)]  # one repeated
    batch = ObjectStore(f"file://{tmp_path / 'batch'}")
    single = ObjectStore(f"file://{tmp_path / 'single'}")
    stored = batch.put_many(blobs)
    assert [d for _, d in stored] == [d for _, d in (single.put(b) for b in blobs)]
    assert stored[0] == stored[-1]
    for (uri, digest), blob in zip(stored, blobs, strict=True):
        assert batch.get(uri) == blob and batch.exists(digest)
    assert batch.put_many(blobs) == stored  # a replay stores nothing new and answers the same
    assert batch.put_many([]) == []
    files = [p for p in (tmp_path / "batch").rglob("*") if p.is_file()]
    assert len(files) == 40 and not [p for p in files if p.name.endswith(".tmp")]


def test_put_many_without_syncfs_fsyncs_files_and_directories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where Linux's syncfs is missing (macOS), the same batch is made durable file by file."""
    from services.storage import objects

    monkeypatch.setattr(objects, "_SYNCFS", None)
    store = ObjectStore(f"file://{tmp_path}")
    blobs = [digit_png(i) for i in range(10)]
    stored = store.put_many(blobs)
    assert [store.get(uri) for uri, _ in stored] == blobs
    assert store.put_many(blobs) == stored
